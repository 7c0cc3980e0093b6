// ZeroOptimizer: flat parameter buffer, a shard leaf for the local optimiser, all-gather after.
#include "parallel/zero_optimizer.h"

#include "core/error.h"

namespace cellfm::parallel {

ZeroOptimizer::ZeroOptimizer(std::vector<torch::Tensor> parameters,
                             std::shared_ptr<Communicator> dp, const Factory& factory)
    : parameters_(std::move(parameters)), dp_(std::move(dp)) {
  CELLFM_CHECK(!parameters_.empty(), "ZeRO-1 needs parameters");
  for (const torch::Tensor& p : parameters_) {
    CELLFM_CHECK(p.scalar_type() == parameters_.front().scalar_type() &&
                     p.device() == parameters_.front().device(),
                 "ZeRO-1 parameters must share one dtype and device");
    total_ += p.numel();
  }
  const int ranks = dp_->size();
  part_ = (total_ + ranks - 1) / ranks;
  flat_ = torch::zeros({part_ * ranks}, parameters_.front().options().requires_grad(false));
  std::int64_t offset = 0;
  for (torch::Tensor& p : parameters_) {
    torch::Tensor place = flat_.narrow(0, offset, p.numel()).view(p.sizes());
    place.copy_(p.detach());
    p.set_data(place);  // the parameter now lives in the flat buffer
    offset += p.numel();
  }
  shard_ = flat_.narrow(0, dp_->rank() * part_, part_).detach().requires_grad_(true);
  optimizer_ = factory({shard_});
}

void ZeroOptimizer::step() {
  // This rank's part of the gradients (missing gradients count as zero; padding stays zero).
  torch::Tensor grad = torch::zeros({part_}, flat_.options());
  const std::int64_t begin = dp_->rank() * part_;
  std::int64_t offset = 0;
  for (const torch::Tensor& p : parameters_) {
    const std::int64_t lo = std::max(begin, offset);
    const std::int64_t hi = std::min(begin + part_, offset + p.numel());
    if (lo < hi && p.grad().defined()) {
      grad.narrow(0, lo - begin, hi - lo)
          .copy_(p.grad().reshape(-1).narrow(0, lo - offset, hi - lo));
    }
    offset += p.numel();
  }
  shard_.mutable_grad() = grad;
  optimizer_->step();  // updates flat_'s own part in place (shard_ shares its storage)
  const torch::Tensor mine = flat_.narrow(0, begin, part_).clone();
  dp_->allgather(flat_, mine);
}

torch::Tensor ZeroOptimizer::flatten(const std::vector<torch::Tensor>& per_parameter) const {
  CELLFM_CHECK(per_parameter.size() == parameters_.size(), "ZeRO-1: one tensor per parameter");
  torch::Tensor flat = torch::zeros_like(flat_);
  std::int64_t offset = 0;
  for (std::size_t i = 0; i < parameters_.size(); ++i) {
    const std::int64_t n = parameters_[i].numel();
    CELLFM_CHECK(per_parameter[i].numel() == n, "ZeRO-1: a tensor differs from its parameter");
    flat.narrow(0, offset, n).copy_(per_parameter[i].reshape(-1));
    offset += n;
  }
  return flat;
}

torch::Tensor ZeroOptimizer::shard_of(const torch::Tensor& flat) const {
  return flat.narrow(0, dp_->rank() * part_, part_);
}

torch::Tensor ZeroOptimizer::gather(const torch::Tensor& shard) const {
  CELLFM_CHECK(shard.numel() == part_, "ZeRO-1: a shard has the wrong size");
  torch::Tensor flat = torch::empty({part_ * dp_->size()}, shard.options());
  dp_->allgather(flat, shard.contiguous());
  return flat;
}

std::vector<torch::Tensor> ZeroOptimizer::unflatten(const torch::Tensor& flat) const {
  std::vector<torch::Tensor> views;
  std::int64_t offset = 0;
  for (const torch::Tensor& p : parameters_) {
    views.push_back(flat.narrow(0, offset, p.numel()).view(p.sizes()));
    offset += p.numel();
  }
  return views;
}

}  // namespace cellfm::parallel
