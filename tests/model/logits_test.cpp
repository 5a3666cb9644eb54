// The engine against llama.cpp: logits at every prompt position, argmax and 64 greedy tokens, on
// stories260K, Gemma 3 270M Q4_K_M and synth Llama-3.2-1B (Q4_K_M, Q8_0), from fixtures recorded by
// scripts/fixtures/gen_logits.py. Prompts are fed as llama.cpp's token ids, so the tokenizer is not
// under test here. Tolerances per model are stated below with what they cover.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "core/file.h"
#include "core/hash.h"
#include "engine/context.h"
#include "model/synth.h"
#include "test_data.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kFixtures = fs::path(TANDEM_SOURCE_DIR) / "tests/fixtures/model";
const fs::path kData = test_data::dir();

std::vector<uint8_t> base64_decode(const std::string& s) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  std::vector<uint8_t> out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    const int v = value(c);
    if (v < 0) continue;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(uint8_t(acc >> bits));
    }
  }
  return out;
}

// Finds or rebuilds the fixture's model; returns "" (test skipped) when it cannot be had.
std::string model_path(const json& fx, std::string* why) {
  const std::string name = fx["model"];
  if (name == "stories260K") {
    // No package registry carries it: the stories260K-shape stand-in's fixtures cover what it does.
    if (!fs::exists(kData / "stories260K.gguf")) *why = test_data::absent("stories260K.gguf");
    return fs::exists(kData / "stories260K.gguf") ? (kData / "stories260K.gguf").string() : "";
  }
  if (name == "gemma-3-270m-q4_k_m") return test_data::gemma_model(why);
  // A synth model: rebuilt with the recorded seed into the build tree, checked by sha256.
  const fs::path dir = fs::path(TANDEM_BINARY_DIR) / "synth-cache";
  fs::create_directories(dir);
  const fs::path path = dir / (name + ".gguf");
  auto digest = [&]() -> std::string {
    auto d = hash_file(path.string(), {HashAlgorithm::Sha256});
    return d ? (*d)[0] : "";
  };
  if (!fs::exists(path) || digest() != fx["sha256"]) {
    model::SynthOptions o;
    o.preset = *model::find_synth_preset(fx["synth"]["preset"]);
    if (fx["synth"].contains("layers")) o.preset.n_layer = fx["synth"]["layers"];
    o.mix = *quant::parse_file_type(std::string(fx["synth"]["type"]));
    o.seed = fx["synth"]["seed"];
    o.fuse_gate_up_exps = fx["synth"].value("fuse_gate_up_exps", false);
    o.vocab_path = (kData / o.preset.vocab_file).string();
    o.output_path = path.string();
    o.n_threads = 2;
    o.progress = false;
    // CTest runs the tests that share a model at once: each writes its own copy, then renames it.
    o.output_path += ".part" + std::to_string(getpid());
    auto r = model::write_synth_model(o);
    if (!r) {
      *why = r.error().message();
      return "";
    }
    fs::rename(o.output_path, path);
  }
  if (digest() != fx["sha256"]) {
    *why = "rebuilt synth model differs from the recorded one (sha256)";
    return "";
  }
  return path.string();
}

struct Tolerance {
  double max_abs;    // max |logit - reference| over the reference's top-K ids, every position
  double mean_kl;    // mean KL(reference || ours) over positions, on the top-K (renormalized) mass
};

json read_fixture(const std::string& name) {
  std::ifstream in(kFixtures / name);
  EXPECT_TRUE(in) << "missing fixture " << name;
  return in ? json::parse(in) : json();
}

// KL(a || b) at every recorded position, on a's top-K ids (b's logits where b recorded them).
std::vector<double> fixture_kls(const json& a, const json& b) {
  std::vector<double> kls;
  for (size_t p = 0; p < a["prompts"].size(); ++p) {
    const json& pa = a["prompts"][p];
    const json& pb = b["prompts"][p];
    for (size_t k = 0; k < pa["positions"].size(); ++k) {
      const json& xa = pa["positions"][k];
      const json& xb = pb["positions"][k];
      std::map<int32_t, double> lb;
      for (size_t j = 0; j < xb["top_ids"].size(); ++j) lb[xb["top_ids"][j]] = xb["top_logits"][j].get<double>();
      double kl = 0;
      for (size_t j = 0; j < xa["top_ids"].size(); ++j) {
        const auto it = lb.find(xa["top_ids"][j]);
        if (it == lb.end()) continue;
        const double la = xa["top_logits"][j].get<double>() - xa["lse"].get<double>();
        kl += std::exp(la) * (la - (it->second - xb["lse"].get<double>()));
      }
      kls.push_back(kl);
    }
  }
  return kls;
}

// Runs the fixture's prompts (with the fixture's context, or `context` when given) and checks the
// logits and greedy tokens against it; returns the mean top-K KL(reference || Tandem) (top-K only: it
// can come out a hair below zero), or sets *skip when the model is not available here.
double run_fixture(const std::string& fixture, Tolerance tol, const ContextOptions* context, std::string* skip) {
  const json fx = read_fixture(fixture);
  if (fx.is_null()) return 0;
  std::string why;
  const std::string path = model_path(fx, &why);
  if (path.empty()) {
    *skip = why;
    return -1;
  }

  cpu::CpuBackend backend(2);
  auto model = model::Model::load(path, {}, backend);
  if (!model.has_value()) {
    ADD_FAILURE() << model.error().message();
    return 0;
  }
  double worst_abs = 0, kl_sum = 0;
  int64_t n_positions = 0, argmax_mismatches = 0, greedy_mismatches = 0;
  // Fixtures recorded with flash attention and quantized caches name them; Tandem runs the same.
  ContextOptions options{.n_ctx = 2048};
  if (context) {
    options = *context;
  } else if (fx.contains("context")) {
    options.flash_attn = fx["context"]["flash_attn"];
    options.type_k = *parse_weight_type(fx["context"]["type_k"].get<std::string>());
    options.type_v = *parse_weight_type(fx["context"]["type_v"].get<std::string>());
  }
  for (const json& prompt : fx["prompts"]) {
    auto ctx = Context::create(**model, options);
    if (!ctx.has_value()) {
      ADD_FAILURE() << ctx.error().message();
      return 0;
    }
    const std::vector<int32_t> tokens = prompt["tokens"];
    Batch b;
    for (size_t i = 0; i < tokens.size(); ++i) b.add(tokens[i], int32_t(i), 0, true);
    if (!(*ctx)->decode(b).is_ok()) {
      ADD_FAILURE() << "decode failed";
      return 0;
    }
    std::vector<float> full;
    if (prompt.contains("logits_f32_b64")) {
      auto bytes = base64_decode(prompt["logits_f32_b64"]);
      full.resize(bytes.size() / 4);
      std::memcpy(full.data(), bytes.data(), bytes.size());
    }
    // Positions recorded by the fixture: every one, or every k-th of a long prompt ("index").
    for (size_t k = 0; k < prompt["positions"].size(); ++k) {
      const json& pos = prompt["positions"][k];
      const size_t i = pos.contains("index") ? pos["index"].get<size_t>() : k;
      const auto ours = (*ctx)->logits(int64_t(i));
      const int32_t our_argmax = int32_t(std::max_element(ours.begin(), ours.end()) - ours.begin());
      // As for greedy tokens below: a different argmax is a failure unless it is a near-tie.
      const int32_t ref_argmax = pos["argmax"].get<int32_t>();
      if (our_argmax != ref_argmax) {
        const double margin = double(ours[size_t(our_argmax)]) - double(ours[size_t(ref_argmax)]);
        std::printf("[ %s ] position %zu: argmax %d vs llama.cpp's %d (margin %.3g)\n", fixture.c_str(), i, our_argmax,
                    ref_argmax, margin);
        if (margin > tol.max_abs) ++argmax_mismatches;
      }
      double our_max = -INFINITY;
      for (float v : ours) our_max = std::max(our_max, double(v));
      double our_sum = 0;
      for (float v : ours) our_sum += std::exp(double(v) - our_max);
      const double our_lse = our_max + std::log(our_sum);
      const std::vector<int32_t> ids = pos["top_ids"];
      const std::vector<double> ref = pos["top_logits"];
      const double ref_lse = pos["lse"];
      double kl = 0;
      for (size_t k = 0; k < ids.size(); ++k) {
        worst_abs = std::max(worst_abs, std::abs(double(ours[size_t(ids[k])]) - ref[k]));
        const double lp_ref = ref[k] - ref_lse, lp_our = double(ours[size_t(ids[k])]) - our_lse;
        kl += std::exp(lp_ref) * (lp_ref - lp_our);
      }
      if (!full.empty()) {
        const float* row = full.data() + i * ours.size();
        for (size_t v = 0; v < ours.size(); ++v) worst_abs = std::max(worst_abs, std::abs(double(ours[v]) - row[v]));
      }
      kl_sum += kl;
      ++n_positions;
    }
    // Greedy continuation, one token at a time as a user's decode would run.
    const std::vector<int32_t> expected = prompt["greedy"];
    int32_t next = int32_t(std::max_element((*ctx)->logits(int64_t(tokens.size()) - 1).begin(),
                                            (*ctx)->logits(int64_t(tokens.size()) - 1).end()) -
                           (*ctx)->logits(int64_t(tokens.size()) - 1).begin());
    std::span<const float> last = (*ctx)->logits(int64_t(tokens.size()) - 1);
    for (size_t g = 0; g < expected.size(); ++g) {
      if (next != expected[g]) {
        // A divergence is acceptable only at a near-tie: llama.cpp's token must be within the logit
        // tolerance of ours. After it the two continuations differ, so comparison stops.
        const double margin = double(last[size_t(next)]) - double(last[size_t(expected[g])]);
        std::printf("[ %s ] greedy diverges at token %zu of '%s' (near-tie, margin %.3g)\n", fixture.c_str(), g,
                    prompt["text"].get<std::string>().c_str(), margin);
        if (margin > tol.max_abs) {
          ++greedy_mismatches;
          ADD_FAILURE() << fixture << ": greedy token " << g << " is " << next << ", llama.cpp's is " << expected[g]
                        << ", " << margin << " apart";
        }
        break;
      }
      Batch one;
      one.add(next, int32_t(tokens.size() + g), 0, true);
      if (!(*ctx)->decode(one).is_ok()) {
        ADD_FAILURE() << "decode failed";
        return 0;
      }
      last = (*ctx)->logits(0);
      next = int32_t(std::max_element(last.begin(), last.end()) - last.begin());
    }
  }
  const double mean_kl = kl_sum / double(n_positions);
  std::printf("[ %s ] positions %lld, max |dlogit| %.4g, mean top-K KL %.3g, argmax mismatches beyond a near-tie %lld\n",
              fixture.c_str(), (long long)n_positions, worst_abs, mean_kl, (long long)argmax_mismatches);
  EXPECT_EQ(argmax_mismatches, 0);
  EXPECT_EQ(greedy_mismatches, 0);
  EXPECT_LE(worst_abs, tol.max_abs);
  EXPECT_LE(mean_kl, tol.mean_kl);
  return mean_kl;
}

#define check_model(fixture, ...)                                  \
  do {                                                             \
    std::string skip;                                              \
    run_fixture(fixture, __VA_ARGS__, nullptr, &skip);             \
    if (!skip.empty()) GTEST_SKIP() << skip;                       \
  } while (0)

// Tolerances. Both engines round Q and the softmax to f16 in attention (as ggml does) and, for
// quantized weights, activations to Q8_0/Q8_K; a float summation-order difference that flips one such
// rounding moves later values by a rounding step, and 18 layers amplify it. Measured floor: a float64
// emulation of llama.cpp's own quantized arithmetic differs from llama.cpp's logits by up to 0.08 at
// Gemma's first position, as much as Tandem does; the bounds below sit a little above the measured
// Tandem-vs-llama.cpp figures printed by each test.
// stories260K is all F32: only f16 attention rounding flips remain.
TEST(Logits, MatchLlamaCppOnStories260K) { check_model("stories260K.json", {0.01, 1e-6}); }
// stories260K's stand-in where that file cannot be had (test_data.h): its shapes, random F32 weights,
// whose flat logits move less than a trained model's. Measured 0.00031 (flash, with llama.cpp's f16
// p*V: 0.0038).
TEST(Logits, MatchLlamaCppOnStories260KStandIn) { check_model("synth-stories260K-shape-F32.json", {0.001, 1e-7}); }
TEST(Logits, MatchLlamaCppOnGemma3_270M_Q4_K_M) { check_model("gemma-3-270m-q4_k_m.json", {1.5, 0.01}); }
// Over 1,000 tokens: the sliding-window layers (window 512) must mask what llama.cpp masks. Measured
// 3.43 / 0.0105 with the AMX kernels, 2.37 / 0.0078 with AVX-512 (more positions, more rounding flips:
// the two differ only in float summation order); without the window the argmax moves by up to 17.
TEST(Logits, MatchLlamaCppOnGemma3_270M_LongPrompt) { check_model("gemma-3-270m-q4_k_m-long.json", {4.0, 0.015}); }
// Random weights spread activations evenly (no outliers), so Q8 rounding flips matter less than in
// Gemma; their flat output distributions make near-ties common.
TEST(Logits, MatchLlamaCppOnSynthLlama32_1B_Q4_K_M) { check_model("synth-Llama-3.2-1B-Q4_K_M.json", {0.25, 1e-4}); }
TEST(Logits, MatchLlamaCppOnSynthLlama32_1B_Q8_0) { check_model("synth-Llama-3.2-1B-Q8_0.json", {0.25, 1e-4}); }
// Four layers of each Qwen shape: QKV biases (qwen2), per-head QK norms and head_dim != n_embd/n_head
// (qwen3), NeoX RoPE at base 1e6.
TEST(Logits, MatchLlamaCppOnSynthQwen25_Q8_0) { check_model("synth-Qwen2.5-0.5B-Q8_0-4L.json", {0.25, 1e-4}); }
TEST(Logits, MatchLlamaCppOnSynthQwen3_Q4_K_M) { check_model("synth-Qwen3-0.6B-Q4_K_M-4L.json", {0.25, 1e-4}); }
// deepseek2, F32 weights: MLA absorbed (as llama.cpp runs it) with YaRN x40 and mscale, a leading dense
// layer, then MoE. V3-like: q_lora, sigmoid gating with exp_probs_b, group-limited top-4 of 16, normalized
// weights x2.5. V2-Lite-like (27 layers): direct attn_q, softmax top-2 of 8, two shared experts.
// Measured 0.0003 / KL 1e-9 at the prompt positions; 0.003 covers greedy's near-tie 0.0017 apart at
// token 25 of the code prompt (V3). Without the group limit the V3 run is 0.65 off, 38 argmaxes differ.
TEST(Logits, MatchLlamaCppOnSynthDeepseekV3) { check_model("synth-tiny-deepseek-v3-F32.json", {0.003, 1e-7}); }
// The same V3 as an older conversion writes it (one attn_kv_b): expanded per head, as llama.cpp runs it.
// Measured 0.0003 / KL 1e-10 at the prompt positions; greedy parts at token 36 of the water prompt at a
// near-tie 0.076 apart (an expert chosen differently after 36 decode steps), which the bound admits:
// the KL bound still holds the prompt positions to llama.cpp's.
TEST(Logits, MatchLlamaCppOnSynthDeepseekV3CombinedKvB) {
  check_model("synth-tiny-deepseek-v3-kvb-F32.json", {0.1, 1e-7});
}
// The same weights with each layer's gate and up experts in one ffn_gate_up_exps tensor, which llama.cpp
// loads as its current converter writes it (--fuse-gate-up-exps).
TEST(Logits, MatchLlamaCppOnSynthDeepseekV3FusedGateUp) {
  check_model("synth-tiny-deepseek-v3-F32-fused.json", {0.003, 1e-7});
}
TEST(Logits, MatchLlamaCppOnSynthDeepseekV2Lite) { check_model("synth-tiny-deepseek-v2-lite-F32.json", {0.003, 1e-7}); }
// qwen3moe, F32: qwen3's attention, then top-2 of 8 experts by softmax, normalized, in every layer.
// Measured 3.2e-5 / KL 3e-11.
TEST(Logits, MatchLlamaCppOnSynthQwen3Moe) { check_model("synth-tiny-qwen3moe-F32.json", {0.001, 1e-7}); }

// Flash attention and quantized KV caches against llama.cpp's flash attention on the same cache types.
// llama.cpp's flash path for batches under 64 tokens (these prompts) and for decoding accumulates
// p*V in f16; Tandem's in f32, hence the wider bound on stories260K (measured 0.011; non-flash 0.0055).
// Measured on Gemma: f16 cache 2.53 / KL 0.0068, q8_0 1.83 / 0.0060. For scale, llama.cpp against
// itself with -ub 1 instead of 2048 (scripts/fixtures/gen_logits.py's DUMP_UBATCH): f16 1.19 / 0.0036,
// q8_0 1.55 / 0.0030, q4_0 3.48 / 0.020.
TEST(Logits, FlashMatchesLlamaCppOnStories260K) { check_model("stories260K-fa-f16-f16.json", {0.02, 2e-6}); }
TEST(Logits, FlashMatchesLlamaCppOnStories260KStandIn) {
  check_model("synth-stories260K-shape-F32-fa-f16-f16.json", {0.008, 1e-6});
}
TEST(Logits, FlashMatchesLlamaCppOnGemma3_F16Cache) { check_model("gemma-3-270m-q4_k_m-fa-f16-f16.json", {3.0, 0.01}); }
TEST(Logits, FlashMatchesLlamaCppOnGemma3_Q8_0Cache) { check_model("gemma-3-270m-q4_k_m-fa-q8_0-q8_0.json", {2.0, 0.008}); }
// The llama architecture (GQA, head dimension 64: K and V both rotated in 64-blocks) with a q8_0 cache,
// whose blocks are llama.cpp's own: measured 0.087 / KL 6.9e-6.
TEST(Logits, FlashMatchesLlamaCppOnSynthLlama32_1B_Q8_0Cache) {
  check_model("synth-Llama-3.2-1B-Q4_K_M-fa-q8_0-q8_0.json", {0.25, 5e-5});
}
// deepseek2's latent cache (rows of rope key + latent, 96 wide here; V read out of the K rows, as in
// llama.cpp) on the flash path. f16: measured 0.0016 / KL 1.9e-8 (llama.cpp's f16 p*V, as above). q8_0:
// measured 0.00011 / KL 3e-10 (K and Q rotated in 32-blocks that do not straddle the rope key and the
// latent); with the latent stored a second time as a V of its own (q8_0 blocks of its own) it was 0.31.
TEST(Logits, FlashMatchesLlamaCppOnSynthDeepseekV3_F16Cache) {
  check_model("synth-tiny-deepseek-v3-F32-fa-f16-f16.json", {0.005, 1e-7});
}
TEST(Logits, FlashMatchesLlamaCppOnSynthDeepseekV3_Q8_0Cache) {
  check_model("synth-tiny-deepseek-v3-F32-fa-q8_0-q8_0.json", {0.003, 1e-7});
}
// Bounds for a run with a 4- or 5-bit cache against an f16 fixture: its logits move by up to 40 and its
// greedy text may part from the f16 one, so these only catch a broken run; the test below compares the
// run's KL with llama.cpp's.
constexpr Tolerance kQuantizedRun{50.0, 1.0};

// The loss a quantized cache (K and V) costs, Tandem vs llama.cpp (issue 19): mean top-K KL of each
// engine's run against llama.cpp's f16-cache run over the "-kv-" fixtures (the prompt and a
// 534-token passage, 90 positions, flash attention). A 4-bit cache's per-position KL is heavy-tailed
// (two of the 90 positions carry a quarter of llama.cpp's q4_0 mean) and any rounding change redraws it,
// so 90 positions measure a loss only to about +-25%: the bound is llama.cpp's loss plus three standard
// errors of it (six types tested: at two, one would fail now and then on CPUs whose kernels round
// differently) plus the f16-vs-f16 disagreement. It catches a cache that loses far more than
// llama.cpp's; the figures that rank the two engines come from perplexity runs of thousands of
// positions (BENCHMARKS.md). Measured Tandem / llama.cpp +- standard error: q8_0 0.0150 / 0.0105 +-
// 0.0025, q4_0 0.173 / 0.179 +- 0.041, q4_1 0.139 / 0.142 +- 0.043, q5_0 0.064 / 0.065 +- 0.015, q5_1
// 0.049 / 0.051 +- 0.011, iq4_nl 0.183 / 0.165 +- 0.026 (AVX-512 kernels); with the Zen kernels, which
// differ only in float summation order: q8_0 0.011, q4_0 0.256, q4_1 0.211, q5_0 0.071, q5_1 0.046,
// iq4_nl 0.213. With llama.cpp's blocks (before issue 19's fix): AVX-512 q4_0 0.214, q4_1 0.232, q5_0
// 0.065, q5_1 0.057, iq4_nl 0.307 (over this bound, 0.254); Zen q4_0 0.249, q4_1 0.146, q5_0 0.068,
// q5_1 0.073, iq4_nl 0.248 (within it). So this guards against a gross loss; it cannot rank the engines,
// and the tests that fail on the old code are tests/quant/kv_quant_test.cpp's and CpuOps.KvStore*.
TEST(Logits, QuantizedCacheCostsNoMoreThanInLlamaCpp) {
  const std::string base = "gemma-3-270m-q4_k_m-kv-f16.json";
  const json f16 = read_fixture(base);
  std::string skip;
  const double f16_disagreement = run_fixture(base, {6.0, 0.015}, nullptr, &skip);  // Tandem's f16 cache
  if (!skip.empty()) GTEST_SKIP() << skip;
  for (const char* type : {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl"}) {
    const std::vector<double> kls = fixture_kls(f16, read_fixture(std::string("gemma-3-270m-q4_k_m-kv-") + type + ".json"));
    double mean = 0, var = 0;
    for (double k : kls) mean += k / double(kls.size());
    for (double k : kls) var += (k - mean) * (k - mean) / double(kls.size() - 1);
    const double se = std::sqrt(var / double(kls.size()));
    ContextOptions options{.n_ctx = 2048};
    options.type_k = options.type_v = *parse_weight_type(type);
    options.flash_attn = true;
    const double ours = run_fixture(base, kQuantizedRun, &options, &skip);
    std::printf("[ %s cache ] KL vs llama.cpp's f16 cache: Tandem %.4g, llama.cpp %.4g +- %.2g\n", type, ours, mean, se);
    EXPECT_LE(ours, mean + 3 * se + f16_disagreement) << type;
  }
}

}  // namespace
}  // namespace tandem
