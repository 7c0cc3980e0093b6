// Building a family on a device (see family_builder.h).
#include "trainers/family/family_builder.h"

#include <cmath>

#include "core/error.h"
#include "core/log.h"
#include "parallel/agreement.h"

namespace cellfm::trainers {

torch::Device choose_device(const std::string& request, const parallel::Comm& world) {
  const int node_rank = world.node_rank();
  const bool visible = torch::cuda::is_available();
  if (request == "cpu" || (request == "auto" && !visible)) return torch::kCPU;
  if (!visible) {
    throw core::UsageError(
        "run.device is cuda but no CUDA GPU is visible to this process (a CPU-only LibTorch, no "
        "driver, or CUDA_VISIBLE_DEVICES empty); set run.device: cpu or auto");
  }
  const auto gpus = static_cast<int>(torch::cuda::device_count());
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(node_rank % gpus));
}

void check_family_needs(const FamilyNeeds& needs, const core::ExperimentOptions& options,
                        const std::string& spec_path, bool training) {
  const std::string& family = options.model.family;
  if (training && needs.labels && options.data.label_column.empty()) {
    throw core::UsageError(spec_path + ": model family " + family +
                           " (as configured) trains on cell labels: set data.label_column to "
                           "an obs column of the corpus");
  }
  if (needs.coordinates && options.data.spatial_obsm.empty() &&
      options.data.spatial_columns.empty()) {
    throw core::UsageError(spec_path + ": model family " + family +
                           " needs cell coordinates: set data.spatial_obsm or "
                           "data.spatial_columns");
  }
  // A family that needs whole groups refuses batches of single cells; one that reads cells trains
  // on either shape (a group's cells are a batch of cells).
  if (training && needs.batch_shape == data::BatchShape::groups &&
      options.data.batch_shape != "groups") {
    throw core::UsageError(spec_path + ": model family " + family +
                           " trains on data.batch_shape groups, not " + options.data.batch_shape);
  }
  if (needs.batch_shape == data::BatchShape::groups && options.data.group_column.empty()) {
    throw core::UsageError(spec_path + ": model family " + family +
                           " reads whole groups (samples): set data.group_column");
  }
}

void check_raw_counts(const data::CsrBatch& cells, const data::Corpus& corpus) {
  for (std::int64_t r = 0; r < cells.cells(); ++r) {
    for (std::int64_t at = cells.offsets[static_cast<std::size_t>(r)];
         at < cells.offsets[static_cast<std::size_t>(r) + 1]; ++at) {
      const float value = cells.values[static_cast<std::size_t>(at)];
      if (value >= 0 && std::isfinite(value) && value == std::floor(value)) continue;
      const std::int64_t cell = cells.cell_ids[static_cast<std::size_t>(r)];
      std::string file = "the corpus";
      for (const data::CorpusFileInfo& info : corpus.files()) {
        if (cell >= info.first && cell < info.first + info.kept) file = info.path;
      }
      throw core::InputError(file + ": a cell (corpus cell " + std::to_string(cell) +
                             ") has the value " + std::to_string(value) +
                             " but the model needs raw counts (non-negative integers); point "
                             "data.matrix at the counts (raw or X)");
    }
  }
}

BuiltFamily build_family(const TrainingSpec& spec, const parallel::Comm& world,
                         const parallel::RankGrid& grid, const FamilyState* state,
                         const data::Corpus* training, parallel::CommunicatorOptions comm_options) {
  const core::ExperimentOptions& o = spec.experiment.options;
  const ModelFamilyEntry& entry = model_family(o.model.family);
  BuiltFamily built;
  parallel::run_agreed(world, [&] { built.device = choose_device(o.run.device, world); });
  if (comm_options.name == "world") comm_options.name = "tensor-parallel";
  built.tensor_parallel =
      parallel::Communicator::create(grid.tensor_parallel, built.device, comm_options);
  const FamilyContext context{o, spec.selected(), grid, built.tensor_parallel, built.device};
  // Training (a corpus given) or inference: the spec must give the family what it needs.
  parallel::run_agreed(world, [&] {
    check_family_needs(entry.needs(spec.selected()), o, spec.experiment.spec_path,
                       training != nullptr);
  });
  FamilyState prepared;
  if (state == nullptr) {
    if (training == nullptr) {
      throw core::Error("build_family: neither a family state nor a training corpus",
                        core::ExitCode::failure);
    }
    prepared = entry.prepare(context, *training, world);
    state = &prepared;
  }
  parallel::run_agreed(world, [&] { built.family = entry.create(context, *state); });
  CELLFM_LOG(debug) << "model on " << built.device.str();
  return built;
}

}  // namespace cellfm::trainers
