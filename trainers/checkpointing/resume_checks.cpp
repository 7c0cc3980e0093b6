// The resume compatibility check.
#include "trainers/checkpointing/resume_checks.h"

#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "trainers/checkpointing/spec_changes.h"

namespace cellfm::trainers {

void check_resume_compatible(const CheckpointInfo& info, std::int64_t checkpoint_train_cells,
                             const std::string& current_spec_yaml,
                             const std::vector<std::string>& genes, std::int64_t train_cells) {
  const std::string spec_path = (std::filesystem::path(info.dir) / "spec.yaml").string();
  const SpecChanges changes = compare_specs(info.spec_yaml, current_spec_yaml, spec_path);
  if (!changes.breaking.empty()) {
    throw core::UsageError("cannot resume from " + info.dir +
                           ": the spec changed in ways the checkpoint cannot follow: " +
                           describe_changes(changes.breaking) +
                           " (start a new run.dir, or undo these changes)");
  }
  if (genes != info.vocabulary) {
    std::size_t row = 0;
    while (row < genes.size() && row < info.vocabulary.size() &&
           genes[row] == info.vocabulary[row]) {
      ++row;
    }
    throw core::UsageError("cannot resume from " + info.dir +
                           ": the vocabulary changed (data.vocabulary, data.files, "
                           "data.gene_column, data.gene_map): the checkpoint has " +
                           std::to_string(info.vocabulary.size()) + " genes, this run " +
                           std::to_string(genes.size()) + ", first difference at row " +
                           std::to_string(row));
  }
  if (checkpoint_train_cells != train_cells) {
    throw core::UsageError("cannot resume from " + info.dir + ": the training split has " +
                           std::to_string(train_cells) + " cells, the checkpoint's had " +
                           std::to_string(checkpoint_train_cells) +
                           " (data.files, data.filters, data.validation.* changed the cells)");
  }
  if (!changes.harmless.empty()) {
    CELLFM_LOG(info) << "resume: spec changes since the checkpoint (allowed): "
                     << describe_changes(changes.harmless);
  }
}

}  // namespace cellfm::trainers
