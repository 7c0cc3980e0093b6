// Fuzz target: experiment spec loading (core/spec_document.cpp, core/spec_schema.cpp,
// core/experiment_options.cpp). Input: "SPEC\n@@\nBASE\n@@\nOVERRIDE\n@@\nOVERRIDE...": the spec
// is written to spec.yaml, the base to base.yaml beside it (reached when the spec says
// `base: base.yaml`), each further part is one `--set` assignment. A spec that loads must
// reload from its resolved YAML to the same options (load_experiment's contract).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/experiment_options.h"
#include "core/spec.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using namespace cellfm;

// A family-like section with one field of every kind and constraint, as trainers/ adds them.
struct ExtraOptions {
  std::string text = "a";
  bool flag = false;
  std::int64_t count = 2;
  double real = 0.5;
  std::vector<std::string> list = {"x"};
  core::NamedValues named;
  bool operator==(const ExtraOptions& o) const {
    return text == o.text && flag == o.flag && count == o.count && real == o.real &&
           list == o.list && named == o.named;
  }
};

core::ExtraFields extra_fields(ExtraOptions& o) {
  return [&o](core::SpecSchema& schema) {
    schema.add("model.fuzz.text", &o.text, "a choice").choices({"a", "b", "c"});
    schema.add("model.fuzz.flag", &o.flag, "a flag");
    schema.add("model.fuzz.count", &o.count, "an integer").at_least(1).at_most(1000);
    schema.add("model.fuzz.real", &o.real, "a real").greater_than(0).at_most(1);
    schema.add("model.fuzz.list", &o.list, "a list");
    schema.add("model.fuzz.named", &o.named, "a mapping");
  };
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::vector<std::string> parts = fuzz::split_parts(data, size);
  const auto dir = fuzz::fresh_dir(fuzz::scratch_dir() / "spec");
  const std::string spec = (dir / "spec.yaml").string();
  fuzz::write_file(spec, parts[0]);
  if (parts.size() > 1) fuzz::write_file(dir / "base.yaml", parts[1]);
  const std::vector<std::string> overrides(parts.size() > 2 ? parts.begin() + 2 : parts.end(),
                                           parts.end());
  fuzz::expect_only_input_errors([&] {
    ExtraOptions extra;
    const core::LoadedExperiment loaded =
        core::load_experiment(spec, overrides, extra_fields(extra));
    // The resolved spec reloads to the same options.
    const std::string resolved = (dir / "resolved.yaml").string();
    fuzz::write_file(resolved, loaded.resolved_yaml);
    ExtraOptions again_extra;
    core::LoadedExperiment again;
    try {
      again = core::load_experiment(resolved, {}, extra_fields(again_extra));
    } catch (const core::Error& e) {
      fuzz::finding(std::string("the resolved spec does not load: ") + e.what() + "\n" +
                    loaded.resolved_yaml);
    }
    if (!(again.options == loaded.options) || !(again_extra == extra)) {
      fuzz::finding("the resolved spec reloads to other options:\n" + loaded.resolved_yaml +
                    "\nreloaded:\n" + again.resolved_yaml);
    }
  });
  return 0;
}
