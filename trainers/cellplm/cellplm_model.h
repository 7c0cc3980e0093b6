// CellPLM's network (cellplm.md §2): cells as tokens of one sentence per sample. The embedder
// (log1p(counts) times the gene table as a sparse product, Linear -> ReLU -> Dropout ->
// GroupNorm(4), plus the 2-D sinusoidal position of spatial cells), pre-LN Flow-Attention layers
// (FFN 2x GELU), the pre-latent LayerNorm, the GMVAE (or VAE) latent and the negative-binomial
// decoder with sample and dataset covariates. Tensor-parallel over heads, the FFN and the gene
// dimension of the embedding table and the NB head (padded to a multiple of 64 genes, so shapes
// are the same at every tensor-parallel size dividing 64). named_parameters() keys are the
// reference's state_dict names (cellplm-state-dict.tsv); full_state_dict() gives them with their
// full shapes.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/safetensors.h"
#include "parallel/communicator.h"
#include "trainers/cellplm/cellplm_options.h"

namespace cellfm::trainers::cellplm {

/// Gene-dimension tensors are padded to a multiple of this (padding genes are never measured).
constexpr std::int64_t kGeneAlignment = 64;
std::int64_t padded_genes(std::int64_t genes);

/// The hidden width of q(z|h,y), hard-coded in the reference.
constexpr std::int64_t kPosteriorHidden = 512;

/// One sentence's cells as the model reads them.
struct CellplmInput {
  torch::Tensor offsets;    ///< [N + 1] int64: CSR row offsets of the input counts
  torch::Tensor genes;      ///< [nnz] int64 gene rows (< genes)
  torch::Tensor values;     ///< [nnz] float32 raw counts (masked entries left out)
  torch::Tensor positions;  ///< [N] int64 rows of the positional table, -1: none (undefined: none)
  torch::Tensor samples;    ///< [N] int64 sample-covariate rows, -1: unknown
  torch::Tensor datasets;   ///< [N] int64 dataset-covariate rows, -1: unknown
  std::int64_t cells() const { return offsets.size(0) - 1; }
};

/// The latent layer's result.
struct CellplmLatent {
  torch::Tensor z;     ///< [N, latent_dim]: the decoder's input (a sample in training, else mu)
  torch::Tensor mu;    ///< [N, latent_dim]: the posterior mean (the cell embedding)
  torch::Tensor loss;  ///< scalar: the weighted, floored latent loss of the sentence
  /// Named unweighted terms (gmvae: gauss, categorical; vae: kl).
  std::vector<std::pair<std::string, torch::Tensor>> terms;
};

class CellplmModelImpl : public torch::nn::Module {
 public:
  /// `genes`: rows of the gene table and NB head (released 19,374); `samples`, `datasets`: rows of
  /// the decoder's covariate tables (released 12,596 and 484). Initialised from `seed`, the same
  /// full weights at every tensor-parallel size.
  CellplmModelImpl(const CellplmOptions& options, std::int64_t genes, std::int64_t samples,
                   std::int64_t datasets, std::shared_ptr<parallel::Communicator> tp,
                   std::uint64_t seed);

  /// The encoder's output for one sentence after the pre-latent norm: [N, hidden].
  torch::Tensor encode(const CellplmInput& input);
  /// The latent layer on encoder states h [N, hidden]. Training: a Gumbel-softmax class (tau 1)
  /// and a reparameterised z; otherwise z = mu with the argmax class, or a Gumbel hard sample
  /// with inference_class gumbel.
  CellplmLatent latent(const torch::Tensor& h);
  /// This rank's slice of the NB mean [N, padded / tp] (exp, clamped to [1e-5, 1e6]).
  torch::Tensor decode(const torch::Tensor& z, const torch::Tensor& samples,
                       const torch::Tensor& datasets);
  /// This rank's slice of the per-gene dispersion [padded / tp] (exp, clamped to [1e-4, 1e4]).
  torch::Tensor dispersion();

  /// The training step the next forward belongs to (the VAE's KL weight warms up over steps).
  void set_step(std::int64_t step) { step_ = step; }

  std::int64_t genes() const { return genes_; }
  std::int64_t first_gene() const { return first_gene_; }  ///< of this rank's gene slice
  std::int64_t local_genes() const { return local_genes_; }
  const CellplmOptions& options() const { return options_; }
  const std::shared_ptr<parallel::Communicator>& tensor_parallel() const { return tp_; }

  /// Full weights and buffers with the reference's names (collective over the tensor-parallel
  /// group); cellfm's own tensors (the learned unknown covariates, the VAE) carry names of the
  /// same style.
  core::NamedTensors full_state_dict();
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> full_shapes() const;
  /// Loads full weights: every parameter must be present with its full shape, except cellfm's
  /// learned unknown covariates (absent from the reference's checkpoints: kept as initialised);
  /// buffers are optional (the positional table is recomputed, never read). Throws InputError
  /// naming the first missing or mismatched tensor.
  void load_full_state_dict(const core::NamedTensors& tensors);
  std::int64_t shard_dim(const std::string& name) const;
  bool is_sharded(const std::string& name) const;

 private:
  enum class Kind { replicated, sharded, genes, buffer };
  enum class Init { zeros, ones, prelu, linear, normal };
  struct Entry {
    std::string name;
    torch::Tensor local;
    Kind kind = Kind::replicated;
    std::int64_t dim = -1;  ///< sharded / genes: the split dimension
    Init init = Init::zeros;
    double scale = 0;  ///< linear: fan-in; normal: standard deviation
  };
  torch::Tensor& add(const std::string& name, std::vector<std::int64_t> local_shape, Kind kind,
                     std::int64_t dim, Init init, double scale = 0);
  torch::Tensor& linear(const std::string& prefix, std::int64_t in, std::int64_t out, Kind kind,
                        bool bias = true);
  void norm(const std::string& prefix, std::int64_t width);
  const torch::Tensor& at(const std::string& name) const;
  std::vector<std::int64_t> full_shape(const Entry& entry) const;
  core::NamedTensors initial_weights(std::uint64_t seed) const;

  torch::Tensor embed(const CellplmInput& input);
  torch::Tensor attention_block(std::int64_t layer, const torch::Tensor& x);
  torch::Tensor feedforward_block(std::int64_t layer, const torch::Tensor& x);
  torch::Tensor covariate(const std::string& table, const torch::Tensor& rows);

  CellplmOptions options_;
  std::int64_t genes_;
  std::int64_t samples_;
  std::int64_t datasets_;
  std::int64_t local_genes_ = 0;
  std::int64_t first_gene_ = 0;
  std::shared_ptr<parallel::Communicator> tp_;
  std::vector<Entry> entries_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::shared_ptr<torch::nn::Module>> holders_;
  std::int64_t step_ = 0;  ///< the training step (vae: the KL warm-up)
};
TORCH_MODULE(CellplmModel);

}  // namespace cellfm::trainers::cellplm
