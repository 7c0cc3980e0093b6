// `cellfm embed SPEC --weights W --input in.h5ad --output out.h5ad`: inference over any h5ad the
// reader accepts, each data-parallel rank streaming its share of cells, writing a copy of the
// input with the cell embeddings in obsm (and a classifier's predictions in obs).

#include <algorithm>
#include <limits>

#include "core/error.h"
#include "core/log.h"
#include "core/safetensors.h"
#include "data/h5ad_embedding_writer.h"
#include "data/h5ad_file.h"
#include "parallel/agreement.h"
#include "parallel/rank_grid.h"
#include "trainers/checkpointing/weights_file.h"
#include "trainers/cli/cli_command.h"
#include "trainers/commands/embed_sentences.h"
#include "trainers/family/family_builder.h"
#include "trainers/family/model_family.h"
#include "trainers/family/weights_spec.h"

namespace cellfm::trainers {

namespace po = boost::program_options;

namespace {

// Keeps the spec's group column and coordinates of a sentence family where `input` has them.
void keep_sentence_columns(const std::string& input, const core::DataOptions& data,
                           data::CorpusOptions& corpus_options) {
  data::H5adOptions h5ad;
  h5ad.matrix = corpus_options.matrix;
  const data::H5adFile file(input, parallel::Comm::self(), h5ad);
  const std::vector<std::string> columns = file.obs_column_names();
  const auto has = [&](const std::string& name) {
    return std::find(columns.begin(), columns.end(), name) != columns.end();
  };
  if (!data.group_column.empty() && has(data.group_column)) {
    corpus_options.group_column = data.group_column;
  }
  if (!data.spatial_obsm.empty()) {
    try {
      std::int64_t width = 0;
      file.obsm_rows(data.spatial_obsm, 0, 0, width);
      if (width >= 2) corpus_options.spatial_obsm = data.spatial_obsm;
    } catch (const core::InputError&) {
      // no coordinates in this file
    }
  } else if (data.spatial_columns.size() == 2 && has(data.spatial_columns[0]) &&
             has(data.spatial_columns[1])) {
    corpus_options.spatial_columns = data.spatial_columns;
  }
}

}  // namespace

int run_embed_command(const std::vector<std::string>& args, CliContext& context) {
  const parallel::Comm& world = context.world;
  po::options_description options;
  options.add_options()("spec", po::value<std::string>(),
                        "an experiment spec (default: the one the weights were trained with)")(
      "weights", po::value<std::string>()->required(),
      "a .safetensors written by cellfm train or export")(
      "input", po::value<std::string>()->required(), "the .h5ad to embed")(
      "output", po::value<std::string>()->required(), "the .h5ad to write (a copy plus obsm)")(
      "set", po::value<std::vector<std::string>>()->composing(), "override a spec key")(
      "batch-cells", po::value<std::int64_t>()->default_value(256), "cells per forward pass")(
      "embedding", po::value<std::string>(),
      "which embedding to write, for a family with several (scCello: cls, the default, or "
      "cell)")(
      "label-column", po::value<std::string>(),
      "obs column for a classifier's predictions (default: predicted_<data.label_column>)")(
      "denoised",
      "also write the model's reconstruction of each cell's counts as a layer (CellPLM: "
      "layers/cellplm_denoised, the NB mean at the cell's library; NaN for genes the model lacks)");
  po::positional_options_description positional;
  positional.add("spec", 1);
  const auto values = parse_command_options(
      "embed",
      "cellfm embed [SPEC] --weights W --input in.h5ad --output out.h5ad [--set KEY=VALUE]... "
      "[--batch-cells N] [--embedding KIND] [--label-column NAME] [--denoised]\n"
      "Writes out.h5ad: in.h5ad plus obsm/X_<family> [cells, embedding] (and, for a classifier, "
      "the predicted labels in obs). The weights carry the model's options, genes and "
      "statistics; SPEC (default: the spec the weights were trained with) may set the data and "
      "run keys, and a model.* key that contradicts the weights is an error.",
      options, positional, args, world);
  if (!values) return 0;
  const std::string spec_path = values->count("spec") ? (*values)["spec"].as<std::string>() : "";
  const std::string weights_path = (*values)["weights"].as<std::string>();
  const std::string input = (*values)["input"].as<std::string>();
  const std::string output = (*values)["output"].as<std::string>();
  const std::int64_t batch_cells = (*values)["batch-cells"].as<std::int64_t>();
  if (batch_cells < 1 || batch_cells > (1 << 20)) {
    throw core::UsageError("cellfm embed: --batch-cells must be in [1, 1048576], got " +
                           std::to_string(batch_cells));
  }
  const auto overrides = values->count("set") ? (*values)["set"].as<std::vector<std::string>>()
                                              : std::vector<std::string>{};

  TrainingSpec spec;
  WeightsFile weights;
  parallel::run_agreed(world, [&] {
    weights = read_weights_file(weights_path);
    spec = spec_for_weights(spec_path, overrides, weights.spec_yaml, weights_path);
  });
  const core::ExperimentOptions& o = spec.experiment.options;
  const FamilyNeeds needs = model_family(o.model.family).needs(spec.selected());

  const parallel::RankGrid grid =
      parallel::RankGrid::create(world, static_cast<int>(o.parallel.tensor_parallel));
  data::CorpusOptions corpus_options = data::corpus_options(
      o.data, static_cast<std::uint64_t>(o.run.seed), data::CorpusSplit::train);
  corpus_options.files = {input};
  corpus_options.filters.clear();
  corpus_options.validation_fraction = 0;
  corpus_options.validation_files.clear();
  corpus_options.validation_column.clear();
  corpus_options.validation_values.clear();
  corpus_options.label_column.clear();
  corpus_options.group_column.clear();
  corpus_options.spatial_obsm.clear();
  corpus_options.spatial_columns.clear();
  corpus_options.vocabulary_file.clear();
  corpus_options.vocabulary_genes = weights.state.genes;
  corpus_options.keep_empty_cells = true;
  const bool sentences = needs.batch_shape == data::BatchShape::groups;
  if (sentences) {
    // Whole samples: their group column and coordinates where the input has them (a file
    // without the group column is one sentence; cells without coordinates get none).
    keep_sentence_columns(input, o.data, corpus_options);
  }
  // Every obs row gets an output row: a bad cell is an error here, whatever data.on_bad_cell says.
  corpus_options.skip_bad_cells = false;
  corpus_options.integer_counts = needs.raw_counts;
  const data::Corpus corpus(corpus_options, world);

  parallel::CommunicatorOptions comm_options;
  comm_options.name = "tensor-parallel";
  BuiltFamily built = build_family(spec, world, grid, &weights.state, nullptr, comm_options);
  std::unique_ptr<ModelFamily>& family = built.family;
  parallel::run_agreed(world, [&] {
    family->load_full_state_dict(weights.weights);
    if (values->count("embedding"))
      family->select_embedding((*values)["embedding"].as<std::string>());
  });
  weights = {};

  data::EmbeddingOutputOptions output_options;
  output_options.obsm_key = family->embedding_key();
  output_options.dim = family->embedding_dim();
  output_options.label_names = family->predicted_label_names();
  if (!output_options.label_names.empty()) {
    output_options.label_column =
        values->count("label-column")
            ? (*values)["label-column"].as<std::string>()
            : "predicted_" + (o.data.label_column.empty() ? "label" : o.data.label_column);
  }
  if (values->count("denoised")) {
    parallel::run_agreed(world, [&] { output_options.layer_key = family->request_denoised(); });
    output_options.layer_columns = static_cast<std::int64_t>(corpus.gene_columns(0).size());
  }
  data::EmbeddingWriter writer(input, output, output_options, world);
  parallel::run_agreed(world, [&] {
    if (writer.cells() != corpus.cells()) {
      throw core::SystemError(input + ": " + std::to_string(writer.cells()) +
                              " obs rows but the reader found " + std::to_string(corpus.cells()) +
                              " cells");
    }
  });

  // Each data-parallel rank embeds a contiguous share; its tensor-parallel group computes
  // together and the group's first rank writes.
  const std::int64_t cells = corpus.cells();
  const std::int64_t begin = cells * grid.dp_rank / grid.dp_size;
  const std::int64_t end = cells * (grid.dp_rank + 1) / grid.dp_size;
  // Writes `count` rows of an inference output from its row `from` as the input's rows
  // [first, first + count): embeddings, predicted labels, and the denoised layer mapped onto the
  // input's var columns.
  const auto write = [&](const InferenceOutput& out, std::int64_t from, std::int64_t first,
                         std::int64_t count) {
    if (grid.tp_rank != 0 || count == 0) return;
    const torch::Tensor embedding = out.embedding.contiguous();
    std::vector<std::int32_t> codes;
    if (out.predicted.defined()) {
      const torch::Tensor predicted = out.predicted.to(torch::kInt32).contiguous();
      codes.assign(predicted.data_ptr<std::int32_t>() + from,
                   predicted.data_ptr<std::int32_t>() + from + count);
    }
    std::vector<float> layer;
    if (!output_options.layer_key.empty()) {
      const std::vector<std::int32_t>& columns = corpus.gene_columns(0);
      const torch::Tensor denoised = out.denoised.contiguous();
      const std::int64_t genes = denoised.size(1);
      const float* values = denoised.data_ptr<float>();
      layer.assign(static_cast<std::size_t>(count) * columns.size(),
                   std::numeric_limits<float>::quiet_NaN());
      for (std::int64_t r = 0; r < count; ++r) {
        for (std::size_t c = 0; c < columns.size(); ++c) {
          if (columns[c] >= 0 && columns[c] < genes) {
            layer[static_cast<std::size_t>(r) * columns.size() + c] =
                values[(from + r) * genes + columns[c]];
          }
        }
      }
    }
    writer.write_rows(first, count, embedding.data_ptr<float>() + from * embedding.size(1),
                      codes.empty() ? nullptr : codes.data(),
                      layer.empty() ? nullptr : layer.data());
  };
  const auto start = std::chrono::steady_clock::now();
  parallel::run_agreed(world, [&] {
    if (sentences) {
      // One forward pass per sample, the samples dealt to the data-parallel ranks in turn.
      const std::vector<Sentence> all = corpus_sentences(corpus);
      for (std::size_t i = static_cast<std::size_t>(grid.dp_rank); i < all.size();
           i += static_cast<std::size_t>(grid.dp_size)) {
        data::LoadedBatch batch;
        batch.data = read_sentence(corpus, all[i]);
        batch.corpus = &corpus;
        if (needs.raw_counts) check_raw_counts(batch.data.cells, corpus);
        const InferenceOutput out = family->infer(family->collate(batch, CollateMode::inference));
        std::int64_t row = 0;
        for (const auto& [first, last] : all[i]) {
          write(out, row, first, last - first);
          row += last - first;
        }
      }
      return;
    }
    for (std::int64_t at = begin; at < end; at += batch_cells) {
      data::LoadedBatch batch;
      batch.data = corpus.read(at, std::min(end, at + batch_cells));
      batch.corpus = &corpus;
      if (needs.raw_counts) check_raw_counts(batch.data.cells, corpus);
      const InferenceOutput out = family->infer(family->collate(batch, CollateMode::inference));
      write(out, 0, at, out.embedding.size(0));
    }
  });
  writer.commit();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (world.rank() == 0) {
    std::string extras;
    if (!output_options.label_column.empty()) extras += ", obs/" + output_options.label_column;
    if (!output_options.layer_key.empty()) {
      extras += ", layers/" + output_options.layer_key + " [" + std::to_string(cells) + " x " +
                std::to_string(output_options.layer_columns) + "]";
    }
    std::printf("embedded %s cells of %s in %.1f s on %d ranks: %s obsm/%s [%lld x %lld]%s\n",
                data::with_thousands(cells).c_str(), input.c_str(), seconds, world.size(),
                output.c_str(), output_options.obsm_key.c_str(), static_cast<long long>(cells),
                static_cast<long long>(output_options.dim), extras.c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace cellfm::trainers
