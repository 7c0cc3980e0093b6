// scCello's Hugging Face directory: BertModel names and config, vocab.txt, and the scCello part.
#include "trainers/sccello/huggingface_layout.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/atomic_file.h"
#include "core/error.h"
#include "trainers/sccello/sccello_vocabulary.h"

namespace cellfm::trainers::sccello {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* const kBertPrefix = "bert.";
const char* const kTokenType = "embeddings.token_type_embeddings.weight";
const char* const kHeadsFormat = "cellfm-sccello-heads-1";

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

// The reference names that become BertModel's (with "bert." removed): the word and position
// tables, the embedding LayerNorm and every encoder tensor.
bool is_bert_tensor(const std::string& name) {
  return name == "bert.embeddings.word_embeddings.weight" ||
         name == "bert.embeddings.position_embeddings.weight" ||
         starts_with(name, "bert.embeddings.LayerNorm.") || starts_with(name, "bert.encoder.");
}

const torch::Tensor* named_tensor(const core::NamedTensors& tensors, const std::string& name) {
  for (const auto& [key, tensor] : tensors) {
    if (key == name) return &tensor;
  }
  return nullptr;
}

// The legacy rows' sum in the order SccelloModel's embedding adds them.
torch::Tensor legacy_sum(const torch::Tensor& tf_class, const torch::Tensor& tf_superclass,
                         const torch::Tensor& expbin) {
  return (tf_class.to(torch::kFloat32) + tf_superclass.to(torch::kFloat32)) +
         expbin.to(torch::kFloat32);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw core::InputError(path + ": cannot be read");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// vocab.txt's tokens: <pad>, <mask>, the genes, <cls>; the genes are returned.
std::vector<std::string> read_vocab_txt(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    throw core::InputError(path +
                           ": cannot be read (the directory's vocab.txt: one token per "
                           "line, <pad>, <mask>, the genes, <cls>)");
  }
  std::vector<std::string> tokens;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    tokens.push_back(line);
  }
  while (!tokens.empty() && tokens.back().empty()) tokens.pop_back();
  if (tokens.size() < 3 || tokens[0] != "<pad>" || tokens[1] != "<mask>" ||
      tokens.back() != "<cls>") {
    throw core::InputError(path +
                           ": not scCello's token list (line 1 <pad>, line 2 <mask>, the genes, "
                           "the last line <cls>)");
  }
  return {tokens.begin() + kFirstGeneToken, tokens.end() - 1};
}

// Compares config.json's sizes with the spec's model.sccello.* (the spec the heads carry), so a
// config edited by hand cannot silently disagree with the weights it describes.
void check_config(const json& config, const std::string& spec_yaml, std::int64_t tokens,
                  const std::string& path) {
  if (config.value("model_type", std::string()) != "bert") {
    throw core::InputError(path + ": model_type is not \"bert\"");
  }
  if (!config.contains("vocab_size") || config["vocab_size"].get<std::int64_t>() != tokens) {
    throw core::InputError(
        path + ": vocab_size is " +
        (config.contains("vocab_size") ? config["vocab_size"].dump() : "absent") +
        " but vocab.txt lists " + std::to_string(tokens) + " tokens");
  }
  const YAML::Node model = YAML::Load(spec_yaml)["model"]["sccello"];
  const std::pair<const char*, const char*> integers[] = {
      {"hidden_size", "hidden"},
      {"num_hidden_layers", "layers"},
      {"num_attention_heads", "heads"},
      {"intermediate_size", "feedforward"},
      {"max_position_embeddings", "max_tokens"}};
  for (const auto& [config_key, spec_key] : integers) {
    if (!model || !model[spec_key]) continue;
    const std::int64_t expected = model[spec_key].as<std::int64_t>();
    if (!config.contains(config_key) || config[config_key].get<std::int64_t>() != expected) {
      throw core::InputError(path + ": " + config_key + " is " +
                             (config.contains(config_key) ? config[config_key].dump() : "absent") +
                             " but the weights were trained with model.sccello." + spec_key + " " +
                             std::to_string(expected));
    }
  }
  if (config.value("hidden_act", std::string("relu")) != "relu") {
    throw core::InputError(path + ": hidden_act is " + config["hidden_act"].dump() +
                           "; scCello's feed-forward is ReLU");
  }
}

}  // namespace

std::vector<std::string> legacy_row_names() {
  return {"bert.embeddings.tf_class_embeddings.weight",
          "bert.embeddings.tf_superclass_embeddings.weight",
          "bert.embeddings.expbin_embeddings.weight"};
}

std::pair<core::NamedTensors, core::NamedTensors> split_for_huggingface(
    const core::NamedTensors& reference) {
  const auto get = [&](const std::string& name) -> const torch::Tensor& {
    const torch::Tensor* t = named_tensor(reference, name);
    if (t == nullptr)
      throw core::InputError("sccello weights: the tensor '" + name + "' is missing");
    return *t;
  };
  const std::vector<std::string> legacy = legacy_row_names();
  const torch::Tensor token_type = legacy_sum(get(legacy[0]), get(legacy[1]), get(legacy[2]));
  get("bert.embeddings.position_embeddings.weight");  // token_type goes after it
  core::NamedTensors bert, sccello;
  for (const auto& [name, tensor] : reference) {
    if (name == "bert.embeddings.position_ids") continue;  // computed, not state
    if (is_bert_tensor(name)) {
      bert.emplace_back(name.substr(std::string(kBertPrefix).size()), tensor);
      // BertEmbeddings' order: word, position, token type, LayerNorm.
      if (name == "bert.embeddings.position_embeddings.weight") {
        bert.emplace_back(kTokenType, token_type);
      }
    } else {
      sccello.emplace_back(name, tensor);
    }
  }
  return {std::move(bert), std::move(sccello)};
}

core::NamedTensors join_from_huggingface(const core::NamedTensors& bert,
                                         const core::NamedTensors& sccello,
                                         const std::string& dir) {
  core::NamedTensors out;
  const torch::Tensor* token_type = nullptr;
  for (const auto& [stored, tensor] : bert) {
    // A BertForMaskedLM-style save names the encoder "bert.*"; the pooler has no scCello part.
    const std::string name =
        starts_with(stored, kBertPrefix) ? stored.substr(std::string(kBertPrefix).size()) : stored;
    if (starts_with(name, "pooler.") || name == "embeddings.position_ids") continue;
    if (name == kTokenType) {
      token_type = &tensor;
      continue;
    }
    out.emplace_back(kBertPrefix + name, tensor);
  }
  if (token_type == nullptr) {
    throw core::InputError(dir + "/" + kHuggingfaceModel + ": no tensor '" + kTokenType +
                           "' (scCello's constant embedding row)");
  }
  if (token_type->dim() != 2 || token_type->size(0) < 1) {
    throw core::InputError(dir + "/" + kHuggingfaceModel + ": '" + kTokenType + "' has shape " +
                           c10::str(token_type->sizes()) + ", expected [1, hidden]");
  }
  const torch::Tensor row = token_type->narrow(0, 0, 1).to(torch::kFloat32);
  const std::vector<std::string> legacy = legacy_row_names();
  const torch::Tensor* rows[3] = {named_tensor(sccello, legacy[0]),
                                  named_tensor(sccello, legacy[1]),
                                  named_tensor(sccello, legacy[2])};
  const bool kept = rows[0] != nullptr && rows[1] != nullptr && rows[2] != nullptr &&
                    rows[0]->sizes() == row.sizes() && rows[1]->sizes() == row.sizes() &&
                    rows[2]->sizes() == row.sizes() &&
                    torch::equal(legacy_sum(*rows[0], *rows[1], *rows[2]), row);
  for (std::size_t i = 0; i < legacy.size(); ++i) {
    out.emplace_back(legacy[i], kept ? *rows[i] : (i == 0 ? row : torch::zeros_like(row)));
  }
  for (const auto& [name, tensor] : sccello) {
    if (name != legacy[0] && name != legacy[1] && name != legacy[2]) out.emplace_back(name, tensor);
  }
  return out;
}

std::string huggingface_config(const SccelloOptions& options, std::int64_t tokens) {
  const json config = {
      {"architectures", json::array({"BertModel"})},
      {"model_type", "bert"},
      {"vocab_size", tokens},
      {"hidden_size", options.hidden},
      {"num_hidden_layers", options.layers},
      {"num_attention_heads", options.heads},
      {"intermediate_size", options.feedforward},
      {"hidden_act", "relu"},
      {"hidden_dropout_prob", options.dropout},
      {"attention_probs_dropout_prob", options.dropout},
      {"max_position_embeddings", options.max_tokens},
      {"type_vocab_size", 1},
      {"layer_norm_eps", options.layer_norm_eps},
      {"initializer_range", options.init_std},
      {"pad_token_id", kPadToken},
      {"position_embedding_type", "absolute"},
      {"use_cache", false},
      {"torch_dtype", "float32"},
      // Ignored by transformers (extra config keys become attributes): where the rest lives.
      {"cellfm",
       {{"family", "sccello"},
        {"heads_file", kHuggingfaceHeads},
        {"note",
         "scCello encoder as a BertModel without pooler (from_pretrained(DIR, "
         "add_pooling_layer=False)); token_type_embeddings row 0 is scCello's constant "
         "embedding row; the zero-shot cell embedding is last_hidden_state[:, 0] (<cls> first, "
         "attention_mask over real tokens unless the model attended padding); heads, "
         "prototypes, ontology matrices and gene medians are in sccello_heads.safetensors"},
        {"attend_padding", options.attend_padding},
        {"tau", options.tau}}}};
  return config.dump(2) + "\n";
}

void write_huggingface_directory(const std::string& dir, const core::NamedTensors& reference,
                                 const SccelloOptions& options, const FamilyState& state,
                                 const std::string& spec_yaml, std::int64_t step) {
  auto [bert, sccello] = split_for_huggingface(reference);
  const std::int64_t tokens = static_cast<std::int64_t>(state.genes.size()) + 3;
  const torch::Tensor* words = named_tensor(bert, "embeddings.word_embeddings.weight");
  if (words == nullptr || words->size(0) != tokens) {
    throw core::InputError("sccello weights: the word table has " +
                           (words ? std::to_string(words->size(0)) : std::string("no")) +
                           " rows for " + std::to_string(tokens) + " tokens (genes + 3)");
  }
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) throw core::SystemError(dir + ": cannot create the directory: " + error.message());

  std::map<std::string, std::string> metadata = {{"format", "pt"},
                                                 {"cellfm", kHeadsFormat},
                                                 {"family", "sccello"},
                                                 {"step", std::to_string(step)},
                                                 {"spec", spec_yaml}};
  add_family_state(state, sccello, metadata);
  core::write_safetensors((fs::path(dir) / kHuggingfaceHeads).string(), sccello, metadata);
  core::write_safetensors((fs::path(dir) / kHuggingfaceModel).string(), bert, {{"format", "pt"}});
  std::string vocab = "<pad>\n<mask>\n";
  for (const std::string& gene : state.genes) vocab += gene + "\n";
  vocab += "<cls>\n";
  core::write_file_atomically((fs::path(dir) / kHuggingfaceVocabulary).string(), vocab);
  // Last: a directory with config.json has every other file in place.
  core::write_file_atomically((fs::path(dir) / kHuggingfaceConfig).string(),
                              huggingface_config(options, tokens));
}

bool is_huggingface_directory(const std::string& path) {
  std::error_code error;
  return fs::is_directory(path, error) &&
         fs::is_regular_file(fs::path(path) / kHuggingfaceConfig) &&
         fs::is_regular_file(fs::path(path) / kHuggingfaceModel);
}

WeightsFile read_huggingface_directory(const std::string& dir) {
  const std::string heads_path = (fs::path(dir) / kHuggingfaceHeads).string();
  if (!fs::is_regular_file(heads_path)) {
    throw core::InputError(
        dir +
        " is a Hugging Face BERT directory without sccello_heads.safetensors, so cellfm cannot "
        "run it as scCello: it lacks the genes' non-zero medians (which tokenise cells), the "
        "cell-type ontology matrices, and the cls/cell_cls heads, prototypes and affine "
        "projection. Use a directory written by `cellfm export --format huggingface`, or convert "
        "the reference's checkpoint (all its tensors, bert.* and cls.* names) with `cellfm export "
        "--from-reference STATE.safetensors --vocabulary vocabulary.tsv --output W.safetensors`");
  }
  core::SafetensorsContent heads = core::read_safetensors(heads_path);
  std::optional<FamilyState> state = read_family_state(heads, heads_path);
  const auto meta = [&](const char* key) {
    const auto found = heads.metadata.find(key);
    return found == heads.metadata.end() ? std::string() : found->second;
  };
  if (!state || meta("cellfm") != kHeadsFormat || meta("family") != "sccello") {
    throw core::InputError(heads_path +
                           ": not written by `cellfm export --format huggingface` (metadata "
                           "'cellfm' is not " +
                           kHeadsFormat + " or the family state is missing)");
  }
  const std::string vocab_path = (fs::path(dir) / kHuggingfaceVocabulary).string();
  const std::vector<std::string> genes = read_vocab_txt(vocab_path);
  if (genes != state->genes) {
    throw core::InputError(vocab_path + ": its " + std::to_string(genes.size()) +
                           " genes are not the " + std::to_string(state->genes.size()) +
                           " genes (in order) whose medians " + heads_path + " holds");
  }
  const std::string config_path = (fs::path(dir) / kHuggingfaceConfig).string();
  json config;
  try {
    config = json::parse(read_text(config_path));
  } catch (const json::exception& e) {
    throw core::InputError(config_path + ": not valid JSON (" + e.what() + ")");
  }
  WeightsFile file;
  file.family = "sccello";
  file.spec_yaml = meta("spec");
  file.step = std::strtoll(meta("step").c_str(), nullptr, 10);
  try {
    check_config(config, file.spec_yaml, static_cast<std::int64_t>(genes.size()) + 3, config_path);
  } catch (const json::exception& e) {
    throw core::InputError(config_path + ": a size is not an integer (" + e.what() + ")");
  } catch (const YAML::Exception& e) {
    throw core::InputError(heads_path + ": its spec does not parse (" + e.what() + ")");
  }
  const std::string model_path = (fs::path(dir) / kHuggingfaceModel).string();
  core::SafetensorsContent bert = core::read_safetensors(model_path);
  file.weights = join_from_huggingface(bert.tensors, heads.tensors, dir);
  const torch::Tensor* words = named_tensor(file.weights, "bert.embeddings.word_embeddings.weight");
  if (words == nullptr || words->dim() != 2 ||
      words->size(0) != static_cast<std::int64_t>(genes.size()) + 3) {
    throw core::InputError(
        model_path + ": embeddings.word_embeddings.weight " +
        (words ? "has " + std::to_string(words->size(0)) + " rows" : std::string("is missing")) +
        " but vocab.txt lists " + std::to_string(genes.size() + 3) + " tokens");
  }
  file.state = std::move(*state);
  return file;
}

}  // namespace cellfm::trainers::sccello
