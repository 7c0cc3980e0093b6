// The random machinery of the synthetic corpus: a keyed random stream (so every cell's draws depend
// only on (seed, file, cell), never on rank count or batching) and negative-binomial count
// samplers, including one that draws a whole cell's sparse gene counts in O(non-zeros).
#pragma once

#include <cstdint>
#include <vector>

namespace cellfm::data {

/// A random stream keyed by (seed, a, b, c): xoshiro256** seeded through SplitMix64. Streams with
/// different keys are independent for all practical purposes. The samplers are implemented here
/// (not with <random>'s distributions, whose output differs between standard libraries), so a
/// key gives the same numbers on every platform with IEEE doubles and the same libm.
class SynthRng {
 public:
  SynthRng(std::uint64_t seed, std::uint64_t a, std::uint64_t b = 0, std::uint64_t c = 0);

  std::uint64_t next();
  /// Uniform in [0, 1) with 53 random bits.
  double uniform();
  /// Uniform in (0, 1]: safe to take the logarithm of.
  double uniform_positive() { return 1.0 - uniform(); }
  /// Uniform integer in [0, n); n >= 1.
  std::uint64_t below(std::uint64_t n);
  /// Standard normal (Box-Muller).
  double normal();
  /// Gamma(shape, scale 1), shape > 0 (Marsaglia-Tsang).
  double gamma(double shape);
  /// Poisson(mean), mean >= 0 (inversion below 10, Hoermann's PTRS above).
  std::uint64_t poisson(double mean);

 private:
  std::uint64_t s_[4];
};

/// A stable 64-bit hash of a string (FNV-1a then a SplitMix64 finaliser), for keying streams by
/// names such as ontology ids.
std::uint64_t synth_hash(const char* text, std::size_t size);

/// Negative-binomial counts with dispersion phi: variance mean + phi * mean^2, i.e.
/// Poisson(Gamma(shape 1/phi, scale phi * mean)).
class NegativeBinomial {
 public:
  explicit NegativeBinomial(double dispersion);
  double dispersion() const { return dispersion_; }

  /// P(count = 0) = (1 + phi * mean)^(-1/phi), by integer powers when 1/phi is a small integer
  /// (the default phi = 0.5 gives 2), else through log1p and exp.
  double zero_probability(double mean) const;
  double log_zero_probability(double mean) const;
  /// 1 - zero_probability(mean), and its derivative by log(mean) (mean * P(0) / (1 + phi * mean)).
  double nonzero_probability(double mean, double* derivative_by_log_mean = nullptr) const;

  std::uint64_t sample(SynthRng& rng, double mean) const;
  /// A count conditioned on being > 0 (mean > 0); `zero_probability` is zero_probability(mean),
  /// which callers have already computed.
  std::uint64_t sample_positive(SynthRng& rng, double mean, double zero_probability) const;

 private:
  double dispersion_;
  double shape_;
  int integer_shape_ = 0;  // 1/phi when it is an integer in [1, 16], else 0
};

struct GeneCount {
  std::int32_t gene;
  std::uint32_t count;  ///< > 0
};

/// Independent negative-binomial counts for G genes whose means are `scale * weights[g]`, returned
/// as the non-zero entries only. Genes are grouped into levels of weight within a factor of 2; in
/// each level the candidates are found by geometric skipping at the level's largest zero-crossing
/// probability and thinned to each gene's own, so a draw costs O(non-zeros + levels), not O(G).
class SparseNbSampler {
 public:
  /// `weights` [genes] >= 0 (zero: never expressed); `dispersion` > 0.
  SparseNbSampler(const std::vector<double>& weights, double dispersion);

  /// Appends (gene, count) for every gene with a non-zero count, in no particular order.
  void sample(SynthRng& rng, double scale, std::vector<GeneCount>& out) const;
  /// The expected number of non-zero genes at `scale`, and its derivative by log(scale).
  double expected_nonzeros(double scale, double* derivative_by_log_scale = nullptr) const;

  std::size_t genes() const { return weights_.size(); }
  double weight(std::size_t gene) const { return weights_[gene]; }
  const NegativeBinomial& distribution() const { return nb_; }

 private:
  struct Level {
    double bound = 0;                 ///< the largest weight of the level
    std::vector<std::int32_t> genes;  ///< ascending
  };
  std::vector<double> weights_;
  NegativeBinomial nb_;
  std::vector<Level> levels_;
};

}  // namespace cellfm::data
