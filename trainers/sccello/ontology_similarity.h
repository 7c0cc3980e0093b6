// scCello's cell-type matrices from the Cell Ontology (sccello.md §4): personalized PageRank
// similarity levels between the labels (ctgraph_sim) and the ancestor-or-self mask
// (cell_type_ancestor_mask), computed for all labels at once on the sparse is_a graph.
#pragma once

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/cell_ontology.h"

namespace cellfm::trainers::sccello {

/// networkx.pagerank's settings as scCello calls it: alpha 0.9 (restart 0.1), tol 1e-6,
/// max_iter 100.
struct PageRankOptions {
  double alpha = 0.9;
  double tolerance = 1e-6;
  std::int64_t max_iterations = 100;
};

/// Personalized PageRank from each of `sources` (term indices of `ontology`) on the UNDIRECTED
/// is_a graph over all of its live terms (N = ontology.size(); an edge per child-parent pair,
/// duplicates and self-loops ignored, weight 1), exactly as networkx.pagerank computes it with a
/// one-hot personalization p = e_s:
///   x_0 = 1/N everywhere;
///   x_{k+1}[v] = alpha * (sum_{u ~ v} x_k[u] / deg(u) + sum_{u dangling} x_k[u] * p[v])
///                + (1 - alpha) * p[v]      (dangling = degree 0, whose mass goes back to p);
///   stop after the first iteration k+1 <= max_iterations with sum_v |x_{k+1} - x_k| < N * tol,
///   returning x_{k+1}.
/// Each source stops at its own iteration (its column is then frozen), as one networkx call per
/// source would. networkx raises PowerIterationFailedConvergence when a source has not converged
/// after max_iterations (possible on small bipartite graphs, where the error shrinks only by alpha
/// per iteration); here that source keeps its last iterate and is reported in `unconverged`.
/// Float64; all sources advance together as one [N, K] block over a CSR adjacency.
struct PageRankResult {
  torch::Tensor scores;  ///< [N, K] float64: column k = the PPR vector of sources[k]
  std::vector<std::int64_t> iterations;  ///< [K] iterations each source ran
  std::vector<std::size_t> unconverged;  ///< positions k that hit max_iterations unconverged
};
PageRankResult personalized_pagerank(const data::CellOntology& ontology,
                                     const std::vector<std::size_t>& sources,
                                     const PageRankOptions& options = {});

/// scCello's similarity level of PPR scores, element-wise: 1 where ppr < threshold (1e-4), else
/// floor(log2(ppr * 1e4 + 1)) (>= 1 there for the default threshold). Returns int32 of ppr's shape.
torch::Tensor ppr_levels(const torch::Tensor& ppr, double threshold = 1e-4);

/// What to do with a label that is not a live term of the ontology.
enum class UnknownLabels {
  error,    ///< core::InputError naming the label and the ontology file
  exclude,  ///< drop it from the label list and report it in OntologyMatrices::excluded
};

struct OntologyMatrixOptions {
  PageRankOptions pagerank;
  double level_threshold = 1e-4;
  UnknownLabels unknown_labels = UnknownLabels::error;
};

/// The matrices for a label list, K = labels kept. Label ids are ontology term ids ("CL:0000236").
struct OntologyMatrices {
  std::vector<std::string> labels;    ///< [K] the kept labels, in the given order
  std::vector<std::string> excluded;  ///< labels not in the ontology (UnknownLabels::exclude)
  /// [K, K] float64: ppr[i][j] = the PPR score from label i's term, evaluated at label j's term.
  torch::Tensor ppr;
  /// [K, K] int32: ppr_levels(ppr), scCello's ctgraph_sim (row = anchor's label).
  torch::Tensor levels;
  /// [K, K] int32: 1 where label j's term is label i's term or one of its is_a ancestors
  /// (directed, child -> parent), else 0; scCello's cell_type_ancestor_mask. In the alignment
  /// loss, anchor i's negatives exclude every j with ancestor_mask[i][j] = 1.
  torch::Tensor ancestor_mask;
  std::vector<std::int64_t> iterations;  ///< [K] PageRank iterations per label
  std::vector<std::string> unconverged;  ///< labels whose PageRank hit max_iterations
};

/// Computes the matrices. `ontology_source` names the ontology (its file) in errors. A label
/// listed twice is a core::InputError; so is an empty label list (after exclusion).
OntologyMatrices ontology_matrices(const data::CellOntology& ontology,
                                   const std::string& ontology_source,
                                   const std::vector<std::string>& labels,
                                   const OntologyMatrixOptions& options = {});

}  // namespace cellfm::trainers::sccello
