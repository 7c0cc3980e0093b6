// Growing vectors that are reused from batch to batch (the loader's recycled read and batch
// buffers) without the costs of std::vector's own growth: a reallocation copies the old contents
// and fresh pages fault one by one, so a vector that must grow is emptied first and given a
// quarter of headroom, after which the slightly varying sizes of later batches fit.
#pragma once

#include <cstddef>
#include <vector>

namespace cellfm::data {

/// Makes `v` hold `n` elements; the values are unspecified when it had to grow (not copied).
template <typename T>
void resize_for_reuse(std::vector<T>& v, std::size_t n) {
  if (n > v.capacity()) {
    v.clear();
    v.reserve(n + n / 4);
  }
  v.resize(n);
}

/// Empties `v` and makes room for `n` elements.
template <typename T>
void clear_for_reuse(std::vector<T>& v, std::size_t n) {
  v.clear();
  if (n > v.capacity()) v.reserve(n + n / 4);
}

}  // namespace cellfm::data
