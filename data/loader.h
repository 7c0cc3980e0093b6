// The prefetching data loader of one data-parallel rank: a background I/O thread follows the
// sampler, reads the blocks each step needs from the corpus (adjacent blocks in one read), keeps
// the blocks of the shuffle windows in flight, and queues ready batches (bounded by a count and
// a memory budget) for the training loop.
// Threads: the I/O thread is the only caller of the corpus (and so of HDF5) while a loader is
// alive; next() is called from one consumer thread.
#pragma once

#include <any>
#include <cstdint>
#include <functional>
#include <memory>

#include "data/corpus.h"
#include "data/group_sampler.h"
#include "data/sampler.h"

namespace cellfm::data {

/// `cells`: batch_cells cells per rank per step (data/sampler.h); `groups`: all cells of one
/// group value per rank per step, capped (data/group_sampler.h; CellPLM's sentences).
enum class BatchShape { cells, groups };

struct LoadedBatch;

struct LoaderOptions {
  BatchShape shape = BatchShape::cells;
  SamplerOptions sampler;      ///< the cells shape; block_cells also bounds gaps read in groups
  GroupSamplerOptions groups;  ///< the groups shape
  std::int64_t dp_rank = 0;
  std::int64_t dp_size = 1;
  SamplerState start;  ///< where the stream begins (a checkpoint's state to resume)
  int prefetch_batches = 4;
  std::int64_t memory_budget_bytes = std::int64_t{256} << 20;  ///< queued batches + cached blocks
  /// Applied to every batch before next() returns it (tokenise, collate: fill
  /// LoadedBatch::prepared), on `transform_threads` worker threads, or on the I/O thread when 0.
  /// Batches still arrive in order. It must not call HDF5; an exception it throws is rethrown by
  /// next().
  std::function<void(LoadedBatch&)> transform;
  int transform_threads = 0;
};

struct LoadedBatch {
  std::uint64_t epoch = 0;
  std::int64_t step = 0;     ///< step within the epoch
  CorpusBatch data;          ///< this rank's cells of the step, in sampler order
  SamplerState state_after;  ///< the state to checkpoint once this batch has been trained on
  std::int64_t group = -1;   ///< groups shape: the group's id (Corpus::groups()); -1 otherwise
  std::any prepared;         ///< what LoaderOptions::transform made of the batch
};

class DataLoader {
 public:
  /// Starts the I/O thread. `corpus` must outlive the loader.
  DataLoader(const Corpus& corpus, const LoaderOptions& options);
  ~DataLoader();  ///< stops and joins the I/O thread
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  /// The next batch (blocks until ready); rethrows an error of the I/O thread (e.g. a corrupt
  /// file: InputError naming the file and row).
  LoadedBatch next();

  /// Steps of the starting epoch, the same on every data-parallel rank.
  std::int64_t steps_per_epoch() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

/// The loader options of a spec's data section for one data-parallel rank (batch shape, sampler,
/// group cap, decode and transfer settings live in `data`). Throws UsageError for
/// `data.batch_shape: groups` without `data.group_column`.
LoaderOptions loader_options(const core::DataOptions& data, std::uint64_t seed,
                             std::int64_t dp_rank, std::int64_t dp_size);

/// Bytes a batch holds (for the memory budget and reports).
std::int64_t batch_bytes(const CorpusBatch& batch);

}  // namespace cellfm::data
