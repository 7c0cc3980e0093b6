// scCello's per-cell tokens: data::rank_value_tokens with the vocabulary's medians and ids, then
// padding and the model's tensors.
#include "trainers/sccello/sccello_tokens.h"

#include <algorithm>

#include "core/error.h"
#include "data/transforms.h"

namespace cellfm::trainers::sccello {

SccelloTokens tokenize_cells(const data::CsrBatch& counts, const SccelloVocabulary& vocabulary,
                             const TokenizeOptions& options) {
  if (options.max_tokens < 1) {
    throw core::UsageError("scCello tokens: max_tokens must be at least 1 (<cls>), got " +
                           std::to_string(options.max_tokens));
  }
  const data::TokenBatch ragged = data::rank_value_tokens(
      counts, vocabulary.medians, vocabulary.rank_token_options(options.max_tokens));
  const data::PaddedTokens padded =
      data::pad_tokens(ragged, static_cast<std::int32_t>(kPadToken), options.pad_to);

  SccelloTokens out;
  const auto int32_options = torch::TensorOptions().dtype(torch::kInt32);
  // from_blob views the vectors' memory; .to(kInt64) copies, so nothing outlives them.
  out.input_ids = torch::from_blob(const_cast<std::int32_t*>(padded.tokens.data()),
                                   {padded.rows, padded.width}, int32_options)
                      .to(torch::kInt64);
  out.lengths = torch::tensor(padded.lengths, torch::kInt64);
  const torch::Tensor positions = torch::arange(padded.width, torch::kInt64).unsqueeze(0);
  out.padding_mask = positions >= out.lengths.unsqueeze(1);
  out.attention_mask = out.padding_mask.logical_not().to(torch::kInt64);
  return out;
}

std::vector<double> rank_values(const data::CsrBatch& counts, const std::vector<double>& medians,
                                double target_sum) {
  if (counts.offsets.empty() || counts.offsets.back() != counts.nnz() ||
      counts.values.size() != counts.genes.size()) {
    throw core::UsageError("scCello rank values: a malformed CSR batch");
  }
  std::vector<double> out(counts.genes.size());
  for (std::int64_t r = 0; r < counts.cells(); ++r) {
    double total = 0;
    for (std::int64_t i = counts.offsets[r]; i < counts.offsets[r + 1]; ++i)
      total += counts.values[i];
    const double size_factor = total == 0 ? 1.0 : total;
    for (std::int64_t i = counts.offsets[r]; i < counts.offsets[r + 1]; ++i) {
      const std::int32_t gene = counts.genes[i];
      if (gene < 0 || static_cast<std::size_t>(gene) >= medians.size()) {
        throw core::InputError("scCello rank values: gene id " + std::to_string(gene) + " in row " +
                               std::to_string(r) + " is outside the vocabulary of " +
                               std::to_string(medians.size()) + " genes");
      }
      out[i] = double{counts.values[i]} / size_factor * target_sum / medians[gene];
    }
  }
  return out;
}

}  // namespace cellfm::trainers::sccello
