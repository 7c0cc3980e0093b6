// Several loaders on one IoExecutor (the training and held-out streams of a run): interleaved,
// each gives exactly the batches it gives alone; a read error reaches the next() of the loader
// whose file is bad, naming the file, while the other carries on; loaders and the executor may be
// destroyed in any order, also with reads still queued.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>
#include <random>
#include <vector>

#include "core/error.h"
#include "data/loader.h"
#include "tests/data/corpus_fixture.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::data {
namespace {

using namespace std::chrono_literals;

// What a batch is made of, compared exactly.
struct BatchContent {
  std::uint64_t epoch = 0;
  std::int64_t step = 0;
  std::vector<std::int64_t> cells;
  std::vector<std::int64_t> offsets;
  std::vector<std::int32_t> genes;
  std::vector<float> values;
  std::vector<std::int32_t> labels;
  bool operator==(const BatchContent& o) const {
    return epoch == o.epoch && step == o.step && cells == o.cells && offsets == o.offsets &&
           genes == o.genes && values == o.values && labels == o.labels;
  }
};

BatchContent content(const LoadedBatch& batch) {
  const CsrBatch& c = batch.data.cells;
  return {batch.epoch, batch.step, c.cell_ids, c.offsets, c.genes, c.values, batch.data.labels};
}

class SharedLoaders : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { fixture_ = new testing::CorpusFixture(parallel::Comm::world()); }
  static void TearDownTestSuite() { delete fixture_; }

  // The fixture's three files; `held_out` keeps a third of the cells by a random split instead.
  CorpusOptions corpus_options(CorpusSplit split) const {
    CorpusOptions o;
    o.files = {fixture_->path() + "/*.h5ad"};
    o.label_column = "cell_type";
    o.split = split;
    o.validation_fraction = 0.3;
    return o;
  }
  LoaderOptions loader_options(std::uint64_t seed) const {
    LoaderOptions o;
    o.sampler.seed = seed;
    o.sampler.block_cells = 2;
    o.sampler.shuffle_blocks = 2;
    o.sampler.batch_cells = 3;
    o.dp_rank = world.rank();
    o.dp_size = world.size();
    o.start.dp_history = {{0, world.size()}};
    return o;
  }
  static std::vector<BatchContent> alone(const Corpus& corpus, const LoaderOptions& options,
                                         int count) {
    DataLoader loader(corpus, options);
    std::vector<BatchContent> batches;
    for (int i = 0; i < count; ++i) batches.push_back(content(loader.next()));
    return batches;
  }

  parallel::Comm world = parallel::Comm::world();
  static testing::CorpusFixture* fixture_;
};
testing::CorpusFixture* SharedLoaders::fixture_ = nullptr;

TEST_F(SharedLoaders, InterleavedLoadersGiveTheBatchesEachGivesAlone) {
  const Corpus train(corpus_options(CorpusSplit::train), world);
  const Corpus held_out(corpus_options(CorpusSplit::validation), world);
  ASSERT_GT(train.cells(), 0);
  ASSERT_GT(held_out.cells(), 0);
  const LoaderOptions train_options = loader_options(5);
  const LoaderOptions held_out_options = loader_options(9);
  // Two epochs and more of each (the streams roll over).
  const auto expected_train = alone(train, train_options, 20);
  const auto expected_held_out = alone(held_out, held_out_options, 12);
  const auto expected_same_corpus = alone(train, loader_options(11), 12);

  auto io = std::make_shared<IoExecutor>();
  std::mt19937 random(static_cast<unsigned>(world.rank()) + 3);
  for (int round = 0; round < 3; ++round) {
    LoaderOptions a = train_options;
    LoaderOptions b = held_out_options;
    LoaderOptions c = loader_options(11);  // a second stream over the training corpus
    a.io = b.io = c.io = io;
    a.worker_threads = 1 + round;
    DataLoader train_loader(train, a);
    std::size_t next_train = 0;
    // Held-out loaders come and go while the training loader lives (as at every evaluation).
    for (int evaluation = 0; evaluation < 2; ++evaluation) {
      DataLoader held_out_loader(held_out, b);
      DataLoader baseline_loader(train, c);
      std::size_t next_held_out = 0;
      std::size_t next_same = 0;
      while (next_held_out < expected_held_out.size() || next_same < expected_same_corpus.size()) {
        const unsigned pick = random() % 3;
        if (pick == 0 && next_train < expected_train.size()) {
          EXPECT_EQ(content(train_loader.next()), expected_train[next_train]) << next_train;
          ++next_train;
        } else if (pick == 1 && next_held_out < expected_held_out.size()) {
          EXPECT_EQ(content(held_out_loader.next()), expected_held_out[next_held_out]);
          ++next_held_out;
        } else if (next_same < expected_same_corpus.size()) {
          EXPECT_EQ(content(baseline_loader.next()), expected_same_corpus[next_same]);
          ++next_same;
        }
      }
    }
    for (; next_train < expected_train.size(); ++next_train) {
      EXPECT_EQ(content(train_loader.next()), expected_train[next_train]) << next_train;
    }
  }
}

TEST_F(SharedLoaders, AReadErrorReachesTheLoaderOfTheBadFileNamingIt) {
  // A copy of a.h5ad with a negative count in row 4: found when a read checks that row.
  testing::TempDir dir;
  const std::string bad = world.broadcast(dir.path(), 0) + "/bad.h5ad";
  if (world.rank() == 0) {
    const testing::ProcessResult poke =
        testing::run_process({"/usr/bin/python3", "-c",
                              "import shutil, sys, h5py\n"
                              "shutil.copy(sys.argv[1], sys.argv[2])\n"
                              "with h5py.File(sys.argv[2], 'r+') as f:\n"
                              "    f['X/data'][int(f['X/indptr'][4])] = -3\n",
                              fixture_->path() + "/a.h5ad", bad});
    EXPECT_EQ(poke.exit_code, 0) << poke.err;
  }
  world.barrier();
  const Corpus good(corpus_options(CorpusSplit::train), world);
  CorpusOptions bad_options;
  bad_options.files = {bad};
  const Corpus broken(bad_options, world);
  const auto expected = alone(good, loader_options(5), 16);

  auto io = std::make_shared<IoExecutor>();
  LoaderOptions good_options = loader_options(5);
  LoaderOptions bad_loader_options = loader_options(5);
  good_options.io = bad_loader_options.io = io;
  DataLoader good_loader(good, good_options);
  std::size_t next_good = 0;
  int threw = 0;
  {
    DataLoader bad_loader(broken, bad_loader_options);
    // Every step of an epoch: the rank whose blocks hold row 4 meets the bad value.
    for (std::int64_t step = 0; step < bad_loader.steps_per_epoch(); ++step) {
      try {
        bad_loader.next();
      } catch (const core::InputError& error) {
        ++threw;
        EXPECT_EQ(std::string(error.what()), bad + ": X has a negative count at row 4 (-3)");
        break;
      }
      if (next_good < 8) {
        EXPECT_EQ(content(good_loader.next()), expected[next_good]);
        ++next_good;
      }
    }
  }
  EXPECT_EQ(world.allreduce_sum(static_cast<std::int64_t>(threw)), 1);
  // The good stream carries on, on the same executor.
  for (; next_good < expected.size(); ++next_good) {
    EXPECT_EQ(content(good_loader.next()), expected[next_good]);
  }
  world.barrier();  // every rank done with the bad file before rank 0 removes it
}

TEST_F(SharedLoaders, DestructionInAnyOrderAlsoWithReadsQueued) {
  const Corpus corpus(corpus_options(CorpusSplit::train), world);
  const auto expected = alone(corpus, loader_options(5), 10);
  auto io = std::make_shared<IoExecutor>();
  LoaderOptions options = loader_options(5);
  options.io = io;
  auto survivor = std::make_unique<DataLoader>(corpus, options);
  EXPECT_EQ(content(survivor->next()), expected[0]);

  // A job holds the I/O thread, so a new loader's reads queue behind it; destroying that loader
  // must not wait for the job (its queued reads are dropped).
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  io->submit(io->new_owner(), [released] { released.wait(); });
  auto queued = std::make_unique<DataLoader>(corpus, options);
  auto destroyed = std::async(std::launch::async, [&] { queued.reset(); });
  const bool prompt = destroyed.wait_for(10s) == std::future_status::ready;
  release.set_value();
  destroyed.wait();
  EXPECT_TRUE(prompt);

  // Loaders dropped after 0..2 batches, mid-read.
  for (int i = 0; i < 12; ++i) {
    DataLoader short_lived(corpus, options);
    for (int k = 0; k < i % 3; ++k) EXPECT_EQ(content(short_lived.next()), expected[k]);
  }
  // The executor handle goes first; the loader keeps it alive.
  options.io.reset();
  io.reset();
  for (std::size_t k = 1; k < expected.size(); ++k) {
    EXPECT_EQ(content(survivor->next()), expected[k]);
  }
  survivor.reset();
}

}  // namespace
}  // namespace cellfm::data
