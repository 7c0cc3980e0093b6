// CellPLM's reconstruction loss.
#include "trainers/cellplm/cellplm_losses.h"

#include "parallel/tensor_parallel.h"
#include "trainers/cellplm/cellplm_layers.h"

namespace cellfm::trainers::cellplm {

namespace {

// sum over genes of x [N, G_local] on every rank's slice: [N].
torch::Tensor gene_sum(const torch::Tensor& x, const std::shared_ptr<parallel::Communicator>& tp) {
  return parallel::reduce_from_tensor_parallel(x.sum(1), tp);
}

// The NLL of `targets.counts` under `mean` rescaled per cell to `total` over `entries`, summed
// over the entries: [N], with the rescaled mean.
std::pair<torch::Tensor, torch::Tensor> rescaled_nll(
    const torch::Tensor& mean, const torch::Tensor& theta, const torch::Tensor& counts,
    const torch::Tensor& entries, const torch::Tensor& total,
    const std::shared_ptr<parallel::Communicator>& tp) {
  const torch::Tensor weight = entries.to(mean.scalar_type());
  // The mass feeds every rank's own genes again: summed forward, and its gradient summed over
  // the ranks backward (g then f), unlike the final sums, whose consumers are replicated.
  const torch::Tensor mass =
      parallel::copy_to_tensor_parallel(gene_sum(mean * weight, tp), tp).clamp_min(1e-12);
  const torch::Tensor rescaled = mean * (total.to(mean.scalar_type()) / mass).unsqueeze(1);
  const torch::Tensor nll =
      nb_negative_log_likelihood(counts.to(mean.scalar_type()), rescaled, theta.unsqueeze(0));
  return {gene_sum(nll * weight, tp), rescaled};
}

}  // namespace

ReconstructionLoss reconstruction_loss(const torch::Tensor& mean, const torch::Tensor& dispersion,
                                       const ReconstructionTargets& targets,
                                       const std::shared_ptr<parallel::Communicator>& tp) {
  const torch::Tensor used = targets.used.to(mean.scalar_type());
  ReconstructionLoss out;
  auto [measured_nll, unused_rescaled] =
      rescaled_nll(mean, dispersion, targets.counts, targets.measured, targets.library, tp);
  auto [masked_nll, masked_mean] =
      rescaled_nll(mean, dispersion, targets.counts, targets.masked, targets.masked_total, tp);
  out.measured_nll = measured_nll * used;
  out.masked_nll = masked_nll * used;
  out.masked_mean = masked_mean;
  return out;
}

}  // namespace cellfm::trainers::cellplm
