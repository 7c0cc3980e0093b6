// For sccello_export_test: the output of scCello's embedding layer (word + position + the legacy
// constant rows -> LayerNorm, eval mode) as the model computes it from a cellfm weights file, for
// one cell whose tokens are given on the command line. The model is built with zero encoder
// layers, so encode() returns exactly the embedding layer's output (its weights are the file's;
// the layers' tensors are not looked up).
//   cellfm_sccello_embedding_probe WEIGHTS TOKEN... -> JSON [[hidden floats] per token] on stdout
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "parallel/comm.h"
#include "parallel/communicator.h"
#include "parallel/mpi_runtime.h"
#include "trainers/checkpointing/weights_file.h"
#include "trainers/family/weights_spec.h"
#include "trainers/sccello/sccello_model.h"
#include "trainers/sccello/sccello_options.h"
#include "trainers/sccello/sccello_state.h"

int main(int argc, char** argv) {
  using namespace cellfm;
  parallel::MpiRuntime runtime(argc, argv);
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s WEIGHTS TOKEN...\n", argv[0]);
    return 2;
  }
  try {
    const trainers::WeightsFile file = trainers::read_weights_file(argv[1]);
    const trainers::TrainingSpec spec = trainers::spec_for_weights("", {}, file.spec_yaml, argv[1]);
    auto options = dynamic_cast<const trainers::sccello::SccelloOptions&>(spec.selected());
    options.layers = 0;
    const trainers::sccello::SccelloStateView view =
        trainers::sccello::read_sccello_state(file.state);
    std::int64_t prototypes = 0;
    for (const auto& [name, tensor] : file.weights) {
      if (name == "learned_centroid.weight") prototypes = tensor.size(0);
    }
    trainers::sccello::SccelloModel model(
        options, view.vocabulary.size(), view.cell_types(), prototypes,
        parallel::Communicator::create(parallel::Comm::self(), torch::kCPU), 0);
    model->load_full_state_dict(file.weights);
    model->eval();
    std::vector<std::int64_t> tokens;
    for (int i = 2; i < argc; ++i) tokens.push_back(std::strtoll(argv[i], nullptr, 10));
    torch::NoGradGuard no_grad;
    const torch::Tensor ids = torch::tensor(tokens, torch::kInt64).unsqueeze(0);
    const torch::Tensor out = model->encode(ids, torch::ones_like(ids, torch::kBool)).hidden[0];
    std::fputs("[", stdout);
    for (std::int64_t t = 0; t < out.size(0); ++t) {
      std::fputs(t ? ",\n[" : "[", stdout);
      for (std::int64_t d = 0; d < out.size(1); ++d) {
        std::printf(d ? ",%.9g" : "%.9g", out[t][d].item<double>());
      }
      std::fputs("]", stdout);
    }
    std::fputs("]\n", stdout);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "cellfm_sccello_embedding_probe: %s\n", error.what());
    return 1;
  }
  return 0;
}
