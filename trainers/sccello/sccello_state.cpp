// scCello's family state: prepared from the training corpus, read back for the model.
#include "trainers/sccello/sccello_state.h"

#include <cmath>
#include <fstream>

#include "core/error.h"
#include "core/log.h"
#include "data/cell_ontology.h"
#include "data/corpus_gene_stats.h"
#include "data/gene_stats.h"
#include "parallel/agreement.h"
#include "trainers/sccello/ontology_similarity.h"

namespace cellfm::trainers::sccello {

namespace {

// Whether `path` is an scCello/Geneformer token table (header "id<TAB>token..."), which carries
// the medians, rather than a plain gene list.
bool is_token_table(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    return line.rfind("id\ttoken", 0) == 0;
  }
  return false;
}

std::vector<double> doubles(const torch::Tensor& tensor) {
  const torch::Tensor t = tensor.to(torch::kFloat64).contiguous();
  return {t.data_ptr<double>(), t.data_ptr<double>() + t.numel()};
}

}  // namespace

std::string shipped_ontology_path() {
  return std::string(CELLFM_EXPERIMENTS_DIR) + "/sccello/cl-basic.obo";
}

FamilyState prepare_sccello_state(const core::ExperimentOptions& options,
                                  const SccelloOptions& sccello, const data::Corpus& training,
                                  const parallel::Comm& world) {
  const std::vector<std::string>& corpus_genes = training.vocabulary().genes();
  std::vector<double> medians;
  std::vector<std::uint8_t> ranked(corpus_genes.size(), 1);
  std::string source;
  SccelloVocabulary vocabulary;
  const std::string& table = options.data.vocabulary;
  if (!table.empty() && is_token_table(table)) {
    parallel::run_agreed(world, [&] { vocabulary = load_vocabulary_tsv(table); });
    source = table + " (data.vocabulary)";
  } else {
    data::GeneStats stats;
    if (!options.data.gene_stats.empty()) {
      parallel::run_agreed(world, [&] { stats = data::load_gene_stats(options.data.gene_stats); });
      source = options.data.gene_stats + " (data.gene_stats)";
      if (stats.genes != corpus_genes) {
        throw core::InputError(source +
                               ": its genes are not the corpus vocabulary's in order; "
                               "rerun `cellfm prep stats SPEC` or leave it unset");
      }
    } else {
      stats = data::compute_gene_stats(training, world, "the training corpus");
      source = "the training corpus";
    }
    // A gene never expressed in the training cells has no median: it keeps its id (so token ids
    // follow the corpus vocabulary) with a placeholder median, and collation drops its counts
    // before the size factor, as Geneformer drops genes outside its median dictionary.
    medians = stats.nonzero_median;
    for (std::size_t g = 0; g < medians.size(); ++g) {
      if (!(medians[g] > 0) || !std::isfinite(medians[g])) {
        ranked[g] = 0;
        medians[g] = 1.0;
      }
    }
    parallel::run_agreed(
        world, [&] { vocabulary = build_vocabulary(corpus_genes, medians, source).vocabulary; });
  }
  parallel::run_agreed(world, [&] {
    if (vocabulary.genes != corpus_genes) {
      throw core::InputError(source + ": scCello's token vocabulary (" +
                             std::to_string(vocabulary.gene_count()) +
                             " genes, sorted Ensembl ids) is not the corpus vocabulary (" +
                             std::to_string(corpus_genes.size()) +
                             " genes) in the same order; give data.vocabulary as a sorted gene "
                             "list or scCello's vocabulary.tsv");
    }
  });

  const std::vector<std::string>& labels = training.labels();
  const std::string ontology_path =
      sccello.ontology.empty() ? shipped_ontology_path() : sccello.ontology;
  OntologyMatrices matrices;
  parallel::run_agreed(world, [&] {
    if (labels.empty()) {
      throw core::UsageError(
          "scCello needs cell-type labels (Cell Ontology ids): set "
          "data.label_column, e.g. cell_type_ontology_term_id");
    }
    const data::CellOntology ontology = data::CellOntology::load(ontology_path);
    OntologyMatrixOptions matrix_options;
    matrix_options.unknown_labels =
        sccello.unknown_labels == "exclude" ? UnknownLabels::exclude : UnknownLabels::error;
    matrices = ontology_matrices(ontology, ontology_path + " (model.sccello.ontology)", labels,
                                 matrix_options);
  });
  if (world.rank() == 0) {
    for (const std::string& label : matrices.excluded) {
      CELLFM_LOG(warn) << "scCello: label " << label << " is not in " << ontology_path
                       << "; its cells get no cell-type losses (model.sccello.unknown_labels)";
    }
    if (!matrices.unconverged.empty()) {
      std::string labels_text;
      for (const std::string& label : matrices.unconverged) {
        labels_text += (labels_text.empty() ? "" : ", ") + label;
      }
      CELLFM_LOG(warn) << "scCello: the personalized PageRank of " << labels_text
                       << " stopped at 100 iterations before networkx's tolerance (networkx "
                          "would raise); the last iterates are used";
    }
  }

  FamilyState state;
  state.genes = vocabulary.genes;
  state.labels = labels;
  std::vector<std::int64_t> label_rows(labels.size(), -1);
  for (std::size_t l = 0; l < labels.size(); ++l) {
    for (std::size_t k = 0; k < matrices.labels.size(); ++k) {
      if (matrices.labels[k] == labels[l]) label_rows[l] = static_cast<std::int64_t>(k);
    }
  }
  state.tensors.emplace_back("gene_median", torch::tensor(vocabulary.medians, torch::kFloat64));
  state.tensors.emplace_back(
      "gene_ranked",
      torch::tensor(std::vector<std::int64_t>(ranked.begin(), ranked.end()), torch::kInt64)
          .to(torch::kUInt8));
  state.tensors.emplace_back("label_rows", torch::tensor(label_rows, torch::kInt64));
  state.tensors.emplace_back("ontology_levels", matrices.levels.to(torch::kInt32));
  state.tensors.emplace_back("ontology_ancestor_mask", matrices.ancestor_mask.to(torch::kInt32));
  state.values["ontology"] = ontology_path;
  return state;
}

SccelloStateView read_sccello_state(const FamilyState& state) {
  SccelloStateView view;
  const std::vector<double> medians = doubles(state.tensor("gene_median"));
  const torch::Tensor ranked = state.tensor("gene_ranked").to(torch::kUInt8).contiguous();
  if (medians.size() != state.genes.size() ||
      ranked.numel() != static_cast<std::int64_t>(state.genes.size())) {
    throw core::InputError("scCello's family state: gene_median/gene_ranked have " +
                           std::to_string(medians.size()) + " values for " +
                           std::to_string(state.genes.size()) + " genes");
  }
  view.vocabulary = build_vocabulary(state.genes, medians, "scCello's family state").vocabulary;
  view.ranked.assign(ranked.data_ptr<std::uint8_t>(),
                     ranked.data_ptr<std::uint8_t>() + ranked.numel());
  view.levels = state.tensor("ontology_levels").to(torch::kInt32);
  view.ancestor_mask = state.tensor("ontology_ancestor_mask").to(torch::kInt32);
  const torch::Tensor rows = state.tensor("label_rows").to(torch::kInt64).contiguous();
  view.label_rows.assign(rows.data_ptr<std::int64_t>(),
                         rows.data_ptr<std::int64_t>() + rows.numel());
  const std::int64_t k = view.levels.dim() == 2 ? view.levels.size(0) : -1;
  if (k < 1 || view.levels.size(1) != k || view.ancestor_mask.sizes() != view.levels.sizes() ||
      view.label_rows.size() != state.labels.size()) {
    throw core::InputError(
        "scCello's family state: the ontology matrices or label rows do not "
        "match its " +
        std::to_string(state.labels.size()) + " labels");
  }
  for (std::int64_t row : view.label_rows) {
    if (row < -1 || row >= k) {
      throw core::InputError("scCello's family state: label row " + std::to_string(row) +
                             " is outside the " + std::to_string(k) + " cell types");
    }
  }
  return view;
}

}  // namespace cellfm::trainers::sccello
