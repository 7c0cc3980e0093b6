// Checkpoint directories: what they hold, the collective write with an atomic commit, retention,
// verification against the manifest, and loading tensors back for any tensor-parallel size.
//
// RUN/checkpoints/
//   step_000001234/                       one committed checkpoint (the name sorts by step)
//     model.tp<t>-of-<T>.safetensors      tensor-parallel rank t's parameters (its slices of the
//                                         sharded ones), written by data-parallel rank 0 only;
//                                         metadata "shard_dims": {name: dim, ...} (JSON)
//     optimizer.tp<t>-of-<T>.safetensors  its Adam/AdamW state
//     (trainers/checkpointing/optimizer_state.h) rng.rank<r>.safetensors             every rank's
//     random generator state trainer_state.json                  step, sampler state, counters
//     (trainers/loop/trainer.cpp) spec.yaml, vocabulary.txt           the resolved spec and the
//     model's genes family_state.safetensors            the family's state
//     (trainers/family/family_state.h) manifest.json                       every other file's name,
//     size and SHA-256; written last
//   latest                                the newest committed directory's name (a hint for
//                                         people and scripts; resume scans the directories)
//   .tmp-step_000001234/                  a checkpoint being written (removed if abandoned)
//
// Commit protocol: every rank writes its files into the .tmp directory (each file fsynced) and
// hashes each right after writing it; the ranks agree that all writes succeeded; rank 0 gathers
// the (name, bytes, SHA-256) entries, writes its own files and the manifest, fsyncs, renames the
// directory to its final name, fsyncs the parent and rewrites `latest` atomically.
// A crash at any moment leaves either a complete, verifiable checkpoint or a .tmp directory that
// resume ignores.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "parallel/comm.h"
#include "trainers/family/model_family.h"

namespace cellfm::trainers {

/// "step_000001234".
std::string checkpoint_name(std::int64_t step);

/// A tensor a rank saves, with the dimension tensor-parallel ranks split it along (-1: whole).
struct ShardedTensor {
  std::string name;
  torch::Tensor tensor;
  std::int64_t shard_dim = -1;
};

/// One rank's part of a checkpoint.
struct CheckpointPart {
  std::int64_t step = 0;
  int tp_rank = 0, tp_size = 1, dp_rank = 0;
  /// Saved by data-parallel rank 0 of each tensor-parallel group (the replicas are identical).
  std::vector<ShardedTensor> model, optimizer;
  torch::Tensor rng_state;  ///< uint8, every rank
  /// Rank 0 only: small files by name (trainer_state.json, spec.yaml, vocabulary.txt).
  std::map<std::string, std::string> text_files;
  /// Rank 0 only: the model family's state, written as family_state.safetensors.
  std::optional<FamilyState> family_state;
};

struct RetentionOptions {
  std::int64_t keep_last = 3;
  std::int64_t keep_every_steps = 0;
};

/// Writes and commits a checkpoint under `checkpoints_dir` (collective over `world`: every rank
/// passes its part). Replaces an existing checkpoint of the same step (a rerun after rollback).
/// Then deletes committed checkpoints beyond the retention rule. Returns the committed
/// directory. Throws on every rank when any rank failed (the checkpoint is then not committed).
std::string write_checkpoint(const std::string& checkpoints_dir, const CheckpointPart& part,
                             const RetentionOptions& retention, const parallel::Comm& world);

/// Checks a checkpoint directory against its manifest (every listed file present with its size
/// and SHA-256, the required files listed). Returns "" when it verifies, else the reason in one
/// sentence naming the file.
std::string verify_checkpoint(const std::string& dir);

/// The committed checkpoint directories under `checkpoints_dir`, newest (highest step) first.
std::vector<std::string> list_checkpoints(const std::string& checkpoints_dir);

/// The checkpoint a run starts from for `request`: "auto" takes the newest under
/// `checkpoints_dir` that verifies (warning about each skipped one, naming the file and cause;
/// "" when none does); anything else is a checkpoint directory that must verify (InputError
/// naming the problem otherwise). Not collective: rank 0 calls it and shares the answer.
std::string choose_checkpoint(const std::string& checkpoints_dir, const std::string& request);

/// What a checkpoint directory says about itself (manifest and trainer_state.json).
struct CheckpointInfo {
  std::string dir;
  std::int64_t step = 0;
  int world_size = 1, dp_size = 1, tp_size = 1;
  std::string trainer_state;  ///< trainer_state.json's text
  std::string spec_yaml;
  std::vector<std::string> vocabulary;
  /// family_state.safetensors; nullopt for checkpoints written before it existed.
  std::optional<FamilyState> family_state;
};

/// Reads the small files of a verified checkpoint. Throws InputError naming the file.
CheckpointInfo read_checkpoint_info(const std::string& dir);

/// This rank's tensors of `prefix` ("model" or "optimizer"), for `wanted` (name -> the shard
/// dimension in the current model) at tensor-parallel rank `tp_rank` of `tp_size`: read from the
/// checkpoint's files, concatenated across its tensor-parallel files and resplit when its size
/// differs. Names the checkpoint lacks are left out.
std::map<std::string, torch::Tensor> load_checkpoint_tensors(
    const CheckpointInfo& info, const std::string& prefix,
    const std::map<std::string, std::int64_t>& wanted, int tp_rank, int tp_size);

/// Copies the checkpoint's model tensors into `parameters` (this rank's slices at tensor-parallel
/// rank `tp_rank` of `tp_size`). Throws InputError naming the checkpoint and the first missing or
/// mis-shaped parameter.
void load_model_parameters(const CheckpointInfo& info, const std::vector<ParameterInfo>& parameters,
                           int tp_rank, int tp_size);

/// Rank `rank`'s saved random generator state; undefined when the checkpoint has none for it
/// (written by fewer ranks).
torch::Tensor load_rng_state(const CheckpointInfo& info, int rank);

}  // namespace cellfm::trainers
