// IoExecutor: a FIFO of owner-tagged jobs drained by one thread.
#include "data/io_executor.h"

#include <condition_variable>
#include <deque>
#include <exception>
#include <future>
#include <mutex>
#include <thread>
#include <utility>

namespace cellfm::data {

struct IoExecutor::Impl {
  struct Job {
    Owner owner = 0;
    std::function<void()> work;
  };

  mutable std::mutex mutex;
  std::condition_variable changed;
  std::deque<Job> queue;
  Owner next_owner = 1;
  Owner running = 0;  // the owner of the job running now; 0: none
  std::int64_t completed = 0;
  bool stop = false;
  std::thread thread;

  void loop() {
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      changed.wait(lock, [&] { return stop || !queue.empty(); });
      if (stop) return;
      Job job = std::move(queue.front());
      queue.pop_front();
      running = job.owner;
      lock.unlock();
      job.work();
      job.work = nullptr;  // the job's captures die before its owner may be told it is done
      lock.lock();
      running = 0;
      ++completed;
      changed.notify_all();
    }
  }
};

IoExecutor::IoExecutor() : impl_(std::make_unique<Impl>()) {
  impl_->thread = std::thread([impl = impl_.get()] { impl->loop(); });
}

IoExecutor::~IoExecutor() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stop = true;
    impl_->queue.clear();
  }
  impl_->changed.notify_all();
  impl_->thread.join();
}

IoExecutor::Owner IoExecutor::new_owner() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->next_owner++;
}

void IoExecutor::submit(Owner owner, std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->queue.push_back({owner, std::move(job)});
  }
  impl_->changed.notify_all();
}

void IoExecutor::cancel(Owner owner) {
  std::unique_lock<std::mutex> lock(impl_->mutex);
  auto& queue = impl_->queue;
  for (auto it = queue.begin(); it != queue.end();) {
    it = it->owner == owner ? queue.erase(it) : it + 1;
  }
  impl_->changed.wait(lock, [&] { return impl_->running != owner; });
}

void IoExecutor::run(const std::function<void()>& job) {
  std::promise<void> done;
  std::future<void> result = done.get_future();
  submit(0, [&] {
    try {
      job();
      done.set_value();
    } catch (...) {
      done.set_exception(std::current_exception());
    }
  });
  result.get();
}

std::int64_t IoExecutor::completed() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->completed;
}

bool IoExecutor::on_io_thread() const {
  return std::this_thread::get_id() == impl_->thread.get_id();
}

}  // namespace cellfm::data
