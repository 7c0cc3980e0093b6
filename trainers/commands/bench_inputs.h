// What the model benchmarks share: synthetic cells as the corpus delivers them, and the process's
// memory figures (Linux /proc) for peak-memory comparisons.
#pragma once

#include <cstdint>
#include <string>

#include "data/corpus.h"

namespace cellfm::trainers {

/// `cells` cells of `nnz` distinct genes each out of `genes` (keyed by `seed`), ascending, counts
/// 1..32, cell ids 0.., as the corpus delivers a batch.
data::CorpusBatch synthetic_cells(std::int64_t cells, std::int64_t genes, std::int64_t nnz,
                                  std::uint64_t seed);

/// A line "Key:   N kB" of /proc/self/status in bytes (e.g. "VmRSS", "VmHWM"); -1 when absent.
std::int64_t status_bytes(const std::string& key);

/// Resets the process's peak RSS (VmHWM) to its current RSS ("5" to /proc/self/clear_refs, Linux
/// >= 4.0); false when the kernel refuses (peaks are then not reported).
bool reset_peak_rss();

}  // namespace cellfm::trainers
