// The training loop's named parts by what they compute: checkpoint triggers and the time to the
// next one, the non-finite step policy, the progress line's running averages.
#include <gtest/gtest.h>

#include <cmath>

#include "trainers/loop/checkpoint_policy.h"
#include "trainers/loop/non_finite_policy.h"
#include "trainers/loop/step_meter.h"

namespace cellfm::trainers {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::seconds;

TEST(CheckpointPolicy, ReasonsByPriority) {
  core::CheckpointOptions options;
  options.every_steps = 100;
  options.every_minutes = 0;
  const CheckpointPolicy policy(options, 250, Clock::now());
  EXPECT_EQ(policy.reason(37, "", false), "");
  EXPECT_EQ(policy.reason(100, "", false), "every_steps");
  EXPECT_EQ(policy.reason(200, "", true), "every_steps");
  EXPECT_EQ(policy.reason(201, "", true), "every_minutes");
  EXPECT_EQ(policy.reason(250, "", false), "end");
  EXPECT_EQ(policy.reason(100, "SIGTERM", false), "signal SIGTERM");
  options.every_steps = 0;
  const CheckpointPolicy only_end(options, 250, Clock::now());
  EXPECT_EQ(only_end.reason(100, "", false), "");
  EXPECT_EQ(only_end.reason(250, "", false), "end");
}

TEST(CheckpointPolicy, MinutesAndTheTimeToTheNextCheckpoint) {
  core::CheckpointOptions options;
  options.every_steps = 100;
  options.every_minutes = 2;
  const Clock::time_point t0 = Clock::now();
  CheckpointPolicy policy(options, 250, t0);
  EXPECT_FALSE(policy.minutes_due(t0 + seconds(119)));
  EXPECT_TRUE(policy.minutes_due(t0 + seconds(120)));
  // At step 130, 0.5 s a step: 70 steps to step 200 = 35 s; the minute trigger is 120 - 10 s
  // away: the step trigger comes first.
  EXPECT_NEAR(policy.seconds_to_next(130, 0.5, t0 + seconds(10)), 35.0, 1e-9);
  // 2 s a step: 140 s by steps, 110 s by minutes.
  EXPECT_NEAR(policy.seconds_to_next(130, 2.0, t0 + seconds(10)), 110.0, 1e-9);
  // Near the end the step trigger is capped at max_steps: 240 -> 250.
  EXPECT_NEAR(policy.seconds_to_next(240, 0.5, t0), 5.0, 1e-9);
  policy.written(t0 + seconds(100));
  EXPECT_FALSE(policy.minutes_due(t0 + seconds(200)));
  EXPECT_TRUE(policy.minutes_due(t0 + seconds(220)));
  options.every_steps = 0;
  options.every_minutes = 0;
  EXPECT_EQ(CheckpointPolicy(options, 10, t0).seconds_to_next(3, 1.0, t0), -1.0);
}

TEST(NonFinitePolicy, SkipsThenRollsBackOrStops) {
  core::FaultOptions options;
  options.nan_consecutive_limit = 3;
  options.nan_max_rollbacks = 2;
  options.nan_rollback_lr_factor = 0.5;
  const NonFinitePolicy policy(options);
  std::int64_t consecutive = 0;
  EXPECT_EQ(policy.after_step(false, consecutive), NonFinitePolicy::Action::skip);
  EXPECT_EQ(policy.after_step(false, consecutive), NonFinitePolicy::Action::skip);
  EXPECT_EQ(consecutive, 2);
  EXPECT_EQ(policy.after_step(true, consecutive), NonFinitePolicy::Action::step);
  EXPECT_EQ(consecutive, 0);
  for (int i = 0; i < 2; ++i) policy.after_step(false, consecutive);
  EXPECT_EQ(policy.after_step(false, consecutive), NonFinitePolicy::Action::roll_back);
  EXPECT_EQ(policy.refusal(0, true), "");
  EXPECT_EQ(policy.refusal(1, true), "");
  EXPECT_NE(policy.refusal(2, true).find("nan_max_rollbacks (2)"), std::string::npos);
  EXPECT_NE(policy.refusal(0, false).find("no checkpoint"), std::string::npos);
  EXPECT_DOUBLE_EQ(policy.scale_after_rollback(0.5), 0.25);
  options.nan_action = "stop";
  EXPECT_NE(NonFinitePolicy(options).refusal(0, true).find("nan_action"), std::string::npos);
}

TEST(StepMeter, CellWeightedLossesMeanGradNormAndCellsPerSecond) {
  const Clock::time_point t0 = Clock::now();
  StepMeter meter(t0);
  // Step 1: 10 cells, loss 2.0, term 4.0; step 2: 30 cells, loss 1.0, term 0.0; step 3 skipped
  // with 20 cells.
  meter.add({10, 20, 40}, 3.0, true);
  meter.add({30, 30, 0}, 1.0, true);
  meter.add({20, NAN, NAN}, NAN, false);
  const auto losses = meter.losses({"mse"});
  ASSERT_EQ(losses.size(), 2u);
  EXPECT_EQ(losses[0].first, "loss");
  EXPECT_DOUBLE_EQ(losses[0].second, 50.0 / 40.0);
  EXPECT_EQ(losses[1].first, "mse");
  EXPECT_DOUBLE_EQ(losses[1].second, 1.0);
  const auto rates = meter.rates(t0 + seconds(4));
  EXPECT_DOUBLE_EQ(rates[0].second, 2.0);   // mean of 3 and 1
  EXPECT_DOUBLE_EQ(rates[1].second, 15.0);  // 60 cells in 4 s
  EXPECT_EQ(meter.skipped(), 1);
  meter.reset(t0 + seconds(4));
  EXPECT_TRUE(std::isnan(meter.losses({"mse"})[0].second));
  EXPECT_TRUE(std::isnan(meter.rates(t0 + seconds(5))[0].second));
  EXPECT_EQ(meter.skipped(), 0);
}

}  // namespace
}  // namespace cellfm::trainers
