// scCello's ontology matrices: networkx's personalized PageRank power iteration for many sources
// at once (a sparse [N, N] transition matrix times a dense [N, K] block, float64), the level
// transform and the ancestor-or-self mask.
#include "trainers/sccello/ontology_similarity.h"

#include <algorithm>
#include <unordered_set>
#include <utility>

#include "core/error.h"

namespace cellfm::trainers::sccello {
namespace {

// The undirected is_a edges {a, b} (a < b) between live terms, each once, self-loops dropped:
// networkx.Graph keeps one edge per pair whatever the number of is_a lines or their direction.
std::vector<std::pair<std::int64_t, std::int64_t>> undirected_edges(
    const data::CellOntology& ontology) {
  std::vector<std::pair<std::int64_t, std::int64_t>> edges;
  for (std::size_t child = 0; child < ontology.size(); ++child) {
    for (std::size_t parent : ontology.parents(child)) {
      if (parent == child) continue;
      edges.emplace_back(static_cast<std::int64_t>(std::min(child, parent)),
                         static_cast<std::int64_t>(std::max(child, parent)));
    }
  }
  std::sort(edges.begin(), edges.end());
  edges.erase(std::unique(edges.begin(), edges.end()), edges.end());
  return edges;
}

}  // namespace

PageRankResult personalized_pagerank(const data::CellOntology& ontology,
                                     const std::vector<std::size_t>& sources,
                                     const PageRankOptions& options) {
  const auto n = static_cast<std::int64_t>(ontology.size());
  const auto k = static_cast<std::int64_t>(sources.size());
  if (!(options.alpha >= 0 && options.alpha <= 1) || !(options.tolerance > 0) ||
      options.max_iterations < 1) {
    throw core::UsageError(
        "personalized PageRank: alpha must be in [0, 1], the tolerance > 0 and the iterations "
        ">= 1");
  }
  for (std::size_t s : sources) {
    if (s >= ontology.size()) {
      throw core::UsageError("personalized PageRank: source term " + std::to_string(s) +
                             " is outside the ontology's " + std::to_string(n) + " terms");
    }
  }
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  PageRankResult result;
  if (n == 0 || k == 0) {
    result.scores = torch::zeros({n, k}, f64);
    result.iterations.assign(static_cast<std::size_t>(k), 0);
    return result;
  }

  // Transition W[v][u] = 1 / deg(u) for every edge u ~ v: x @ (row-normalised A) in networkx's
  // row-vector form is W x for column vectors.
  const auto edges = undirected_edges(ontology);
  std::vector<double> degree(static_cast<std::size_t>(n), 0.0);
  for (const auto& [a, b] : edges) {
    degree[a] += 1;
    degree[b] += 1;
  }
  const auto nnz = static_cast<std::int64_t>(2 * edges.size());
  torch::Tensor indices = torch::empty({2, nnz}, torch::kInt64);
  torch::Tensor values = torch::empty({nnz}, f64);
  auto index = indices.accessor<std::int64_t, 2>();
  auto value = values.accessor<double, 1>();
  std::int64_t e = 0;
  for (const auto& [a, b] : edges) {
    index[0][e] = b;  // row v = b receives from u = a
    index[1][e] = a;
    value[e++] = 1.0 / degree[a];
    index[0][e] = a;
    index[1][e] = b;
    value[e++] = 1.0 / degree[b];
  }
  const torch::Tensor transition =
      torch::sparse_coo_tensor(indices, values, {n, n}, f64).coalesce();

  std::vector<double> dangling_values(static_cast<std::size_t>(n));
  for (std::int64_t v = 0; v < n; ++v) dangling_values[v] = degree[v] == 0 ? 1.0 : 0.0;
  const torch::Tensor dangling = torch::tensor(dangling_values, f64).unsqueeze(1);  // [N, 1]

  torch::Tensor personalization = torch::zeros({n, k}, f64);  // [N, K] one-hot columns
  {
    auto p = personalization.accessor<double, 2>();
    for (std::int64_t c = 0; c < k; ++c) p[static_cast<std::int64_t>(sources[c])][c] = 1.0;
  }
  const torch::Tensor restart = personalization * (1.0 - options.alpha);

  torch::Tensor x = torch::full({n, k}, 1.0 / static_cast<double>(n), f64);
  torch::Tensor active = torch::ones({1, k}, torch::kBool);
  torch::Tensor iterations = torch::zeros({k}, torch::kInt64);
  const double threshold = static_cast<double>(n) * options.tolerance;
  for (std::int64_t it = 0; it < options.max_iterations; ++it) {
    const torch::Tensor dangling_mass = (x * dangling).sum(0, /*keepdim=*/true);  // [1, K]
    const torch::Tensor next =
        options.alpha * (torch::mm(transition, x) + personalization * dangling_mass) + restart;
    const torch::Tensor error = (next - x).abs().sum(0, /*keepdim=*/true);  // [1, K] L1 change
    x = torch::where(active, next, x);
    iterations += active.squeeze(0).to(torch::kInt64);
    active = active.logical_and(error >= threshold);
    if (!active.any().item<bool>()) break;
  }

  result.scores = x;
  result.iterations.assign(iterations.data_ptr<std::int64_t>(),
                           iterations.data_ptr<std::int64_t>() + k);
  const torch::Tensor still_active = active.squeeze(0).contiguous();
  for (std::int64_t c = 0; c < k; ++c) {
    if (still_active[c].item<bool>()) result.unconverged.push_back(static_cast<std::size_t>(c));
  }
  return result;
}

torch::Tensor ppr_levels(const torch::Tensor& ppr, double threshold) {
  const torch::Tensor scores = ppr.to(torch::kFloat64);
  const torch::Tensor logarithmic = torch::floor(torch::log2(scores * 1e4 + 1.0));
  return torch::where(scores < threshold, torch::ones_like(logarithmic), logarithmic)
      .to(torch::kInt32);
}

OntologyMatrices ontology_matrices(const data::CellOntology& ontology,
                                   const std::string& ontology_source,
                                   const std::vector<std::string>& labels,
                                   const OntologyMatrixOptions& options) {
  OntologyMatrices out;
  std::vector<std::size_t> nodes;
  std::unordered_set<std::string> seen;
  for (const std::string& label : labels) {
    if (!seen.insert(label).second) {
      throw core::InputError("scCello labels: " + label + " is listed twice");
    }
    const auto node = ontology.index_of(label);
    if (!node) {
      if (options.unknown_labels == UnknownLabels::exclude) {
        out.excluded.push_back(label);
        continue;
      }
      throw core::InputError("scCello labels: " + label + " is not a term of " + ontology_source +
                             " (set model.sccello.unknown_labels: exclude to leave such labels "
                             "out)");
    }
    out.labels.push_back(label);
    nodes.push_back(*node);
  }
  if (out.labels.empty()) {
    throw core::InputError("scCello labels: none of the " + std::to_string(labels.size()) +
                           " labels is a term of " + ontology_source);
  }

  const PageRankResult pagerank = personalized_pagerank(ontology, nodes, options.pagerank);
  const torch::Tensor node_index =
      torch::tensor(std::vector<std::int64_t>(nodes.begin(), nodes.end()), torch::kInt64);
  // scores[node_j][i] is source i's score at label j's term; transpose to [source, target].
  out.ppr = pagerank.scores.index_select(0, node_index).t().contiguous();
  out.levels = ppr_levels(out.ppr, options.level_threshold);
  out.iterations = pagerank.iterations;
  for (std::size_t c : pagerank.unconverged) out.unconverged.push_back(out.labels[c]);

  const auto k = static_cast<std::int64_t>(nodes.size());
  out.ancestor_mask = torch::zeros({k, k}, torch::kInt32);
  auto mask = out.ancestor_mask.accessor<std::int32_t, 2>();
  std::vector<char> is_ancestor_or_self(ontology.size(), 0);
  for (std::int64_t i = 0; i < k; ++i) {
    const std::vector<std::size_t> ancestors = ontology.ancestors(nodes[i]);
    for (std::size_t a : ancestors) is_ancestor_or_self[a] = 1;
    is_ancestor_or_self[nodes[i]] = 1;
    for (std::int64_t j = 0; j < k; ++j) mask[i][j] = is_ancestor_or_self[nodes[j]];
    for (std::size_t a : ancestors) is_ancestor_or_self[a] = 0;
    is_ancestor_or_self[nodes[i]] = 0;
  }
  return out;
}

}  // namespace cellfm::trainers::sccello
