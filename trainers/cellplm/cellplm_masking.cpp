// CellPLM's pretraining masks.
#include "trainers/cellplm/cellplm_masking.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "data/keyed_permutation.h"

namespace cellfm::trainers::cellplm {

namespace {

constexpr double kUnit = 1.0 / 9007199254740992.0;  // 2^-53

// A uniform in [0, 1) from the hash of (key, a, b, c).
double uniform(std::uint64_t key, std::uint64_t a, std::uint64_t b, std::uint64_t c = 0) {
  const std::uint64_t h =
      data::splitmix64(data::splitmix64(data::splitmix64(key ^ data::splitmix64(a)) ^ b) + c);
  return static_cast<double>(h >> 11) * kUnit;
}

double normal(std::uint64_t key, std::int64_t cell, std::uint64_t draw) {
  // Box-Muller from two uniforms.
  const double u1 = std::max(uniform(key, static_cast<std::uint64_t>(cell), 1, draw), 1e-300);
  const double u2 = uniform(key, static_cast<std::uint64_t>(cell), 2, draw);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

// Gamma(shape >= 1, 1) by Marsaglia and Tsang's squeeze method, draws indexed from `stream`.
double gamma_draw(std::uint64_t key, std::int64_t cell, double shape, std::uint64_t stream) {
  const double d = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  for (std::uint64_t attempt = 0;; ++attempt) {
    const std::uint64_t draw = stream * 1000003ULL + attempt;
    const double x = normal(key, cell, draw);
    const double v = std::pow(1.0 + c * x, 3);
    if (v <= 0) continue;
    const double u = uniform(key, static_cast<std::uint64_t>(cell), 3, draw);
    if (std::log(std::max(u, 1e-300)) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v;
  }
}

}  // namespace

double beta_draw(std::uint64_t key, std::int64_t cell, double a, double b) {
  const double x = gamma_draw(key, cell, a, 1);
  const double y = gamma_draw(key, cell, b, 2);
  return x / (x + y);
}

SentenceCells choose_cells(std::int64_t cells, const SentenceMaskingOptions& options,
                           std::uint64_t key, bool drop) {
  SentenceCells out;
  if (cells <= 0) return out;
  std::vector<std::int64_t> order(static_cast<std::size_t>(cells));
  std::iota(order.begin(), order.end(), 0);
  // A keyed shuffle: sort by hash.
  const auto by_hash = [&](std::uint64_t salt) {
    std::vector<std::pair<std::uint64_t, std::int64_t>> keyed;
    keyed.reserve(order.size());
    for (std::int64_t row : order) {
      keyed.emplace_back(
          data::splitmix64(data::derive_key({key, salt, static_cast<std::uint64_t>(row)})), row);
    }
    std::sort(keyed.begin(), keyed.end());
    std::vector<std::int64_t> out_rows;
    out_rows.reserve(keyed.size());
    for (const auto& [hash, row] : keyed) out_rows.push_back(row);
    return out_rows;
  };
  std::int64_t keep = cells;
  if (drop) {
    keep = static_cast<std::int64_t>(
        std::floor((1.0 - options.drop_cells) * static_cast<double>(cells)));
    keep = std::clamp<std::int64_t>(keep, 1, std::max<std::int64_t>(options.max_cells, 1));
    order = by_hash(1);
    order.resize(static_cast<std::size_t>(keep));
    std::sort(order.begin(), order.end());
  }
  out.kept = order;
  out.rates.assign(out.kept.size(), 0.0);
  std::int64_t chosen =
      static_cast<std::int64_t>(std::floor(options.mask_cells * static_cast<double>(keep)));
  if (options.mask_cells > 0) chosen = std::clamp<std::int64_t>(chosen, 1, keep);
  // Choose among kept indices 0..keep-1.
  std::vector<std::int64_t> kept_index(static_cast<std::size_t>(keep));
  std::iota(kept_index.begin(), kept_index.end(), 0);
  order = kept_index;
  const std::vector<std::int64_t> picked = by_hash(2);
  for (std::int64_t i = 0; i < chosen; ++i) {
    const std::int64_t at = picked[static_cast<std::size_t>(i)];
    double rate = options.mask_rate;
    if (options.beta_rate) rate = std::min(0.9, beta_draw(key, at, 5.0, 13.0));
    out.rates[static_cast<std::size_t>(at)] = rate;
  }
  return out;
}

bool entry_masked(std::uint64_t key, std::int64_t cell, std::int64_t gene, double rate) {
  if (rate <= 0) return false;
  return uniform(key, static_cast<std::uint64_t>(cell) + 0x9E3779B97F4A7C15ULL,
                 static_cast<std::uint64_t>(gene)) < rate;
}

}  // namespace cellfm::trainers::cellplm
