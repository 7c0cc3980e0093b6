// The training loop's running averages between two progress lines: the loss and its terms
// weighted by cells, the mean gradient norm and the cells per second.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace cellfm::trainers {

class StepMeter {
 public:
  using Clock = std::chrono::steady_clock;
  using Fields = std::vector<std::pair<std::string, double>>;

  explicit StepMeter(Clock::time_point start) : start_(start) {}

  /// One step: `sums` = [cells, loss x cells, term_1 x cells, ...] summed over the data-parallel
  /// ranks, its gradient norm, and whether its update was applied (a skipped, non-finite step
  /// counts for cells/s only).
  void add(const std::vector<double>& sums, double grad_norm, bool applied);

  /// "loss" and each of `term_names` (cell-weighted means over the applied steps; NaN when none
  /// was applied).
  Fields losses(const std::vector<std::string>& term_names) const;
  /// "grad_norm" (the mean over applied steps; NaN when none) and "cells_per_s" (every step's
  /// cells over the seconds since the start or the last reset).
  Fields rates(Clock::time_point now) const;
  std::int64_t skipped() const { return skipped_; }

  /// Starts a new interval at `now`.
  void reset(Clock::time_point now);

 private:
  Clock::time_point start_;
  std::vector<double> sums_;  // applied steps' sums
  double cells_ = 0;          // every step's cells
  double grad_norm_ = 0;
  std::int64_t applied_ = 0, skipped_ = 0;
};

}  // namespace cellfm::trainers
