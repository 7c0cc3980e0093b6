// CellPLM's layer functions.
#include "trainers/cellplm/cellplm_layers.h"

#include <cmath>

#include "core/error.h"

namespace cellfm::trainers::cellplm {

torch::Tensor flow_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             double eps) {
  const torch::Tensor queries = torch::sigmoid(q);
  const torch::Tensor keys = torch::sigmoid(k);
  const auto n = static_cast<double>(q.size(1));
  // [heads, N]: the incoming and outgoing flows.
  const torch::Tensor incoming =
      1.0 / torch::einsum("hnd,hd->hn", {queries + eps, keys.sum(1) + eps});
  const torch::Tensor outgoing =
      1.0 / torch::einsum("hnd,hd->hn", {keys + eps, queries.sum(1) + eps});
  const torch::Tensor sink =
      torch::einsum("hnd,hd->hn", {queries + eps, (keys * outgoing.unsqueeze(-1)).sum(1) + eps});
  const torch::Tensor source =
      torch::einsum("hnd,hd->hn", {keys + eps, (queries * incoming.unsqueeze(-1)).sum(1) + eps})
          .clamp(-1.0, 1.0);
  const torch::Tensor allocation = torch::sigmoid(sink * (n / n));
  const torch::Tensor competition = torch::softmax(source, -1) * n;
  // Q (K^T V): linear in N.
  const torch::Tensor kv = torch::matmul(keys.transpose(1, 2), v * competition.unsqueeze(-1));
  return torch::matmul(queries * incoming.unsqueeze(-1), kv) * allocation.unsqueeze(-1);
}

torch::Tensor cell_group_norm(const torch::Tensor& x, std::int64_t groups,
                              const torch::Tensor& weight, const torch::Tensor& bias) {
  return torch::group_norm(x, groups, weight, bias, 1e-5);
}

torch::Tensor sinusoidal_2d_table(std::int64_t dim) {
  if (dim % 4 != 0) {
    throw core::UsageError("cellplm: the positional encoding needs a width divisible by 4, not " +
                           std::to_string(dim));
  }
  const std::int64_t half = dim / 2;
  const torch::Tensor grid = torch::arange(kPositionGrid, torch::kFloat64).unsqueeze(1);
  const torch::Tensor frequency =
      torch::exp(torch::arange(0, half, 2, torch::kFloat64) * (-std::log(10000.0) / half));
  torch::Tensor axis = torch::zeros({kPositionGrid, half}, torch::kFloat64);
  axis.slice(1, 0, half, 2) = torch::sin(grid * frequency);
  axis.slice(1, 1, half, 2) = torch::cos(grid * frequency);
  // Row x * 100 + y: [x's encoding, y's encoding].
  const torch::Tensor x_part = axis.unsqueeze(1).expand({kPositionGrid, kPositionGrid, half});
  const torch::Tensor y_part = axis.unsqueeze(0).expand({kPositionGrid, kPositionGrid, half});
  return torch::cat({x_part, y_part}, 2)
      .reshape({kPositionGrid * kPositionGrid, dim})
      .to(torch::kFloat32);
}

torch::Tensor position_rows(const torch::Tensor& coordinates) {
  const torch::Tensor c = coordinates.to(torch::kFloat64);
  const torch::Tensor present = ~torch::isnan(c).any(1);
  torch::Tensor rows = torch::full({c.size(0)}, -1, torch::kInt64);
  if (!present.any().item<bool>()) return rows;
  const torch::Tensor known = c.index({present});
  const torch::Tensor low = std::get<0>(known.min(0));
  const double extent = (std::get<0>(known.max(0)) - low).max().item<double>();
  const torch::Tensor unit = extent > 0 ? (known - low) / extent : torch::full_like(known, 0.5);
  const torch::Tensor bins = torch::floor((unit * 1.02 - 0.01) * kPositionGrid)
                                 .clamp(0, kPositionGrid - 1)
                                 .to(torch::kInt64);
  rows.index_put_({present}, bins.select(1, 0) * kPositionGrid + bins.select(1, 1));
  return rows;
}

namespace {

torch::Tensor log_normal(const torch::Tensor& z, const torch::Tensor& mu,
                         const torch::Tensor& var) {
  const torch::Tensor v = var + 1e-8;
  return -0.5 * (std::log(2.0 * M_PI) + torch::log(v) + (z - mu).pow(2) / v);
}

}  // namespace

GmvaeTerms gmvae_terms(const torch::Tensor& logits, const torch::Tensor& z, const torch::Tensor& mu,
                       const torch::Tensor& var, const torch::Tensor& prior_mu,
                       const torch::Tensor& prior_var) {
  GmvaeTerms terms;
  terms.gauss = (log_normal(z, mu, var) - log_normal(z, prior_mu, prior_var)).sum(1).mean();
  const torch::Tensor log_p = torch::log_softmax(logits, 1);
  terms.categorical =
      (log_p.exp() * log_p).sum(1).mean() + std::log(static_cast<double>(logits.size(1)));
  return terms;
}

torch::Tensor vae_kl(const torch::Tensor& mu, const torch::Tensor& logvar) {
  return (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).sum(1).mean();
}

torch::Tensor nb_negative_log_likelihood(const torch::Tensor& x, const torch::Tensor& mu,
                                         const torch::Tensor& theta) {
  constexpr double eps = 1e-8;
  const torch::Tensor log_theta_mu = torch::log(theta + mu + eps);
  const torch::Tensor ll =
      torch::lgamma(x + theta) - torch::lgamma(theta) - torch::lgamma(x + 1.0) +
      theta * (torch::log(theta + eps) - log_theta_mu) + x * (torch::log(mu + eps) - log_theta_mu);
  return -ll;
}

}  // namespace cellfm::trainers::cellplm
