// write_synth_model: presets, tensor list, weight scales and the threaded generate-quantize-write loop.
#include "model/synth.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <map>
#include <thread>

#include "core/progress.h"
#include "gguf/gguf_file.h"
#include "gguf/writer.h"
#include "quant/quant.h"

namespace tandem::model {

namespace {

SynthPreset tiny_deepseek2(const char* name, int64_t n_layer, const MoeShape& moe) {
  SynthPreset p{name, "deepseek2", 128, n_layer, 4, 1, moe.qk_nope + moe.qk_rope, 256, 163840, 10000, 1e-6, true,
                "ggml-vocab-deepseek-coder.gguf"};
  p.moe = moe;
  return p;
}

SynthPreset deepseek2(const char* name, int64_t n_embd, int64_t n_layer, int64_t n_head, int64_t n_ff, double theta,
                      const char* vocab, const MoeShape& moe) {
  SynthPreset p{name, "deepseek2", n_embd, n_layer, n_head, 1, moe.qk_nope + moe.qk_rope, n_ff, 163840, theta, 1e-6,
                false, vocab};
  p.moe = moe;
  return p;
}

SynthPreset tiny_qwen3moe() {
  SynthPreset p{"tiny-qwen3moe", "qwen3moe", 128, 3, 4, 2, 32, 256, 40960, 1000000, 1e-6, true,
                "ggml-vocab-qwen2.gguf"};
  p.moe = {.n_expert = 8, .n_expert_used = 2, .n_ff_exp = 64};
  return p;
}

}  // namespace

const std::vector<SynthPreset>& synth_presets() {
  // Shapes from each model's published config.json.
  static const std::vector<SynthPreset> presets = {
      {"Llama-3.2-1B", "llama", 2048, 16, 32, 8, 64, 8192, 131072, 500000, 1e-5, true,
       "ggml-vocab-llama-bpe.gguf", 32},
      {"Llama-3-8B", "llama", 4096, 32, 32, 8, 128, 14336, 8192, 500000, 1e-5, false, "ggml-vocab-llama-bpe.gguf"},
      {"Qwen2.5-0.5B", "qwen2", 896, 24, 14, 2, 64, 4864, 32768, 1000000, 1e-6, true, "ggml-vocab-qwen2.gguf"},
      {"Qwen3-0.6B", "qwen3", 1024, 28, 16, 8, 128, 3072, 40960, 1000000, 1e-6, true, "ggml-vocab-qwen2.gguf"},
      // Not a real model: small enough for tests (a 32000-token SentencePiece vocabulary).
      {"tiny-llama", "llama", 256, 2, 4, 2, 64, 512, 4096, 10000, 1e-5, false, "ggml-vocab-llama-spm.gguf"},
      // Not a real model: stories260K's shapes (5 layers, 64 wide, 8 heads of 8 over 4 KV heads, n_ff 172)
      // with llama-spm's vocabulary; the tests' stand-in where stories260K.gguf cannot be had.
      {"stories260K-shape", "llama", 64, 5, 8, 4, 8, 172, 2048, 10000, 1e-5, false, "ggml-vocab-llama-spm.gguf"},
      // Not real models: DeepSeek-V3's and V2-Lite's structure at test sizes. V3: query low-rank projection,
      // sigmoid gating with exp_probs_b, 4 expert groups of which 2 are used, normalized top-k weights
      // scaled by 2.5, YaRN x40 with mscale. V2-Lite: direct attn_q, softmax gating, 2 shared experts;
      // 27 layers, as llama.cpp tells V2-Lite (no q_lora_rank key) by its layer count.
      tiny_deepseek2("tiny-deepseek-v3", 4,
                     {.q_lora_rank = 96, .kv_lora_rank = 64, .qk_nope = 32, .qk_rope = 32, .v_head_dim = 32,
                      .n_expert = 16, .n_expert_used = 4, .n_expert_shared = 1, .n_ff_exp = 64, .n_dense_lead = 1,
                      .n_group = 4, .n_group_used = 2, .sigmoid_gating = true, .norm_topk = true,
                      .routed_scale = 2.5, .yarn_factor = 40, .yarn_orig_ctx = 4096, .mscale_all_dim = 1.0}),
      // The same V3 as an older conversion wrote it: one attn_kv_b per layer.
      tiny_deepseek2("tiny-deepseek-v3-kvb", 4,
                     {.q_lora_rank = 96, .kv_lora_rank = 64, .qk_nope = 32, .qk_rope = 32, .v_head_dim = 32,
                      .n_expert = 16, .n_expert_used = 4, .n_expert_shared = 1, .n_ff_exp = 64, .n_dense_lead = 1,
                      .n_group = 4, .n_group_used = 2, .sigmoid_gating = true, .norm_topk = true,
                      .routed_scale = 2.5, .yarn_factor = 40, .yarn_orig_ctx = 4096, .mscale_all_dim = 1.0,
                      .combined_kv_b = true}),
      tiny_deepseek2("tiny-deepseek-v2-lite", 27,
                     {.kv_lora_rank = 64, .qk_nope = 32, .qk_rope = 32, .v_head_dim = 32, .n_expert = 8,
                      .n_expert_used = 2, .n_expert_shared = 2, .n_ff_exp = 64, .n_dense_lead = 1,
                      .yarn_factor = 40, .yarn_orig_ctx = 4096, .mscale_all_dim = 0.707}),
      // MoE models at real shapes (config.json of each). V3 gets its real 129,280-token vocabulary
      // (scripts/make-deepseek-vocab.py); Kimi-K2's (163,840 tokens) is in no package, so it gets DeepSeek-LLM's.
      deepseek2("DeepSeek-V3", 7168, 61, 128, 18432, 10000, "ggml-vocab-deepseek-v3.gguf",
                {.q_lora_rank = 1536, .kv_lora_rank = 512, .qk_nope = 128, .qk_rope = 64, .v_head_dim = 128,
                 .n_expert = 256, .n_expert_used = 8, .n_expert_shared = 1, .n_ff_exp = 2048, .n_dense_lead = 3,
                 .n_group = 8, .n_group_used = 4, .sigmoid_gating = true, .norm_topk = true, .routed_scale = 2.5,
                 .yarn_factor = 40, .yarn_orig_ctx = 4096, .mscale_all_dim = 1.0}),
      deepseek2("DeepSeek-V2-Lite", 2048, 27, 16, 10944, 10000, "ggml-vocab-deepseek-llm.gguf",
                {.kv_lora_rank = 512, .qk_nope = 128, .qk_rope = 64, .v_head_dim = 128, .n_expert = 64,
                 .n_expert_used = 6, .n_expert_shared = 2, .n_ff_exp = 1408, .n_dense_lead = 1, .yarn_factor = 40,
                 .yarn_orig_ctx = 4096, .mscale_all_dim = 0.707}),
      deepseek2("Kimi-K2", 7168, 61, 64, 18432, 50000, "ggml-vocab-deepseek-llm.gguf",
                {.q_lora_rank = 1536, .kv_lora_rank = 512, .qk_nope = 128, .qk_rope = 64, .v_head_dim = 128,
                 .n_expert = 384, .n_expert_used = 8, .n_expert_shared = 1, .n_ff_exp = 2048, .n_dense_lead = 1,
                 .sigmoid_gating = true, .norm_topk = true, .routed_scale = 2.827, .yarn_factor = 32,
                 .yarn_orig_ctx = 4096, .mscale_all_dim = 1.0}),
      [] {
        SynthPreset p{"Qwen3-30B-A3B", "qwen3moe", 2048, 48, 32, 4, 128, 6144, 40960, 1000000, 1e-6, false,
                      "ggml-vocab-qwen2.gguf"};
        p.moe = {.n_expert = 128, .n_expert_used = 8, .n_ff_exp = 768};
        return p;
      }(),
      // Not a real model: Qwen3-30B-A3B's structure (QK norms, NeoX RoPE, top-k softmax experts with
      // normalized weights in every layer) at test size.
      tiny_qwen3moe(),
  };
  return presets;
}

std::string synth_preset_names() {
  std::string out;
  for (const auto& p : synth_presets()) out += (out.empty() ? "" : ", ") + p.name;
  return out;
}

const SynthPreset* find_synth_preset(const std::string& name) {
  auto lower = [](std::string s) {
    for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
  };
  for (const auto& p : synth_presets())
    if (lower(p.name) == lower(name)) return &p;
  return nullptr;
}

namespace {

enum class Init { Normal, Ones, Zeros, RopeFactors };

struct SynthTensor {
  std::string name;
  std::vector<int64_t> shape;  // outermost first
  Init init = Init::Normal;
  float stddev = 0;
  // Where each row's random values come from: row r of part p of the tensor at index sources[p] of the
  // unfused list. A tensor is its own one part; a fused ffn_gate_up_exps has two (gate, then up, per
  // expert), so that it holds the very values the split file holds.
  std::vector<size_t> sources;
  int64_t part_rows = 0;  // rows of one part per expert (fused only)

  // (source tensor index, source row) of row r.
  std::pair<size_t, int64_t> source_of(int64_t r) const {
    if (sources.size() == 1) return {sources[0], r};
    const int64_t per_expert = part_rows * int64_t(sources.size()), within = r % per_expert;
    return {sources[size_t(within / part_rows)], r / per_expert * part_rows + within % part_rows};
  }
};

// The list with each layer's ffn_gate_exps and ffn_up_exps replaced by one ffn_gate_up_exps,
// [n_expert, 2 n_ff, n_embd] (llama.cpp's convert_hf_to_gguf.py --fuse-gate-up-exps).
std::vector<SynthTensor> fuse_gate_up_exps(const std::vector<SynthTensor>& t) {
  std::vector<SynthTensor> out;
  for (size_t i = 0; i < t.size(); ++i) {
    const std::string& name = t[i].name;
    const size_t at = name.find("ffn_gate_exps.weight");
    if (at == std::string::npos || i + 1 >= t.size() || t[i + 1].name != name.substr(0, at) + "ffn_up_exps.weight") {
      out.push_back(t[i]);
      continue;
    }
    SynthTensor f = t[i];
    f.name = name.substr(0, at) + "ffn_gate_up_exps.weight";
    f.shape[1] *= 2;
    f.sources = {t[i].sources[0], t[i + 1].sources[0]};
    f.part_rows = t[i].shape[1];
    out.push_back(f);
    ++i;
  }
  return out;
}

// deepseek2's tensors, in llama.cpp's names; attn_k_b/attn_v_b split as its converter writes them.
std::vector<SynthTensor> deepseek2_tensor_list(const SynthPreset& p, int64_t n_vocab) {
  const MoeShape& d = p.moe;
  const int64_t e = p.n_embd, h = p.n_head, k_mla = d.qk_nope + d.qk_rope;
  const float in_std = float(1 / std::sqrt(double(e)));
  const float residual = float(1 / std::sqrt(2.0 * double(p.n_layer)));
  auto std_of = [](int64_t n) { return float(1 / std::sqrt(double(n))); };
  std::vector<SynthTensor> t;
  t.push_back({"token_embd.weight", {n_vocab, e}, Init::Normal, 0.02f});
  for (int64_t i = 0; i < p.n_layer; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    t.push_back({b + "attn_norm.weight", {e}, Init::Ones});
    if (d.q_lora_rank > 0) {
      t.push_back({b + "attn_q_a.weight", {d.q_lora_rank, e}, Init::Normal, in_std});
      t.push_back({b + "attn_q_a_norm.weight", {d.q_lora_rank}, Init::Ones});
      t.push_back({b + "attn_q_b.weight", {h * k_mla, d.q_lora_rank}, Init::Normal, std_of(d.q_lora_rank)});
    } else {
      t.push_back({b + "attn_q.weight", {h * k_mla, e}, Init::Normal, in_std});
    }
    t.push_back({b + "attn_kv_a_mqa.weight", {d.kv_lora_rank + d.qk_rope, e}, Init::Normal, in_std});
    t.push_back({b + "attn_kv_a_norm.weight", {d.kv_lora_rank}, Init::Ones});
    if (d.combined_kv_b) {
      t.push_back({b + "attn_kv_b.weight", {h * (d.qk_nope + d.v_head_dim), d.kv_lora_rank}, Init::Normal,
                   std_of(d.kv_lora_rank)});
    } else {
      t.push_back({b + "attn_k_b.weight", {h, d.kv_lora_rank, d.qk_nope}, Init::Normal, std_of(d.kv_lora_rank)});
      t.push_back({b + "attn_v_b.weight", {h, d.v_head_dim, d.kv_lora_rank}, Init::Normal, std_of(d.kv_lora_rank)});
    }
    t.push_back({b + "attn_output.weight", {e, h * d.v_head_dim}, Init::Normal, std_of(h * d.v_head_dim) * residual});
    t.push_back({b + "ffn_norm.weight", {e}, Init::Ones});
    if (i < d.n_dense_lead) {
      t.push_back({b + "ffn_gate.weight", {p.n_ff, e}, Init::Normal, in_std});
      t.push_back({b + "ffn_up.weight", {p.n_ff, e}, Init::Normal, in_std});
      t.push_back({b + "ffn_down.weight", {e, p.n_ff}, Init::Normal, std_of(p.n_ff) * residual});
      continue;
    }
    const int64_t ff = d.n_ff_exp, sh = d.n_ff_exp * d.n_expert_shared;
    t.push_back({b + "ffn_gate_inp.weight", {d.n_expert, e}, Init::Normal, in_std});
    if (d.sigmoid_gating) t.push_back({b + "exp_probs_b.bias", {d.n_expert}, Init::Normal, 0.1f});
    t.push_back({b + "ffn_gate_exps.weight", {d.n_expert, ff, e}, Init::Normal, in_std});
    t.push_back({b + "ffn_up_exps.weight", {d.n_expert, ff, e}, Init::Normal, in_std});
    t.push_back({b + "ffn_down_exps.weight", {d.n_expert, e, ff}, Init::Normal, std_of(ff) * residual});
    t.push_back({b + "ffn_gate_shexp.weight", {sh, e}, Init::Normal, in_std});
    t.push_back({b + "ffn_up_shexp.weight", {sh, e}, Init::Normal, in_std});
    t.push_back({b + "ffn_down_shexp.weight", {e, sh}, Init::Normal, std_of(sh) * residual});
  }
  t.push_back({"output_norm.weight", {e}, Init::Ones});
  if (!p.tied_embeddings) t.push_back({"output.weight", {n_vocab, e}, Init::Normal, in_std});
  return t;
}

void set_deepseek2_metadata(const SynthPreset& p, gguf::Metadata& m) {
  const MoeShape& d = p.moe;
  const std::string a = p.arch + ".";
  auto u32 = [&](const char* key, int64_t v) { m.set(a + key, gguf::Value::u32(uint32_t(v))); };
  // MLA is stored as MQA over the latent: one KV head of kv_lora + rope keys and kv_lora values.
  if (d.combined_kv_b) {  // older conversions: multi-head K and V as attn_kv_b expands them
    u32("attention.head_count_kv", p.n_head);
    u32("attention.key_length", d.qk_nope + d.qk_rope);
    u32("attention.value_length", d.v_head_dim);
  } else {
    u32("attention.key_length", d.kv_lora_rank + d.qk_rope);
    u32("attention.value_length", d.kv_lora_rank);
    u32("attention.key_length_mla", d.qk_nope + d.qk_rope);
    u32("attention.value_length_mla", d.v_head_dim);
  }
  // Without a query low-rank projection (V2-Lite) real files have no q_lora_rank key, and llama.cpp
  // accepts that only at V2-Lite's 26 or 27 layers; other layer counts (--layers) get an explicit 0.
  if (d.q_lora_rank > 0 || (p.n_layer != 26 && p.n_layer != 27)) u32("attention.q_lora_rank", d.q_lora_rank);
  u32("attention.kv_lora_rank", d.kv_lora_rank);
  u32("rope.dimension_count", d.qk_rope);
  u32("leading_dense_block_count", d.n_dense_lead);
  u32("expert_feed_forward_length", d.n_ff_exp);
  u32("expert_count", d.n_expert);
  u32("expert_used_count", d.n_expert_used);
  u32("expert_shared_count", d.n_expert_shared);
  m.set(a + "expert_weights_scale", gguf::Value::f32(float(d.routed_scale)));
  if (d.norm_topk) m.set(a + "expert_weights_norm", gguf::Value::boolean(true));
  u32("expert_gating_func", d.sigmoid_gating ? 2 : 1);
  if (d.n_group > 0) {
    u32("expert_group_count", d.n_group);
    u32("expert_group_used_count", d.n_group_used);
  }
  if (d.yarn_factor > 0) {
    m.set(a + "rope.scaling.type", gguf::Value::string("yarn"));
    m.set(a + "rope.scaling.factor", gguf::Value::f32(float(d.yarn_factor)));
    u32("rope.scaling.original_context_length", d.yarn_orig_ctx);
    m.set(a + "rope.scaling.yarn_log_multiplier", gguf::Value::f32(float(0.1 * d.mscale_all_dim)));
  }
}

std::vector<SynthTensor> tensor_list(const SynthPreset& p, int64_t n_vocab) {
  if (p.moe.kv_lora_rank > 0) return deepseek2_tensor_list(p, n_vocab);
  const int64_t e = p.n_embd, q = p.n_head * p.head_dim, kv = p.n_head_kv * p.head_dim;
  // Projections reading the residual stream: unit-variance outputs. Projections writing back into it
  // are scaled down by sqrt(2 * n_layer) (GPT-2's residual scaling) so the stream stays O(1) deep.
  const float in_std = float(1 / std::sqrt(double(e)));
  const float residual = float(1 / std::sqrt(2.0 * double(p.n_layer)));
  std::vector<SynthTensor> t;
  if (p.llama3_rope_factor > 0) t.push_back({"rope_freqs.weight", {p.head_dim / 2}, Init::RopeFactors});
  t.push_back({"token_embd.weight", {n_vocab, e}, Init::Normal, 0.02f});
  for (int64_t i = 0; i < p.n_layer; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    t.push_back({b + "attn_norm.weight", {e}, Init::Ones});
    t.push_back({b + "attn_q.weight", {q, e}, Init::Normal, in_std});
    t.push_back({b + "attn_k.weight", {kv, e}, Init::Normal, in_std});
    t.push_back({b + "attn_v.weight", {kv, e}, Init::Normal, in_std});
    if (p.arch == "qwen2") {
      t.push_back({b + "attn_q.bias", {q}, Init::Zeros});
      t.push_back({b + "attn_k.bias", {kv}, Init::Zeros});
      t.push_back({b + "attn_v.bias", {kv}, Init::Zeros});
    }
    if (p.arch == "qwen3" || p.arch == "qwen3moe") {
      t.push_back({b + "attn_q_norm.weight", {p.head_dim}, Init::Ones});
      t.push_back({b + "attn_k_norm.weight", {p.head_dim}, Init::Ones});
    }
    t.push_back({b + "attn_output.weight", {e, q}, Init::Normal, float(1 / std::sqrt(double(q))) * residual});
    t.push_back({b + "ffn_norm.weight", {e}, Init::Ones});
    if (p.moe.n_expert > 0) {  // qwen3moe: every layer's FFN is experts (no shared ones)
      const int64_t ne = p.moe.n_expert, ff = p.moe.n_ff_exp;
      t.push_back({b + "ffn_gate_inp.weight", {ne, e}, Init::Normal, in_std});
      t.push_back({b + "ffn_gate_exps.weight", {ne, ff, e}, Init::Normal, in_std});
      t.push_back({b + "ffn_up_exps.weight", {ne, ff, e}, Init::Normal, in_std});
      t.push_back({b + "ffn_down_exps.weight", {ne, e, ff}, Init::Normal, float(1 / std::sqrt(double(ff))) * residual});
      continue;
    }
    t.push_back({b + "ffn_gate.weight", {p.n_ff, e}, Init::Normal, in_std});
    t.push_back({b + "ffn_up.weight", {p.n_ff, e}, Init::Normal, in_std});
    t.push_back({b + "ffn_down.weight", {e, p.n_ff}, Init::Normal, float(1 / std::sqrt(double(p.n_ff))) * residual});
  }
  t.push_back({"output_norm.weight", {e}, Init::Ones});
  if (!p.tied_embeddings) t.push_back({"output.weight", {n_vocab, e}, Init::Normal, in_std});
  return t;
}

// Llama 3.1 rope scaling factors per frequency pair, as llama.cpp's converter computes them.
std::vector<float> llama3_rope_factors(const SynthPreset& p) {
  constexpr double kLowFreqFactor = 1, kHighFreqFactor = 4, kOriginalContext = 8192;
  std::vector<float> out;
  for (int64_t i = 0; i < p.head_dim; i += 2) {
    const double freq = 1 / std::pow(p.rope_theta, double(i) / double(p.head_dim));
    const double wavelen = 2 * M_PI / freq;
    if (wavelen < kOriginalContext / kHighFreqFactor) {
      out.push_back(1);
    } else if (wavelen > kOriginalContext / kLowFreqFactor) {
      out.push_back(float(p.llama3_rope_factor));
    } else {
      const double smooth = (kOriginalContext / wavelen - kLowFreqFactor) / (kHighFreqFactor - kLowFreqFactor);
      out.push_back(float(1 / ((1 - smooth) / p.llama3_rope_factor + smooth)));
    }
  }
  return out;
}

// splitmix64: a per-row seed, so the output is the same whatever the thread count.
uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Approximately normal values: the sum of four 16-bit uniforms (Irwin-Hall), rescaled to unit
// variance. Bounded at 3.46 sigma, ten times cheaper than Box-Muller; weights need no exact tails.
void fill_normal(float* out, int64_t n, uint64_t seed, float stddev) {
  uint64_t s = mix64(seed);
  const float scale = stddev * std::sqrt(3.0f) / 65536.0f;  // sum of 4 U[0, 65536): sd = 65536 / sqrt(3)
  for (int64_t i = 0; i < n; ++i) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    const int64_t sum = int64_t(s & 0xffff) + int64_t((s >> 16) & 0xffff) + int64_t((s >> 32) & 0xffff) +
                        int64_t(s >> 48);
    out[i] = float(sum - 131070) * scale;  // centred: E[sum] = 4 * 65535 / 2
  }
}

Status copy_tokenizer(const std::string& vocab_path, gguf::Metadata& meta, int64_t* n_vocab) {
  TANDEM_ASSIGN(auto vocab, gguf::GgufFile::open(vocab_path));
  size_t copied = 0;
  for (const auto& [key, value] : vocab->metadata().entries()) {
    if (key.rfind("tokenizer.", 0) != 0) continue;
    meta.set(key, value);
    ++copied;
  }
  const gguf::Value* tokens = vocab->metadata().find("tokenizer.ggml.tokens");
  if (!copied || !tokens || !tokens->as_array() || tokens->as_array()->count == 0)
    return invalid_argument("%s: no tokenizer.ggml.tokens array; --vocab needs a GGUF with a tokenizer",
                            vocab_path.c_str());
  *n_vocab = int64_t(tokens->as_array()->count);
  return Status::ok();
}

}  // namespace

Result<SynthSummary> write_synth_model(const SynthOptions& o) {
  const SynthPreset& p = o.preset;
  if (p.n_layer < 1 || p.n_embd < 1 || p.n_head < 1 || p.n_head_kv < 1 || p.n_head % p.n_head_kv != 0)
    return invalid_argument("synth: preset %s has impossible shapes", p.name.c_str());
  gguf::GgufWriter writer({.split_max_bytes = o.split_max_bytes, .split_max_tensors = o.split_max_tensors});
  gguf::Metadata& m = writer.metadata();
  const std::string a = p.arch + ".";
  m.set("general.architecture", gguf::Value::string(p.arch));
  m.set("general.type", gguf::Value::string("model"));
  m.set("general.name", gguf::Value::string("synthetic " + p.name + " (random weights)"));
  m.set("general.description", gguf::Value::string(format(
      "written by tandem synth, seed %llu; random weights, not a trained model", (unsigned long long)o.seed)));
  m.set(a + "context_length", gguf::Value::u32(uint32_t(p.n_ctx)));
  m.set(a + "embedding_length", gguf::Value::u32(uint32_t(p.n_embd)));
  m.set(a + "block_count", gguf::Value::u32(uint32_t(p.n_layer)));
  m.set(a + "feed_forward_length", gguf::Value::u32(uint32_t(p.n_ff)));
  m.set(a + "attention.head_count", gguf::Value::u32(uint32_t(p.n_head)));
  m.set(a + "attention.head_count_kv", gguf::Value::u32(uint32_t(p.n_head_kv)));
  m.set(a + "rope.freq_base", gguf::Value::f32(float(p.rope_theta)));
  m.set(a + "attention.layer_norm_rms_epsilon", gguf::Value::f32(float(p.norm_eps)));
  if (p.moe.kv_lora_rank > 0) {
    set_deepseek2_metadata(p, m);
  } else if (p.moe.n_expert > 0) {
    m.set(a + "expert_count", gguf::Value::u32(uint32_t(p.moe.n_expert)));
    m.set(a + "expert_used_count", gguf::Value::u32(uint32_t(p.moe.n_expert_used)));
    m.set(a + "expert_feed_forward_length", gguf::Value::u32(uint32_t(p.moe.n_ff_exp)));
  }
  if (p.moe.kv_lora_rank == 0 && p.head_dim * p.n_head != p.n_embd) {
    m.set(a + "attention.key_length", gguf::Value::u32(uint32_t(p.head_dim)));
    m.set(a + "attention.value_length", gguf::Value::u32(uint32_t(p.head_dim)));
  }
  if (p.arch == "llama") m.set(a + "rope.dimension_count", gguf::Value::u32(uint32_t(p.head_dim)));
  m.set("general.file_type", gguf::Value::u32(uint32_t(o.mix)));
  m.set("general.quantization_version", gguf::Value::u32(2));
  int64_t n_vocab = 0;
  TANDEM_TRY(copy_tokenizer(o.vocab_path, m, &n_vocab));
  if (p.arch == "llama") m.set(a + "vocab_size", gguf::Value::u32(uint32_t(n_vocab)));

  std::vector<SynthTensor> tensors = tensor_list(p, n_vocab);
  for (size_t i = 0; i < tensors.size(); ++i) tensors[i].sources = {i};
  if (o.fuse_gate_up_exps) {
    if (p.arch != "deepseek2")
      return invalid_argument("synth: --fuse-gate-up-exps: %s files have no fused form (llama.cpp reads it for deepseek2)",
                              p.arch.c_str());
    tensors = fuse_gate_up_exps(tensors);
  }
  std::vector<quant::MixTensor> mix_tensors;
  for (const auto& t : tensors) mix_tensors.push_back({t.name, t.shape});
  const auto chosen = quant::choose_types(
      o.mix,
      {.arch = p.arch, .n_layer = p.n_layer, .n_head = p.n_head, .n_head_kv = p.n_head_kv, .n_expert = p.moe.n_expert,
       .n_embd = p.n_embd},
      mix_tensors);
  std::vector<WeightType> types;
  SynthSummary summary;
  summary.n_vocab = n_vocab;
  std::map<std::string, uint64_t> by_type;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const WeightType type = chosen[i].value_or(WeightType::F32);
    if (!quant::can_quantize(type))
      return unsupported("synth: %s needs type %s for %s, which Tandem cannot write yet", quant::file_type_name(o.mix).data(),
                         type_name(type).data(), tensors[i].name.c_str());
    types.push_back(type);
    TANDEM_TRY(writer.add_tensor(tensors[i].name, type, tensors[i].shape));
  }
  for (const auto& t : writer.tensors()) {
    summary.n_params += uint64_t(t.n_elements());
    summary.n_bytes += t.size_bytes;
    by_type[std::string(type_name(t.type))] += t.size_bytes;
  }
  summary.bytes_by_type.assign(by_type.begin(), by_type.end());
  TANDEM_TRY(writer.open(o.output_path));
  summary.paths = writer.part_paths();
  if (o.header_only) return summary;  // the writer closes the file at its header's end

  ProgressBar bar("synth ", summary.n_bytes, true, o.progress);
  const std::vector<float> rope_factors = p.llama3_rope_factor > 0 ? llama3_rope_factors(p) : std::vector<float>();
  constexpr size_t kChunkBytes = 8u << 20;  // output bytes per round: bounds memory, keeps threads busy
  std::vector<uint8_t> out;
  for (size_t ti = 0; ti < tensors.size(); ++ti) {
    const SynthTensor& t = tensors[ti];
    const WeightType type = types[ti];
    const int64_t n = t.shape.back();
    const int64_t n_rows = writer.tensors()[ti].n_rows();
    const size_t stride = row_bytes(type, n);
    const int64_t rows_per_chunk = std::max<int64_t>(1, int64_t(kChunkBytes / std::max<size_t>(stride, 1)));
    for (int64_t r0 = 0; r0 < n_rows; r0 += rows_per_chunk) {
      const int64_t r1 = std::min(n_rows, r0 + rows_per_chunk);
      out.resize(size_t(r1 - r0) * stride);
      std::atomic<int64_t> next{r0};
      auto work = [&] {
        std::vector<float> row(static_cast<size_t>(n));
        for (int64_t r; (r = next.fetch_add(1)) < r1;) {
          const auto [src, src_row] = t.source_of(r);
          switch (t.init) {
            case Init::Normal: fill_normal(row.data(), n, o.seed ^ mix64(src * 0x100000000ull + uint64_t(src_row)), t.stddev); break;
            case Init::Ones: std::fill(row.begin(), row.end(), 1.0f); break;
            case Init::Zeros: std::fill(row.begin(), row.end(), 0.0f); break;
            case Init::RopeFactors: std::copy(rope_factors.begin(), rope_factors.end(), row.begin()); break;
          }
          quant::quantize_row(type, row.data(), out.data() + size_t(r - r0) * stride, n);
        }
      };
      std::vector<std::thread> pool;
      const int64_t n_chunk_rows = r1 - r0;
      for (int i = 1; i < o.n_threads && i < n_chunk_rows; ++i) pool.emplace_back(work);
      work();
      for (auto& th : pool) th.join();
      TANDEM_TRY(writer.write(out.data(), out.size()));
      bar.add(out.size());
    }
  }
  TANDEM_TRY(writer.finish());
  bar.finish();
  return summary;
}

}  // namespace tandem::model
