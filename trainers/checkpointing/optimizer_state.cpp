// Adam/AdamW state to and from named tensors.
#include "trainers/checkpointing/optimizer_state.h"

#include "core/error.h"
#include "core/torch_compat.h"

namespace cellfm::trainers {

namespace {

bool is_adamw(torch::optim::Optimizer& optimizer) {
  if (dynamic_cast<torch::optim::AdamW*>(&optimizer) != nullptr) return true;
  if (dynamic_cast<torch::optim::Adam*>(&optimizer) != nullptr) return false;
  throw core::UsageError("checkpoints hold Adam/AdamW state only");
}

std::vector<std::int64_t> shape_of(const torch::Tensor& t) {
  return t.sizes().vec();
}

}  // namespace

std::map<std::string, std::int64_t> optimizer_shard_dims(
    const std::vector<ParameterInfo>& parameters) {
  std::map<std::string, std::int64_t> dims;
  for (const ParameterInfo& p : parameters) {
    dims[p.name + ".exp_avg"] = p.shard_dim;
    dims[p.name + ".exp_avg_sq"] = p.shard_dim;
    dims[p.name + ".step"] = -1;
  }
  return dims;
}

// AdamW's state class mirrors Adam's; both are handled through these two.
std::optional<AdamMoments> adam_moments(torch::optim::Optimizer& optimizer,
                                        const torch::Tensor& parameter) {
  const bool adamw = is_adamw(optimizer);
  torch::optim::OptimizerParamState* state = core::find_optimizer_state(optimizer, parameter);
  if (state == nullptr) return std::nullopt;
  const auto read = [](const auto& s) {
    return AdamMoments{s.step(), s.exp_avg(), s.exp_avg_sq()};
  };
  if (adamw) return read(static_cast<torch::optim::AdamWParamState&>(*state));
  return read(static_cast<torch::optim::AdamParamState&>(*state));
}

void set_adam_moments(torch::optim::Optimizer& optimizer, const torch::Tensor& parameter,
                      const AdamMoments& moments) {
  const auto write = [&](auto state) {
    state->step(moments.step);
    state->exp_avg(moments.exp_avg);
    state->exp_avg_sq(moments.exp_avg_sq);
    core::set_optimizer_state(optimizer, parameter, std::move(state));
  };
  if (is_adamw(optimizer)) {
    write(std::make_unique<torch::optim::AdamWParamState>());
  } else {
    write(std::make_unique<torch::optim::AdamParamState>());
  }
}

core::NamedTensors optimizer_state_tensors(torch::optim::Optimizer& optimizer,
                                           const std::vector<ParameterInfo>& parameters) {
  core::NamedTensors out;
  for (const ParameterInfo& p : parameters) {
    const std::optional<AdamMoments> m = adam_moments(optimizer, p.tensor);
    if (!m) continue;
    out.emplace_back(p.name + ".exp_avg", m->exp_avg.detach());
    out.emplace_back(p.name + ".exp_avg_sq", m->exp_avg_sq.detach());
    out.emplace_back(p.name + ".step", torch::tensor({m->step}, torch::kInt64));
  }
  return out;
}

std::map<std::string, AdamMoments> parameter_moments(
    const std::vector<ParameterInfo>& parameters,
    const std::map<std::string, torch::Tensor>& tensors, const std::string& source) {
  std::map<std::string, AdamMoments> moments;
  for (const ParameterInfo& p : parameters) {
    const char* suffixes[] = {".exp_avg", ".exp_avg_sq", ".step"};
    const torch::Tensor* found[3] = {nullptr, nullptr, nullptr};
    int present = 0;
    for (int i = 0; i < 3; ++i) {
      const auto at = tensors.find(p.name + suffixes[i]);
      if (at != tensors.end()) {
        found[i] = &at->second;
        ++present;
      }
    }
    if (present == 0) continue;
    if (present != 3) {
      throw core::InputError(source + ": the optimizer state of '" + p.name +
                             "' is incomplete (needs .exp_avg, .exp_avg_sq and .step)");
    }
    for (int i = 0; i < 2; ++i) {
      if (shape_of(*found[i]) != shape_of(p.tensor)) {
        throw core::InputError(source + ": '" + p.name + suffixes[i] + "' has shape " +
                               c10::str(found[i]->sizes()) + ", the parameter has " +
                               c10::str(p.tensor.sizes()));
      }
    }
    moments[p.name] = {found[2]->to(torch::kInt64).item<std::int64_t>(),
                       found[0]->to(p.tensor.options()).clone(),
                       found[1]->to(p.tensor.options()).clone()};
  }
  return moments;
}

void load_optimizer_state(torch::optim::Optimizer& optimizer,
                          const std::vector<ParameterInfo>& parameters,
                          const std::map<std::string, torch::Tensor>& tensors,
                          const std::string& source) {
  is_adamw(optimizer);  // Adam/AdamW only, before anything is read
  const std::map<std::string, AdamMoments> moments = parameter_moments(parameters, tensors, source);
  for (const ParameterInfo& p : parameters) {
    const auto at = moments.find(p.name);
    if (at != moments.end()) set_adam_moments(optimizer, p.tensor, at->second);
  }
}

}  // namespace cellfm::trainers
