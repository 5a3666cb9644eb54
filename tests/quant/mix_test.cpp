// Named mixes: names round-trip, and choose_types gives llama-quantize's type for every tensor of every
// mix of every model in tests/fixtures/mix/mix.json (recorded by scripts/fixtures/gen_mix.py).
#include "quant/mix.h"

#include <gtest/gtest.h>

#include <cctype>
#include <fstream>
#include <map>
#include <sstream>
#include <nlohmann/json.hpp>

namespace tandem::quant {
namespace {

using nlohmann::json;

constexpr FileType kAllMixes[] = {
    FileType::F32,    FileType::F16,    FileType::BF16,   FileType::Q4_0,   FileType::Q4_1,
    FileType::Q5_0,   FileType::Q5_1,   FileType::Q8_0,   FileType::Q2_K,   FileType::Q2_K_S,
    FileType::Q3_K_S, FileType::Q3_K_M, FileType::Q3_K_L, FileType::Q4_K_S, FileType::Q4_K_M,
    FileType::Q5_K_S, FileType::Q5_K_M, FileType::Q6_K,   FileType::IQ4_NL, FileType::IQ4_XS,
};

TEST(MixNames, RoundTripEveryMixInAnyCase) {
  for (FileType t : kAllMixes) {
    const std::string name(file_type_name(t));
    EXPECT_EQ(parse_file_type(name), t) << name;
    std::string lower = name;
    for (char& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_EQ(parse_file_type(lower), t) << lower;
    EXPECT_NE(file_type_names().find(name), std::string::npos) << name;
  }
}

TEST(MixNames, AcceptsLlamaQuantizeAliasesAndRejectsOthers) {
  EXPECT_EQ(parse_file_type("Q4_K"), FileType::Q4_K_M);
  EXPECT_EQ(parse_file_type("q5_k"), FileType::Q5_K_M);
  EXPECT_EQ(parse_file_type("Q3_K"), FileType::Q3_K_M);
  EXPECT_EQ(parse_file_type("Q4_K_X"), std::nullopt);
  EXPECT_EQ(parse_file_type(""), std::nullopt);
  EXPECT_EQ(parse_file_type("IQ2_XXS"), std::nullopt);
  EXPECT_EQ(file_type_names().substr(0, 15), "F32, F16, BF16,");
}

TEST(MixNames, BaseTypeIsTheMixMainType) {
  EXPECT_EQ(base_type(FileType::Q4_K_M), WeightType::Q4_K);
  EXPECT_EQ(base_type(FileType::Q4_K_S), WeightType::Q4_K);
  EXPECT_EQ(base_type(FileType::Q2_K_S), WeightType::Q2_K);
  EXPECT_EQ(base_type(FileType::Q3_K_L), WeightType::Q3_K);
  EXPECT_EQ(base_type(FileType::IQ4_XS), WeightType::IQ4_XS);
  EXPECT_EQ(base_type(FileType::BF16), WeightType::BF16);
  EXPECT_EQ(base_type(FileType::Q8_0), WeightType::Q8_0);
}

TEST(MixChoice, LeavesNormsBiasesAndRoutersAlone) {
  MixModel m{"qwen3moe", 2, 8, 4, 8, 512};
  const std::vector<MixTensor> tensors = {
      {"blk.0.attn_norm.weight", {512}},
      {"blk.0.attn_q.bias", {512}},
      {"blk.0.ffn_gate_inp.weight", {8, 512}},
      {"blk.0.attn_q.weight", {1, 512}},  // 1-D to ggml: outer dimensions of 1 do not count
      {"blk.0.attn_q.weight", {512, 512}},
  };
  const auto types = choose_types(FileType::Q4_K_M, m, tensors);
  ASSERT_EQ(types.size(), tensors.size());
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(types[i], std::nullopt) << tensors[i].name;
  EXPECT_EQ(types[4], WeightType::Q4_K);
}

TEST(MixChoice, FallsBackWhenTheBlockDoesNotDivideTheRow) {
  MixModel m{"qwen2", 1, 14, 2, 0, 896};
  const std::vector<MixTensor> tensors = {
      {"token_embd.weight", {32000, 896}},      // tied, so the output's rule: 896 % 256 -> Q8_0
      {"blk.0.attn_q.weight", {896, 896}},      // Q4_K -> Q5_0
      {"blk.0.ffn_down.weight", {896, 4864}},   // 4864 = 19 * 256: Q6_K (use_more_bits) stays
      {"blk.0.ffn_up.weight", {4864, 900}},     // 900 % 32 != 0: F16
  };
  const auto types = choose_types(FileType::Q4_K_M, m, tensors);
  EXPECT_EQ(types[0], WeightType::Q8_0);
  EXPECT_EQ(types[1], WeightType::Q5_0);
  EXPECT_EQ(types[2], WeightType::Q6_K);
  EXPECT_EQ(types[3], WeightType::F16);
}

// --pure and the explicit types take the same fallback as the mix's rules (llama.cpp's
// tensor_type_fallback), and every one is reported; tests/py/test_quantize.py checks the same choices
// against llama-quantize's output.
TEST(MixChoice, PureAndExplicitTypesFallBackAndAreReported) {
  MixModel m{"llama", 1, 2, 1, 0, 96};
  const std::vector<MixTensor> tensors = {
      {"token_embd.weight", {64, 96}},
      {"blk.0.attn_q.weight", {96, 96}},
      {"blk.0.ffn_down.weight", {96, 200}},  // 200 % 32 != 0: F16
      {"blk.0.attn_norm.weight", {96}},
      {"output.weight", {64, 96}},
  };
  std::vector<Fallback> fallbacks;
  auto types = choose_types(FileType::Q6_K, m, tensors, {.pure = true}, &fallbacks);
  EXPECT_EQ(types[0], WeightType::Q8_0);
  EXPECT_EQ(types[1], WeightType::Q8_0);
  EXPECT_EQ(types[2], WeightType::F16);
  EXPECT_EQ(types[3], std::nullopt);
  EXPECT_EQ(types[4], WeightType::Q8_0);
  ASSERT_EQ(fallbacks.size(), 4u);
  EXPECT_EQ(fallbacks[0].tensor, 0u);
  EXPECT_EQ(fallbacks[0].wanted, WeightType::Q6_K);
  EXPECT_EQ(fallbacks[0].chosen, WeightType::Q8_0);

  fallbacks.clear();
  types = choose_types(FileType::Q8_0, m, tensors,
                       {.output_type = WeightType::Q6_K, .token_embd_type = WeightType::Q4_K}, &fallbacks);
  EXPECT_EQ(types[0], WeightType::Q5_0);
  EXPECT_EQ(types[1], WeightType::Q8_0);
  EXPECT_EQ(types[4], WeightType::Q8_0);
  ASSERT_EQ(fallbacks.size(), 3u);  // token_embd, output, and ffn_down's 200 (Q8_0 -> F16)
  // An explicit type the rows hold is kept, and an unquantized mix still takes it.
  types = choose_types(FileType::F16, m, tensors, {.output_type = WeightType::Q8_0});
  EXPECT_EQ(types[4], WeightType::Q8_0);
  EXPECT_EQ(types[1], WeightType::F16);
}

TEST(MixChoice, TiedEmbeddingsTakeTheOutputTypeUnlessPure) {
  MixModel m{"qwen2", 1, 14, 2, 0, 896};
  const std::vector<MixTensor> tensors = {{"token_embd.weight", {32000, 1024}}};
  EXPECT_EQ(choose_types(FileType::Q4_K_M, m, tensors, {.output_type = WeightType::Q5_K})[0], WeightType::Q5_K);
  EXPECT_EQ(choose_types(FileType::Q4_K_M, m, tensors, {.pure = true, .output_type = WeightType::Q5_K})[0],
            WeightType::Q4_K);
}

TEST(MixChoice, Llama70BGivesAttnVFiveBits) {
  MixModel m{"llama", 80, 64, 8, 0, 8192};
  const std::vector<MixTensor> tensors = {{"blk.1.attn_v.weight", {1024, 8192}},
                                          {"output.weight", {128256, 8192}}};
  const auto types = choose_types(FileType::Q3_K_S, m, tensors);
  EXPECT_EQ(types[0], WeightType::Q5_K);
  EXPECT_EQ(types[1], WeightType::Q6_K);
  m.n_layer = 79;
  EXPECT_EQ(choose_types(FileType::Q3_K_S, m, tensors)[0], WeightType::Q3_K);
}

struct FixtureLoad {
  json doc;
  std::string error;
};

FixtureLoad load_fixture() {
  FixtureLoad out;
  const std::string path = std::string(TANDEM_SOURCE_DIR) + "/tests/fixtures/mix/mix.json";
  std::ifstream in(path);
  if (!in) {
    out.error = path + ": cannot open";
    return out;
  }
  std::stringstream text;
  text << in.rdbuf();
  out.doc = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (out.doc.is_discarded() || !out.doc.is_object() || !out.doc.contains("models") ||
      !out.doc.contains("mixes"))
    out.error = path + ": not the JSON gen_mix.py writes";
  return out;
}

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> words;
  std::istringstream in(s);
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

TEST(MixChoice, MatchesLlamaQuantizeOnEveryFixtureModel) {
  const FixtureLoad fx = load_fixture();
  ASSERT_TRUE(fx.error.empty()) << fx.error;
  const json& models = fx.doc["models"];
  ASSERT_GE(models.size(), 4u);
  size_t n_checked = 0;
  std::map<std::string, int> arch_seen;
  for (const json& jm : models) {
    MixModel model;
    model.arch = jm["arch"].get<std::string>();
    model.n_layer = jm["n_layer"].get<int64_t>();
    model.n_head = jm["n_head"].get<int64_t>();
    model.n_head_kv = jm["n_head_kv"].get<int64_t>();
    model.n_expert = jm["n_expert"].get<int64_t>();
    model.n_embd = jm["n_embd"].get<int64_t>();
    ++arch_seen[model.arch];
    const std::string model_name = jm["name"].get<std::string>();

    std::vector<MixTensor> tensors;
    std::vector<std::string> source_types;
    for (const json& jt : jm["tensors"]) {
      tensors.push_back({jt[0].get<std::string>(), jt[1].get<std::vector<int64_t>>()});
      source_types.push_back(jt[2].get<std::string>());
    }
    for (const json& jmix : fx.doc["mixes"]) {
      const std::string mix_name = jmix.get<std::string>();
      const std::optional<FileType> mix = parse_file_type(mix_name);
      ASSERT_TRUE(mix.has_value()) << mix_name;
      ASSERT_TRUE(jm["types"].contains(mix_name)) << model_name << " lacks " << mix_name;
      const std::vector<std::string> want = split_words(jm["types"][mix_name].get<std::string>());
      ASSERT_EQ(want.size(), tensors.size()) << model_name << " " << mix_name;

      const auto got = choose_types(*mix, model, tensors);
      ASSERT_EQ(got.size(), tensors.size());
      for (size_t i = 0; i < tensors.size(); ++i) {
        // nullopt means "left as it is": the file keeps the source type.
        const std::string got_name = got[i] ? std::string(type_name(*got[i])) : source_types[i];
        EXPECT_EQ(got_name, want[i]) << model_name << " " << mix_name << " " << tensors[i].name
                                     << (got[i] ? "" : " (left unquantized)");
        ++n_checked;
      }
    }
  }
  for (const char* arch : {"llama", "qwen2", "qwen3", "gemma3"})
    EXPECT_GT(arch_seen[arch], 0) << "fixture has no " << arch << " model";
  EXPECT_GT(n_checked, 10000u);
}

}  // namespace
}  // namespace tandem::quant
