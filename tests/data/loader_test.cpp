// The prefetching loader on the anndata-written corpus fixture: every kept cell exactly once per
// epoch across the data-parallel ranks (the world), each batch's cells identical to a direct
// corpus read, exact continuation from a batch's state, and progress under a tiny memory budget.
#include "data/loader.h"

#include <gtest/gtest.h>

#include <map>

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

}  // namespace
}  // namespace cellfm::data
