// Keyed random streams and negative-binomial samplers for the synthetic corpus.
#include "data/synthetic_counts.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace cellfm::data {
namespace {

constexpr double kPi = 3.14159265358979323846;

std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::uint64_t next_splitmix64(std::uint64_t& state) {
  state += 0x9e3779b97f4a7c15ULL;
  return mix64(state);
}

std::uint64_t rotl(std::uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

// log(k!) without std::lgamma (which writes the global signgam and differs between libms): a
// table for small k, Stirling's series (error < 1e-13) above.
double log_factorial(std::uint64_t k) {
  static const double table[] = {0.0,
                                 0.0,
                                 0.69314718055994530942,
                                 1.79175946922805500081,
                                 3.17805383034794561965,
                                 4.78749174278204599425,
                                 6.57925121201010099506,
                                 8.52516136106541430017,
                                 10.60460290274525022842,
                                 12.80182748008146961121,
                                 15.10441257307551529523,
                                 17.50230784587388583929,
                                 19.98721449566188614952,
                                 22.55216385312342288557,
                                 25.19122118273868150009,
                                 27.89927138384089156609};
  if (k < 16) return table[k];
  const double n = static_cast<double>(k);
  const double inv = 1.0 / n;
  const double inv2 = inv * inv;
  return n * std::log(n) - n + 0.5 * std::log(2.0 * kPi * n) +
         inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 / 1260.0));
}

// Hoermann (1993), "The transformed rejection method for generating Poisson random variables",
// algorithm PTRS; valid for mean >= 10.
std::uint64_t poisson_ptrs(SynthRng& rng, double mean) {
  const double log_mean = std::log(mean);
  const double b = 0.931 + 2.53 * std::sqrt(mean);
  const double a = -0.059 + 0.02483 * b;
  const double inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
  const double vr = 0.9277 - 3.6224 / (b - 2.0);
  while (true) {
    const double u = rng.uniform() - 0.5;
    const double v = rng.uniform();
    const double us = 0.5 - std::fabs(u);
    const double k = std::floor((2.0 * a / us + b) * u + mean + 0.43);
    if (us >= 0.07 && v <= vr) return static_cast<std::uint64_t>(k);
    if (k < 0.0 || (us < 0.013 && v > us)) continue;
    if (std::log(v) + std::log(inv_alpha) - std::log(a / (us * us) + b) <=
        -mean + k * log_mean - log_factorial(static_cast<std::uint64_t>(k))) {
      return static_cast<std::uint64_t>(k);
    }
  }
}

}  // namespace

SynthRng::SynthRng(std::uint64_t seed, std::uint64_t a, std::uint64_t b, std::uint64_t c) {
  std::uint64_t key = mix64(seed ^ 0x6a09e667f3bcc909ULL);
  key = mix64(key + 0x9e3779b97f4a7c15ULL * (a + 1));
  key = mix64(key ^ (0xbb67ae8584caa73bULL * (b + 1)));
  key = mix64(key + 0x3c6ef372fe94f82bULL * (c + 1));
  for (auto& word : s_) word = next_splitmix64(key);
}

std::uint64_t SynthRng::next() {
  const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double SynthRng::uniform() {
  return static_cast<double>(next() >> 11) * 0x1.0p-53;
}

std::uint64_t SynthRng::below(std::uint64_t n) {
  // Multiply-high: bias below n / 2^64, irrelevant here.
  return static_cast<std::uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
}

double SynthRng::normal() {
  const double radius = std::sqrt(-2.0 * std::log(uniform_positive()));
  return radius * std::cos(2.0 * kPi * uniform());
}

double SynthRng::gamma(double shape) {
  if (shape < 1.0) {
    return gamma(shape + 1.0) * std::pow(uniform_positive(), 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  while (true) {
    const double x = normal();
    double v = 1.0 + c * x;
    if (v <= 0.0) continue;
    v = v * v * v;
    const double u = uniform_positive();
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

std::uint64_t SynthRng::poisson(double mean) {
  if (!(mean > 0.0)) return 0;
  if (mean >= 10.0) return poisson_ptrs(*this, mean);
  double p = std::exp(-mean);
  double cumulative = p;
  const double u = uniform();
  std::uint64_t k = 0;
  while (u > cumulative && k < 1000) {
    ++k;
    p *= mean / static_cast<double>(k);
    cumulative += p;
  }
  return k;
}

std::uint64_t synth_hash(const char* text, std::size_t size) {
  std::uint64_t hash = 1469598103934665603ULL;
  for (std::size_t i = 0; i < size; ++i) {
    hash ^= static_cast<unsigned char>(text[i]);
    hash *= 1099511628211ULL;
  }
  return mix64(hash);
}

NegativeBinomial::NegativeBinomial(double dispersion)
    : dispersion_(dispersion), shape_(1.0 / dispersion) {
  CELLFM_CHECK(dispersion > 0.0, "the negative-binomial dispersion must be positive");
  if (shape_ >= 1.0 && shape_ <= 16.0 && shape_ == std::floor(shape_)) {
    integer_shape_ = static_cast<int>(shape_);
  }
}

double NegativeBinomial::log_zero_probability(double mean) const {
  return -shape_ * std::log1p(dispersion_ * mean);
}

double NegativeBinomial::zero_probability(double mean) const {
  if (integer_shape_ == 0) return std::exp(log_zero_probability(mean));
  const double base = 1.0 / (1.0 + dispersion_ * mean);
  double power = base;
  for (int i = 1; i < integer_shape_; ++i) power *= base;
  return power;
}

double NegativeBinomial::nonzero_probability(double mean, double* derivative_by_log_mean) const {
  const double zero = zero_probability(mean);
  if (derivative_by_log_mean) *derivative_by_log_mean = mean * zero / (1.0 + dispersion_ * mean);
  return 1.0 - zero;
}

std::uint64_t NegativeBinomial::sample(SynthRng& rng, double mean) const {
  if (!(mean > 0.0)) return 0;
  return rng.poisson(rng.gamma(shape_) * dispersion_ * mean);
}

std::uint64_t NegativeBinomial::sample_positive(SynthRng& rng, double mean,
                                                double zero_probability) const {
  if (mean >= 8.0) {
    // P(0) <= 1/9 here for dispersion <= 1 (and < 0.5 up to dispersion 4): few retries.
    while (true) {
      const std::uint64_t k = sample(rng, mean);
      if (k > 0) return k;
    }
  }
  // Inversion over the zero-truncated pmf: P(k+1) = P(k) * (k + r) / (k + 1) * p with
  // r = 1/dispersion and p = dispersion * mean / (1 + dispersion * mean).
  const double p = dispersion_ * mean / (1.0 + dispersion_ * mean);
  double pmf = zero_probability * shape_ * p;  // P(1)
  double u = rng.uniform() * (1.0 - zero_probability);
  std::uint64_t k = 1;
  while (u > pmf && k < 100000) {
    u -= pmf;
    pmf *= (static_cast<double>(k) + shape_) / static_cast<double>(k + 1) * p;
    ++k;
  }
  return k;
}

SparseNbSampler::SparseNbSampler(const std::vector<double>& weights, double dispersion)
    : weights_(weights), nb_(dispersion) {
  double largest = 0.0;
  for (double w : weights_) {
    CELLFM_CHECK(w >= 0.0 && std::isfinite(w), "gene weights must be finite and non-negative");
    largest = std::max(largest, w);
  }
  if (largest <= 0.0) return;
  constexpr int kLevels = 64;
  levels_.resize(kLevels);
  for (int k = 0; k < kLevels; ++k) levels_[k].bound = std::ldexp(largest, -k);
  for (std::size_t g = 0; g < weights_.size(); ++g) {
    const double w = weights_[g];
    if (w <= 0.0) continue;
    int k =
        std::min(kLevels - 1, std::max(0, static_cast<int>(std::floor(std::log2(largest / w)))));
    while (k > 0 && levels_[k].bound < w) --k;  // rounding at a level boundary
    levels_[k].genes.push_back(static_cast<std::int32_t>(g));
  }
}

void SparseNbSampler::sample(SynthRng& rng, double scale, std::vector<GeneCount>& out) const {
  for (const Level& level : levels_) {
    if (level.genes.empty()) continue;
    const double log_zero_bound = nb_.log_zero_probability(scale * level.bound);
    if (!(log_zero_bound < 0.0)) continue;  // means so small that no count can occur
    const double nonzero_bound = -std::expm1(log_zero_bound);
    if (nonzero_bound > 0.25) {
      // Dense enough that skipping saves little: test every gene of the level.
      for (std::int32_t g : level.genes) {
        const double mean = scale * weights_[g];
        const double zero = nb_.zero_probability(mean);
        if (rng.uniform() >= zero) {
          out.push_back({g, static_cast<std::uint32_t>(nb_.sample_positive(rng, mean, zero))});
        }
      }
      continue;
    }
    // Candidates are Bernoulli(nonzero_bound) per gene, found by geometric skips; each is kept
    // with probability nonzero(gene) / nonzero_bound, so gene g is non-zero with exactly its own
    // probability, and its count is then drawn from the zero-truncated distribution.
    const double n = static_cast<double>(level.genes.size());
    double next = 0.0;
    while (true) {
      next += std::floor(std::log(rng.uniform_positive()) / log_zero_bound);
      if (next >= n) break;
      const std::int32_t g = level.genes[static_cast<std::size_t>(next)];
      next += 1.0;
      const double mean = scale * weights_[g];
      const double zero = nb_.zero_probability(mean);
      if (rng.uniform() * nonzero_bound < 1.0 - zero) {
        out.push_back({g, static_cast<std::uint32_t>(nb_.sample_positive(rng, mean, zero))});
      }
    }
  }
}

double SparseNbSampler::expected_nonzeros(double scale, double* derivative_by_log_scale) const {
  double sum = 0.0;
  double derivative = 0.0;
  for (double w : weights_) {
    if (w <= 0.0) continue;
    double d = 0.0;
    sum += nb_.nonzero_probability(scale * w, &d);
    derivative += d;
  }
  if (derivative_by_log_scale) *derivative_by_log_scale = derivative;
  return sum;
}

}  // namespace cellfm::data
