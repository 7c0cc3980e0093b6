// Learning-rate schedules against their formulas, Adam's coupled and AdamW's decoupled weight
// decay against two steps worked out in float64, and the optimiser's parameter groups (no decay
// on biases/norms/embeddings, per-group learning-rate scales).
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "trainers/optim/optimizer_factory.h"
#include "trainers/optim/parameter_groups.h"
#include "trainers/optim/schedule.h"

namespace cellfm::trainers {
namespace {

core::OptimizerOptions optimizer(const std::string& name, double lr, double decay) {
  core::OptimizerOptions o;
  o.name = name;
  o.learning_rate = lr;
  o.weight_decay = decay;
  o.no_decay = {};
  return o;
}

TEST(LearningRate, WarmupThenLinearCosineAndConstantAgainstFormulas) {
  const core::OptimizerOptions o = optimizer("adamw", 2e-3, 0);
  core::ScheduleOptions s;
  s.warmup_steps = 10;
  s.final_lr_fraction = 0.1;
  const std::int64_t max_steps = 110;
  for (const char* name : {"constant", "linear", "cosine"}) {
    s.name = name;
    for (std::int64_t step = 0; step < 10; ++step) {
      EXPECT_DOUBLE_EQ(learning_rate_at(o, s, step, max_steps), 2e-3 * (step + 1) / 10.0);
    }
  }
  s.name = "constant";
  EXPECT_DOUBLE_EQ(learning_rate_at(o, s, 60, max_steps), 2e-3);
  // After warmup, progress p = (step - 10) / 100: linear 2e-3 (0.1 + 0.9 (1 - p)), cosine
  // 2e-3 (0.1 + 0.9 (1 + cos(pi p)) / 2); at max_steps both reach 0.1 x peak.
  for (const std::int64_t step : {10, 35, 60, 85, 110}) {
    const double p = (step - 10) / 100.0;
    s.name = "linear";
    EXPECT_NEAR(learning_rate_at(o, s, step, max_steps), 2e-3 * (0.1 + 0.9 * (1 - p)), 1e-15);
    s.name = "cosine";
    EXPECT_NEAR(learning_rate_at(o, s, step, max_steps),
                2e-3 * (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * p))), 1e-15);
  }
  s.name = "cosine";
  EXPECT_NEAR(learning_rate_at(o, s, 60, max_steps), 2e-3 * 0.55, 1e-15);  // half way
}

// Two steps of Adam on one scalar with gradients g1, g2, in float64 (Kingma & Ba; bias-corrected).
double adam_two_steps(double theta, double g1, double g2, double lr, double decay, bool decoupled) {
  const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
  double m = 0, v = 0;
  const double grads[2] = {g1, g2};
  for (int t = 1; t <= 2; ++t) {
    double g = grads[t - 1];
    if (decoupled) {
      theta -= lr * decay * theta;
    } else {
      g += decay * theta;
    }
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    const double m_hat = m / (1 - std::pow(b1, t));
    const double v_hat = v / (1 - std::pow(b2, t));
    theta -= lr * m_hat / (std::sqrt(v_hat) + eps);
  }
  return theta;
}

double run_two_steps(const core::OptimizerOptions& o, const std::string& group, double theta,
                     double g1, double g2) {
  torch::Tensor p = torch::full({1}, theta, torch::kFloat64).requires_grad_(true);
  std::vector<double> scales;
  auto optimizer = make_optimizer(o, {{"p", p, false, -1, group}}, scales);
  for (const double g : {g1, g2}) {
    p.mutable_grad() = torch::full({1}, g, torch::kFloat64);
    set_learning_rate(*optimizer, o.learning_rate, scales);
    optimizer->step();
  }
  return p.item<double>();
}

TEST(Optimizer, AdamCouplesAndAdamWDecouplesWeightDecay) {
  const double theta = 2.0, g1 = 0.3, g2 = -0.05, lr = 0.1, decay = 0.5;
  const double adam = run_two_steps(optimizer("adam", lr, decay), "weights", theta, g1, g2);
  const double adamw = run_two_steps(optimizer("adamw", lr, decay), "weights", theta, g1, g2);
  EXPECT_NEAR(adam, adam_two_steps(theta, g1, g2, lr, decay, false), 1e-12);
  EXPECT_NEAR(adamw, adam_two_steps(theta, g1, g2, lr, decay, true), 1e-12);
  // The two couplings really differ here (the decay term dominates Adam's second gradient).
  EXPECT_GT(std::abs(adam - adamw), 1e-2);
}

TEST(Optimizer, NoDecayGroupsAndLearningRateScales) {
  core::OptimizerOptions o = optimizer("adamw", 0.1, 0.5);
  o.no_decay = {"biases", "norms", "embeddings"};
  o.lr_scale = {{"embeddings", {"0.25"}}};
  const double theta = 2.0, g1 = 0.3, g2 = -0.05;
  EXPECT_NEAR(run_two_steps(o, "weights", theta, g1, g2),
              adam_two_steps(theta, g1, g2, 0.1, 0.5, true), 1e-12);
  EXPECT_NEAR(run_two_steps(o, "biases", theta, g1, g2),
              adam_two_steps(theta, g1, g2, 0.1, 0.0, true), 1e-12);
  EXPECT_NEAR(run_two_steps(o, "embeddings", theta, g1, g2),
              adam_two_steps(theta, g1, g2, 0.025, 0.0, true), 1e-12);

  std::vector<double> scales;
  o.no_decay = {"bias"};
  EXPECT_THROW(make_optimizer(o, {}, scales), core::UsageError);
  o.no_decay = {};
  o.lr_scale = {{"embeddings", {"-1"}}};
  EXPECT_THROW(make_optimizer(o, {}, scales), core::UsageError);
  o.lr_scale = {{"layers", {"2"}}};
  EXPECT_THROW(make_optimizer(o, {}, scales), core::UsageError);
}

struct Tiny : torch::nn::Module {
  Tiny() {
    linear = register_module("linear", torch::nn::Linear(3, 2));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({2})));
    table = register_module("table", torch::nn::Embedding(5, 2));
    head = register_module(
        "head", torch::nn::Sequential(torch::nn::LayerNorm(torch::nn::LayerNormOptions({2})),
                                      torch::nn::Linear(2, 1)));
    scale = register_parameter("scale", torch::ones({2}));
  }
  torch::nn::Linear linear{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Embedding table{nullptr};
  torch::nn::Sequential head{nullptr};
  torch::Tensor scale;
};

TEST(ParameterGroups, ByOwningModule) {
  Tiny tiny;
  const std::map<std::string, std::string> expected = {
      {"linear.weight", "weights"}, {"linear.bias", "biases"},      {"norm.weight", "norms"},
      {"norm.bias", "norms"},       {"table.weight", "embeddings"}, {"head.0.weight", "norms"},
      {"head.0.bias", "norms"},     {"head.1.weight", "weights"},   {"head.1.bias", "biases"},
      {"scale", "weights"}};
  std::size_t seen = 0;
  for (const auto& item : tiny.named_parameters()) {
    ASSERT_TRUE(expected.count(item.key())) << item.key();
    EXPECT_EQ(parameter_group(tiny, item.key()), expected.at(item.key())) << item.key();
    ++seen;
  }
  EXPECT_EQ(seen, expected.size());
}

}  // namespace
}  // namespace cellfm::trainers
