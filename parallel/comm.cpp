// Comm: host-side MPI collectives on scalars and strings.
#include "parallel/comm.h"

#include "core/error.h"
#include "parallel/mpi_native.h"

namespace cellfm::parallel {

Comm::Handle::~Handle() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owned && comm != MPI_COMM_NULL && !finalized) {
    MPI_Comm_free(&comm);
  }
}

Comm Comm::world() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  CELLFM_CHECK(initialized, "Comm::world() needs a live MpiRuntime");
  auto handle = std::make_shared<Handle>();
  handle->comm = MPI_COMM_WORLD;
  return Comm(std::move(handle));
}

Comm Comm::self() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  CELLFM_CHECK(initialized, "Comm::self() needs a live MpiRuntime");
  auto handle = std::make_shared<Handle>();
  handle->comm = MPI_COMM_SELF;
  return Comm(std::move(handle));
}

int Comm::rank() const {
  int rank = 0;
  CELLFM_MPI_CHECK(MPI_Comm_rank(handle_->comm, &rank));
  return rank;
}

int Comm::size() const {
  int size = 0;
  CELLFM_MPI_CHECK(MPI_Comm_size(handle_->comm, &size));
  return size;
}

void Comm::barrier() const {
  CELLFM_MPI_CHECK(MPI_Barrier(handle_->comm));
}

namespace {
std::int64_t allreduce_int64(MPI_Comm comm, std::int64_t value, MPI_Op op) {
  std::int64_t result = 0;
  CELLFM_MPI_CHECK(MPI_Allreduce(&value, &result, 1, MPI_INT64_T, op, comm));
  return result;
}
}  // namespace

std::int64_t Comm::allreduce_min(std::int64_t value) const {
  return allreduce_int64(handle_->comm, value, MPI_MIN);
}
std::int64_t Comm::allreduce_max(std::int64_t value) const {
  return allreduce_int64(handle_->comm, value, MPI_MAX);
}
std::int64_t Comm::allreduce_sum(std::int64_t value) const {
  return allreduce_int64(handle_->comm, value, MPI_SUM);
}

double Comm::allreduce_sum_real(double value) const {
  double result = 0;
  CELLFM_MPI_CHECK(MPI_Allreduce(&value, &result, 1, MPI_DOUBLE, MPI_SUM, handle_->comm));
  return result;
}

std::vector<std::uint64_t> Comm::allgather(std::uint64_t value) const {
  std::vector<std::uint64_t> values(static_cast<std::size_t>(size()));
  CELLFM_MPI_CHECK(
      MPI_Allgather(&value, 1, MPI_UINT64_T, values.data(), 1, MPI_UINT64_T, handle_->comm));
  return values;
}

std::string Comm::broadcast(const std::string& value, int root) const {
  std::uint64_t length = value.size();
  CELLFM_MPI_CHECK(MPI_Bcast(&length, 1, MPI_UINT64_T, root, handle_->comm));
  std::string result = rank() == root ? value : std::string(length, '\0');
  CELLFM_CHECK(length <= static_cast<std::uint64_t>(INT32_MAX), "broadcast string over 2 GiB");
  CELLFM_MPI_CHECK(
      MPI_Bcast(result.data(), static_cast<int>(length), MPI_CHAR, root, handle_->comm));
  return result;
}

Comm Comm::split(int color, int key) const {
  auto handle = std::make_shared<Handle>();
  CELLFM_MPI_CHECK(MPI_Comm_split(handle_->comm, color, key, &handle->comm));
  handle->owned = true;
  CELLFM_MPI_CHECK(MPI_Comm_set_errhandler(handle->comm, MPI_ERRORS_RETURN));
  return Comm(std::move(handle));
}

}  // namespace cellfm::parallel
