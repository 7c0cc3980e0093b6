// The order of rank-value tokenisation: entries by descending rank value, ties by ascending gene
// id (a strict total order, so the result is unique). A stable LSD radix sort on the values
// rounded to float, then an exact pass over runs that rounding made equal: several times faster
// than a comparison sort of (double, gene) pairs at ~2,000 entries per cell.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace cellfm::data {

class RankOrder {
 public:
  /// The positions 0..n-1 of `genes`/`values` (n each; values > 0) in rank order. The result
  /// lives in this object until the next call; buffers are reused between calls (one RankOrder
  /// per thread).
  const std::vector<std::uint32_t>& order(const std::int32_t* genes, const double* values,
                                          std::size_t n);

  /// Sorts `genes`/`values` into rank order in place.
  void sort(std::vector<std::int32_t>& genes, std::vector<double>& values);

 private:
  void comparison_order(const std::int32_t* genes, const double* values, std::size_t n);
  void radix_order(const double* values, std::size_t n);

  std::vector<std::uint64_t> keys_;
  std::vector<std::uint64_t> scratch_;
  std::vector<std::uint32_t> positions_;
  std::vector<std::int32_t> genes_out_;
  std::vector<double> values_out_;
};

}  // namespace cellfm::data
