// scCello's Hugging Face export and the reference's names, as a user runs them (the cellfm
// binary): a tiny model trained on a synthetic corpus is exported with `export --format
// huggingface`; its BertModel names and shapes equal the list written below from the BertModel
// naming scheme, config.json is a BertConfig of the model's sizes, vocab.txt lists the tokens in
// id order, and the heads file holds every other tensor (nothing lost); `embed --weights DIR`
// gives the weights file's embeddings bit for bit; BertModel's embedding sum computed in float64
// from the exported tensors (sccello_export_fixture.py) equals the model's embedding layer
// (cellfm_sccello_embedding_probe); a checkpoint exports to the same tensors; a file with the
// reference's state-dict names plus vocabulary.tsv converts (`export --from-reference`) into a
// model whose embeddings are the original's; what cannot be read is refused with the reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace cellfm::trainers {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::ProcessResult;
using Shapes = std::map<std::string, std::vector<std::int64_t>>;

constexpr std::int64_t kHidden = 64, kFeedforward = 128, kLayers = 2, kTokens = 64;

class SccelloExportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const ProcessResult synth =
        cellfm({"synth", "--out", path("corpus"), "--cells", "240", "--files", "1", "--genes",
                "120", "--cell-types", "4", "--matrix", "raw", "--seed", "7"});
    ASSERT_EQ(synth.exit_code, 0) << synth.err;
    // Every gene with a median (as in the released vocabulary.tsv), so the trained model's
    // vocabulary is one the reference's format can state.
    const ProcessResult vocabulary =
        fixture({"vocabulary", corpus_file(), path("corpus_vocabulary.tsv")});
    ASSERT_EQ(vocabulary.exit_code, 0) << vocabulary.err;
    std::ofstream(path("spec.yaml"))
        << "base: " << CELLFM_SOURCE_DIR << "/experiments/sccello/quickstart.yaml\n"
        << "run:\n  dir: " << path("run") << "\n  max_steps: 8\n"
        << "data:\n  files: [" << path("corpus") << "/*.h5ad]\n"
        << "  vocabulary: " << path("corpus_vocabulary.tsv") << "\n"
        << "model:\n  sccello:\n    ontology: " << path("corpus") << "/ontology.obo\n"
        << "    layers: " << kLayers << "\n    hidden: " << kHidden
        << "\n    feedforward: " << kFeedforward << "\n    max_tokens: " << kTokens << "\n"
        << "schedule:\n  warmup_steps: 2\n"
        << "evaluation:\n  every_steps: 8\n  batches: 1\n"
        << "checkpoint:\n  every_steps: 8\n"
        << "logging:\n  every_steps: 4\n";
    train_ = new ProcessResult(cellfm({"train", path("spec.yaml")}));
    if (train_->exit_code != 0) return;
    export_ = new ProcessResult(cellfm({"export", "--weights", path("run/weights.safetensors"),
                                        "--format", "huggingface", path("hf")}));
  }
  static void TearDownTestSuite() {
    delete export_;
    delete train_;
    delete dir_;
  }
  static std::string path(const std::string& name) { return dir_->path() + "/" + name; }
  static ProcessResult cellfm(std::vector<std::string> args) {
    return testing::run_ranks(CELLFM_MPIEXEC, CELLFM_BINARY, args, 0);
  }
  static ProcessResult fixture(std::vector<std::string> args) {
    args.insert(args.begin(), {CELLFM_PYTHON3, CELLFM_EXPORT_FIXTURE});
    return testing::run_process(args);
  }
  static std::string corpus_file() {
    for (const auto& entry : fs::directory_iterator(path("corpus"))) {
      if (entry.path().extension() == ".h5ad") return entry.path().string();
    }
    return "";
  }
  // name -> shape of a safetensors file, read by the fixture's own reader; metadata in `meta`.
  static Shapes shapes_of(const std::string& file, json* meta = nullptr) {
    const ProcessResult read = fixture({"names", file});
    EXPECT_EQ(read.exit_code, 0) << read.err;
    const json parsed = json::parse(read.out);
    if (meta) *meta = parsed["metadata"];
    Shapes out;
    for (const auto& [name, entry] : parsed["tensors"].items()) {
      out[name] = entry[1].get<std::vector<std::int64_t>>();
    }
    return out;
  }
  static std::vector<std::string> genes() {
    json meta;
    shapes_of(path("run/weights.safetensors"), &meta);
    return json::parse(meta["genes"].get<std::string>()).get<std::vector<std::string>>();
  }
  static ProcessResult embed(const std::string& weights, const std::string& output,
                             const std::string& kind = "cls") {
    return cellfm({"embed", "--weights", weights, "--input", corpus_file(), "--output",
                   path(output), "--embedding", kind});
  }
  static void ready() {
    ASSERT_EQ(train_->exit_code, 0) << train_->out << train_->err;
    ASSERT_EQ(export_->exit_code, 0) << export_->out << export_->err;
  }

  static testing::TempDir* dir_;
  static ProcessResult* train_;
  static ProcessResult* export_;
};
testing::TempDir* SccelloExportTest::dir_ = nullptr;
ProcessResult* SccelloExportTest::train_ = nullptr;
ProcessResult* SccelloExportTest::export_ = nullptr;

// Hugging Face BertModel's state-dict names (modeling_bert.py: BertEmbeddings, BertLayer's
// attention.self/attention.output/intermediate/output), without a pooler, at these sizes.
Shapes expected_bert_tensors(std::int64_t vocabulary) {
  Shapes out = {{"embeddings.word_embeddings.weight", {vocabulary, kHidden}},
                {"embeddings.position_embeddings.weight", {kTokens, kHidden}},
                {"embeddings.token_type_embeddings.weight", {1, kHidden}},
                {"embeddings.LayerNorm.weight", {kHidden}},
                {"embeddings.LayerNorm.bias", {kHidden}}};
  for (std::int64_t l = 0; l < kLayers; ++l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    for (const char* q : {"query", "key", "value"}) {
      out[p + "attention.self." + q + ".weight"] = {kHidden, kHidden};
      out[p + "attention.self." + q + ".bias"] = {kHidden};
    }
    out[p + "attention.output.dense.weight"] = {kHidden, kHidden};
    out[p + "attention.output.dense.bias"] = {kHidden};
    out[p + "attention.output.LayerNorm.weight"] = {kHidden};
    out[p + "attention.output.LayerNorm.bias"] = {kHidden};
    out[p + "intermediate.dense.weight"] = {kFeedforward, kHidden};
    out[p + "intermediate.dense.bias"] = {kFeedforward};
    out[p + "output.dense.weight"] = {kHidden, kFeedforward};
    out[p + "output.dense.bias"] = {kHidden};
    out[p + "output.LayerNorm.weight"] = {kHidden};
    out[p + "output.LayerNorm.bias"] = {kHidden};
  }
  return out;
}

TEST_F(SccelloExportTest, WritesBertModelNamesConfigAndVocabulary) {
  ready();
  const std::vector<std::string> gene_list = genes();
  ASSERT_EQ(gene_list.size(), 120u);
  const auto vocabulary = static_cast<std::int64_t>(gene_list.size()) + 3;
  json meta;
  EXPECT_EQ(shapes_of(path("hf/model.safetensors"), &meta), expected_bert_tensors(vocabulary));
  EXPECT_EQ(meta["format"], "pt");  // transformers refuses a safetensors file without it

  std::ifstream config_file(path("hf/config.json"));
  const json config = json::parse(config_file);
  EXPECT_EQ(config["architectures"], json::array({"BertModel"}));
  EXPECT_EQ(config["model_type"], "bert");
  EXPECT_EQ(config["vocab_size"], vocabulary);
  EXPECT_EQ(config["hidden_size"], kHidden);
  EXPECT_EQ(config["num_hidden_layers"], kLayers);
  EXPECT_EQ(config["num_attention_heads"], 4);
  EXPECT_EQ(config["intermediate_size"], kFeedforward);
  EXPECT_EQ(config["hidden_act"], "relu");
  EXPECT_EQ(config["hidden_dropout_prob"], 0.02);
  EXPECT_EQ(config["attention_probs_dropout_prob"], 0.02);
  EXPECT_EQ(config["max_position_embeddings"], kTokens);
  EXPECT_EQ(config["type_vocab_size"], 1);
  EXPECT_EQ(config["layer_norm_eps"], 1e-12);
  EXPECT_EQ(config["initializer_range"], 0.02);
  EXPECT_EQ(config["pad_token_id"], 0);
  EXPECT_EQ(config["position_embedding_type"], "absolute");

  std::ifstream vocab(path("hf/vocab.txt"));
  std::vector<std::string> tokens;
  for (std::string line; std::getline(vocab, line);) tokens.push_back(line);
  std::vector<std::string> expected = {"<pad>", "<mask>"};
  expected.insert(expected.end(), gene_list.begin(), gene_list.end());
  expected.push_back("<cls>");
  EXPECT_EQ(tokens, expected);
}

// Every tensor of the weights file is in the directory: BertModel's under "bert." + its name (the
// legacy rows, whose sum is token_type_embeddings, one by one in the heads file), the rest and
// the family state under their own names in sccello_heads.safetensors.
TEST_F(SccelloExportTest, TheHeadsFileHoldsEverythingElse) {
  ready();
  const Shapes weights = shapes_of(path("run/weights.safetensors"));
  const Shapes bert = shapes_of(path("hf/model.safetensors"));
  json meta;
  const Shapes heads = shapes_of(path("hf/sccello_heads.safetensors"), &meta);
  for (const auto& [name, shape] : weights) {
    if (name == "bert.embeddings.position_ids") continue;  // not state: 0..max_tokens-1
    const auto in_bert = name.rfind("bert.", 0) == 0 ? bert.find(name.substr(5)) : bert.end();
    const auto in_heads = heads.find(name);
    ASSERT_TRUE(in_bert != bert.end() || in_heads != heads.end()) << name << " was lost";
    EXPECT_EQ(in_bert != bert.end() ? in_bert->second : in_heads->second, shape) << name;
  }
  for (const char* name : {"cls.predictions.dense_1.weight", "cell_cls.predictions.dense_2.weight",
                           "learned_centroid.weight", "affine_projection.weight", "ctgraph_sim",
                           "cell_type_ancestor_mask", "cellfm_state.gene_median",
                           "bert.embeddings.tf_class_embeddings.weight"}) {
    EXPECT_EQ(heads.count(name), 1u) << name;
  }
  EXPECT_EQ(meta["family"], "sccello");
  EXPECT_NE(meta["spec"].get<std::string>().find("sccello"), std::string::npos);
}

TEST_F(SccelloExportTest, EmbedReadsTheDirectoryBackBitForBit) {
  ready();
  for (const std::string kind : {"cls", "cell"}) {
    const ProcessResult a = embed(path("run/weights.safetensors"), "file_" + kind + ".h5ad", kind);
    ASSERT_EQ(a.exit_code, 0) << a.out << a.err;
    const ProcessResult b = embed(path("hf"), "dir_" + kind + ".h5ad", kind);
    ASSERT_EQ(b.exit_code, 0) << b.out << b.err;
    const ProcessResult same =
        fixture({"same-embedding", path("file_" + kind + ".h5ad"), path("dir_" + kind + ".h5ad")});
    EXPECT_EQ(same.exit_code, 0) << kind << ": " << same.out << same.err;
  }
}

TEST_F(SccelloExportTest, BertModelsEmbeddingSumIsTheModelsEmbeddingLayer) {
  ready();
  const std::int64_t cls = static_cast<std::int64_t>(genes().size()) + 2;
  const std::vector<std::string> tokens = {std::to_string(cls), "2", "57", "121", "1", "9", "0"};
  std::vector<std::string> probe_args = {path("run/weights.safetensors")};
  probe_args.insert(probe_args.end(), tokens.begin(), tokens.end());
  const ProcessResult probe = testing::run_process([&] {
    std::vector<std::string> argv = {CELLFM_SCCELLO_PROBE};
    argv.insert(argv.end(), probe_args.begin(), probe_args.end());
    return argv;
  }());
  ASSERT_EQ(probe.exit_code, 0) << probe.err;
  std::ofstream(path("probe.json")) << probe.out;
  std::vector<std::string> args = {"bert-embedding", path("hf"), path("probe.json")};
  args.insert(args.end(), tokens.begin(), tokens.end());
  const ProcessResult check = fixture(args);
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

TEST_F(SccelloExportTest, ACheckpointExportsTheSameTensors) {
  ready();
  std::string checkpoint;
  for (const auto& entry : fs::directory_iterator(path("run/checkpoints"))) {
    if (entry.path().filename().string() == "step_000000008") checkpoint = entry.path().string();
  }
  ASSERT_FALSE(checkpoint.empty());
  const ProcessResult exported =
      cellfm({"export", "--checkpoint", checkpoint, "--format", "huggingface", path("hf_ckpt")});
  ASSERT_EQ(exported.exit_code, 0) << exported.out << exported.err;
  const auto bytes = [](const std::string& file) {
    std::ifstream in(file, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(bytes(path("hf_ckpt/model.safetensors")), bytes(path("hf/model.safetensors")));
  EXPECT_EQ(bytes(path("hf_ckpt/vocab.txt")), bytes(path("hf/vocab.txt")));
  EXPECT_EQ(bytes(path("hf_ckpt/config.json")), bytes(path("hf/config.json")));
}

TEST_F(SccelloExportTest, TheReferencesNamesAndVocabularyGiveTheSameModel) {
  ready();
  fs::create_directories(path("reference"));
  const ProcessResult made =
      fixture({"reference", path("run/weights.safetensors"), path("reference")});
  ASSERT_EQ(made.exit_code, 0) << made.out << made.err;
  const ProcessResult converted =
      cellfm({"export", "--from-reference", path("reference/reference.safetensors"), "--vocabulary",
              path("reference/vocabulary.tsv"), "--labels", path("reference/labels.txt"),
              "--output", path("converted.safetensors")});
  ASSERT_EQ(converted.exit_code, 0) << converted.out << converted.err;
  for (const std::string kind : {"cls", "cell"}) {
    const ProcessResult a = embed(path("run/weights.safetensors"), "orig_" + kind + ".h5ad", kind);
    ASSERT_EQ(a.exit_code, 0) << a.err;
    const ProcessResult b = embed(path("converted.safetensors"), "conv_" + kind + ".h5ad", kind);
    ASSERT_EQ(b.exit_code, 0) << b.out << b.err;
    const ProcessResult same =
        fixture({"same-embedding", path("orig_" + kind + ".h5ad"), path("conv_" + kind + ".h5ad")});
    EXPECT_EQ(same.exit_code, 0) << kind << ": " << same.out << same.err;
  }
  // Straight to the Hugging Face layout: the same BertModel tensors as the trained model's.
  const ProcessResult hf =
      cellfm({"export", "--from-reference", path("reference/reference.safetensors"), "--vocabulary",
              path("reference/vocabulary.tsv"), "--format", "huggingface", path("hf_reference")});
  ASSERT_EQ(hf.exit_code, 0) << hf.out << hf.err;
  const auto bytes = [](const std::string& file) {
    std::ifstream in(file, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(bytes(path("hf_reference/model.safetensors")), bytes(path("hf/model.safetensors")));
  // Without the vocabulary there are no medians to tokenise with.
  const ProcessResult missing =
      cellfm({"export", "--from-reference", path("reference/reference.safetensors"), "--output",
              path("x.safetensors")});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("--vocabulary"), std::string::npos) << missing.err;
}

TEST_F(SccelloExportTest, RefusesWhatItCannotRead) {
  ready();
  // A plain Hugging Face directory (no sccello_heads.safetensors): the error says what is missing.
  fs::create_directories(path("plain"));
  for (const char* file : {"config.json", "model.safetensors", "vocab.txt"}) {
    fs::copy_file(path(std::string("hf/") + file), path(std::string("plain/") + file));
  }
  const ProcessResult plain = embed(path("plain"), "plain.h5ad");
  EXPECT_EQ(plain.exit_code, 2);
  EXPECT_NE(plain.err.find("sccello_heads.safetensors"), std::string::npos) << plain.err;
  EXPECT_NE(plain.err.find("medians"), std::string::npos) << plain.err;
  EXPECT_NE(plain.err.find("ontology"), std::string::npos) << plain.err;

  // A config.json that disagrees with the weights.
  fs::create_directories(path("edited"));
  for (const char* file : {"model.safetensors", "vocab.txt", "sccello_heads.safetensors"}) {
    fs::copy_file(path(std::string("hf/") + file), path(std::string("edited/") + file));
  }
  std::ifstream config_file(path("hf/config.json"));
  json config = json::parse(config_file);
  config["num_attention_heads"] = 8;
  std::ofstream(path("edited/config.json")) << config.dump();
  const ProcessResult edited = embed(path("edited"), "edited.h5ad");
  EXPECT_EQ(edited.exit_code, 2);
  EXPECT_NE(edited.err.find("num_attention_heads"), std::string::npos) << edited.err;

  // Another family has no Hugging Face layout: a weights file that says it is an Exceiver.
  std::ofstream(path("exceiver.py"))
      << "import json, struct\n"
      << "meta = {'family': 'exceiver', 'family_state': '{}', 'genes': '[]', 'labels': '[]',\n"
      << "        'spec': '', 'step': '0', 'format': 'cellfm-weights-1'}\n"
      << "header = json.dumps({'__metadata__': meta, 'x': {'dtype': 'F32', 'shape': [1],\n"
      << "                     'data_offsets': [0, 4]}}).encode()\n"
      << "header += b' ' * (-len(header) % 8)\n"
      << "open('" << path("exceiver.safetensors") << "', 'wb').write(\n"
      << "    struct.pack('<Q', len(header)) + header + b'\\0\\0\\0\\0')\n";
  ASSERT_EQ(testing::run_process({CELLFM_PYTHON3, path("exceiver.py")}).exit_code, 0);
  const ProcessResult other = cellfm({"export", "--weights", path("exceiver.safetensors"),
                                      "--format", "huggingface", path("hf_exceiver")});
  EXPECT_EQ(other.exit_code, 2);
  EXPECT_NE(other.err.find("exceiver"), std::string::npos) << other.err;
  EXPECT_FALSE(fs::exists(path("hf_exceiver")));
}

}  // namespace
}  // namespace cellfm::trainers
