// metrics.jsonl lines and the progress line.
#include "trainers/logging/metrics_log.h"

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "data/h5ad_file.h"

namespace cellfm::trainers {

namespace {

using nlohmann::json;

bool integral_field(const std::string& name) {
  return name == "step" || name == "epoch" || name == "cells" || name == "skipped_cells" ||
         name == "skipped_steps";
}

std::string json_number(const std::string& name, double value) {
  if (!std::isfinite(value)) return "null";
  std::ostringstream out;
  if (integral_field(name)) {
    out << static_cast<std::int64_t>(value);
  } else {
    out << std::setprecision(17) << value;
  }
  return out.str();
}

}  // namespace

MetricsLog::MetricsLog(const std::string& path, std::int64_t keep_through_step) : path_(path) {
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  std::string kept;
  if (keep_through_step >= 0) {
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
      // A line cut short by the killed run does not parse and goes with the later ones, as do
      // lines without an integer "step".
      const json fields = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!fields.is_object()) continue;
      const auto step = fields.find("step");
      if (step == fields.end() || !step->is_number_integer()) continue;
      if (step->get<std::int64_t>() <= keep_through_step) kept += line + '\n';
    }
  }
  file_ = std::fopen(path.c_str(), "w");
  if (file_ == nullptr) throw core::SystemError(path + ": cannot open for writing metrics");
  if (!kept.empty() && (std::fputs(kept.c_str(), file_) < 0 || std::fflush(file_) != 0)) {
    throw core::SystemError(path_ + ": cannot write metrics (disk full?)");
  }
}

MetricsLog::~MetricsLog() {
  if (file_ != nullptr) std::fclose(file_);
}

void MetricsLog::write(const Fields& fields) {
  std::string line = "{";
  for (std::size_t i = 0; i < fields.size(); ++i) {
    line += (i ? ", \"" : "\"") + fields[i].first +
            "\": " + json_number(fields[i].first, fields[i].second);
  }
  line += "}\n";
  if (std::fputs(line.c_str(), file_) < 0 || std::fflush(file_) != 0) {
    throw core::SystemError(path_ + ": cannot write metrics (disk full?)");
  }
}

std::string format_duration(double seconds) {
  const auto total = static_cast<std::int64_t>(std::max(0.0, std::round(seconds)));
  std::ostringstream out;
  if (total >= 3600) {
    out << total / 3600 << ':' << std::setw(2) << std::setfill('0') << (total / 60) % 60;
  } else {
    out << total / 60;
  }
  out << ':' << std::setw(2) << std::setfill('0') << total % 60;
  return out.str();
}

double resident_memory_mb() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
  }
  return 0;
}

std::string baseline_comparison(const Fields& eval) {
  const auto find = [&](const std::string& name) -> const double* {
    for (const auto& field : eval) {
      if (field.first == name) return &field.second;
    }
    return nullptr;
  };
  std::ostringstream out;
  out << std::fixed << std::setprecision(3);
  const double* ev = find("eval_explained_variance");
  const double* gene_mean = find("eval_gene_mean_explained_variance");
  if (ev != nullptr && gene_mean != nullptr) {
    out << ", explained variance " << *ev << " (per-gene mean " << *gene_mean << ")";
  }
  const double* pearson = find("eval_pearson");
  const double* gene_mean_pearson = find("eval_gene_mean_pearson");
  if (pearson != nullptr && gene_mean_pearson != nullptr) {
    out << ", reconstruction Pearson " << *pearson << " (per-gene mean " << *gene_mean_pearson
        << ")";
  }
  const double* knn = find("eval_knn_accuracy");
  const double* pca = find("eval_pca_knn_accuracy");
  if (knn != nullptr && pca != nullptr) {
    out << ", 15-NN label accuracy " << *knn << " (PCA " << *pca << ")";
  }
  return out.str();
}

std::string format_progress(std::int64_t step, std::int64_t max_steps, const Fields& fields,
                            double eta_seconds, double checkpoint_in_seconds) {
  std::ostringstream out;
  out << "step " << step << '/' << max_steps;
  for (const auto& [name, value] : fields) {
    if (name == "step") continue;
    if (name == "epoch") {
      out << " | epoch " << static_cast<std::int64_t>(value);
    } else if (name == "lr") {
      out << " | lr " << std::scientific << std::setprecision(2) << value << std::defaultfloat;
    } else if (name == "skipped_cells") {
      out << " | skipped_cells " << static_cast<std::int64_t>(value);
    } else if (name == "cells_per_s") {
      out << " | " << data::with_thousands(static_cast<std::int64_t>(value)) << " cells/s";
    } else if (name == "elapsed_s" || name == "cells" || name == "memory_mb" ||
               name == "eval_knn_cells") {
      continue;
    } else {
      out << (name == "loss" || name == "grad_norm" || name.rfind("eval_", 0) == 0 ? " | " : " ")
          << name << ' ' << std::fixed << std::setprecision(4) << value << std::defaultfloat;
    }
  }
  out << " | ETA " << format_duration(eta_seconds);
  if (checkpoint_in_seconds >= 0)
    out << " | checkpoint in " << format_duration(checkpoint_in_seconds);
  return out.str();
}

}  // namespace cellfm::trainers
