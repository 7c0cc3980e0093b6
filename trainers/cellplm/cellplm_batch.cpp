// CellPLM sentence collation.
#include "trainers/cellplm/cellplm_batch.h"

#include <algorithm>
#include <limits>

#include "trainers/cellplm/cellplm_layers.h"

namespace cellfm::trainers::cellplm {

const CorpusTables::Tables& CorpusTables::of(const data::Corpus& corpus,
                                             const CellplmStateView& view) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& slot = tables_[&corpus];
  if (slot) return *slot;
  auto tables = std::make_shared<Tables>();
  for (std::size_t f = 0; f < corpus.files().size(); ++f) {
    tables->measured.push_back(corpus.measured_genes(f));
    const auto found = view.dataset_rows.find(dataset_name(corpus.files()[f].path));
    tables->dataset_rows.push_back(found == view.dataset_rows.end() ? -1 : found->second);
  }
  for (const std::string& group : corpus.groups()) {
    const auto found = view.sample_rows.find(group);
    tables->sample_rows.push_back(found == view.sample_rows.end() ? -1 : found->second);
  }
  slot = std::move(tables);
  return *slot;
}

CellplmBatch collate_sentence(const data::LoadedBatch& batch, const CollateSettings& settings,
                              const CorpusTables::Tables* tables) {
  const data::CsrBatch& cells = batch.data.cells;
  const std::int64_t padded = padded_genes(settings.genes);
  const SentenceCells chosen =
      settings.drop || settings.mask
          ? choose_cells(cells.cells(), settings.masking, settings.key, settings.drop)
          : choose_cells(cells.cells(), settings.masking, 0, false);
  const auto n = static_cast<std::int64_t>(chosen.kept.size());

  // Each kept cell's file (its measured genes and dataset row) and sample row.
  std::vector<std::int64_t> file_of(static_cast<std::size_t>(n), -1);
  std::vector<std::int64_t> distinct;  // files in this batch, in first-seen order
  std::vector<std::int64_t> cell_file(static_cast<std::size_t>(n), 0);
  std::vector<std::int64_t> samples(static_cast<std::size_t>(n), -1);
  std::vector<std::int64_t> datasets(static_cast<std::size_t>(n), -1);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t row = chosen.kept[static_cast<std::size_t>(i)];
    const std::int64_t ordinal =
        cells.cell_ids.empty() ? -1 : cells.cell_ids[static_cast<std::size_t>(row)];
    std::int64_t file = -1;
    if (tables != nullptr && batch.corpus != nullptr && ordinal >= 0) {
      file = static_cast<std::int64_t>(batch.corpus->file_of(ordinal));
      datasets[static_cast<std::size_t>(i)] = tables->dataset_rows[static_cast<std::size_t>(file)];
      if (!batch.data.groups.empty()) {
        const std::int32_t group = batch.data.groups[static_cast<std::size_t>(row)];
        if (group >= 0 && static_cast<std::size_t>(group) < tables->sample_rows.size()) {
          samples[static_cast<std::size_t>(i)] =
              tables->sample_rows[static_cast<std::size_t>(group)];
        }
      }
    }
    auto at = std::find(distinct.begin(), distinct.end(), file);
    if (at == distinct.end()) at = distinct.insert(distinct.end(), file);
    cell_file[static_cast<std::size_t>(i)] = at - distinct.begin();
    file_of[static_cast<std::size_t>(i)] = file;
  }

  CellplmBatch out;
  out.measured = torch::zeros({static_cast<std::int64_t>(distinct.size()), padded}, torch::kBool);
  {
    auto measured = out.measured.accessor<bool, 2>();
    for (std::size_t d = 0; d < distinct.size(); ++d) {
      if (distinct[d] >= 0) {
        for (std::int32_t gene : tables->measured[static_cast<std::size_t>(distinct[d])]) {
          if (gene < settings.genes) measured[static_cast<std::int64_t>(d)][gene] = true;
        }
      } else {
        // Cells of no known file: every gene of the model counts as measured.
        for (std::int64_t gene = 0; gene < settings.genes; ++gene) {
          measured[static_cast<std::int64_t>(d)][gene] = true;
        }
      }
    }
  }
  out.cell_file = torch::tensor(cell_file, torch::kInt64);
  out.masked = torch::zeros({settings.mask ? n : 0, padded}, torch::kBool);
  std::vector<std::int64_t> offsets{0}, input_offsets{0}, genes, input_genes;
  std::vector<float> values, input_values;
  std::vector<float> library(static_cast<std::size_t>(n), 0.f);
  std::vector<float> masked_total(static_cast<std::size_t>(n), 0.f);
  std::vector<std::uint8_t> used(static_cast<std::size_t>(n), 0);
  const auto measured = out.measured.accessor<bool, 2>();
  for (std::int64_t i = 0; i < n; ++i) {
    const auto si = static_cast<std::size_t>(i);
    const std::int64_t row = chosen.kept[si];
    const double rate = settings.mask ? chosen.rates[si] : 0.0;
    const std::int64_t d = cell_file[si];
    if (rate > 0) {
      // Every measured gene of a chosen cell, zeros included, is a candidate.
      auto masked_row = out.masked[i];
      bool* mask = masked_row.data_ptr<bool>();
      std::int64_t count = 0;
      for (std::int64_t gene = 0; gene < settings.genes; ++gene) {
        if (measured[d][gene] && entry_masked(settings.key, i, gene, rate)) {
          mask[gene] = true;
          ++count;
        }
      }
      used[si] = count > 0 ? 1 : 0;
    }
    const bool* mask = settings.mask ? out.masked[i].data_ptr<bool>() : nullptr;
    for (std::int64_t e = cells.offsets[static_cast<std::size_t>(row)];
         e < cells.offsets[static_cast<std::size_t>(row) + 1]; ++e) {
      const std::int32_t gene = cells.genes[static_cast<std::size_t>(e)];
      const float value = cells.values[static_cast<std::size_t>(e)];
      if (gene < 0 || gene >= settings.genes) continue;
      genes.push_back(gene);
      values.push_back(value);
      library[si] += value;
      if (mask != nullptr && mask[gene]) {
        masked_total[si] += value;
      } else {
        input_genes.push_back(gene);
        input_values.push_back(value);
      }
    }
    offsets.push_back(static_cast<std::int64_t>(genes.size()));
    input_offsets.push_back(static_cast<std::int64_t>(input_genes.size()));
    out.cell_ids.push_back(cells.cell_ids.empty() ? -1
                                                  : cells.cell_ids[static_cast<std::size_t>(row)]);
  }
  out.offsets = torch::tensor(offsets, torch::kInt64);
  out.genes = torch::tensor(genes, torch::kInt64);
  out.values = torch::tensor(values, torch::kFloat32);
  out.library = torch::tensor(library, torch::kFloat32);
  out.masked_total = torch::tensor(masked_total, torch::kFloat32);
  out.used = torch::tensor(std::vector<std::int64_t>(used.begin(), used.end()), torch::kInt64)
                 .to(torch::kBool);
  out.input.offsets = torch::tensor(input_offsets, torch::kInt64);
  out.input.genes = torch::tensor(input_genes, torch::kInt64);
  out.input.values = torch::tensor(input_values, torch::kFloat32);
  out.input.samples = torch::tensor(samples, torch::kInt64);
  out.input.datasets = torch::tensor(datasets, torch::kInt64);
  if (settings.positions) {
    torch::Tensor coordinates =
        torch::full({n, 2}, std::numeric_limits<float>::quiet_NaN(), torch::kFloat32);
    if (!batch.data.spatial.empty()) {
      for (std::int64_t i = 0; i < n; ++i) {
        const auto row = static_cast<std::size_t>(chosen.kept[static_cast<std::size_t>(i)]);
        coordinates[i][0] = batch.data.spatial[2 * row];
        coordinates[i][1] = batch.data.spatial[2 * row + 1];
      }
    }
    out.input.positions = position_rows(coordinates);
  }
  return out;
}

}  // namespace cellfm::trainers::cellplm
