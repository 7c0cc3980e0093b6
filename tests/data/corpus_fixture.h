// The three-file corpus that tests/data/write_corpus_fixture.py writes with anndata, written once
// by rank 0 into a temporary directory whose path every rank receives. Collective.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "parallel/comm.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::testing {

class CorpusFixture {
 public:
  explicit CorpusFixture(const parallel::Comm& world) : world_(world) {
    if (world_.rank() == 0) {
      const ProcessResult result = run_process(
          {"/usr/bin/python3",
           std::string(CELLFM_SOURCE_DIR) + "/tests/data/write_corpus_fixture.py", dir_.path()});
      if (result.exit_code != 0) ADD_FAILURE() << "write_corpus_fixture.py: " << result.err;
    }
    path_ = world_.broadcast(dir_.path(), 0);
  }
  ~CorpusFixture() { world_.barrier(); }  // every rank done before rank 0 removes the files
  CorpusFixture(const CorpusFixture&) = delete;
  CorpusFixture& operator=(const CorpusFixture&) = delete;

  /// The directory holding a.h5ad, b.h5ad, c.h5ad, expected.json, genes.tsv, vocabulary.txt.
  const std::string& path() const { return path_; }

 private:
  parallel::Comm world_;
  TempDir dir_;
  std::string path_;
};

}  // namespace cellfm::testing
