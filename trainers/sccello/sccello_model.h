// scCello's network (sccello.md §3): a post-LN BERT encoder (ReLU feed-forward, LayerNorm eps
// 1e-12) over rank-value gene tokens, the `cls` (gene) and `cell_cls` (cell) projection heads,
// the cell-type prototypes and their affine projection. Tensor-parallel over attention heads and
// the feed-forward width (column/row-parallel), with the word table vocabulary-parallel. Module
// names are the reference's state_dict names (Hugging Face BertModel's under `bert.`), so
// named_parameters() keys read like sccello-state-dict.tsv; full_state_dict() gives that list
// exactly (tensor-parallel shards gathered, buffers and legacy tensors included).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/autocast.h"
#include "core/safetensors.h"
#include "parallel/communicator.h"
#include "parallel/tensor_parallel.h"
#include "trainers/sccello/sccello_options.h"

namespace cellfm::trainers::sccello {

/// The word table's rows are padded to a multiple of this (zero rows: never looked up, never a
/// target, their logits -inf), so its shape is the same at every tensor-parallel size dividing
/// it and checkpoints resplit along rows.
constexpr std::int64_t kVocabularyAlignment = 64;
std::int64_t padded_vocabulary(std::int64_t vocabulary);

/// BERT self-attention's projections for this rank's heads (column-parallel query/key/value).
class SelfAttentionImpl : public torch::nn::Module {
 public:
  SelfAttentionImpl(std::int64_t hidden, std::int64_t heads, double dropout,
                    const std::shared_ptr<parallel::Communicator>& tp);
  /// x [B, L, hidden], key_bias [B, 1, 1, L] additive (0 or a large negative at masked keys) or
  /// undefined -> this rank's heads' context [B, L, hidden / tp]:
  ///   softmax(q k^T / sqrt(head_dim) + key_bias) with dropout on the probabilities, times v.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& key_bias);

  parallel::ColumnParallelLinear query{nullptr}, key{nullptr}, value{nullptr};

 private:
  std::int64_t local_heads_;
  std::int64_t head_dim_;
  double dropout_;
};
TORCH_MODULE(SelfAttention);

/// BERT's SelfOutput / Output: LayerNorm(residual + dropout(dense(x))) with a row-parallel dense.
class DenseResidualNormImpl : public torch::nn::Module {
 public:
  DenseResidualNormImpl(std::int64_t in, std::int64_t hidden, double dropout, double eps,
                        const std::shared_ptr<parallel::Communicator>& tp);
  /// x [B, L, in / tp] (partitioned), residual [B, L, hidden] -> [B, L, hidden]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& residual);

  parallel::RowParallelLinear dense{nullptr};
  core::Fp32LayerNorm LayerNorm{nullptr};  // NOLINT: the reference's name

 private:
  double dropout_;
};
TORCH_MODULE(DenseResidualNorm);

/// One post-LN BERT layer:
///   a = LN(x + dropout(W_o attention(x)));  y = LN(a + dropout(W_2 relu(W_1 a)))
class EncoderLayerImpl : public torch::nn::Module {
 public:
  EncoderLayerImpl(const SccelloOptions& options,
                   const std::shared_ptr<parallel::Communicator>& tp);
  /// x [B, L, hidden], key_bias as SelfAttention -> [B, L, hidden]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& key_bias);

  SelfAttention self_attention{nullptr};                 ///< attention.self
  DenseResidualNorm attention_output{nullptr};           ///< attention.output
  parallel::ColumnParallelLinear intermediate{nullptr};  ///< intermediate.dense
  DenseResidualNorm output{nullptr};                     ///< output
};
TORCH_MODULE(EncoderLayer);

/// A projection head (`cls` / `cell_cls`): Linear -> LayerNorm -> ReLU -> Linear, all
/// hidden -> hidden (the LayerNorm before the activation, unlike Hugging Face's head). The
/// reference's `predictions.bias` is dense_2's bias under a second name.
class ProjectionHeadImpl : public torch::nn::Module {
 public:
  ProjectionHeadImpl(std::int64_t hidden, double eps);
  /// x [..., hidden] -> [..., hidden]
  torch::Tensor forward(const torch::Tensor& x);
  /// The same with every parameter passed through `transform` first (e.g. f of tensor
  /// parallelism, which sums the parameters' gradients over the ranks).
  torch::Tensor forward_with(const torch::Tensor& x,
                             const std::function<torch::Tensor(const torch::Tensor&)>& transform);

  torch::nn::Linear dense_1{nullptr};
  core::Fp32LayerNorm layer_norm{nullptr};
  torch::nn::Linear dense_2{nullptr};

 private:
  double eps_;
};
TORCH_MODULE(ProjectionHead);

/// The encoder's result for a batch.
struct SccelloEncoding {
  torch::Tensor hidden;  ///< [B, L, hidden]: the last layer's hidden states
  torch::Tensor cls;  ///< [B, hidden]: hidden[:, 0], the raw `<cls>` vector (zero-shot embedding)
};

class SccelloModelImpl : public torch::nn::Module {
 public:
  /// `vocabulary`: token ids (pad 0, mask 1, genes, `<cls>` last; released 25,427); `labels`: cell
  /// types K (the ontology matrices are [K, K]; released 398); `prototypes` >= labels: rows of the
  /// prototype table (released 600). Initialised from `seed` as the reference's post_init
  /// (N(0, init_std) weights and embeddings, zero biases and padding rows, LayerNorms 1/0), the
  /// same full weights at every tensor-parallel size.
  SccelloModelImpl(const SccelloOptions& options, std::int64_t vocabulary, std::int64_t labels,
                   std::int64_t prototypes, std::shared_ptr<parallel::Communicator> tp,
                   std::uint64_t seed);

  /// input_ids [B, L] int64 (L <= max_tokens), attention_mask [B, L] bool (true: a real token;
  /// undefined: input_ids != 0). With attend_padding the mask is ignored: every key is attended.
  SccelloEncoding encode(const torch::Tensor& input_ids,
                         const torch::Tensor& attention_mask = torch::Tensor());
  /// z = normalise(cell_cls(cls)) / sqrt(tau): cls [B, hidden] -> [B, hidden] (norm 1/sqrt(tau)).
  torch::Tensor cell_vector(const torch::Tensor& cls);
  /// cls(rows): the gene head on hidden states [M, hidden] -> [M, hidden].
  torch::Tensor gene_head(const torch::Tensor& rows);
  /// cls(word table rows) for this rank's vocabulary slice: [padded / tp, hidden], rows
  /// first_vocabulary_row() on. The head's parameter gradients from it are summed over the
  /// tensor-parallel ranks (each rank sees only its slice of the table).
  torch::Tensor gene_head_table();
  /// p_k = normalise(learned_centroid[k]) / sqrt(tau) for the K labels: [K, hidden].
  torch::Tensor prototype_vectors();

  /// The ontology buffers: levels[a][b] (ctgraph_sim: the PPR level of label b seen from a) and
  /// ancestor_mask[a][b] != 0 iff b is an ancestor of a or b == a. Both [K, K], int32.
  void set_ontology(const torch::Tensor& levels, const torch::Tensor& ancestor_mask);
  const torch::Tensor& levels() const { return ctgraph_sim; }
  const torch::Tensor& ancestor_mask() const { return cell_type_ancestor_mask; }

  /// Full weights and buffers with the reference's names, in sccello-state-dict.tsv's order
  /// (collective over the tensor-parallel group).
  core::NamedTensors full_state_dict();
  /// Names and shapes of full_state_dict(), without communication.
  std::vector<std::pair<std::string, std::vector<std::int64_t>>> full_shapes() const;
  /// Loads reference-named weights. Optional: bert.embeddings.position_ids (Hugging Face no longer
  /// saves it), the legacy binary_ce_loss_transform_* tensors, the ontology buffers (kept when
  /// absent), and one of dense_2.bias / predictions.bias (two names of one tensor).
  void load_full_state_dict(const core::NamedTensors& tensors);
  /// The dimension along which tensor-parallel ranks split the parameter `name` (a key of
  /// named_parameters()) at every size, 1 included; -1 for parameters every rank holds whole.
  std::int64_t shard_dim(const std::string& name) const;
  bool is_sharded(const std::string& name) const;

  const SccelloOptions& options() const { return options_; }
  std::int64_t vocabulary() const { return vocabulary_; }
  std::int64_t labels() const { return labels_; }
  std::int64_t first_vocabulary_row() const { return first_row_; }
  const std::shared_ptr<parallel::Communicator>& tensor_parallel() const { return tp_; }

  // bert.embeddings
  torch::Tensor word_embeddings;  ///< [padded / tp, hidden]: this rank's rows of the word table
  torch::nn::Embedding position_embeddings{nullptr};
  torch::nn::Embedding tf_class_embeddings{nullptr}, tf_superclass_embeddings{nullptr};
  torch::nn::Embedding expbin_embeddings{nullptr};  ///< padding_idx 0: a constant (zero) row
  core::Fp32LayerNorm embeddings_norm{nullptr};     ///< bert.embeddings.LayerNorm
  std::vector<EncoderLayer> layers;                 ///< bert.encoder.layer.*
  ProjectionHead cls_head{nullptr};                 ///< cls.predictions
  ProjectionHead cell_head{nullptr};                ///< cell_cls.predictions
  torch::nn::Embedding learned_centroid{nullptr};   ///< [prototypes, hidden]
  torch::nn::Linear affine_projection{nullptr};
  torch::Tensor cell_type_ancestor_mask;  ///< buffer [K, K] int32
  torch::Tensor ctgraph_sim;              ///< buffer [K, K] int32
  /// The reference's unused Linear(1, 1) modules, kept as buffers (never trained) so their
  /// weights round-trip: binary_ce_loss_transform_{cell,prototype,cellprot}.{weight,bias}.
  std::vector<std::pair<std::string, torch::Tensor>> legacy;

 private:
  torch::Tensor embed(const torch::Tensor& input_ids);
  torch::Tensor lookup_words(const torch::Tensor& input_ids);

  SccelloOptions options_;
  std::int64_t vocabulary_;
  std::int64_t labels_;
  std::int64_t first_row_ = 0;
  std::shared_ptr<parallel::Communicator> tp_;
};
TORCH_MODULE(SccelloModel);

/// The full initial weights (reference names and order, sccello-state-dict.tsv) of a model with
/// `seed`: Linear weights, embeddings, prototypes and the legacy Linear(1, 1) weights N(0,
/// init_std); biases zero; the word table's row 0 (padding) and expbin's row zero; LayerNorms 1/0;
/// position_ids 0..max_tokens-1; the ontology buffers zero.
core::NamedTensors initial_sccello_weights(const SccelloOptions& options, std::int64_t vocabulary,
                                           std::int64_t labels, std::int64_t prototypes,
                                           std::uint64_t seed);

}  // namespace cellfm::trainers::sccello
