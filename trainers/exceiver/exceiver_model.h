// Exceiver's modules (exceiver.md §2), tensor-parallel over attention heads and the process
// layers' feed-forward: the Perceiver-style cross-attention block, the post-norm process layer
// and the whole model. Parameter names are the released state_dict's (gene_emb.weight,
// encoder_cross_attn.layernorm_kv.weight, process_self_attn.transformer.layers.0.linear1.weight,
// ...), except that each attention's packed in_proj is held as q/k/v slices; full_state_dict()
// gives the released names exactly.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/autocast.h"
#include "core/safetensors.h"
#include "parallel/parallel_attention.h"
#include "parallel/tensor_parallel.h"
#include "trainers/exceiver/exceiver_options.h"

namespace cellfm::trainers::exceiver {

/// Perceiver-style cross-attention block (the reference's CrossAttn):
///   a = attention(layernorm_q(query), layernorm_kv(kv) as keys and values, bias) + query
///   out = mlp(a) + a,  mlp = LayerNorm -> Linear -> GELU -> LayerNorm -> Linear
/// The residual adds the un-normalised query; one LayerNorm serves keys and values.
class CrossAttentionImpl : public torch::nn::Module {
 public:
  CrossAttentionImpl(std::int64_t dim, std::int64_t heads,
                     std::shared_ptr<parallel::Communicator> tp);
  /// query [B, Lq, dim], kv [B, Lk, dim], bias: additive logits broadcastable to
  /// [B, heads, Lq, Lk] (e.g. [B, 1, 1, Lk]) or undefined -> [B, Lq, dim]. `kv_normalised`:
  /// kv has been through layernorm_kv already (value_encoding: after_norm).
  torch::Tensor forward(const torch::Tensor& query, const torch::Tensor& kv,
                        const torch::Tensor& bias = torch::Tensor(), bool kv_normalised = false);

  core::Fp32LayerNorm layernorm_kv{nullptr}, layernorm_q{nullptr};
  parallel::ParallelAttention cross_attn{nullptr};
  torch::nn::Sequential mlp{nullptr};
};
TORCH_MODULE(CrossAttention);

/// PyTorch's TransformerEncoderLayer with norm_first = false (post-norm), exact GELU, eps 1e-5:
///   x = norm1(x + dropout(self_attn(x)));  x = norm2(x +
///   dropout(linear2(dropout(gelu(linear1(x))))))
/// linear1 is column-parallel and linear2 row-parallel over the tensor-parallel ranks.
class ProcessLayerImpl : public torch::nn::Module {
 public:
  ProcessLayerImpl(std::int64_t dim, std::int64_t heads, std::int64_t feedforward, double dropout,
                   std::shared_ptr<parallel::Communicator> tp);
  /// x [B, L, dim] -> [B, L, dim]
  torch::Tensor forward(const torch::Tensor& x);

  parallel::ParallelAttention self_attn{nullptr};
  parallel::ColumnParallelLinear linear1{nullptr};
  parallel::RowParallelLinear linear2{nullptr};
  core::Fp32LayerNorm norm1{nullptr}, norm2{nullptr};

 private:
  double dropout_;
};
TORCH_MODULE(ProcessLayer);

/// The encoder's inputs for one batch. Keys are either every vocabulary gene in order
/// (reference/exclude) or each cell's non-zero genes (drop), padded on the right.
struct EncoderInput {
  torch::Tensor gene_ids;  ///< [B, K] int64: gene id, or `genes` (the zero mask row) where masked
  torch::Tensor values;    ///< [B, K] float32: the scaled value multiplying the gene's embedding
  /// [B, K] bool: reference/exclude: true where the cell's expression is zero; drop: true at the
  /// padding after a cell's genes.
  torch::Tensor zero_or_pad;
};

class ExceiverModelImpl : public torch::nn::Module {
 public:
  /// `genes`: vocabulary size G; `classes` > 0 adds the classification query (row G + 1) and its
  /// head. Initialised from `seed` like the reference's PyTorch modules (the same full weights at
  /// every tensor-parallel size).
  ExceiverModelImpl(const ExceiverOptions& options, std::int64_t genes, std::int64_t classes,
                    std::shared_ptr<parallel::Communicator> tp, std::uint64_t seed);

  /// Additive encoder logits for the zero-gene mode: [B, 1, 1, K].
  torch::Tensor encoder_bias(const torch::Tensor& zero_or_pad) const;
  /// The latent array after the process stack: [B, latents, dim].
  torch::Tensor encode(const EncoderInput& input);
  /// Predicted scaled values of genes `query_ids` [B, Q] -> [B, Q]; with a classifier also the
  /// class logits [B, classes] (else undefined).
  std::pair<torch::Tensor, torch::Tensor> decode(const torch::Tensor& latent,
                                                 const torch::Tensor& query_ids);

  /// Full weights with the released names (collective over the tensor-parallel group).
  core::NamedTensors full_state_dict();
  /// Shapes of the full weights, in full_state_dict() order.
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> full_shapes() const;
  void load_full_state_dict(const core::NamedTensors& tensors);
  /// Whether this rank's parameter `name` is a tensor-parallel slice.
  bool is_sharded(const std::string& name) const;
  /// The dimension along which tensor-parallel ranks split parameter `name` (whatever the
  /// current tensor-parallel size, 1 included); -1 for parameters every rank holds whole.
  std::int64_t shard_dim(const std::string& name) const;

  std::int64_t genes() const { return genes_; }
  std::int64_t classes() const { return classes_; }

  torch::nn::Embedding gene_emb{nullptr};
  torch::Tensor query_emb;  ///< [latents, dim]
  CrossAttention encoder_cross_attn{nullptr};
  std::vector<ProcessLayer> process_layers;
  CrossAttention decoder_cross_attn{nullptr};
  torch::nn::Sequential mlp{nullptr};           ///< LayerNorm -> Linear(d,1) -> GELU -> Linear(1,1)
  torch::nn::Sequential mlp_classify{nullptr};  ///< LayerNorm -> Linear(d,C) -> GELU -> Linear(C,C)

 private:
  ExceiverOptions options_;
  ZeroGenes zero_genes_;
  bool values_after_norm_ = false;
  std::int64_t genes_;
  std::int64_t classes_;
  std::shared_ptr<parallel::Communicator> tp_;
};
TORCH_MODULE(ExceiverModel);

/// The full initial weights of a model (released names), as PyTorch initialises the reference:
/// embeddings and the latent array N(0, 1) with a zero mask row; attention in_proj Xavier-uniform
/// with zero biases, out_proj U(+-1/sqrt(in)) with a zero bias; other Linear layers PyTorch's
/// default; LayerNorms 1/0; every process layer a copy of the first (nn.TransformerEncoder clones
/// one initialised layer).
core::NamedTensors initial_exceiver_weights(const ExceiverOptions& options, std::int64_t genes,
                                            std::int64_t classes, std::uint64_t seed);

}  // namespace cellfm::trainers::exceiver
