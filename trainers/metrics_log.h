// The run's metrics sink: metrics.jsonl (one JSON object per line, flushed as written) and the
// progress line rank 0 prints.
#pragma once

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace cellfm::trainers {

using Fields = std::vector<std::pair<std::string, double>>;

/// Writes lines to `path` (truncated; created with its directory if missing). Integral fields
/// ("step", "epoch", "cells") are written as integers, others with full precision; NaN/Inf as null.
class MetricsLog {
 public:
  explicit MetricsLog(const std::string& path);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  void write(const Fields& fields);

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

/// "1:02:03" / "2:03" from seconds.
std::string format_duration(double seconds);

/// "step 120/200 | epoch 0 | loss 0.8123 mse 0.8123 | lr 3.00e-04 | grad_norm 1.234 |
///  1,234 cells/s | ETA 1:12" from the fields of one interval.
std::string format_progress(std::int64_t step, std::int64_t max_steps, const Fields& fields,
                            double eta_seconds);

}  // namespace cellfm::trainers
