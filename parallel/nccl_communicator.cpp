// NcclCommunicator: NCCL collectives on a pool stream of the tensors' device. Each collective is
// issued from the collective queue's thread after the caller's stream reaches it (an event
// recorded at submission), and that thread waits for it to finish, so the queue's watchdog also
// catches a hung NCCL collective. Built only with CELLFM_WITH_NCCL.
#include "parallel/nccl_communicator.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "parallel/collective_checks.h"
#include "parallel/collective_queue.h"

namespace cellfm::parallel {
namespace {

void check_nccl(ncclResult_t result, const char* call) {
  if (result != ncclSuccess) {
    throw core::SystemError(std::string(call) + " failed: " + ncclGetErrorString(result));
  }
}
void check_cuda(cudaError_t result, const char* call) {
  if (result != cudaSuccess) {
    throw core::SystemError(std::string(call) + " failed: " + cudaGetErrorString(result));
  }
}
#define CELLFM_NCCL(call) check_nccl((call), #call)
#define CELLFM_CUDA(call) check_cuda((call), #call)

ncclDataType_t nccl_type(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32: return ncclFloat32;
    case torch::kFloat64: return ncclFloat64;
    case torch::kFloat16: return ncclFloat16;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)
    case torch::kBFloat16: return ncclBfloat16;
#endif
    case torch::kInt8: return ncclInt8;
    case torch::kUInt8:
    case torch::kBool: return ncclUint8;
    case torch::kInt32: return ncclInt32;
    case torch::kInt64: return ncclInt64;
    default:
      throw core::UsageError(std::string("NCCL collectives: dtype ") + c10::toString(dtype) +
                             " is not supported");
  }
}

ncclRedOp_t nccl_op(torch::ScalarType dtype, ReduceOp op) {
  if (op == ReduceOp::max || dtype == torch::kBool) return ncclMax;  // booleans: any
  return ncclSum;                                                    // average: sum, divide
}

// A CUDA event recorded on a stream now.
struct Event {
  explicit Event(cudaStream_t stream) {
    CELLFM_CUDA(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    CELLFM_CUDA(cudaEventRecord(event, stream));
  }
  ~Event() { cudaEventDestroy(event); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t event{};
};

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(const Comm& comm, const torch::Device& device,
                   const CommunicatorOptions& options)
      : rank_(comm.rank()),
        size_(comm.size()),
        device_(device),
        stream_(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device.index())),
        queue_(
            "communicator '" + options.name + "' (nccl, " + std::to_string(comm.size()) + " ranks)",
            options.timeout) {
    ncclUniqueId id;
    if (rank_ == 0) CELLFM_NCCL(ncclGetUniqueId(&id));
    const std::string shared = comm.broadcast(
        rank_ == 0 ? std::string(reinterpret_cast<const char*>(&id), sizeof id) : std::string(), 0);
    CELLFM_CHECK(shared.size() == sizeof id, "the NCCL unique id did not arrive intact");
    std::copy(shared.begin(), shared.end(), reinterpret_cast<char*>(&id));
    const c10::cuda::CUDAGuard guard(device_.index());
    CELLFM_NCCL(ncclCommInitRank(&nccl_.comm, size_, id, rank_));
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }

  std::shared_ptr<Work> allreduce_async(torch::Tensor tensor, ReduceOp op) override {
    const torch::ScalarType dtype = tensor.scalar_type();
    check_reduce_dtype("allreduce", dtype, op);
    return submit("allreduce", tensor, [this, tensor, dtype, op](cudaStream_t stream) {
      torch::Tensor buffer = tensor.is_contiguous() ? tensor : tensor.contiguous();
      CELLFM_NCCL(ncclAllReduce(buffer.data_ptr(), buffer.data_ptr(), buffer.numel(),
                                nccl_type(dtype), nccl_op(dtype, op), nccl_.comm, stream));
      if (op == ReduceOp::average) buffer.div_(size_);
      if (!buffer.is_same(tensor)) tensor.copy_(buffer);
    });
  }

  std::shared_ptr<Work> broadcast_async(torch::Tensor tensor, int root) override {
    CELLFM_CHECK(root >= 0 && root < size_, "broadcast root outside the communicator");
    return submit("broadcast", tensor, [this, tensor, root](cudaStream_t stream) {
      torch::Tensor buffer = tensor.is_contiguous() ? tensor : tensor.contiguous();
      CELLFM_NCCL(ncclBroadcast(buffer.data_ptr(), buffer.data_ptr(), buffer.numel(),
                                nccl_type(buffer.scalar_type()), root, nccl_.comm, stream));
      if (!buffer.is_same(tensor)) tensor.copy_(buffer);
    });
  }

  std::shared_ptr<Work> allgather_async(torch::Tensor output, torch::Tensor input) override {
    check_gathered_parts(output, input, size(), "allgather");
    return submit("allgather", output, [this, output, input](cudaStream_t stream) {
      const torch::Tensor in = input.contiguous();
      torch::Tensor out = output.is_contiguous() ? output : output.contiguous();
      CELLFM_NCCL(ncclAllGather(in.data_ptr(), out.data_ptr(), in.numel(),
                                nccl_type(in.scalar_type()), nccl_.comm, stream));
      if (!out.is_same(output)) output.copy_(out);
    });
  }

  std::shared_ptr<Work> reduce_scatter_async(torch::Tensor output, torch::Tensor input,
                                             ReduceOp op) override {
    check_gathered_parts(input, output, size(), "reduce_scatter");
    const torch::ScalarType dtype = input.scalar_type();
    check_reduce_dtype("reduce_scatter", dtype, op);
    return submit("reduce_scatter", input, [this, output, input, dtype, op](cudaStream_t stream) {
      const torch::Tensor in = input.contiguous();
      torch::Tensor out = output.is_contiguous() ? output : output.contiguous();
      CELLFM_NCCL(ncclReduceScatter(in.data_ptr(), out.data_ptr(), out.numel(), nccl_type(dtype),
                                    nccl_op(dtype, op), nccl_.comm, stream));
      if (op == ReduceOp::average) out.div_(size_);
      if (!out.is_same(output)) output.copy_(out);
    });
  }

  std::shared_ptr<Work> barrier_async() override {
    torch::Tensor token = torch::zeros({1}, torch::TensorOptions().device(device_));
    return allreduce_async(token, ReduceOp::sum);
  }

 private:
  // Queues `issue` (NCCL calls and tensor ops on the given stream): it runs on the queue's
  // thread once the caller's current stream has reached this point, and the thread waits for
  // the stream to finish it.
  std::shared_ptr<Work> submit(const char* what, const torch::Tensor& tensor,
                               std::function<void(cudaStream_t)> issue) {
    CELLFM_CHECK(tensor.device() == device_, "an NCCL collective on a tensor of another device");
    const auto ready =
        std::make_shared<Event>(c10::cuda::getCurrentCUDAStream(device_.index()).stream());
    const std::int64_t bytes = tensor.numel() * static_cast<std::int64_t>(tensor.element_size());
    return queue_.submit(what, bytes, [this, ready, issue] {
      const c10::cuda::CUDAGuard guard(device_.index());
      const c10::cuda::CUDAStreamGuard on_stream(stream_);
      CELLFM_CUDA(cudaStreamWaitEvent(stream_.stream(), ready->event, 0));
      issue(stream_.stream());
      CELLFM_CUDA(cudaStreamSynchronize(stream_.stream()));
    });
  }

  int rank_;
  int size_;
  torch::Device device_;
  c10::cuda::CUDAStream stream_;
  // Destroyed after queue_ (declared before it): no collective runs when the communicator goes.
  struct NcclHandle {
    ncclComm_t comm = nullptr;
    ~NcclHandle() {
      if (comm) ncclCommDestroy(comm);
    }
  } nccl_;
  CollectiveQueue queue_;
};

}  // namespace

bool nccl_can_serve(const Comm& comm, const torch::Device& device) {
  if (!device.is_cuda()) return false;
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  const std::uint64_t key =
      std::hash<std::string>()(host) * 131 + static_cast<std::uint64_t>(device.index());
  std::vector<std::uint64_t> keys = comm.allgather(key);
  std::sort(keys.begin(), keys.end());
  return std::adjacent_find(keys.begin(), keys.end()) == keys.end();
}

std::shared_ptr<Communicator> make_nccl_communicator(const Comm& comm, const torch::Device& device,
                                                     const CommunicatorOptions& options) {
  return std::make_shared<NcclCommunicator>(comm, device, options);
}

}  // namespace cellfm::parallel
