// The prefetching loader on the anndata-written corpus fixture, where cell g stores g + 1 in each
// gene it expresses: every kept cell exactly once per epoch across the data-parallel ranks (the
// world), also across a change of the rank count mid-epoch; each batch's cells identical to a
// direct corpus read; exact continuation from a batch's state; progress under a tiny memory
// budget; group batches; transforms on worker threads.
#include "data/loader.h"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "core/error.h"
#include "data/length_grouping.h"
#include "tests/data/corpus_fixture.h"

namespace cellfm::data {
namespace {

class LoaderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fixture_ = new testing::CorpusFixture(parallel::Comm::world());
    path_ = &fixture_->path();
  }
  static void TearDownTestSuite() { delete fixture_; }
  CorpusOptions corpus_options() const {
    CorpusOptions o;
    o.files = {*path_ + "/*.h5ad"};
    o.label_column = "cell_type";
    return o;
  }
  LoaderOptions loader_options() const {
    LoaderOptions o;
    o.sampler.seed = 5;
    o.sampler.block_cells = 2;
    o.sampler.shuffle_blocks = 2;
    o.sampler.batch_cells = 3;
    o.dp_rank = world.rank();
    o.dp_size = world.size();
    o.start.dp_history = {{0, world.size()}};
    return o;
  }
  // Row r of `batch` equals the corpus's own read of that cell.
  static void expect_rows_match_corpus(const Corpus& corpus, const CorpusBatch& batch) {
    for (std::int64_t r = 0; r < batch.cells.cells(); ++r) {
      const std::int64_t ordinal = batch.cells.cell_ids[r];
      const CorpusBatch direct = corpus.read(ordinal, ordinal + 1);
      const auto& c = batch.cells;
      EXPECT_EQ(std::vector<std::int32_t>(c.genes.begin() + c.offsets[r],
                                          c.genes.begin() + c.offsets[r + 1]),
                direct.cells.genes);
      EXPECT_EQ(
          std::vector<float>(c.values.begin() + c.offsets[r], c.values.begin() + c.offsets[r + 1]),
          direct.cells.values);
      EXPECT_EQ(batch.labels[r], direct.labels[0]);
    }
  }

  parallel::Comm world = parallel::Comm::world();
  static testing::CorpusFixture* fixture_;
  static const std::string* path_;
};
testing::CorpusFixture* LoaderTest::fixture_ = nullptr;
const std::string* LoaderTest::path_ = nullptr;

TEST_F(LoaderTest, AnEpochCoversEveryCellOnceAcrossRanks) {
  const Corpus corpus(corpus_options(), world);
  std::vector<LoadedBatch> batches;
  std::int64_t steps = 0;
  {
    DataLoader loader(corpus, loader_options());
    steps = loader.steps_per_epoch();
    for (std::int64_t step = 0; step < steps; ++step) batches.push_back(loader.next());
    // The stream rolls over into the next epoch.
    EXPECT_EQ(loader.next().epoch, 1u);
  }  // the loader's I/O thread is the corpus's only user while it lives: compare after it stops
  EXPECT_EQ(steps, (corpus.cells() + 3 * world.size() - 1) / (3 * world.size()));
  std::int64_t mine = 0;
  std::int64_t checksum = 0;  // sum over cells of (ordinal + 1)^2: exact, order-free
  for (std::int64_t step = 0; step < steps; ++step) {
    const LoadedBatch& batch = batches[static_cast<std::size_t>(step)];
    EXPECT_EQ(batch.step, step);
    EXPECT_EQ(batch.epoch, 0u);
    expect_rows_match_corpus(corpus, batch.data);
    for (std::int64_t id : batch.data.cells.cell_ids) {
      ++mine;
      checksum += (id + 1) * (id + 1);
    }
  }
  const std::int64_t n = corpus.cells();
  EXPECT_EQ(world.allreduce_sum(mine), n);
  EXPECT_EQ(world.allreduce_sum(checksum), n * (n + 1) * (2 * n + 1) / 6);
}

TEST_F(LoaderTest, ResumingFromABatchStateContinuesIdentically) {
  const Corpus corpus(corpus_options(), world);
  std::vector<std::vector<std::int64_t>> uninterrupted;
  SamplerState resume_at;
  {
    DataLoader loader(corpus, loader_options());
    for (int i = 0; i < 9; ++i) {
      const LoadedBatch batch = loader.next();
      if (i == 3) resume_at = batch.state_after;
      if (i > 3) uninterrupted.push_back(batch.data.cells.cell_ids);
    }
  }
  LoaderOptions options = loader_options();
  options.start = resume_at;
  DataLoader resumed(corpus, options);
  for (const auto& expected : uninterrupted) {
    EXPECT_EQ(resumed.next().data.cells.cell_ids, expected);
  }
}

TEST_F(LoaderTest, ATinyMemoryBudgetStillMakesProgress) {
  const Corpus corpus(corpus_options(), world);
  LoaderOptions options = loader_options();
  options.memory_budget_bytes = 1;
  options.prefetch_batches = 1;
  DataLoader loader(corpus, options);
  std::int64_t cells = 0;
  for (std::int64_t step = 0; step < loader.steps_per_epoch(); ++step) {
    cells += loader.next().data.cells.cells();
  }
  EXPECT_EQ(world.allreduce_sum(cells), corpus.cells());
}

// The fixture's cell number g of kept ordinal o: cell 7 is empty and skipped.
std::int64_t source_cell(std::int64_t ordinal) {
  return ordinal < 7 ? ordinal : ordinal + 1;
}

// Every value of row r is (g + 1) times 1 or 2 (b.h5ad stores ENSG02 twice: summed).
void expect_row_encodes_its_cell(const CorpusBatch& batch, std::int64_t r) {
  const auto& c = batch.cells;
  const double g1 = static_cast<double>(source_cell(c.cell_ids[r]) + 1);
  EXPECT_GT(c.offsets[r + 1], c.offsets[r]) << "ordinal " << c.cell_ids[r];
  for (std::int64_t k = c.offsets[r]; k < c.offsets[r + 1]; ++k) {
    EXPECT_TRUE(c.values[k] == g1 || c.values[k] == 2 * g1)
        << "ordinal " << c.cell_ids[r] << " holds " << c.values[k] << ", cell " << g1 - 1;
  }
}

// Draws every batch until the end of the current epoch; counts each ordinal in `seen`.
void drain_epoch(const Corpus& corpus, const LoaderOptions& options,
                 std::vector<std::int64_t>& seen) {
  DataLoader loader(corpus, options);
  for (;;) {
    const LoadedBatch batch = loader.next();
    for (std::int64_t r = 0; r < batch.data.cells.cells(); ++r) {
      ++seen[static_cast<std::size_t>(batch.data.cells.cell_ids[r])];
      expect_row_encodes_its_cell(batch.data, r);
    }
    if (batch.state_after.epoch != batch.epoch) return;
  }
}

TEST_F(LoaderTest, ChangingTheRankCountMidEpochCoversTheRestOnce) {
  const Corpus corpus(corpus_options(), world);
  std::vector<std::int64_t> seen(static_cast<std::size_t>(corpus.cells()), 0);
  // Steps on the world's ranks, then the rest of the epoch on twice as many (each rank runs
  // two of them, one after the other) and, separately, on a single rank.
  SamplerState stopped;
  {
    DataLoader loader(corpus, loader_options());
    // Stop inside the epoch: two steps, or one where the world's ranks take it in two.
    const std::int64_t steps = std::min<std::int64_t>(2, loader.steps_per_epoch() - 1);
    ASSERT_GE(steps, 1);
    for (std::int64_t step = 0; step < steps; ++step) {
      const LoadedBatch batch = loader.next();
      for (std::int64_t r = 0; r < batch.data.cells.cells(); ++r) {
        ++seen[static_cast<std::size_t>(batch.data.cells.cell_ids[r])];
        expect_row_encodes_its_cell(batch.data, r);
      }
      stopped = batch.state_after;
    }
  }
  std::vector<std::int64_t> after_one_rank = seen;
  for (std::int64_t half = 0; half < 2; ++half) {
    LoaderOptions options = loader_options();
    options.start = stopped;
    options.dp_size = 2 * world.size();
    options.dp_rank = 2 * world.rank() + half;
    drain_epoch(corpus, options, seen);
  }
  world.allreduce_sum(seen);
  for (std::size_t o = 0; o < seen.size(); ++o) EXPECT_EQ(seen[o], 1) << "ordinal " << o;

  // The same rest on one rank (every world rank plays it; only the first phase is shared).
  world.allreduce_sum(after_one_rank);
  std::vector<std::int64_t> rest(seen.size(), 0);
  LoaderOptions single = loader_options();
  single.start = stopped;
  single.dp_size = 1;
  single.dp_rank = 0;
  drain_epoch(corpus, single, rest);
  for (std::size_t o = 0; o < seen.size(); ++o) {
    EXPECT_EQ(after_one_rank[o] + rest[o], 1) << "ordinal " << o << " on one rank";
  }
}

// The group id of every kept cell, read directly.
std::vector<std::int32_t> groups_of_cells(const Corpus& corpus) {
  return corpus.read(0, corpus.cells()).groups;
}

TEST_F(LoaderTest, GroupBatchesHoldWholeGroupsOncePerEpoch) {
  CorpusOptions corpus_o = corpus_options();
  corpus_o.group_column = "assay";  // A/B alternate: each group is many runs over three files
  const Corpus corpus(corpus_o, world);
  const std::vector<std::int32_t> cell_groups = groups_of_cells(corpus);
  ASSERT_EQ(corpus.groups(), (std::vector<std::string>{"A", "B"}));
  LoaderOptions options = loader_options();
  options.shape = BatchShape::groups;
  options.groups.max_cells = 0;
  std::vector<std::int64_t> visits(corpus.groups().size(), 0);
  {
    DataLoader loader(corpus, options);
    EXPECT_EQ(loader.steps_per_epoch(), (2 + world.size() - 1) / world.size());
    for (std::int64_t step = 0; step < loader.steps_per_epoch(); ++step) {
      const LoadedBatch batch = loader.next();
      if (batch.group < 0) {  // a rank beyond the groups left at the last step
        EXPECT_EQ(batch.data.cells.cells(), 0);
        continue;
      }
      ++visits[static_cast<std::size_t>(batch.group)];
      const std::int64_t expected_cells =
          std::count(cell_groups.begin(), cell_groups.end(), batch.group);
      EXPECT_EQ(batch.data.cells.cells(), expected_cells);
      for (std::int64_t r = 0; r < batch.data.cells.cells(); ++r) {
        EXPECT_EQ(batch.data.groups[r], batch.group);
        EXPECT_EQ(cell_groups[static_cast<std::size_t>(batch.data.cells.cell_ids[r])], batch.group);
        expect_row_encodes_its_cell(batch.data, r);
      }
    }
  }
  world.allreduce_sum(visits);
  EXPECT_EQ(visits, (std::vector<std::int64_t>{1, 1}));
}

TEST_F(LoaderTest, LargeGroupsAreSubsampledTheSameWayOnEveryRun) {
  CorpusOptions corpus_o = corpus_options();
  corpus_o.group_column = "sample";  // one group per file: 9, 8 and 6 kept cells
  const Corpus corpus(corpus_o, world);
  const std::vector<std::int32_t> cell_groups = groups_of_cells(corpus);
  LoaderOptions options = loader_options();
  options.shape = BatchShape::groups;
  options.groups.max_cells = 4;
  options.dp_rank = 0;
  options.dp_size = 1;
  options.start = {};
  auto epoch_cells = [&] {
    std::map<std::int64_t, std::vector<std::int64_t>> cells;  // group -> its batch's ordinals
    DataLoader loader(corpus, options);
    for (std::int64_t step = 0; step < loader.steps_per_epoch(); ++step) {
      const LoadedBatch batch = loader.next();
      cells[batch.group] = batch.data.cells.cell_ids;
    }
    return cells;
  };
  const auto first = epoch_cells();
  ASSERT_EQ(first.size(), 3u);
  for (const auto& [group, cells] : first) {
    EXPECT_EQ(cells.size(), 4u);
    EXPECT_TRUE(std::is_sorted(cells.begin(), cells.end()));
    EXPECT_EQ(std::set<std::int64_t>(cells.begin(), cells.end()).size(), cells.size());
    for (std::int64_t ordinal : cells) {
      EXPECT_EQ(cell_groups[static_cast<std::size_t>(ordinal)], group);
    }
  }
  EXPECT_EQ(epoch_cells(), first);
}

// Length grouping (data.group_by_length) on the fixture, whose cells store 1 to 3 genes: every
// batch holds the sampler's batch size with rows as the corpus stores them, longest first; each
// group of steps holds the sampler's own cells of those steps (so every cell once per epoch over
// the ranks); a resume from any batch's state continues identically; padding does not grow; a
// start that changes the dp size inside a group and grouping whole groups are refused.
TEST_F(LoaderTest, LengthGroupingKeepsEveryCellOnceAndResumesExactly) {
  const Corpus corpus(corpus_options(), world);
  LoaderOptions plain_options = loader_options();
  plain_options.sampler.shuffle_blocks = 6;  // windows of 12 cells: groups of 4 steps of 3
  LoaderOptions options = plain_options;
  options.group_by_length = true;
  ASSERT_EQ(length_group_steps(options.sampler), 4);
  const auto drain = [&](const LoaderOptions& o) {  // the rest of the start's epoch
    std::vector<LoadedBatch> batches;
    DataLoader loader(corpus, o);
    for (;;) {
      batches.push_back(loader.next());
      if (batches.back().state_after.epoch != batches.back().epoch) return batches;
    }
  };
  const auto ids = [](const LoadedBatch& batch) { return batch.data.cells.cell_ids; };
  const std::vector<LoadedBatch> grouped = drain(options);
  const std::vector<LoadedBatch> plain = drain(plain_options);
  ASSERT_EQ(grouped.size(), plain.size());
  std::int64_t mine = 0;
  std::int64_t checksum = 0;
  PaddingCount grouped_padding, plain_padding;
  std::vector<std::int64_t> group_cells, plain_cells;
  for (std::size_t i = 0; i < grouped.size(); ++i) {
    const LoadedBatch& batch = grouped[i];
    EXPECT_EQ(batch.step, plain[i].step);
    EXPECT_EQ(batch.state_after, plain[i].state_after);
    ASSERT_EQ(batch.data.cells.cells(), plain[i].data.cells.cells());
    expect_rows_match_corpus(corpus, batch.data);
    const auto lengths = [](const CsrBatch& c) {
      std::vector<std::int64_t> out;
      for (std::int64_t r = 0; r < c.cells(); ++r) out.push_back(c.offsets[r + 1] - c.offsets[r]);
      return out;
    };
    const std::vector<std::int64_t> mine_lengths = lengths(batch.data.cells);
    EXPECT_TRUE(std::is_sorted(mine_lengths.rbegin(), mine_lengths.rend())) << "step " << i;
    count_padding(mine_lengths, grouped_padding);
    count_padding(lengths(plain[i].data.cells), plain_padding);
    for (std::int64_t id : ids(batch)) {
      ++mine;
      checksum += (id + 1) * (id + 1);
      group_cells.push_back(id);
    }
    for (std::int64_t id : ids(plain[i])) plain_cells.push_back(id);
    if ((i + 1) % 4 == 0 || i + 1 == grouped.size()) {  // a group's end: the same cells
      std::sort(group_cells.begin(), group_cells.end());
      std::sort(plain_cells.begin(), plain_cells.end());
      EXPECT_EQ(group_cells, plain_cells) << "the group ending at step " << i;
      group_cells.clear();
      plain_cells.clear();
    }
  }
  const std::int64_t n = corpus.cells();
  EXPECT_EQ(world.allreduce_sum(mine), n);
  EXPECT_EQ(world.allreduce_sum(checksum), n * (n + 1) * (2 * n + 1) / 6);
  const std::int64_t grouped_positions = world.allreduce_sum(grouped_padding.positions);
  const std::int64_t plain_positions = world.allreduce_sum(plain_padding.positions);
  EXPECT_LE(grouped_positions, plain_positions);
  if (world.size() == 1) {
    EXPECT_LT(grouped_positions, plain_positions);
  }

  for (std::size_t i = 0; i + 1 < grouped.size(); ++i) {
    LoaderOptions resumed = options;
    resumed.start = grouped[i].state_after;
    const std::vector<LoadedBatch> rest = drain(resumed);
    ASSERT_EQ(rest.size(), grouped.size() - i - 1);
    for (std::size_t k = 0; k < rest.size(); ++k) {
      EXPECT_EQ(ids(rest[k]), ids(grouped[i + 1 + k])) << "resumed after step " << i;
    }
  }

  if (grouped.size() > 1) {  // the state after step 0 is inside the first group
    LoaderOptions wider = options;
    wider.start = grouped[0].state_after;
    wider.dp_size = 2 * world.size();
    wider.dp_rank = 2 * world.rank();
    EXPECT_THROW(DataLoader(corpus, wider), core::InputError);
  }
  LoaderOptions whole_groups = options;
  whole_groups.shape = BatchShape::groups;
  EXPECT_THROW(DataLoader(corpus, whole_groups), core::UsageError);
}

TEST_F(LoaderTest, TransformThreadsKeepTheOrderAndReportFailures) {
  const Corpus corpus(corpus_options(), world);
  std::vector<std::vector<std::int64_t>> plain;
  {
    DataLoader loader(corpus, loader_options());
    for (int i = 0; i < 12; ++i) plain.push_back(loader.next().data.cells.cell_ids);
  }
  LoaderOptions options = loader_options();
  options.worker_threads = 3;
  options.transform = [](LoadedBatch& batch) {
    // Uneven work, so later batches often finish first.
    thread_local std::mt19937 random(std::hash<std::thread::id>()(std::this_thread::get_id()));
    std::this_thread::sleep_for(std::chrono::microseconds(random() % 3000));
    batch.prepared = batch.data.cells.cell_ids;
  };
  {
    DataLoader loader(corpus, options);
    for (const auto& expected : plain) {
      const LoadedBatch batch = loader.next();
      EXPECT_EQ(batch.data.cells.cell_ids, expected);
      EXPECT_EQ(std::any_cast<std::vector<std::int64_t>>(batch.prepared), expected);
    }
  }
  // The third batch's transform fails. Which worker call that is depends on
  // scheduling, so the bad batch is named by its cells, not by a call count.
  const std::vector<std::int64_t> bad_cells = plain[2];
  options.transform = [bad_cells](LoadedBatch& batch) {
    if (batch.data.cells.cell_ids == bad_cells)
      throw core::InputError("tokeniser: the third batch is bad");
  };
  DataLoader failing(corpus, options);
  EXPECT_EQ(failing.next().data.cells.cell_ids, plain[0]);
  EXPECT_EQ(failing.next().data.cells.cell_ids, plain[1]);
  EXPECT_THROW(failing.next(), core::InputError);
}

}  // namespace
}  // namespace cellfm::data
