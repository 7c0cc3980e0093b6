// RankOrder: radix sort on float-rounded rank values, exact fix-up of rounded ties.
#include "data/rank_order.h"

#include <algorithm>
#include <cstring>
#include <numeric>

namespace cellfm::data {
namespace {

// Descending positive float -> ascending unsigned key (rounding to float is monotone, so a
// smaller key never belongs to a smaller double).
std::uint32_t descending_key(double value) {
  const auto rounded = static_cast<float>(value);
  std::uint32_t bits;
  std::memcpy(&bits, &rounded, sizeof bits);
  return ~bits;
}

std::uint32_t position_of(std::uint64_t key) {
  return static_cast<std::uint32_t>(key);
}

}  // namespace

const std::vector<std::uint32_t>& RankOrder::order(const std::int32_t* genes, const double* values,
                                                   std::size_t n) {
  bool ascending_genes = true;
  for (std::size_t i = 1; i < n && ascending_genes; ++i) ascending_genes = genes[i - 1] < genes[i];
  if (n < 64 || !ascending_genes) {
    comparison_order(genes, values, n);  // small rows, or genes not in order
  } else {
    radix_order(values, n);
  }
  return positions_;
}

void RankOrder::comparison_order(const std::int32_t* genes, const double* values, std::size_t n) {
  positions_.resize(n);
  std::iota(positions_.begin(), positions_.end(), 0u);
  std::sort(positions_.begin(), positions_.end(), [&](std::uint32_t a, std::uint32_t b) {
    return values[a] != values[b] ? values[a] > values[b] : genes[a] < genes[b];
  });
}

void RankOrder::radix_order(const double* values, std::size_t n) {
  // Keys: (descending float key << 32) | position. Positions ascend with genes, and LSD radix
  // passes are stable, so equal floats stay in ascending gene order.
  keys_.resize(n);
  scratch_.resize(n);
  std::uint32_t histogram[4][256] = {};
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t key = descending_key(values[i]);
    keys_[i] = std::uint64_t{key} << 32 | i;
    for (int pass = 0; pass < 4; ++pass) ++histogram[pass][key >> (8 * pass) & 0xff];
  }
  for (int pass = 0; pass < 4; ++pass) {
    std::uint32_t* counts = histogram[pass];
    if (*std::max_element(counts, counts + 256) == n) continue;  // this byte is the same for all
    std::uint32_t position = 0;
    for (int digit = 0; digit < 256; ++digit) {
      const std::uint32_t count = counts[digit];
      counts[digit] = position;
      position += count;
    }
    const int shift = 32 + 8 * pass;
    for (std::size_t i = 0; i < n; ++i) scratch_[counts[keys_[i] >> shift & 0xff]++] = keys_[i];
    keys_.swap(scratch_);
  }
  // Distinct doubles that rounded to one float: order each such run exactly. The run is in
  // ascending position order, and the sort is stable, so equal doubles keep ascending genes.
  for (std::size_t begin = 0; begin < n;) {
    std::size_t end = begin + 1;
    bool all_equal = true;
    const double first = values[position_of(keys_[begin])];
    while (end < n && keys_[end] >> 32 == keys_[begin] >> 32) {
      all_equal &= values[position_of(keys_[end])] == first;
      ++end;
    }
    if (!all_equal) {
      std::stable_sort(keys_.begin() + static_cast<std::ptrdiff_t>(begin),
                       keys_.begin() + static_cast<std::ptrdiff_t>(end),
                       [&](std::uint64_t a, std::uint64_t b) {
                         return values[position_of(a)] > values[position_of(b)];
                       });
    }
    begin = end;
  }
  positions_.resize(n);
  for (std::size_t i = 0; i < n; ++i) positions_[i] = position_of(keys_[i]);
}

void RankOrder::sort(std::vector<std::int32_t>& genes, std::vector<double>& values) {
  const std::vector<std::uint32_t>& positions = order(genes.data(), values.data(), genes.size());
  genes_out_.resize(genes.size());
  values_out_.resize(values.size());
  for (std::size_t i = 0; i < positions.size(); ++i) {
    genes_out_[i] = genes[positions[i]];
    values_out_[i] = values[positions[i]];
  }
  genes.swap(genes_out_);
  values.swap(values_out_);
}

}  // namespace cellfm::data
