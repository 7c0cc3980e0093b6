// HDF5 error-stack text and the failure path of CELLFM_H5_CHECK.
#include "data/h5_native.h"

#include <vector>

#include "core/error.h"
#include "parallel/mpi_native.h"

namespace cellfm::data {
namespace {

struct StackEntry {
  std::string description;
  std::string minor;
};

herr_t collect_entry(unsigned /*index*/, const H5E_error2_t* error, void* client) {
  auto* entries = static_cast<std::vector<StackEntry>*>(client);
  StackEntry entry;
  if (error->desc) entry.description = error->desc;
  char minor[256] = {0};
  if (H5Eget_msg(error->min_num, nullptr, minor, sizeof minor) > 0) entry.minor = minor;
  entries->push_back(std::move(entry));
  return 0;
}

}  // namespace

std::string h5_error_text() {
  std::vector<StackEntry> entries;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_entry, &entries);
  if (entries.empty()) return "no HDF5 error recorded";
  // Upward: innermost (the root cause) first, the API call's own description last.
  const StackEntry& cause = entries.front();
  const StackEntry& api = entries.back();
  std::string text = api.description;
  if (&cause != &api && !cause.description.empty()) text += ": " + cause.description;
  if (!cause.minor.empty()) text += " (" + cause.minor + ")";
  return text;
}

void h5_silence_automatic_errors() {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

void throw_h5_failure(const char* call, const char* file, int line) {
  const std::string cause = h5_error_text();
  H5Eclear2(H5E_DEFAULT);
  throw core::SystemError(
      core::describe_failed_call(call, file, line, parallel::world_rank_or_zero(), cause));
}

}  // namespace cellfm::data
