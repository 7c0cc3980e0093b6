// DataParallel: buckets, the gradient-ready hooks and the in-order launch of bucket allreduces.
#include "parallel/data_parallel.h"

#include <algorithm>
#include <functional>
#include <mutex>
#include <sstream>

#include "core/error.h"
#include "core/torch_compat.h"
#include "parallel/agreement.h"

namespace cellfm::parallel {
namespace {

std::string describe(const std::string& name, const torch::Tensor& tensor) {
  std::ostringstream out;
  out << name << ' ' << c10::toString(tensor.scalar_type()) << ' ' << tensor.sizes();
  return out.str();
}

}  // namespace

struct DataParallel::State {
  struct Parameter {
    std::string name;
    torch::Tensor tensor;
    std::size_t bucket = 0;
    torch::Tensor view;  // its gradient's place in the bucket
    bool ready = false;
  };
  struct Bucket {
    torch::Tensor flat;
    std::vector<std::size_t> parameters;
    std::size_t pending = 0;  // parameters not yet ready in this backward
    std::shared_ptr<Work> work;
  };

  std::shared_ptr<Communicator> communicator;
  DataParallelOptions options;
  std::vector<Parameter> parameters;
  std::vector<Bucket> buckets;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;  // keep the hooks alive
  std::mutex mutex;  // hooks may run on autograd worker threads
  bool synchronize = true;
  bool alive = true;
  std::size_t next_launch = 0;  // buckets start strictly in index order

  void begin_backward() {
    for (Parameter& p : parameters) p.ready = false;
    for (Bucket& b : buckets) {
      b.pending = b.parameters.size();
      b.work.reset();
    }
    next_launch = 0;
  }

  // The gradient of parameter i is accumulated: make sure it sits in its bucket view, count it,
  // and start every bucket, in order, whose gradients are all ready.
  void on_ready(std::size_t i) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!alive || !synchronize) return;
    Parameter& p = parameters[i];
    if (p.ready) return;  // a parameter used twice fires once per use; count it once
    adopt_gradient(p);
    p.ready = true;
    --buckets[p.bucket].pending;
    launch_ready_buckets();
  }

  // .grad may have been replaced (set to none and re-created by autograd): copy it into the view.
  void adopt_gradient(Parameter& p) {
    torch::Tensor grad = p.tensor.grad();
    if (grad.defined() && grad.data_ptr() == p.view.data_ptr()) return;
    torch::NoGradGuard no_grad;
    if (grad.defined()) {
      p.view.copy_(grad);
    } else {
      p.view.zero_();
    }
    p.tensor.mutable_grad() = p.view;
  }

  void launch_ready_buckets() {
    while (next_launch < buckets.size() && buckets[next_launch].pending == 0) {
      Bucket& bucket = buckets[next_launch];
      bucket.work = communicator->allreduce_async(bucket.flat, ReduceOp::average);
      ++next_launch;
    }
  }
};

DataParallel::DataParallel(std::vector<std::pair<std::string, torch::Tensor>> parameters,
                           const Comm& comm, std::shared_ptr<Communicator> communicator,
                           const DataParallelOptions& options)
    : state_(std::make_shared<State>()) {
  State& s = *state_;
  s.communicator = std::move(communicator);
  s.options = options;
  if (options.bucket_mb <= 0 || options.first_bucket_mb <= 0) {
    throw core::UsageError("data-parallel bucket sizes must be positive");
  }
  // The same parameters everywhere: compare with rank 0's list, failing on every rank together.
  std::string mine;
  for (const auto& [name, tensor] : parameters) mine += describe(name, tensor) + '\n';
  const std::string reference = comm.broadcast(mine, 0);
  run_agreed(comm, [&] {
    if (mine == reference) return;
    std::istringstream a(mine);
    std::istringstream b(reference);
    std::string line_a;
    std::string line_b;
    while (true) {
      const bool more_a = static_cast<bool>(std::getline(a, line_a));
      const bool more_b = static_cast<bool>(std::getline(b, line_b));
      if (!more_a || !more_b || line_a != line_b) {
        throw core::UsageError("data-parallel: rank " + std::to_string(comm.rank()) +
                               " has parameter '" + (more_a ? line_a : "(none)") +
                               "' where rank 0 has '" + (more_b ? line_b : "(none)") +
                               "': every rank must build the same model");
      }
    }
  });
  for (auto& [name, tensor] : parameters) {
    CELLFM_CHECK(tensor.requires_grad() && tensor.is_leaf(),
                 "data-parallel parameter '" + name + "' must be a leaf requiring grad");
    State::Parameter parameter;
    parameter.name = name;
    parameter.tensor = tensor;
    s.parameters.push_back(std::move(parameter));
  }
  // Rank 0's values everywhere.
  std::vector<std::shared_ptr<Work>> broadcasts;
  for (State::Parameter& p : s.parameters) {
    broadcasts.push_back(s.communicator->broadcast_async(p.tensor.detach(), 0));
  }
  for (auto& work : broadcasts) work->wait();

  // Buckets in reverse registration order, one dtype and device each.
  auto cap_of = [&](std::size_t bucket) {
    return static_cast<std::int64_t>((bucket == 0 ? options.first_bucket_mb : options.bucket_mb) *
                                     1e6);
  };
  std::vector<std::int64_t> bucket_bytes;
  for (std::size_t k = s.parameters.size(); k-- > 0;) {
    const torch::Tensor& t = s.parameters[k].tensor;
    const std::int64_t bytes = t.numel() * static_cast<std::int64_t>(t.element_size());
    bool fresh = s.buckets.empty();
    if (!fresh) {
      const State::Parameter& last = s.parameters[s.buckets.back().parameters.back()];
      fresh = last.tensor.scalar_type() != t.scalar_type() || last.tensor.device() != t.device() ||
              bucket_bytes.back() + bytes > cap_of(s.buckets.size() - 1);
    }
    if (fresh) {
      s.buckets.emplace_back();
      bucket_bytes.push_back(0);
    }
    s.buckets.back().parameters.push_back(k);
    s.parameters[k].bucket = s.buckets.size() - 1;
    bucket_bytes.back() += bytes;
  }
  for (State::Bucket& bucket : s.buckets) {
    std::int64_t total = 0;
    for (std::size_t k : bucket.parameters) total += s.parameters[k].tensor.numel();
    const torch::Tensor& first = s.parameters[bucket.parameters.front()].tensor;
    bucket.flat = torch::zeros({total}, first.options().requires_grad(false));
    std::int64_t offset = 0;
    for (std::size_t k : bucket.parameters) {
      State::Parameter& p = s.parameters[k];
      p.view = bucket.flat.narrow(0, offset, p.tensor.numel()).view(p.tensor.sizes());
      offset += p.tensor.numel();
    }
  }
  zero_grad();
  const std::weak_ptr<State> weak = state_;
  for (std::size_t k = 0; k < s.parameters.size(); ++k) {
    s.accumulators.push_back(core::add_gradient_ready_hook(s.parameters[k].tensor, [weak, k] {
      if (const auto state = weak.lock()) state->on_ready(k);
    }));
  }
  s.begin_backward();
}

DataParallel::~DataParallel() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->alive = false;
  for (auto& bucket : state_->buckets) {
    if (bucket.work) bucket.work->wait();
  }
}

void DataParallel::zero_grad() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  for (auto& bucket : state_->buckets) bucket.flat.zero_();
  for (auto& p : state_->parameters) p.tensor.mutable_grad() = p.view;
}

void DataParallel::set_synchronize(bool synchronize) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->synchronize = synchronize;
  state_->begin_backward();
}

void DataParallel::finish() {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mutex);
  if (!s.synchronize) return;
  std::vector<std::string> unused;
  for (State::Parameter& p : s.parameters) {
    if (p.ready) continue;
    unused.push_back(p.name);
    p.ready = true;
    --s.buckets[p.bucket].pending;
  }
  if (!unused.empty() && !s.options.zero_unused_gradients) {
    std::string names;
    for (const std::string& name : unused) names += (names.empty() ? "" : ", ") + name;
    throw core::UsageError("data-parallel: no gradient reached parameter(s) " + names +
                           " in this backward; make the model use them, or set "
                           "zero_unused_gradients to treat their gradients as zero");
  }
  for (State::Parameter& p : s.parameters) {
    // What the parameter holds: zero since zero_grad(), or what earlier micro-batches left.
    if (std::find(unused.begin(), unused.end(), p.name) != unused.end()) s.adopt_gradient(p);
  }
  s.launch_ready_buckets();
  std::vector<std::shared_ptr<Work>> works;
  for (auto& bucket : s.buckets) works.push_back(bucket.work);
  lock.unlock();
  for (auto& work : works) {
    if (work) work->wait();
  }
  lock.lock();
  s.begin_backward();
}

std::vector<std::vector<std::string>> DataParallel::bucket_names() const {
  std::vector<std::vector<std::string>> names;
  for (const auto& bucket : state_->buckets) {
    names.emplace_back();
    for (std::size_t k : bucket.parameters) names.back().push_back(state_->parameters[k].name);
  }
  return names;
}

std::vector<std::int64_t> DataParallel::bucket_elements() const {
  std::vector<std::int64_t> elements;
  for (const auto& bucket : state_->buckets) elements.push_back(bucket.flat.numel());
  return elements;
}

}  // namespace cellfm::parallel
