// DataLoader: planning batches from the sampler, reads through the IoExecutor, the block cache,
// worker threads that finish reads and gather batches, and the bounded, ordered batch queue.
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
#include "data/batch_assembly.h"
#include "data/length_grouping.h"

namespace cellfm::data {
namespace {

// One read of kept cells [begin, end): queued on the executor, fetched there, then finished
// (checked, remapped) by a worker: the first that needs it, or an idle one ahead of need.
// Guarded by the loader's mutex.
struct Read {
  enum class Stage { queued, fetched, finishing, ready, failed };
  Read(std::int64_t begin_in, std::int64_t end_in, std::shared_ptr<BufferPool> pool_in)
      : begin(begin_in), end(end_in), pool(std::move(pool_in)) {}
  ~Read() { pool->give(std::move(batch.cells)); }
  Read(const Read&) = delete;
  Read& operator=(const Read&) = delete;

  std::int64_t begin;
  std::int64_t end;
  std::shared_ptr<BufferPool> pool;  // receives the buffers back
  Stage stage = Stage::queued;
  CorpusFetch fetched;  // fetched
  CorpusBatch batch;    // ready: cells [begin, end) in order
  std::int64_t bytes = 0;
  std::exception_ptr error;  // failed
  int cached_blocks = 0;     // cells shape: blocks of the cache that point here
  bool counted = false;      // its bytes are in the cache's total
};

// One batch in the making: where each of its cells is.
struct Plan {
  std::int64_t number = 0;
  LoadedBatch loaded;                                      // without data yet
  std::vector<std::shared_ptr<Read>> reads;                // the reads it needs, each once
  std::vector<std::pair<std::size_t, std::int64_t>> rows;  // (index into reads, row in the read)
  // Length grouping: `rows` holds the whole group's cells in the sampler's order, and the batch
  // is the share of the group's step `step_in_group` (data/length_grouping.h).
  bool grouped = false;
  std::size_t step_in_group = 0;
  std::vector<std::int64_t> step_sizes;
  std::uint64_t group_key = 0;
};

// Thrown inside a worker to unwind when the loader stops.
struct Stopped {};

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
    if (options.group_by_length) {
      if (options.shape == BatchShape::groups) {
        throw core::UsageError(
            "data.group_by_length applies to data.batch_shape: cells, not to whole groups");
      }
      check_length_grouped_start(options.start, options.sampler, options.dp_size);
    }
    if (options.shape == BatchShape::groups) {
      group_sampler.emplace(corpus.group_runs(), options.groups, options.dp_rank, options.dp_size,
                            options.start);
      steps_per_epoch = group_sampler->steps_per_epoch();
    } else {
      cell_sampler.emplace(corpus.cells(), options.sampler, options.dp_rank, options.dp_size,
                           options.start);
      steps_per_epoch = cell_sampler->epoch_sampler().steps_per_epoch();
    }
    io = options.io ? options.io : std::make_shared<IoExecutor>();
    owner = io->new_owner();
    // Enough spares for the reads and gathers in flight; beyond the memory budget's count.
    pool = std::make_shared<BufferPool>(static_cast<std::size_t>(
        keep_blocks() + options.prefetch_batches + 2 * options.worker_threads));
  }

  const Corpus& corpus;
  LoaderOptions options;
  std::shared_ptr<IoExecutor> io;
  IoExecutor::Owner owner = 0;
  std::shared_ptr<BufferPool> pool;
  // Advanced under `mutex` by the worker planning the next batch.
  std::optional<CellSampler> cell_sampler;
  std::optional<GroupSampler> group_sampler;
  std::int64_t steps_per_epoch = 0;
  std::optional<LengthGroup> length_group;  // with group_by_length: the group being planned

  // Workers take batch numbers in order (planning under the mutex), assemble and transform them
  // in parallel and file them in `ready`; next() takes them from `ready` in number order.
  std::mutex mutex;
  std::condition_variable changed;
  std::map<std::int64_t, LoadedBatch> ready;
  std::int64_t produced = 0;      // numbers handed out
  std::int64_t delivered = 0;     // the number next() returns next
  std::int64_t assembling = 0;    // numbers handed out, not yet in `ready`
  std::int64_t queued_bytes = 0;  // ready batches (their cells)
  bool stop = false;
  std::exception_ptr failure;
  std::vector<std::thread> workers;

  // Block cache (cells shape): block id -> its read and first row there, most recently used
  // first. Adjacent blocks read together share one read; it is freed with the last of them and
  // the last batch using it.
  struct CachedBlock {
    std::shared_ptr<Read> read;
    std::int64_t first_row = 0;
  };
  std::map<std::int64_t, CachedBlock> blocks;
  // Fetched reads no worker has finished yet, in fetch order: a worker with nothing else to do
  // finishes them ahead of need.
  std::deque<std::shared_ptr<Read>> to_finish;
  std::list<std::int64_t> recency;
  std::int64_t cached_bytes = 0;

  // Blocks the cache keeps: the shuffle windows that steps read ahead span (two, plus the blocks
  // of a batch that straddles them), so a window's blocks stay while it is consumed; a length
  // group (at most a window's worth of cells, behind the read-ahead) may span one more window.
  std::size_t keep_blocks() const {
    const SamplerOptions& s = options.sampler;
    return static_cast<std::size_t>((options.group_by_length ? 3 : 2) * s.shuffle_blocks + 2 +
                                    (s.batch_cells + s.block_cells - 1) / s.block_cells);
  }
  bool may_plan() const {
    const std::int64_t held = produced - delivered;
    return held < options.prefetch_batches &&
           (held == 0 || queued_bytes + cached_bytes <= options.memory_budget_bytes);
  }
  void work();
  Plan plan_cells();
  Plan plan_group();
  std::shared_ptr<Read> submit_read(std::int64_t begin, std::int64_t end);
  void finish(std::unique_lock<std::mutex>& lock, Read& read);
  bool finish_next(std::unique_lock<std::mutex>& lock);
  void wait_ready(Read& read);
  LoadedBatch assemble(Plan& plan);
  void touch(std::int64_t block);
  void evict(std::size_t keep_blocks, const std::vector<std::int64_t>& pinned);
};

// Queues the read of cells [begin, end) on the executor (caller holds the mutex).
std::shared_ptr<Read> DataLoader::Impl::submit_read(std::int64_t begin, std::int64_t end) {
  auto read = std::make_shared<Read>(begin, end, pool);
  io->submit(owner, [this, read] {
    CorpusFetch fetched;
    std::exception_ptr error;
    try {
      fetched = corpus.fetch(read->begin, read->end, pool->take());
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (error) {
        read->error = error;
        read->stage = Read::Stage::failed;
      } else {
        read->fetched = std::move(fetched);
        read->stage = Read::Stage::fetched;
        to_finish.push_back(read);
      }
    }
    changed.notify_all();
  });
  return read;
}

// Finishes `read` (stage fetched) on this thread; `lock` holds the mutex on entry and on return.
void DataLoader::Impl::finish(std::unique_lock<std::mutex>& lock, Read& read) {
  read.stage = Read::Stage::finishing;
  CorpusFetch fetched = std::move(read.fetched);
  lock.unlock();
  std::optional<CorpusBatch> batch;
  std::exception_ptr error;
  try {
    batch.emplace(corpus.finish(std::move(fetched)));
  } catch (...) {
    error = std::current_exception();
  }
  lock.lock();
  if (error) {
    read.error = error;
    read.stage = Read::Stage::failed;
  } else {
    read.batch = std::move(*batch);
    read.bytes = batch_bytes(read.batch);
    read.stage = Read::Stage::ready;
    if (read.cached_blocks > 0) {
      cached_bytes += read.bytes;
      read.counted = true;
    }
  }
  changed.notify_all();
}

// Finishes the oldest fetched read nobody has claimed; false when there is none. `lock` as above.
bool DataLoader::Impl::finish_next(std::unique_lock<std::mutex>& lock) {
  while (!to_finish.empty()) {
    const std::shared_ptr<Read> read = std::move(to_finish.front());
    to_finish.pop_front();
    if (read->stage != Read::Stage::fetched) continue;  // claimed by the worker that needed it
    finish(lock, *read);
    return true;
  }
  return false;
}

// Returns once `read` is ready, finishing it (or other fetched reads) here while it is not;
// rethrows its error; throws Stopped when the loader stops.
void DataLoader::Impl::wait_ready(Read& read) {
  std::unique_lock<std::mutex> lock(mutex);
  for (;;) {
    if (read.stage == Read::Stage::ready) return;
    if (read.stage == Read::Stage::failed) std::rethrow_exception(read.error);
    if (stop) throw Stopped{};
    if (read.stage == Read::Stage::fetched) {
      finish(lock, read);
    } else if (!finish_next(lock)) {
      changed.wait(lock);
    }
  }
}

void DataLoader::Impl::touch(std::int64_t block) {
  recency.remove(block);
  recency.push_front(block);
}

void DataLoader::Impl::evict(std::size_t keep_blocks, const std::vector<std::int64_t>& pinned) {
  auto it = recency.end();
  while (blocks.size() > keep_blocks && it != recency.begin()) {
    --it;
    if (std::find(pinned.begin(), pinned.end(), *it) != pinned.end()) continue;
    Read& read = *blocks[*it].read;
    if (--read.cached_blocks == 0 && read.counted) {
      cached_bytes -= read.bytes;
      read.counted = false;
    }
    blocks.erase(*it);
    it = recency.erase(it);
  }
}

// The next step of the cells shape: the blocks of its read ranges that are not cached are
// queued (consecutive missing blocks in one read), and each cell is found in its block.
Plan DataLoader::Impl::plan_cells() {
  const std::int64_t block_cells = options.sampler.block_cells;
  const std::int64_t total = corpus.cells();
  const std::int64_t window_cells = options.sampler.shuffle_blocks * block_cells;
  // Reads run a shuffle window's worth of steps ahead, so the next window's blocks arrive while
  // this one is consumed instead of all at once when it starts.
  const std::int64_t ahead =
      (window_cells + options.sampler.batch_cells - 1) / options.sampler.batch_cells;
  const EpochSampler epoch = cell_sampler->epoch_sampler();
  const std::int64_t step = cell_sampler->step();
  const SampledBatch sampled = cell_sampler->next();
  const std::int64_t read_end = std::min(epoch.steps_per_epoch(), step + 1 + ahead);
  std::vector<CellRange> ranges = epoch.read_ranges(step, read_end);
  if (options.group_by_length) {
    if (!length_group || length_group->epoch != sampled.epoch || step < length_group->first_step ||
        step >= length_group->end_step) {
      length_group.emplace(data::length_group(corpus.cells(), options.sampler, options.dp_rank,
                                              options.dp_size, epoch, step));
    }
    // The whole group's blocks first: this step's cells are known once all of them are read.
    ranges.insert(ranges.begin(), length_group->read_ranges.begin(),
                  length_group->read_ranges.end());
  }
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
      const std::shared_ptr<Read> read = submit_read(begin, end);
      for (std::int64_t b = block; b <= run_end; ++b) {
        blocks.emplace(b, CachedBlock{read, b * block_cells - begin});
        ++read->cached_blocks;
        touch(b);
      }
      block = run_end + 1;
    }
  }
  Plan plan;
  plan.loaded.epoch = sampled.epoch;
  plan.loaded.step = sampled.step;
  plan.loaded.state_after = cell_sampler->state();
  if (options.group_by_length) {
    plan.grouped = true;
    plan.step_in_group = static_cast<std::size_t>(step - length_group->first_step);
    plan.step_sizes = length_group->step_sizes;
    plan.group_key = length_group->key;
  }
  std::vector<std::int64_t> pinned;
  for (std::int64_t ordinal : plan.grouped ? length_group->cells : sampled.cells) {
    const std::int64_t block = ordinal / block_cells;
    pinned.push_back(block);
    const CachedBlock& cached = blocks.at(block);
    std::size_t index = 0;
    while (index < plan.reads.size() && plan.reads[index] != cached.read) ++index;
    if (index == plan.reads.size()) plan.reads.push_back(cached.read);
    plan.rows.emplace_back(index, cached.first_row + ordinal - block * block_cells);
  }
  std::sort(pinned.begin(), pinned.end());
  pinned.erase(std::unique(pinned.begin(), pinned.end()), pinned.end());
  evict(keep_blocks(), pinned);
  return plan;
}

// The next group: its (subsampled) ordinals read in ranges that bridge gaps of up to a block.
Plan DataLoader::Impl::plan_group() {
  const GroupBatch sampled = group_sampler->next();
  Plan plan;
  plan.loaded.epoch = sampled.epoch;
  plan.loaded.step = sampled.step;
  plan.loaded.state_after = group_sampler->state();
  plan.loaded.group = sampled.group;
  std::size_t next = 0;  // the next wanted ordinal
  for (const CellRange& range : merge_ordinals(sampled.cells, options.sampler.block_cells)) {
    plan.reads.push_back(submit_read(range.begin, range.end));
    for (; next < sampled.cells.size() && sampled.cells[next] < range.end; ++next) {
      plan.rows.emplace_back(plan.reads.size() - 1, sampled.cells[next] - range.begin);
    }
  }
  return plan;
}

LoadedBatch DataLoader::Impl::assemble(Plan& plan) {
  for (const auto& read : plan.reads) wait_ready(*read);
  std::vector<RowSource> sources;
  sources.reserve(plan.rows.size());
  for (const auto& [index, row] : plan.rows) sources.push_back({&plan.reads[index]->batch, row});
  if (plan.grouped) {
    sources = length_grouped_rows(sources, plan.step_sizes, plan.group_key, plan.step_in_group);
  }
  LoadedBatch loaded = std::move(plan.loaded);
  loaded.data = gather_rows(sources, pool->take());
  loaded.corpus = &corpus;
  plan.reads.clear();  // a read no block points to any more is freed (its buffers recycled) here
  if (options.transform) options.transform(loaded);
  return loaded;
}

void DataLoader::Impl::work() {
  for (;;) {
    Plan plan;
    {
      std::unique_lock<std::mutex> lock(mutex);
      changed.wait(lock, [&] { return stop || failure || may_plan() || !to_finish.empty(); });
      if (stop || failure) return;
      if (!may_plan()) {
        finish_next(lock);  // a read ahead of need, while the queue of batches is full
        continue;
      }
      try {
        plan = group_sampler ? plan_group() : plan_cells();
      } catch (...) {
        if (!failure) failure = std::current_exception();
        changed.notify_all();
        return;
      }
      plan.number = produced++;
      ++assembling;
    }
    std::optional<LoadedBatch> loaded;
    std::exception_ptr error;
    try {
      loaded.emplace(assemble(plan));
    } catch (const Stopped&) {
      return;
    } catch (...) {
      error = std::current_exception();
    }
    plan.reads.clear();  // outside the mutex: may recycle buffers
    {
      std::lock_guard<std::mutex> lock(mutex);
      --assembling;
      if (error) {
        if (!failure) failure = error;
      } else {
        queued_bytes += batch_bytes(loaded->data);
        ready.emplace(plan.number, std::move(*loaded));
      }
    }
    changed.notify_all();
    if (error) return;
  }
}

DataLoader::DataLoader(const Corpus& corpus, const LoaderOptions& options) {
  CELLFM_CHECK(options.prefetch_batches >= 1, "prefetch_batches must be at least 1");
  CELLFM_CHECK(options.worker_threads >= 1, "worker_threads must be at least 1");
  impl_ = std::make_unique<Impl>(corpus, options);
  for (int i = 0; i < options.worker_threads; ++i) {
    impl_->workers.emplace_back([impl = impl_.get()] { impl->work(); });
  }
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stop = true;
  }
  impl_->changed.notify_all();
  // No job of this loader runs after cancel; the workers waiting on its reads see `stop`.
  impl_->io->cancel(impl_->owner);
  for (auto& worker : impl_->workers) worker.join();
}

LoadedBatch DataLoader::next() {
  std::unique_lock<std::mutex> lock(impl_->mutex);
  const auto available = [&] {
    return !impl_->ready.empty() && impl_->ready.begin()->first == impl_->delivered;
  };
  // After a failure, the batches planned before it are still delivered.
  impl_->changed.wait(lock,
                      [&] { return available() || (impl_->failure && impl_->assembling == 0); });
  if (!available()) std::rethrow_exception(impl_->failure);
  LoadedBatch batch = std::move(impl_->ready.begin()->second);
  impl_->ready.erase(impl_->ready.begin());
  ++impl_->delivered;
  impl_->queued_bytes -= batch_bytes(batch.data);
  lock.unlock();
  impl_->changed.notify_all();
  return batch;
}

void DataLoader::recycle(CorpusBatch&& used) {
  impl_->pool->give(std::move(used.cells));
}

std::int64_t DataLoader::steps_per_epoch() const {
  return impl_->steps_per_epoch;
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
  if (data.group_by_length && options.shape == BatchShape::groups) {
    throw core::UsageError(
        "data.group_by_length applies to data.batch_shape: cells (a groups batch holds a whole "
        "group whatever its cells' lengths); set one of them differently");
  }
  options.group_by_length = data.group_by_length;
  options.dp_rank = dp_rank;
  options.dp_size = dp_size;
  options.start.dp_history = {{0, dp_size}};
  return options;
}

}  // namespace cellfm::data
