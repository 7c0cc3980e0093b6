// IoExecutor without HDF5: one thread runs every job, in submission order; cancel drops only its
// owner's queued jobs and waits for its running one; run() waits and rethrows; destruction drops
// what is still queued.
#include "data/io_executor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace cellfm::data {
namespace {

using namespace std::chrono_literals;

TEST(IoExecutor, RunsEveryJobOnOneThreadInSubmissionOrder) {
  IoExecutor io;
  const IoExecutor::Owner a = io.new_owner();
  const IoExecutor::Owner b = io.new_owner();
  EXPECT_NE(a, b);
  std::mutex mutex;
  std::vector<int> order;
  std::vector<std::thread::id> threads;
  for (int i = 0; i < 50; ++i) {
    io.submit(i % 2 ? a : b, [&, i] {
      std::lock_guard<std::mutex> lock(mutex);
      order.push_back(i);
      threads.push_back(std::this_thread::get_id());
      EXPECT_TRUE(io.on_io_thread());
    });
  }
  io.run([] {});  // behind every job queued before it
  EXPECT_FALSE(io.on_io_thread());
  ASSERT_EQ(order.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(order[static_cast<std::size_t>(i)], i);
  for (const auto& id : threads) EXPECT_EQ(id, threads.front());
  EXPECT_NE(threads.front(), std::this_thread::get_id());
  EXPECT_GE(io.completed(), 50);  // run()'s own job counts once it has returned: maybe not yet
}

TEST(IoExecutor, CancelDropsOnlyItsOwnersQueuedJobsAndWaitsForItsRunningOne) {
  IoExecutor io;
  const IoExecutor::Owner a = io.new_owner();
  const IoExecutor::Owner b = io.new_owner();
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> started;
  std::atomic<bool> a_running_done{false};
  std::atomic<int> a_later{0};
  std::atomic<int> b_ran{0};
  io.submit(a, [&] {
    started.set_value();
    released.wait();
    a_running_done = true;
  });
  for (int i = 0; i < 3; ++i) {
    io.submit(a, [&] { ++a_later; });
    io.submit(b, [&] { ++b_ran; });
  }
  started.get_future().wait();
  auto cancelled = std::async(std::launch::async, [&] { io.cancel(a); });
  // cancel waits while a's first job runs.
  EXPECT_EQ(cancelled.wait_for(100ms), std::future_status::timeout);
  release.set_value();
  ASSERT_EQ(cancelled.wait_for(10s), std::future_status::ready);
  EXPECT_TRUE(a_running_done);
  io.run([] {});
  EXPECT_EQ(a_later, 0);
  EXPECT_EQ(b_ran, 3);
}

TEST(IoExecutor, CancelOfAnIdleOwnerReturnsAtOnceWhileAnotherOwnersJobRuns) {
  IoExecutor io;
  const IoExecutor::Owner a = io.new_owner();
  const IoExecutor::Owner b = io.new_owner();
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  io.submit(a, [released] { released.wait(); });
  std::atomic<int> b_ran{0};
  io.submit(b, [&] { ++b_ran; });
  auto cancelled = std::async(std::launch::async, [&] { io.cancel(b); });
  const bool prompt = cancelled.wait_for(10s) == std::future_status::ready;
  release.set_value();
  EXPECT_TRUE(prompt);
  io.run([] {});
  EXPECT_EQ(b_ran, 0);
}

TEST(IoExecutor, RunWaitsAndRethrows) {
  IoExecutor io;
  int value = 0;
  io.run([&] { value = 7; });
  EXPECT_EQ(value, 7);
  EXPECT_THROW(io.run([] { throw std::runtime_error("bad read"); }), std::runtime_error);
  io.run([&] { value = 8; });  // the thread survives a failed job
  EXPECT_EQ(value, 8);
}

TEST(IoExecutor, DestructionDropsQueuedJobs) {
  std::atomic<int> ran{0};
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> started;
  std::thread releaser;
  {
    IoExecutor io;
    const IoExecutor::Owner a = io.new_owner();
    io.submit(a, [&] {
      started.set_value();
      released.wait();
    });
    for (int i = 0; i < 5; ++i) io.submit(a, [&] { ++ran; });
    started.get_future().wait();
    releaser = std::thread([&] {
      std::this_thread::sleep_for(50ms);
      release.set_value();
    });
  }  // joins after the running job; the five queued ones never run
  releaser.join();
  EXPECT_EQ(ran, 0);
}

}  // namespace
}  // namespace cellfm::data
