// DataLoader: the I/O thread, the block cache and the bounded batch queue.
#include "data/loader.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "core/error.h"

namespace cellfm::data {
namespace {

// Appends row `row` of `source` (with its metadata) to `out`.
void append_row(CorpusBatch& out, const CorpusBatch& source, std::int64_t row) {
  const CsrBatch& from = source.cells;
  CsrBatch& to = out.cells;
  to.genes.insert(to.genes.end(), from.genes.begin() + from.offsets[row],
                  from.genes.begin() + from.offsets[row + 1]);
  to.values.insert(to.values.end(), from.values.begin() + from.offsets[row],
                   from.values.begin() + from.offsets[row + 1]);
  to.offsets.push_back(static_cast<std::int64_t>(to.genes.size()));
  to.cell_ids.push_back(from.cell_ids[row]);
  if (!source.labels.empty()) out.labels.push_back(source.labels[row]);
  if (!source.groups.empty()) out.groups.push_back(source.groups[row]);
  if (!source.spatial.empty()) {
    out.spatial.push_back(source.spatial[2 * row]);
    out.spatial.push_back(source.spatial[2 * row + 1]);
  }
}

// Room for `cells` rows with `nnz` entries (and the metadata the sources carry).
void reserve(CorpusBatch& out, std::int64_t cells, std::int64_t nnz,
             const std::vector<std::pair<const CorpusBatch*, std::int64_t>>& sources) {
  const auto n = static_cast<std::size_t>(cells);
  out.cells.offsets.reserve(n + 1);
  out.cells.cell_ids.reserve(n);
  out.cells.genes.reserve(static_cast<std::size_t>(nnz));
  out.cells.values.reserve(static_cast<std::size_t>(nnz));
  if (sources.empty()) return;
  const CorpusBatch& first = *sources.front().first;
  if (!first.labels.empty()) out.labels.reserve(n);
  if (!first.groups.empty()) out.groups.reserve(n);
  if (!first.spatial.empty()) out.spatial.reserve(2 * n);
}

// Bytes of rows [begin, end) of `source`: a block's share of the read that holds it.
std::int64_t rows_bytes(const CorpusBatch& source, std::int64_t begin, std::int64_t end) {
  const std::int64_t cells = end - begin;
  const std::int64_t nnz = source.cells.offsets[end] - source.cells.offsets[begin];
  return nnz * static_cast<std::int64_t>(sizeof(std::int32_t) + sizeof(float)) +
         cells * static_cast<std::int64_t>(2 * sizeof(std::int64_t) + 2 * sizeof(std::int32_t) +
                                           2 * sizeof(float));
}

}  // namespace

std::int64_t batch_bytes(const CorpusBatch& batch) {
  const CsrBatch& c = batch.cells;
  return static_cast<std::int64_t>(
      (c.offsets.size() + c.cell_ids.size()) * sizeof(std::int64_t) +
      c.genes.size() * sizeof(std::int32_t) + c.values.size() * sizeof(float) +
      (batch.labels.size() + batch.groups.size()) * sizeof(std::int32_t) +
      batch.spatial.size() * sizeof(float));
}

struct DataLoader::Impl {
  Impl(const Corpus& corpus_in, const LoaderOptions& options_in)
      : corpus(corpus_in),
        options(options_in),
        sampler(corpus_in.cells(), options_in.sampler, options_in.dp_rank, options_in.dp_size,
                options_in.start),
        steps_per_epoch(sampler.epoch_sampler().steps_per_epoch()) {}

  const Corpus& corpus;
  LoaderOptions options;
  CellSampler sampler;  // owned by the I/O thread after start
  const std::int64_t steps_per_epoch;

  std::mutex mutex;
  std::condition_variable changed;
  std::deque<LoadedBatch> queue;
  std::int64_t queued_bytes = 0;
  bool stop = false;
  std::exception_ptr failure;
  std::thread thread;

  // Block cache (I/O thread only): block id -> where its cells are, most recently used first.
  // Adjacent blocks read together share one read; it is freed with the last of them.
  struct CachedBlock {
    std::shared_ptr<const CorpusBatch> read;
    std::int64_t first_row = 0;  ///< the block's first cell within `read`
    std::int64_t bytes = 0;      ///< the block's share of `read`
  };
  std::map<std::int64_t, CachedBlock> blocks;
  std::list<std::int64_t> recency;
  std::int64_t cached_bytes = 0;

  void run();
  void load_blocks(const std::vector<CellRange>& ranges);
  void touch(std::int64_t block);
  void evict(std::size_t keep_blocks, const std::vector<std::int64_t>& pinned);
};

void DataLoader::Impl::touch(std::int64_t block) {
  recency.remove(block);
  recency.push_front(block);
}

void DataLoader::Impl::evict(std::size_t keep_blocks, const std::vector<std::int64_t>& pinned) {
  auto it = recency.end();
  while (blocks.size() > keep_blocks && it != recency.begin()) {
    --it;
    if (std::find(pinned.begin(), pinned.end(), *it) != pinned.end()) continue;
    cached_bytes -= blocks[*it].bytes;
    blocks.erase(*it);
    it = recency.erase(it);
  }
}

// Reads the blocks of `ranges` that are not cached; consecutive missing blocks in one read.
void DataLoader::Impl::load_blocks(const std::vector<CellRange>& ranges) {
  const std::int64_t block_cells = options.sampler.block_cells;
  const std::int64_t total = corpus.cells();
  for (const CellRange& range : ranges) {
    std::int64_t block = range.begin / block_cells;
    const std::int64_t last = (range.end - 1) / block_cells;
    while (block <= last) {
      if (blocks.count(block)) {
        touch(block);
        ++block;
        continue;
      }
      std::int64_t run_end = block;
      while (run_end + 1 <= last && !blocks.count(run_end + 1)) ++run_end;
      const std::int64_t begin = block * block_cells;
      const std::int64_t end = std::min(total, (run_end + 1) * block_cells);
      const auto data = std::make_shared<const CorpusBatch>(corpus.read(begin, end));
      for (std::int64_t b = block; b <= run_end; ++b) {
        const std::int64_t row_begin = b * block_cells - begin;
        const std::int64_t row_end = std::min(end, (b + 1) * block_cells) - begin;
        const std::int64_t bytes = rows_bytes(*data, row_begin, row_end);
        cached_bytes += bytes;
        blocks.emplace(b, CachedBlock{data, row_begin, bytes});
        touch(b);
      }
      block = run_end + 1;
    }
  }
}

void DataLoader::Impl::run() {
  try {
    const std::int64_t block_cells = options.sampler.block_cells;
    // Enough blocks for two shuffle windows, so a window's blocks stay while it is consumed.
    const auto keep_blocks = static_cast<std::size_t>(2 * options.sampler.shuffle_blocks + 2);
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex);
        changed.wait(lock, [&] {
          return stop ||
                 (static_cast<int>(queue.size()) < options.prefetch_batches &&
                  (queue.empty() || queued_bytes + cached_bytes <= options.memory_budget_bytes));
        });
        if (stop) return;
      }
      const EpochSampler epoch = sampler.epoch_sampler();
      const std::int64_t step = sampler.step();
      const SampledBatch sampled = sampler.next();
      load_blocks(epoch.read_ranges(step, step + 1));
      LoadedBatch loaded;
      loaded.epoch = sampled.epoch;
      loaded.step = sampled.step;
      loaded.state_after = sampler.state();
      std::vector<std::int64_t> pinned;
      std::vector<std::pair<const CorpusBatch*, std::int64_t>> sources;  // (read, row) per cell
      std::int64_t nnz = 0;
      for (std::int64_t ordinal : sampled.cells) {
        const std::int64_t block = ordinal / block_cells;
        pinned.push_back(block);
        const CachedBlock& cached = blocks.at(block);
        const std::int64_t row = cached.first_row + ordinal - block * block_cells;
        sources.emplace_back(cached.read.get(), row);
        nnz += cached.read->cells.offsets[row + 1] - cached.read->cells.offsets[row];
      }
      reserve(loaded.data, static_cast<std::int64_t>(sources.size()), nnz, sources);
      for (const auto& [read, row] : sources) append_row(loaded.data, *read, row);
      evict(keep_blocks, pinned);
      const std::int64_t bytes = batch_bytes(loaded.data);
      {
        std::lock_guard<std::mutex> lock(mutex);
        queued_bytes += bytes;
        queue.push_back(std::move(loaded));
      }
      changed.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex);
    failure = std::current_exception();
    changed.notify_all();
  }
}

DataLoader::DataLoader(const Corpus& corpus, const LoaderOptions& options)
    : impl_(std::make_unique<Impl>(corpus, options)) {
  CELLFM_CHECK(options.prefetch_batches >= 1, "prefetch_batches must be at least 1");
  impl_->thread = std::thread([this] { impl_->run(); });
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stop = true;
  }
  impl_->changed.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

LoadedBatch DataLoader::next() {
  std::unique_lock<std::mutex> lock(impl_->mutex);
  impl_->changed.wait(lock, [&] { return !impl_->queue.empty() || impl_->failure; });
  if (impl_->queue.empty()) std::rethrow_exception(impl_->failure);
  LoadedBatch batch = std::move(impl_->queue.front());
  impl_->queue.pop_front();
  impl_->queued_bytes -= batch_bytes(batch.data);
  lock.unlock();
  impl_->changed.notify_all();
  return batch;
}

std::int64_t DataLoader::steps_per_epoch() const {
  return impl_->steps_per_epoch;
}

}  // namespace cellfm::data
