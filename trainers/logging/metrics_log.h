// The run's metrics sink: metrics.jsonl (one JSON object per line, flushed as written) and the
// progress line rank 0 prints.
#pragma once

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace cellfm::trainers {

using Fields = std::vector<std::pair<std::string, double>>;

/// Writes lines to `path` (created with its directory if missing). Integral fields ("step",
/// "epoch", "cells", ...) are written as integers, others with full precision; NaN/Inf as null.
class MetricsLog {
 public:
  /// A fresh run truncates the file (keep_through_step < 0). A resumed run passes the step of its
  /// checkpoint: lines with "step" <= it are kept, later ones (written by the interrupted run
  /// after its checkpoint, which the resumed run repeats) are dropped, and new lines appended.
  explicit MetricsLog(const std::string& path, std::int64_t keep_through_step = -1);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void write(const Fields& fields);

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

/// This process's resident memory in MB (VmRSS of /proc/self/status; 0 where unavailable).
double resident_memory_mb();

/// "1:02:03" / "2:03" from seconds.
std::string format_duration(double seconds);

/// "step 120/200 | epoch 0 | loss 0.8123 mse 0.8123 | lr 3.00e-04 | grad_norm 1.234 |
///  1,234 cells/s | ETA 1:12 | checkpoint in 0:40" from the fields of one interval; the
/// checkpoint part only when `checkpoint_in_seconds` >= 0.
/// The summary line's comparison of the model with its baselines, from an evaluation's metrics:
/// ", explained variance 0.71 (per-gene mean 0.66), reconstruction Pearson 0.81 (per-gene mean
/// 0.75), 15-NN label accuracy 0.93 (PCA 0.99)"; the
/// parts whose metrics are absent are left out ("" when none is present).
std::string baseline_comparison(const Fields& eval);

std::string format_progress(std::int64_t step, std::int64_t max_steps, const Fields& fields,
                            double eta_seconds, double checkpoint_in_seconds = -1);

}  // namespace cellfm::trainers
