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
#include <optional>
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

using Sources = std::vector<std::pair<const CorpusBatch*, std::int64_t>>;  // (read, row) per cell

// The rows `sources` name, in their order, in one batch.
CorpusBatch gather(const Sources& sources) {
  CorpusBatch out;
  std::int64_t nnz = 0;
  for (const auto& [read, row] : sources) {
    nnz += read->cells.offsets[row + 1] - read->cells.offsets[row];
  }
  reserve(out, static_cast<std::int64_t>(sources.size()), nnz, sources);
  for (const auto& [read, row] : sources) append_row(out, *read, row);
  return out;
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
      : corpus(corpus_in), options(options_in) {
    if (options.shape == BatchShape::groups) {
      group_sampler.emplace(corpus.group_runs(), options.groups, options.dp_rank, options.dp_size,
                            options.start);
      steps_per_epoch = group_sampler->steps_per_epoch();
    } else {
      cell_sampler.emplace(corpus.cells(), options.sampler, options.dp_rank, options.dp_size,
                           options.start);
      steps_per_epoch = cell_sampler->epoch_sampler().steps_per_epoch();
    }
  }

  const Corpus& corpus;
  LoaderOptions options;
  // One of the two, owned by the I/O thread after start.
  std::optional<CellSampler> cell_sampler;
  std::optional<GroupSampler> group_sampler;
  std::int64_t steps_per_epoch = 0;

  // The pipeline: the I/O thread numbers batches and queues them in `raw` (or, without transform
  // threads, transforms them itself into `ready`); transform workers move them from `raw` to
  // `ready`; next() takes them from `ready` in number order.
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<std::pair<std::int64_t, LoadedBatch>> raw;
  std::map<std::int64_t, LoadedBatch> ready;
  std::int64_t transforming = 0;  // batches a worker holds
  std::int64_t produced = 0;      // numbers handed out by the I/O thread
  std::int64_t delivered = 0;     // the number next() returns next
  std::int64_t queued_bytes = 0;  // raw, transforming and ready batches (their cells)
  bool stop = false;
  std::exception_ptr failure;
  std::thread thread;
  std::vector<std::thread> workers;

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
  void transform_loop();
  void fail(std::exception_ptr error);
  LoadedBatch next_cells();
  LoadedBatch next_group();
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

LoadedBatch DataLoader::Impl::next_cells() {
  const std::int64_t block_cells = options.sampler.block_cells;
  // Enough blocks for two shuffle windows, so a window's blocks stay while it is consumed.
  const auto keep_blocks = static_cast<std::size_t>(2 * options.sampler.shuffle_blocks + 2);
  const EpochSampler epoch = cell_sampler->epoch_sampler();
  const std::int64_t step = cell_sampler->step();
  const SampledBatch sampled = cell_sampler->next();
  load_blocks(epoch.read_ranges(step, step + 1));
  LoadedBatch loaded;
  loaded.epoch = sampled.epoch;
  loaded.step = sampled.step;
  loaded.state_after = cell_sampler->state();
  std::vector<std::int64_t> pinned;
  Sources sources;
  for (std::int64_t ordinal : sampled.cells) {
    const std::int64_t block = ordinal / block_cells;
    pinned.push_back(block);
    const CachedBlock& cached = blocks.at(block);
    sources.emplace_back(cached.read.get(), cached.first_row + ordinal - block * block_cells);
  }
  loaded.data = gather(sources);
  evict(keep_blocks, pinned);
  return loaded;
}

// A group's cells: its (subsampled) ordinals read in ranges that bridge gaps of up to a block.
LoadedBatch DataLoader::Impl::next_group() {
  const GroupBatch sampled = group_sampler->next();
  LoadedBatch loaded;
  loaded.epoch = sampled.epoch;
  loaded.step = sampled.step;
  loaded.state_after = group_sampler->state();
  loaded.group = sampled.group;
  std::vector<CorpusBatch> reads;
  const std::vector<CellRange> ranges = merge_ordinals(sampled.cells, options.sampler.block_cells);
  reads.reserve(ranges.size());
  Sources sources;
  std::size_t next = 0;  // the next wanted ordinal
  for (const CellRange& range : ranges) {
    reads.push_back(corpus.read(range.begin, range.end));
    for (; next < sampled.cells.size() && sampled.cells[next] < range.end; ++next) {
      sources.emplace_back(&reads.back(), sampled.cells[next] - range.begin);
    }
  }
  loaded.data = gather(sources);
  return loaded;
}

void DataLoader::Impl::fail(std::exception_ptr error) {
  std::lock_guard<std::mutex> lock(mutex);
  if (!failure) failure = error;
  changed.notify_all();
}

void DataLoader::Impl::run() {
  try {
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex);
        changed.wait(lock, [&] {
          const std::int64_t held = produced - delivered;
          return stop || failure ||
                 (held < options.prefetch_batches &&
                  (held == 0 || queued_bytes + cached_bytes <= options.memory_budget_bytes));
        });
        if (stop || failure) return;
      }
      LoadedBatch loaded = group_sampler ? next_group() : next_cells();
      const std::int64_t bytes = batch_bytes(loaded.data);
      const bool inline_transform = options.transform && options.transform_threads == 0;
      if (inline_transform) options.transform(loaded);
      {
        std::lock_guard<std::mutex> lock(mutex);
        queued_bytes += bytes;
        const std::int64_t number = produced++;
        if (options.transform && !inline_transform) {
          raw.emplace_back(number, std::move(loaded));
        } else {
          ready.emplace(number, std::move(loaded));
        }
      }
      changed.notify_all();
    }
  } catch (...) {
    fail(std::current_exception());
  }
}

void DataLoader::Impl::transform_loop() {
  for (;;) {
    std::pair<std::int64_t, LoadedBatch> item;
    {
      std::unique_lock<std::mutex> lock(mutex);
      changed.wait(lock, [&] { return stop || failure || !raw.empty(); });
      if (stop || failure) return;
      item = std::move(raw.front());
      raw.pop_front();
      ++transforming;
    }
    try {
      options.transform(item.second);
    } catch (...) {
      fail(std::current_exception());
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      --transforming;
      ready.emplace(item.first, std::move(item.second));
    }
    changed.notify_all();
  }
}

DataLoader::DataLoader(const Corpus& corpus, const LoaderOptions& options) {
  CELLFM_CHECK(options.prefetch_batches >= 1, "prefetch_batches must be at least 1");
  CELLFM_CHECK(options.transform_threads >= 0, "transform_threads must not be negative");
  impl_ = std::make_unique<Impl>(corpus, options);
  impl_->thread = std::thread([this] { impl_->run(); });
  if (options.transform) {
    for (int i = 0; i < options.transform_threads; ++i) {
      impl_->workers.emplace_back([this] { impl_->transform_loop(); });
    }
  }
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stop = true;
  }
  impl_->changed.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
  for (auto& worker : impl_->workers) worker.join();
}

LoadedBatch DataLoader::next() {
  std::unique_lock<std::mutex> lock(impl_->mutex);
  const auto available = [&] {
    return !impl_->ready.empty() && impl_->ready.begin()->first == impl_->delivered;
  };
  impl_->changed.wait(lock, [&] { return available() || impl_->failure; });
  if (!available()) std::rethrow_exception(impl_->failure);
  LoadedBatch batch = std::move(impl_->ready.begin()->second);
  impl_->ready.erase(impl_->ready.begin());
  ++impl_->delivered;
  impl_->queued_bytes -= batch_bytes(batch.data);
  lock.unlock();
  impl_->changed.notify_all();
  return batch;
}

LoaderOptions loader_options(const core::DataOptions& data, std::uint64_t seed,
                             std::int64_t dp_rank, std::int64_t dp_size) {
  LoaderOptions options;
  options.shape = data.batch_shape == "groups" ? BatchShape::groups : BatchShape::cells;
  if (options.shape == BatchShape::groups && data.group_column.empty()) {
    throw core::UsageError(
        "data.batch_shape: groups needs data.group_column (the obs column naming each cell's "
        "sample or FOV)");
  }
  options.sampler.seed = seed;
  options.sampler.block_cells = data.block_cells;
  options.sampler.shuffle_blocks = data.shuffle_blocks;
  options.sampler.batch_cells = data.batch_cells;
  options.groups.seed = seed;
  options.groups.max_cells = data.group_max_cells;
  options.dp_rank = dp_rank;
  options.dp_size = dp_size;
  options.start.dp_history = {{0, dp_size}};
  return options;
}

std::int64_t DataLoader::steps_per_epoch() const {
  return impl_->steps_per_epoch;
}

}  // namespace cellfm::data
