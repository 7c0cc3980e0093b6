// The run directory's check at the start of `cellfm train`: created and writable before the corpus
// is scanned or any step trained, so a mistyped or read-only run.dir costs seconds, not a run.
#pragma once

#include <string>

#include "parallel/comm.h"

namespace cellfm::trainers {

/// Rank 0 creates `dir` and `dir`/logs and writes, fsyncs and removes a probe file in it; every
/// rank of `world` agrees on the outcome (collective). Throws InputError (exit 2) naming run.dir
/// and the cause: "run.dir /a/b: cannot create it (Not a directory)", "run.dir /a/b: cannot write
/// files in it (Read-only file system)".
void prepare_run_directory(const std::string& dir, const parallel::Comm& world);

}  // namespace cellfm::trainers
