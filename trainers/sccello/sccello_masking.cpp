// scCello's MLM masking with counter-based draws: position p of the batch uses the SplitMix64
// outputs 3p, 3p+1, 3p+2 of a stream keyed by (seed, rank, step, micro-batch), so the masks need
// no generator state and do not depend on threads, devices or the LibTorch version.
#include "trainers/sccello/sccello_masking.h"

#include <string>

#include "core/error.h"
#include "data/keyed_permutation.h"

namespace cellfm::trainers::sccello {
namespace {

// Separates this stream from the project's other streams keyed by the same seed ("scMLM").
constexpr std::uint64_t kMaskingStreamTag = 0x73634d4c4dULL;
constexpr std::uint64_t kGolden = 0x9e3779b97f4a7c15ULL;  // SplitMix64's increment

// A uniform double in [0, 1) from the top 53 bits.
double unit(std::uint64_t bits) {
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

// A uniform integer in [0, n) by multiply-shift (bias below n / 2^64).
std::int64_t below(std::uint64_t bits, std::uint64_t n) {
  return static_cast<std::int64_t>((static_cast<unsigned __int128>(bits) * n) >> 64);
}

void check_fraction(double value, const char* name) {
  if (!(value >= 0 && value <= 1)) {
    throw core::UsageError(std::string("scCello masking: ") + name + " must be in [0, 1], got " +
                           std::to_string(value));
  }
}

}  // namespace

MaskedTokens mask_tokens(const torch::Tensor& input_ids, const SccelloVocabulary& vocabulary,
                         const MaskingOptions& options, const MaskingKey& key) {
  check_fraction(options.probability, "the selection probability");
  check_fraction(options.mask_fraction, "the <mask> fraction");
  check_fraction(options.random_fraction, "the random-token fraction");
  if (options.mask_fraction + options.random_fraction > 1) {
    throw core::UsageError("scCello masking: the <mask> and random-token fractions add up to " +
                           std::to_string(options.mask_fraction + options.random_fraction) +
                           ", more than 1");
  }
  if (input_ids.dim() != 2 || input_ids.scalar_type() != torch::kInt64 ||
      !input_ids.device().is_cpu()) {
    throw core::UsageError("scCello masking: input_ids must be a [cells, tokens] int64 CPU tensor");
  }
  MaskedTokens out;
  out.input_ids = input_ids.contiguous().clone();
  out.labels = torch::full_like(out.input_ids, kIgnoreLabel);
  out.selected = torch::zeros(input_ids.sizes(), torch::kBool);
  std::int64_t* ids = out.input_ids.data_ptr<std::int64_t>();
  std::int64_t* labels = out.labels.data_ptr<std::int64_t>();
  bool* selected = out.selected.data_ptr<bool>();

  // Random tokens: the G genes (ids 2..G+1), or every id as the reference.
  const std::int64_t random_first = options.reference_random_tokens ? 0 : kFirstGeneToken;
  const auto random_count = static_cast<std::uint64_t>(
      options.reference_random_tokens ? vocabulary.size() : vocabulary.gene_count());
  const double random_below = options.mask_fraction + options.random_fraction;
  const std::uint64_t stream =
      data::derive_key({key.seed, key.rank, key.step, key.micro_batch, kMaskingStreamTag});

  const std::int64_t positions = out.input_ids.numel();
  for (std::int64_t p = 0; p < positions; ++p) {
    const std::int64_t token = ids[p];
    if (vocabulary.is_special(token)) continue;
    const std::uint64_t counter = stream + 3 * static_cast<std::uint64_t>(p) * kGolden;
    if (unit(data::splitmix64(counter)) >= options.probability) continue;
    selected[p] = true;
    labels[p] = token;
    const double split = unit(data::splitmix64(counter + kGolden));
    if (split < options.mask_fraction) {
      ids[p] = kMaskToken;
    } else if (split < random_below) {
      ids[p] = random_first + below(data::splitmix64(counter + 2 * kGolden), random_count);
    }
  }
  return out;
}

}  // namespace cellfm::trainers::sccello
