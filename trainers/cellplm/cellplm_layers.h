// CellPLM's layer functions (cellplm.md §2), free of module state so tests can check each against
// float64 recomputations of the spec's equations: Flow-Attention, the per-cell GroupNorm, the 2-D
// sinusoidal table, the GMVAE and VAE latent terms and the negative-binomial log-likelihood.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace cellfm::trainers::cellplm {

/// Flow-Attention (non-causal, Flowformer) over one sequence: q, k, v [heads, N, d] are the raw
/// projections; with Q = sigmoid(q), K = sigmoid(k), eps = 1e-6:
///   inc_i = 1 / ((Q_i + eps) . (sum_j K_j + eps)),  out_j = 1 / ((K_j + eps) . (sum_i Q_i + eps))
///   sink_i = (Q_i + eps) . (sum_j K_j out_j + eps)
///   source_j = clamp((K_j + eps) . (sum_i Q_i inc_i + eps), -1, 1)
///   allocation_i = sigmoid(sink_i * N / N),  competition = softmax_j(source) * N
///   out = ((Q inc) (K^T (V competition))) allocation   -> [heads, N, d]
torch::Tensor flow_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             double eps = 1e-6);

/// GroupNorm over the channels of each cell: x [N, C], `groups` dividing C, affine weight/bias
/// [C] (eps 1e-5, as torch.nn.GroupNorm).
torch::Tensor cell_group_norm(const torch::Tensor& x, std::int64_t groups,
                              const torch::Tensor& weight, const torch::Tensor& bias);

/// Grid cells per axis of the positional table (coordinates in [0, 1] are binned to 0..99).
constexpr std::int64_t kPositionGrid = 100;

/// The frozen 2-D sinusoidal table [100 * 100, dim] (dim divisible by 4): row x * 100 + y holds
/// the x encoding in the first dim / 2 channels and the y encoding in the rest; within a half of
/// width w, channel 2i is sin(p / 10000^(2i / w)) and 2i + 1 its cos, p the grid index.
torch::Tensor sinusoidal_2d_table(std::int64_t dim);

/// Table rows of coordinates [N, 2] (x, y; NaN: none) normalised per call: both axes shifted to
/// start at 0 and divided by the larger extent (the aspect ratio kept), then binned as the
/// reference, clamp(floor((c * 1.02 - 0.01) * 100), 0, 99). -1 for cells without coordinates. A
/// sample whose cells share one point (zero extent, a single cell included) sits at the centre,
/// unit coordinates (0.5, 0.5): row 50 * 100 + 50.
torch::Tensor position_rows(const torch::Tensor& coordinates);

/// The GMVAE's latent terms for cells with q(y|h) logits [N, K], the sample z [N, D], q(z|h,y)
/// mean and variance, p(z|y) mean and variance (cellplm.md §2.4):
///   gauss = mean_cells sum_dims [log N(z; mu, var + 1e-8) - log N(z; prior_mu, prior_var + 1e-8)]
///   categorical = mean_cells [log K + sum_k p_k log p_k],  p = softmax(logits)
struct GmvaeTerms {
  torch::Tensor gauss, categorical;  ///< scalars
};
GmvaeTerms gmvae_terms(const torch::Tensor& logits, const torch::Tensor& z, const torch::Tensor& mu,
                       const torch::Tensor& var, const torch::Tensor& prior_mu,
                       const torch::Tensor& prior_var);

/// The VAE's KL to N(0, I): mean_cells sum_dims 0.5 (mu^2 + exp(logvar) - 1 - logvar).
torch::Tensor vae_kl(const torch::Tensor& mu, const torch::Tensor& logvar);

/// Negative-binomial negative log-likelihood of counts x under mean mu and dispersion theta
/// (broadcasting), elementwise, with eps = 1e-8 inside the logarithms:
///   -[lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)
///     + theta (log(theta + eps) - log(theta + mu + eps)) + x (log(mu + eps) - log(theta + mu +
///     eps))]
torch::Tensor nb_negative_log_likelihood(const torch::Tensor& x, const torch::Tensor& mu,
                                         const torch::Tensor& theta);

}  // namespace cellfm::trainers::cellplm
