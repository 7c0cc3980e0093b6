// MpiCommunicator: tensor collectives on a private duplicate of the communicator, run on the
// collective queue's thread while the caller computes: blocking MPI calls by default, or
// non-blocking ones completed by MPI_Wait. Open MPI serves the non-blocking collectives from
// libnbc, whose allreduce measured ~2x slower than the tuned blocking one at >= 1 MB here
// (`cellfm bench comm` vs `cellfm bench comm --nonblocking-mpi`), hence the default.
// bfloat16 and float16 reduce through user-defined ops.
#include "parallel/mpi_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "core/error.h"
#include "parallel/collective_checks.h"
#include "parallel/collective_queue.h"
#include "parallel/mpi_native.h"

namespace cellfm::parallel {
namespace {

// ---- 16-bit floating types: a 2-byte MPI type and sum/max reductions computed in float ----

template <typename Half, bool kMax>
void reduce_halves(void* in, void* inout, int* count, MPI_Datatype*) {
  const auto* a = static_cast<const Half*>(in);
  auto* b = static_cast<Half*>(inout);
  for (int i = 0; i < *count; ++i) {
    const float x = static_cast<float>(a[i]);
    const float y = static_cast<float>(b[i]);
    b[i] = static_cast<Half>(kMax ? std::max(x, y) : x + y);
  }
}

struct HalfTypes {
  MPI_Datatype type = MPI_DATATYPE_NULL;  // 2 contiguous bytes
  MPI_Op bf16_sum = MPI_OP_NULL, bf16_max = MPI_OP_NULL;
  MPI_Op f16_sum = MPI_OP_NULL, f16_max = MPI_OP_NULL;
};

// Created once, on first use; MPI frees them at MPI_Finalize.
const HalfTypes& half_types() {
  static const HalfTypes types = [] {
    HalfTypes t;
    CELLFM_MPI_CHECK(MPI_Type_contiguous(2, MPI_BYTE, &t.type));
    CELLFM_MPI_CHECK(MPI_Type_commit(&t.type));
    CELLFM_MPI_CHECK(MPI_Op_create(&reduce_halves<c10::BFloat16, false>, 1, &t.bf16_sum));
    CELLFM_MPI_CHECK(MPI_Op_create(&reduce_halves<c10::BFloat16, true>, 1, &t.bf16_max));
    CELLFM_MPI_CHECK(MPI_Op_create(&reduce_halves<c10::Half, false>, 1, &t.f16_sum));
    CELLFM_MPI_CHECK(MPI_Op_create(&reduce_halves<c10::Half, true>, 1, &t.f16_max));
    return t;
  }();
  return types;
}

MPI_Datatype mpi_type(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32: return MPI_FLOAT;
    case torch::kFloat64: return MPI_DOUBLE;
    case torch::kInt8: return MPI_INT8_T;
    case torch::kUInt8: return MPI_UINT8_T;
    case torch::kInt16: return MPI_INT16_T;
    case torch::kInt32: return MPI_INT32_T;
    case torch::kInt64: return MPI_INT64_T;
    case torch::kBool: return MPI_C_BOOL;
    case torch::kBFloat16:
    case torch::kFloat16: return half_types().type;
    default:
      throw core::UsageError(std::string("collectives: dtype ") + c10::toString(dtype) +
                             " is not supported");
  }
}

MPI_Op mpi_op(torch::ScalarType dtype, ReduceOp op) {
  const bool max = op == ReduceOp::max;
  if (dtype == torch::kBFloat16) return max ? half_types().bf16_max : half_types().bf16_sum;
  if (dtype == torch::kFloat16) return max ? half_types().f16_max : half_types().f16_sum;
  if (dtype == torch::kBool) return MPI_LOR;  // sum and max of booleans: any
  return max ? MPI_MAX : MPI_SUM;
}

const char* op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return "sum";
    case ReduceOp::average: return "average";
    case ReduceOp::max: return "max";
  }
  return "?";
}

std::int64_t bytes_of(const torch::Tensor& tensor) {
  return tensor.numel() * static_cast<std::int64_t>(tensor.element_size());
}

// The tensor MPI works on: `tensor` itself when it is a contiguous CPU tensor, else a
// contiguous CPU copy whose result finish() copies back.
struct Staged {
  explicit Staged(const torch::Tensor& original)
      : original(original),
        buffer(original.is_cpu() && original.is_contiguous()
                   ? original
                   : original.to(torch::kCPU).contiguous()) {}
  void finish() {
    if (!buffer.is_same(original)) original.copy_(buffer);
  }
  torch::Tensor original;
  torch::Tensor buffer;
};

// Calls run(pointer, count) on consecutive pieces of `buffer` (contiguous) below MPI's int count
// limit.
template <typename Run>
void for_each_piece(const torch::Tensor& buffer, Run run) {
  char* data = static_cast<char*>(buffer.data_ptr());
  const std::int64_t element = buffer.element_size();
  for (std::int64_t done = 0, n = buffer.numel(); done < n;) {
    const int count = static_cast<int>(std::min<std::int64_t>(n - done, INT_MAX / 2));
    run(data + done * element, count);
    done += count;
  }
}

void wait(MPI_Request& request) {
  CELLFM_MPI_CHECK(MPI_Wait(&request, MPI_STATUS_IGNORE));
}

int checked_count(std::int64_t count, const char* what) {
  if (count > INT_MAX) {
    throw core::UsageError(std::string(what) + " of " + std::to_string(count) +
                           " elements per rank exceeds MPI's count limit (2^31 - 1)");
  }
  return static_cast<int>(count);
}

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator(const Comm& comm, const CommunicatorOptions& options)
      : comm_(comm.split(0, comm.rank())),  // a private duplicate: no interleaving with others
        nonblocking_(options.nonblocking_mpi),
        queue_(
            "communicator '" + options.name + "' (mpi, " + std::to_string(comm.size()) + " ranks)",
            options.timeout) {}

  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  std::string backend() const override { return "mpi"; }

  std::shared_ptr<Work> allreduce_async(torch::Tensor tensor, ReduceOp op) override {
    const torch::ScalarType dtype = tensor.scalar_type();
    check_reduce_dtype("allreduce", dtype, op);
    const MPI_Datatype type = mpi_type(dtype);
    const MPI_Op reduce = mpi_op(dtype, op);
    const int ranks = size();
    return queue_.submit(std::string("allreduce (") + op_name(op) + ")", bytes_of(tensor),
                         [this, tensor, type, reduce, op, ranks] {
                           Staged staged(tensor);
                           for_each_piece(staged.buffer, [&](void* piece, int count) {
                             call(
                                 [&] {
                                   CELLFM_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, piece, count, type,
                                                                  reduce, native(comm_)));
                                 },
                                 [&](MPI_Request* request) {
                                   CELLFM_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, piece, count, type,
                                                                   reduce, native(comm_), request));
                                 });
                           });
                           if (op == ReduceOp::average) staged.buffer.div_(ranks);
                           staged.finish();
                         });
  }

  std::shared_ptr<Work> broadcast_async(torch::Tensor tensor, int root) override {
    CELLFM_CHECK(root >= 0 && root < size(), "broadcast root outside the communicator");
    const MPI_Datatype type = mpi_type(tensor.scalar_type());
    return queue_.submit("broadcast", bytes_of(tensor), [this, tensor, type, root] {
      Staged staged(tensor);
      for_each_piece(staged.buffer, [&](void* piece, int count) {
        call([&] { CELLFM_MPI_CHECK(MPI_Bcast(piece, count, type, root, native(comm_))); },
             [&](MPI_Request* request) {
               CELLFM_MPI_CHECK(MPI_Ibcast(piece, count, type, root, native(comm_), request));
             });
      });
      staged.finish();
    });
  }

  std::shared_ptr<Work> allgather_async(torch::Tensor output, torch::Tensor input) override {
    check_gathered_parts(output, input, size(), "allgather");
    const MPI_Datatype type = mpi_type(input.scalar_type());
    const int count = checked_count(input.numel(), "allgather");
    return queue_.submit("allgather", bytes_of(output), [this, output, input, type, count] {
      Staged out(output);
      const torch::Tensor in = input.to(torch::kCPU).contiguous();
      call(
          [&] {
            CELLFM_MPI_CHECK(MPI_Allgather(in.data_ptr(), count, type, out.buffer.data_ptr(), count,
                                           type, native(comm_)));
          },
          [&](MPI_Request* request) {
            CELLFM_MPI_CHECK(MPI_Iallgather(in.data_ptr(), count, type, out.buffer.data_ptr(),
                                            count, type, native(comm_), request));
          });
      out.finish();
    });
  }

  std::shared_ptr<Work> reduce_scatter_async(torch::Tensor output, torch::Tensor input,
                                             ReduceOp op) override {
    check_gathered_parts(input, output, size(), "reduce_scatter");
    const torch::ScalarType dtype = input.scalar_type();
    check_reduce_dtype("reduce_scatter", dtype, op);
    const MPI_Datatype type = mpi_type(dtype);
    const MPI_Op reduce = mpi_op(dtype, op);
    const int count = checked_count(output.numel(), "reduce_scatter");
    const int ranks = size();
    return queue_.submit(
        std::string("reduce_scatter (") + op_name(op) + ")", bytes_of(input),
        [this, output, input, type, reduce, count, op, ranks] {
          Staged out(output);
          const torch::Tensor in = input.to(torch::kCPU).contiguous();
          call(
              [&] {
                CELLFM_MPI_CHECK(MPI_Reduce_scatter_block(in.data_ptr(), out.buffer.data_ptr(),
                                                          count, type, reduce, native(comm_)));
              },
              [&](MPI_Request* request) {
                CELLFM_MPI_CHECK(MPI_Ireduce_scatter_block(in.data_ptr(), out.buffer.data_ptr(),
                                                           count, type, reduce, native(comm_),
                                                           request));
              });
          if (op == ReduceOp::average) out.buffer.div_(ranks);
          out.finish();
        });
  }

  std::shared_ptr<Work> barrier_async() override {
    return queue_.submit("barrier", 0, [this] {
      call([&] { CELLFM_MPI_CHECK(MPI_Barrier(native(comm_))); },
           [&](MPI_Request* request) { CELLFM_MPI_CHECK(MPI_Ibarrier(native(comm_), request)); });
    });
  }

 private:
  // Runs one collective on the queue's thread: the blocking call, or the non-blocking one
  // completed by MPI_Wait (CommunicatorOptions::nonblocking_mpi).
  template <typename Blocking, typename Start>
  void call(Blocking blocking, Start start) const {
    if (!nonblocking_) {
      blocking();
      return;
    }
    MPI_Request request;
    start(&request);
    wait(request);
  }

  Comm comm_;
  bool nonblocking_;
  CollectiveQueue queue_;  // last: its thread stops before comm_ is freed
};

}  // namespace

std::shared_ptr<Communicator> make_mpi_communicator(const Comm& comm,
                                                    const CommunicatorOptions& options) {
  return std::make_shared<MpiCommunicator>(comm, options);
}

}  // namespace cellfm::parallel
