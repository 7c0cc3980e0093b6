// RankOrder: radix sort on float-rounded rank values, exact fix-up of rounded ties.
#include "data/rank_order.h"

#include <algorithm>
#include <cstring>
#include <numeric>

namespace cellfm::data {
namespace {

bool before(double value_a, std::int32_t gene_a, double value_b, std::int32_t gene_b) {
  return value_a != value_b ? value_a > value_b : gene_a < gene_b;
}

// Descending positive float -> ascending unsigned key (rounding to float is monotone, so a
// smaller key never belongs to a smaller double).
std::uint32_t descending_key(double value) {
  const auto rounded = static_cast<float>(value);
  std::uint32_t bits;
  std::memcpy(&bits, &rounded, sizeof bits);
  return ~bits;
}

}  // namespace

void RankOrder::sort(std::vector<std::int32_t>& genes, std::vector<double>& values) {
  const std::size_t n = genes.size();
  const bool ascending_genes =
      std::is_sorted(genes.begin(), genes.end(), [](auto a, auto b) { return a <= b; }) || n < 2;
  if (n < 64 || !ascending_genes) {  // small rows, or genes not in order: a comparison sort
    std::vector<std::uint32_t> order(n);
    std::iota(order.begin(), order.end(), 0u);
    std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
      return before(values[a], genes[a], values[b], genes[b]);
    });
    genes_out_.resize(n);
    values_out_.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      genes_out_[i] = genes[order[i]];
      values_out_[i] = values[order[i]];
    }
    genes.swap(genes_out_);
    values.swap(values_out_);
    return;
  }
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
  genes_out_.resize(n);
  values_out_.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto position = static_cast<std::uint32_t>(keys_[i]);
    genes_out_[i] = genes[position];
    values_out_[i] = values[position];
  }
  // Distinct doubles that rounded to one float: order each such run exactly (stable, so equal
  // doubles keep ascending genes).
  for (std::size_t begin = 0; begin < n;) {
    std::size_t end = begin + 1;
    bool all_equal = true;
    while (end < n && keys_[end] >> 32 == keys_[begin] >> 32) {
      all_equal &= values_out_[end] == values_out_[begin];
      ++end;
    }
    if (!all_equal) {
      std::vector<std::uint32_t> order(end - begin);
      std::iota(order.begin(), order.end(), static_cast<std::uint32_t>(begin));
      std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
        return values_out_[a] > values_out_[b];
      });
      std::vector<std::int32_t> run_genes;
      std::vector<double> run_values;
      for (std::uint32_t k : order) {
        run_genes.push_back(genes_out_[k]);
        run_values.push_back(values_out_[k]);
      }
      std::copy(run_genes.begin(), run_genes.end(), genes_out_.begin() + begin);
      std::copy(run_values.begin(), run_values.end(), values_out_.begin() + begin);
    }
    begin = end;
  }
  genes.swap(genes_out_);
  values.swap(values_out_);
}

}  // namespace cellfm::data
