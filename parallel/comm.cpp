// Comm: host-side MPI collectives on scalars and strings.
#include "parallel/comm.h"

#include <algorithm>
#include <utility>

#include "core/error.h"
#include "parallel/blocking_watchdog.h"
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
  const BlockingCollective watched("barrier", 0);
  CELLFM_MPI_CHECK(MPI_Barrier(handle_->comm));
}

namespace {
std::int64_t allreduce_int64(MPI_Comm comm, std::int64_t value, MPI_Op op) {
  std::int64_t result = 0;
  const BlockingCollective watched("allreduce", 8);
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
  const BlockingCollective watched("allreduce", 8);
  CELLFM_MPI_CHECK(MPI_Allreduce(&value, &result, 1, MPI_DOUBLE, MPI_SUM, handle_->comm));
  return result;
}

namespace {
// Large vectors go in pieces whose element counts fit MPI's int.
constexpr std::size_t kReducePiece = std::size_t{1} << 28;

template <class T>
void allreduce_vector(MPI_Comm comm, std::vector<T>& values, MPI_Datatype type) {
  const BlockingCollective watched("allreduce",
                                   static_cast<std::int64_t>(values.size() * sizeof(T)));
  for (std::size_t at = 0; at < values.size(); at += kReducePiece) {
    const int count = static_cast<int>(std::min(kReducePiece, values.size() - at));
    CELLFM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, values.data() + at, count, type, MPI_SUM, comm));
  }
}

// Knuth's TwoSum on (hi, lo) pairs: the user function of the double-double reduction.
void double_double_sum(void* in, void* inout, int* length, MPI_Datatype*) {
  const double* a = static_cast<const double*>(in);
  double* b = static_cast<double*>(inout);
  for (int i = 0; i < *length; ++i) {
    const double x = a[2 * i];
    const double y = b[2 * i];
    const double s = x + y;
    const double v = s - x;
    const double e = (x - (s - v)) + (y - v) + a[2 * i + 1] + b[2 * i + 1];
    b[2 * i] = s + e;
    b[2 * i + 1] = e - (b[2 * i] - s);
  }
}
}  // namespace

void Comm::allreduce_sum(std::vector<std::int64_t>& values) const {
  allreduce_vector(handle_->comm, values, MPI_INT64_T);
}
void Comm::allreduce_sum(std::vector<std::uint32_t>& values) const {
  allreduce_vector(handle_->comm, values, MPI_UINT32_T);
}

void Comm::allreduce_sum_double_double(std::vector<double>& hi_lo) const {
  CELLFM_CHECK(hi_lo.size() % 2 == 0, "double-double vector of odd length");
  MPI_Datatype pair = MPI_DATATYPE_NULL;
  CELLFM_MPI_CHECK(MPI_Type_contiguous(2, MPI_DOUBLE, &pair));
  CELLFM_MPI_CHECK(MPI_Type_commit(&pair));
  MPI_Op op = MPI_OP_NULL;
  CELLFM_MPI_CHECK(MPI_Op_create(&double_double_sum, 1, &op));
  try {
    const BlockingCollective watched("allreduce",
                                     static_cast<std::int64_t>(hi_lo.size() * sizeof(double)));
    for (std::size_t at = 0; at < hi_lo.size() / 2; at += kReducePiece) {
      const int count = static_cast<int>(std::min(kReducePiece, hi_lo.size() / 2 - at));
      CELLFM_MPI_CHECK(
          MPI_Allreduce(MPI_IN_PLACE, hi_lo.data() + 2 * at, count, pair, op, handle_->comm));
    }
  } catch (...) {
    MPI_Op_free(&op);
    MPI_Type_free(&pair);
    throw;
  }
  CELLFM_MPI_CHECK(MPI_Op_free(&op));
  CELLFM_MPI_CHECK(MPI_Type_free(&pair));
}

std::vector<std::uint64_t> Comm::allgather(std::uint64_t value) const {
  std::vector<std::uint64_t> values(static_cast<std::size_t>(size()));
  const BlockingCollective watched("allgather", 8);
  CELLFM_MPI_CHECK(
      MPI_Allgather(&value, 1, MPI_UINT64_T, values.data(), 1, MPI_UINT64_T, handle_->comm));
  return values;
}

std::string Comm::broadcast(const std::string& value, int root) const {
  std::uint64_t length = value.size();
  const BlockingCollective watched("broadcast", static_cast<std::int64_t>(value.size()));
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

namespace {

// This rank's (rank, size) among the ranks of `comm` on its node (shared-memory split).
std::pair<int, int> node_position(MPI_Comm comm) {
  MPI_Comm node = MPI_COMM_NULL;
  CELLFM_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  int rank = 0, size = 1;
  CELLFM_MPI_CHECK(MPI_Comm_rank(node, &rank));
  CELLFM_MPI_CHECK(MPI_Comm_size(node, &size));
  CELLFM_MPI_CHECK(MPI_Comm_free(&node));
  return {rank, size};
}

}  // namespace

int Comm::node_size() const {
  return node_position(handle_->comm).second;
}

int Comm::node_rank() const {
  return node_position(handle_->comm).first;
}

}  // namespace cellfm::parallel
