// VocabParallelEmbedding and the vocabulary-parallel cross-entropy.
#include "parallel/vocab_parallel.h"

#include <ATen/CPUGeneratorImpl.h>

#include <limits>

#include "core/error.h"
#include "parallel/tensor_parallel.h"

namespace cellfm::parallel {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

Communicator& communicator_of(std::int64_t handle) {
  return *reinterpret_cast<Communicator*>(static_cast<std::intptr_t>(handle));
}

torch::Tensor all(torch::Tensor tensor, Communicator& tp, ReduceOp op) {
  tensor = tensor.contiguous();
  tp.allreduce(tensor, op);
  return tensor;
}

// Forward: the three reductions; backward: (softmax - one-hot) * upstream, all local.
struct VocabParallelCrossEntropy : torch::autograd::Function<VocabParallelCrossEntropy> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& targets, std::int64_t vocabulary,
                               std::int64_t tp_handle) {
    Communicator& tp = communicator_of(tp_handle);
    const std::int64_t part = logits.size(1);
    const std::int64_t first = tp.rank() * part;
    torch::Tensor local = logits.detach().clone();
    // Padding columns never win: -inf logits.
    const std::int64_t valid = std::clamp<std::int64_t>(vocabulary - first, 0, part);
    if (valid < part) local.slice(1, valid, part).fill_(-std::numeric_limits<double>::infinity());
    const torch::Tensor max = all(std::get<0>(local.max(1)), tp, ReduceOp::max);
    local.sub_(max.unsqueeze(1));
    torch::Tensor exp = local.exp();
    const torch::Tensor sum = all(exp.sum(1), tp, ReduceOp::sum);
    const torch::Tensor mine = (targets >= first) & (targets < first + part);
    const torch::Tensor local_target =
        torch::where(mine, targets - first, torch::zeros_like(targets));
    torch::Tensor picked = local.gather(1, local_target.unsqueeze(1)).squeeze(1);
    picked = torch::where(mine, picked, torch::zeros_like(picked));
    const torch::Tensor target_logit = all(picked, tp, ReduceOp::sum);
    exp.div_(sum.unsqueeze(1));  // the softmax slice, kept for backward
    ctx->save_for_backward({exp, mine, local_target});
    return sum.log() - target_logit;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    torch::Tensor grad = saved[0].clone();
    const torch::Tensor rows = torch::arange(grad.size(0), saved[2].options());
    grad.index_put_({rows, saved[2]},
                    grad.index({rows, saved[2]}) - saved[1].to(grad.scalar_type()));
    grad.mul_(grads[0].unsqueeze(1));
    return {grad, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

std::int64_t padded_vocabulary(std::int64_t vocabulary, int tensor_parallel) {
  return (vocabulary + tensor_parallel - 1) / tensor_parallel * tensor_parallel;
}

torch::Tensor initial_embedding(std::int64_t padded, std::int64_t dim, std::uint64_t seed) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::empty({padded, dim}).normal_(0.0, 1.0, generator);
}

VocabParallelEmbeddingImpl::VocabParallelEmbeddingImpl(std::int64_t vocabulary, std::int64_t dim,
                                                       std::shared_ptr<Communicator> tp,
                                                       std::uint64_t seed)
    : tp_(std::move(tp)) {
  const std::int64_t padded = padded_vocabulary(vocabulary, tp_->size());
  const std::int64_t part = padded / tp_->size();
  first = tp_->rank() * part;
  weight = register_parameter(
      "weight", initial_embedding(padded, dim, seed).slice(0, first, first + part).clone());
}

torch::Tensor VocabParallelEmbeddingImpl::forward(const torch::Tensor& ids) {
  const std::int64_t part = weight.size(0);
  const torch::Tensor mine = (ids >= first) & (ids < first + part);
  const torch::Tensor local = torch::where(mine, ids - first, torch::zeros_like(ids));
  const torch::Tensor rows =
      torch::embedding(weight, local) * mine.unsqueeze(-1).to(weight.dtype());
  return reduce_from_tensor_parallel(rows, tp_);
}

torch::Tensor vocab_parallel_cross_entropy(const torch::Tensor& local_logits,
                                           const torch::Tensor& targets, std::int64_t vocabulary,
                                           const std::shared_ptr<Communicator>& tp) {
  CELLFM_CHECK(
      local_logits.dim() == 2 && targets.dim() == 1 && targets.size(0) == local_logits.size(0),
      "vocab-parallel cross-entropy: logits [N, V/k] and targets [N]");
  CELLFM_CHECK(local_logits.size(1) * tp->size() == padded_vocabulary(vocabulary, tp->size()),
               "vocab-parallel cross-entropy: the logit slice does not match the vocabulary");
  return VocabParallelCrossEntropy::apply(
      local_logits, targets, vocabulary,
      static_cast<std::int64_t>(reinterpret_cast<std::intptr_t>(tp.get())));
}

}  // namespace cellfm::parallel
