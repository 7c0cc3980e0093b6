// Tensor collectives over MPI on 2 and 4 ranks, checked exactly: each rank fills its tensors with
// values derived from its rank whose reductions are exactly representable, so the expected
// result is computed independently here. Every op and every supported dtype, contiguous and
// strided tensors, asynchronous overlap of several collectives, and the rank grid.
#include "parallel/communicator.h"

#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "parallel/rank_grid.h"

namespace cellfm::parallel {
namespace {

class CommunicatorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    communicator_ = new std::shared_ptr<Communicator>(
        Communicator::create(Comm::world(), torch::Device(torch::kCPU)));
  }
  static void TearDownTestSuite() { delete communicator_; }
  Communicator& comm() { return **communicator_; }
  int rank() { return comm().rank(); }
  int size() { return comm().size(); }
  static std::shared_ptr<Communicator>* communicator_;
};
std::shared_ptr<Communicator>* CommunicatorTest::communicator_ = nullptr;

// Small integers: exact in every dtype below, including bfloat16 (8 significant bits).
torch::Tensor rank_values(std::int64_t n, int rank, torch::ScalarType dtype) {
  return (torch::arange(n, torch::kInt64) % 7 + rank + 1).to(dtype);
}

const std::vector<torch::ScalarType>& numeric_dtypes() {
  static const std::vector<torch::ScalarType> dtypes = {
      torch::kFloat32, torch::kFloat64, torch::kBFloat16, torch::kFloat16, torch::kInt8,
      torch::kUInt8,   torch::kInt16,   torch::kInt32,    torch::kInt64};
  return dtypes;
}

TEST_F(CommunicatorTest, AllreduceSumMaxAverageEveryDtype) {
  const std::int64_t n = 1000;
  for (const torch::ScalarType dtype : numeric_dtypes()) {
    SCOPED_TRACE(c10::toString(dtype));
    // sum over ranks of (k % 7 + r + 1) = size * (k % 7 + 1) + size * (size - 1) / 2
    const torch::Tensor base = torch::arange(n, torch::kInt64) % 7;
    const torch::Tensor want_sum = base * size() + size() + size() * (size() - 1) / 2;
    torch::Tensor t = rank_values(n, rank(), dtype);
    comm().allreduce(t, ReduceOp::sum);
    EXPECT_TRUE(torch::equal(t.to(torch::kInt64), want_sum));

    t = rank_values(n, rank(), dtype);
    comm().allreduce(t, ReduceOp::max);
    EXPECT_TRUE(torch::equal(t.to(torch::kInt64), base + size()));

    t = rank_values(n, rank(), dtype);
    if (torch::isFloatingType(dtype)) {
      comm().allreduce(t, ReduceOp::average);
      // (size * (k % 7 + 1) + size (size - 1) / 2) / size = k % 7 + 1 + (size - 1) / 2
      const torch::Tensor want = base.to(torch::kFloat64) + 1 + (size() - 1) / 2.0;
      EXPECT_TRUE(torch::equal(t.to(torch::kFloat64), want));
    } else {
      EXPECT_THROW(comm().allreduce(t, ReduceOp::average), core::UsageError);
    }
  }
}

TEST_F(CommunicatorTest, BooleanAllreduceIsAny) {
  torch::Tensor flags = torch::zeros({4}, torch::kBool);
  flags[rank() % 4] = true;
  comm().allreduce(flags, ReduceOp::sum);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(flags[i].item<bool>(), i < size());
}

TEST_F(CommunicatorTest, BroadcastAllgatherReduceScatterEveryDtype) {
  const std::int64_t n = 37;
  for (const torch::ScalarType dtype : numeric_dtypes()) {
    SCOPED_TRACE(c10::toString(dtype));
    const int root = size() - 1;
    torch::Tensor t = rank_values(n, rank(), dtype);
    comm().broadcast(t, root);
    EXPECT_TRUE(torch::equal(t, rank_values(n, root, dtype)));

    torch::Tensor gathered = torch::empty({size() * n}, dtype);
    comm().allgather(gathered, rank_values(n, rank(), dtype));
    for (int r = 0; r < size(); ++r) {
      EXPECT_TRUE(torch::equal(gathered.slice(0, r * n, (r + 1) * n), rank_values(n, r, dtype)));
    }

    // Every rank contributes rank_values(size * n); rank r keeps the sum of part r.
    torch::Tensor part = torch::empty({n}, dtype);
    comm().reduce_scatter(part, rank_values(size() * n, rank(), dtype), ReduceOp::sum);
    const torch::Tensor base = torch::arange(size() * n, torch::kInt64) % 7;
    const torch::Tensor want =
        (base * size() + size() + size() * (size() - 1) / 2).slice(0, rank() * n, (rank() + 1) * n);
    EXPECT_TRUE(torch::equal(part.to(torch::kInt64), want));
  }
}

TEST_F(CommunicatorTest, StridedTensorsAreReducedInPlace) {
  torch::Tensor matrix = torch::full({6, 4}, rank() + 1.0, torch::kFloat64);
  torch::Tensor column = matrix.select(1, 2);  // a view with stride 4
  ASSERT_FALSE(column.is_contiguous());
  comm().allreduce(column, ReduceOp::sum);
  const double total = size() * (size() + 1) / 2.0;
  EXPECT_TRUE(torch::equal(matrix.select(1, 2), torch::full({6}, total, torch::kFloat64)));
  EXPECT_TRUE(torch::equal(matrix.select(1, 1), torch::full({6}, rank() + 1.0, torch::kFloat64)));
}

TEST_F(CommunicatorTest, ManyAsynchronousCollectivesCompleteInOrder) {
  std::vector<torch::Tensor> tensors;
  std::vector<std::shared_ptr<Work>> works;
  for (int i = 0; i < 20; ++i) {
    tensors.push_back(torch::full({1000 * (i + 1)}, static_cast<float>(rank() + i)));
    works.push_back(comm().allreduce_async(tensors.back(), ReduceOp::sum));
  }
  works.push_back(comm().barrier_async());
  for (auto& work : works) work->wait();
  for (int i = 0; i < 20; ++i) {
    const float want = size() * i + size() * (size() - 1) / 2.0f;
    EXPECT_TRUE(torch::equal(tensors[i], torch::full({1000 * (i + 1)}, want))) << i;
    EXPECT_TRUE(works[i]->done());
  }
}

TEST_F(CommunicatorTest, MismatchedShapesAreUsageErrors) {
  EXPECT_THROW(comm().allgather(torch::empty({3}), torch::empty({2})), core::UsageError);
  EXPECT_THROW(
      comm().reduce_scatter(torch::empty({2}), torch::empty({2 * size() + 1}), ReduceOp::sum),
      core::UsageError);
  EXPECT_THROW(comm().allreduce(torch::empty({2}, torch::kComplexFloat), ReduceOp::sum),
               core::UsageError);
}

TEST(NonBlockingMpi, EveryCollectiveGivesTheBlockingResults) {
  CommunicatorOptions options;
  options.nonblocking_mpi = true;
  const auto nonblocking = Communicator::create(Comm::world(), torch::Device(torch::kCPU), options);
  const auto blocking = Communicator::create(Comm::world(), torch::Device(torch::kCPU));
  const int rank = blocking->rank();
  const int size = blocking->size();
  for (const torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16, torch::kInt64}) {
    SCOPED_TRACE(c10::toString(dtype));
    for (const ReduceOp op : {ReduceOp::sum, ReduceOp::max}) {
      torch::Tensor a = rank_values(300, rank, dtype);
      torch::Tensor b = a.clone();
      nonblocking->allreduce(a, op);
      blocking->allreduce(b, op);
      EXPECT_TRUE(torch::equal(a, b));
    }
    torch::Tensor a = rank_values(30, rank, dtype);
    nonblocking->broadcast(a, 0);
    EXPECT_TRUE(torch::equal(a, rank_values(30, 0, dtype)));
    torch::Tensor gathered = torch::empty({size * 30}, dtype);
    nonblocking->allgather(gathered, rank_values(30, rank, dtype));
    EXPECT_TRUE(torch::equal(gathered.slice(0, 0, 30), rank_values(30, 0, dtype)));
    torch::Tensor part = torch::empty({30}, dtype);
    torch::Tensor reference = torch::empty({30}, dtype);
    nonblocking->reduce_scatter(part, rank_values(size * 30, rank, dtype), ReduceOp::sum);
    blocking->reduce_scatter(reference, rank_values(size * 30, rank, dtype), ReduceOp::sum);
    EXPECT_TRUE(torch::equal(part, reference));
  }
  nonblocking->barrier();
}

TEST(RankGrid, TensorParallelRanksAreConsecutive) {
  const Comm world = Comm::world();
  for (int tp = 1; tp <= world.size(); ++tp) {
    if (world.size() % tp != 0) {
      EXPECT_THROW(RankGrid::create(world, tp), core::UsageError);
      continue;
    }
    const RankGrid grid = RankGrid::create(world, tp);
    EXPECT_EQ(grid.tp_size, tp);
    EXPECT_EQ(grid.dp_size * grid.tp_size, world.size());
    EXPECT_EQ(grid.dp_rank * tp + grid.tp_rank, world.rank());
    EXPECT_EQ(grid.tensor_parallel.size(), tp);
    EXPECT_EQ(grid.tensor_parallel.rank(), grid.tp_rank);
    EXPECT_EQ(grid.data_parallel.size(), grid.dp_size);
    EXPECT_EQ(grid.data_parallel.rank(), grid.dp_rank);
    // The tensor-parallel group holds world ranks dp_rank * tp ... dp_rank * tp + tp - 1.
    const auto members = grid.tensor_parallel.allgather(static_cast<std::uint64_t>(world.rank()));
    for (int i = 0; i < tp; ++i) {
      EXPECT_EQ(members[static_cast<std::size_t>(i)],
                static_cast<std::uint64_t>(grid.dp_rank * tp + i));
    }
  }
  EXPECT_THROW(RankGrid::create(world, 0), core::UsageError);
}

}  // namespace
}  // namespace cellfm::parallel
