// The prefetching data loader of one data-parallel rank: it follows the sampler, has the blocks
// each step needs read (adjacent blocks in one read) through an IoExecutor it may share with
// other loaders, keeps the blocks of the shuffle windows cached, and has worker threads check,
// remap and gather them into batches and transform those; ready batches queue (bounded by a count
// and a memory budget) for the training loop, in order.
// Threads: every HDF5 call of the loader runs on the executor's thread, so several loaders on one
// executor (the training and held-out streams) may live and run together; next() is called from
// one consumer thread.
#pragma once

#include <any>
#include <cstdint>
#include <functional>
#include <memory>

#include "data/corpus.h"
#include "data/group_sampler.h"
#include "data/io_executor.h"
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
  /// LoadedBatch::prepared), on the worker threads; batches still arrive in order. It must not call
  /// HDF5; an exception it throws is rethrown by next().
  std::function<void(LoadedBatch&)> transform;
  /// Threads that check and remap read blocks, gather batches from them and apply `transform`
  /// (at least 1).
  int worker_threads = 2;
  /// Cells shape: batches of cells with similar stored gene counts within groups of steps
  /// (data/length_grouping.h; Hugging Face's group_by_length), still each cell once per epoch
  /// and resumable from any batch's state. A start that changes the dp size inside a group is
  /// refused (InputError).
  bool group_by_length = false;
  /// The thread making the loader's HDF5 calls, shared with the other loaders alive at the same
  /// time. Null: the loader starts its own, and must then be the process's only HDF5 user while it
  /// lives.
  std::shared_ptr<IoExecutor> io;
};

struct LoadedBatch {
  std::uint64_t epoch = 0;
  std::int64_t step = 0;     ///< step within the epoch
  CorpusBatch data;          ///< this rank's cells of the step, in sampler order
  SamplerState state_after;  ///< the state to checkpoint once this batch has been trained on
  std::int64_t group = -1;   ///< groups shape: the group's id (Corpus::groups()); -1 otherwise
  const Corpus* corpus = nullptr;  ///< the corpus the cells come from (their files, groups)
  std::any prepared;               ///< what LoaderOptions::transform made of the batch
};

class DataLoader {
 public:
  /// Starts the worker threads (and an I/O executor unless options.io names one). `corpus` must
  /// outlive the loader; the executor lives as long as any loader holds it.
  DataLoader(const Corpus& corpus, const LoaderOptions& options);
  /// Stops the workers, drops the loader's queued reads and waits for its running one; the other
  /// loaders of the executor carry on.
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  /// The next batch (blocks until ready); rethrows an error of its reads, checks or transform
  /// (e.g. a corrupt file: InputError naming the file and row).
  LoadedBatch next();

  /// Optional: hands a consumed batch's buffers back, so a later batch reuses their memory instead
  /// of faulting in fresh pages.
  void recycle(CorpusBatch&& used);

  /// Steps of the starting epoch, the same on every data-parallel rank.
  std::int64_t steps_per_epoch() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

/// The loader options of a spec's data section for one data-parallel rank (batch shape, sampler,
/// group cap, length grouping, decode and transfer settings live in `data`). Throws UsageError
/// for `data.batch_shape: groups` without `data.group_column`, or with data.group_by_length.
LoaderOptions loader_options(const core::DataOptions& data, std::uint64_t seed,
                             std::int64_t dp_rank, std::int64_t dp_size);

/// Bytes a batch holds (for the memory budget and reports).
std::int64_t batch_bytes(const CorpusBatch& batch);

}  // namespace cellfm::data
