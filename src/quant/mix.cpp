// Per-tensor type choice for llama.cpp's named mixes: a re-implementation of llama_tensor_get_type and
// its helpers in llama.cpp's src/llama-quant.cpp (no imatrix, default llama-quantize options), checked
// tensor for tensor against llama-quantize by tests/quant/mix_test.cpp.
#include "quant/mix.h"

#include <algorithm>
#include <cctype>
#include <initializer_list>
#include <numeric>

namespace tandem::quant {
namespace {

struct MixName {
  FileType type;
  std::string_view name;
};

// The order file_type_names() lists them in.
constexpr MixName kMixNames[] = {
    {FileType::F32, "F32"},       {FileType::F16, "F16"},       {FileType::BF16, "BF16"},
    {FileType::Q4_0, "Q4_0"},     {FileType::Q4_1, "Q4_1"},     {FileType::Q5_0, "Q5_0"},
    {FileType::Q5_1, "Q5_1"},     {FileType::Q8_0, "Q8_0"},     {FileType::Q2_K, "Q2_K"},
    {FileType::Q2_K_S, "Q2_K_S"}, {FileType::Q3_K_S, "Q3_K_S"}, {FileType::Q3_K_M, "Q3_K_M"},
    {FileType::Q3_K_L, "Q3_K_L"}, {FileType::Q4_K_S, "Q4_K_S"}, {FileType::Q4_K_M, "Q4_K_M"},
    {FileType::Q5_K_S, "Q5_K_S"}, {FileType::Q5_K_M, "Q5_K_M"}, {FileType::Q6_K, "Q6_K"},
    {FileType::IQ4_NL, "IQ4_NL"}, {FileType::IQ4_XS, "IQ4_XS"},
};

// llama-quantize's aliases for the medium K mixes.
constexpr MixName kMixAliases[] = {
    {FileType::Q3_K_M, "Q3_K"}, {FileType::Q4_K_M, "Q4_K"}, {FileType::Q5_K_M, "Q5_K"}};

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::toupper(static_cast<unsigned char>(a[i])) != std::toupper(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

bool contains(std::string_view s, std::string_view part) { return s.find(part) != std::string_view::npos; }

bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

// llama.cpp's tensor_category: broad roles found by substring, in the same precedence.
enum class Category {
  TokenEmbd, AttnQ, AttnV, AttnK, AttnQkv, AttnKvB, AttnOutput, FfnUp, FfnGate, FfnDown, Output, Other
};

Category category_of(std::string_view name) {
  if (name == "output.weight") return Category::Output;
  if (name == "token_embd.weight" || name == "per_layer_token_embd.weight") return Category::TokenEmbd;
  if (contains(name, "attn_qkv.weight")) return Category::AttnQkv;
  if (contains(name, "attn_kv_b.weight")) return Category::AttnKvB;
  if (contains(name, "attn_v.weight")) return Category::AttnV;
  if (contains(name, "attn_k.weight")) return Category::AttnK;
  if (contains(name, "attn_q.weight")) return Category::AttnQ;
  if (contains(name, "attn_output.weight")) return Category::AttnOutput;
  if (contains(name, "ffn_up")) return Category::FfnUp;
  if (contains(name, "ffn_gate")) return Category::FfnGate;
  if (contains(name, "ffn_down")) return Category::FfnDown;
  return Category::Other;
}

// The value projections (and what holds them) are the most sensitive to quantization; llama.cpp
// counts them together for its "first few" and use_more_bits rules.
bool is_attn_v_like(Category c) {
  return c == Category::AttnV || c == Category::AttnQkv || c == Category::AttnKvB;
}

// The layer in a "blk.<n>." prefix, or -1. Like llama.cpp's sscanf("blk.%d."), digits after "blk."
// are enough.
int layer_of(std::string_view name) {
  if (name.substr(0, 4) != "blk.") return -1;
  size_t i = 4;
  int layer = 0;
  bool any = false;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])) && layer < 100000000) {
    layer = layer * 10 + (name[i++] - '0');
    any = true;
  }
  return any ? layer : -1;
}

// ggml_n_dims: outer dimensions of size 1 do not count, so a [1, 640] tensor is 1-D.
int n_dims_of(const std::vector<int64_t>& shape) {
  size_t first = 0;
  while (first + 1 < shape.size() && shape[first] == 1) ++first;
  return std::max(1, static_cast<int>(shape.size() - first));
}

// llama.cpp's tensor_allows_quantization with default options: only 2-D and 3-D weights, never norms,
// routers, position embeddings or the small tensors of other architectures. position_embd and
// token_types are excluded for every architecture (llama.cpp asks the architecture's name table;
// only architectures that have them name them so).
bool allows_quantization(std::string_view arch, std::string_view name, const std::vector<int64_t>& shape) {
  if (n_dims_of(shape) < 2) return false;
  if (!ends_with(name, "weight")) return false;
  static constexpr std::string_view kNever[] = {
      "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
      "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
      "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
      "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
      "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
      "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
      "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.",
      "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd"};
  for (std::string_view part : kNever)
    if (contains(name, part)) return false;
  if (name == "position_embd.weight" || name == "token_types.weight") return false;
  if (arch == "glm5-next") {
    static constexpr std::string_view kGlm5Never[] = {
        "hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
        "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight", "ssm_g_b.weight",
        "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight", "attn_v_b.weight"};
    for (std::string_view part : kGlm5Never)
      if (contains(name, part)) return false;
  }
  return true;
}

// Layers [0, n/8), the last n/8 and every third one between get more bits (llama.cpp's use_more_bits).
bool use_more_bits(int i_layer, int n_layers) {
  return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

// The counters llama.cpp keeps while it walks the tensors (quantize_state_impl).
struct MixState {
  FileType mix;
  const MixModel& model;
  int n_gqa = 0;
  int n_expert = 0;
  bool is_70b = false;    // llama.cpp's LLM_TYPE_70B, whose attn_v gets Q5_K over Q3_K/Q4_K
  bool is_falcon = false;
  bool has_tied_embeddings = true;  // until output.weight is seen
  std::optional<WeightType> output_type;  // --output-tensor-type
  int n_attention_wv = 0;
  int i_attention_wv = 0;
  int n_ffn = 0;  // llama.cpp's n_ffn_down = n_ffn_gate = n_ffn_up = block_count
  int i_ffn_down = 0;
  int i_ffn_gate = 0;
  int i_ffn_up = 0;
};

// llama.cpp's layer_info: dense models count ffn tensors in walk order; with experts the layer comes
// from the name, since expert tensors need not be consecutive. llama.cpp aborts when a MoE ffn tensor
// has no layer in its name; this keeps the count instead.
int ffn_layer(const MixState& s, int counter, std::string_view name) {
  if (s.n_expert > 1) {
    const int layer = layer_of(name);
    if (layer >= 0) return layer;
  }
  return counter;
}

bool is_one_of(FileType t, std::initializer_list<FileType> set) {
  return std::find(set.begin(), set.end(), t) != set.end();
}

// llama.cpp's llama_tensor_get_type_impl for the mixes FileType lists (the IQ1/IQ2/IQ3, TQ and MXFP4
// branches are left out). `t` enters as the mix's base type.
WeightType mixed_type(MixState& s, WeightType t, Category cat, std::string_view name, int64_t row_length) {
  using F = FileType;
  using W = WeightType;
  const F mix = s.mix;
  if (cat == Category::Output || (s.has_tied_embeddings && cat == Category::TokenEmbd)) {
    // A tied token_embd also serves as the output matrix, so it gets the output's type.
    if (s.output_type) return *s.output_type;
    if (s.is_falcon || row_length % block_size(t) != 0) return W::Q8_0;
    return t == W::Q8_0 ? t : W::Q6_K;
  }
  if (cat == Category::TokenEmbd) return t;

  if (is_attn_v_like(cat)) {
    const int i = s.i_attention_wv, n = s.n_attention_wv;
    if (mix == F::Q2_K) t = s.n_gqa >= 4 ? W::Q4_K : W::Q3_K;
    else if (mix == F::Q2_K_S && s.n_gqa >= 4) t = W::Q4_K;
    else if (mix == F::Q3_K_M) t = i < 2 ? W::Q5_K : W::Q4_K;
    else if (mix == F::Q3_K_L) t = W::Q5_K;
    else if ((mix == F::IQ4_NL || mix == F::IQ4_XS) && s.n_gqa >= 4) t = W::Q5_K;
    else if ((mix == F::Q4_K_M || mix == F::Q5_K_M) && use_more_bits(i, n)) t = W::Q6_K;
    else if (mix == F::Q4_K_S && i < 4) t = W::Q5_K;
    // 70B: 8 heads share each attn_v, so more bits there cost little.
    if (s.is_70b && (t == W::Q3_K || t == W::Q4_K)) t = W::Q5_K;
    if (s.n_expert == 8) t = W::Q8_0;
    ++s.i_attention_wv;
    return t;  // llama.cpp's attn_qkv branch after this one is never reached
  }
  if (cat == Category::AttnK) return s.n_expert == 8 ? W::Q8_0 : t;

  if (cat == Category::FfnDown) {
    const int i = ffn_layer(s, s.i_ffn_down, name), n = s.n_ffn;
    ++s.i_ffn_down;
    if (mix == F::Q2_K) return W::Q3_K;
    if (mix == F::Q2_K_S) return i < n / 8 ? W::Q4_K : t;
    if (mix == F::Q3_K_M) {
      if (i < n / 16) return W::Q5_K;
      return !s.is_falcon || use_more_bits(i, n) ? W::Q4_K : W::Q3_K;
    }
    if (mix == F::Q3_K_L) return s.is_falcon ? W::Q4_K : W::Q5_K;
    if (mix == F::Q4_K_M) {
      if (s.is_falcon) return i < n / 16 ? W::Q6_K : use_more_bits(i, n) ? W::Q5_K : W::Q4_K;
      return use_more_bits(i, n) ? W::Q6_K : t;
    }
    if (i < n / 8 && (mix == F::IQ4_NL || mix == F::IQ4_XS)) return W::Q5_K;
    if (mix == F::Q5_K_M && use_more_bits(i, n)) return W::Q6_K;
    if (mix == F::Q4_K_S && !s.is_falcon && i < n / 8) return W::Q5_K;
    return t;
  }
  if (cat == Category::AttnOutput) {
    if (s.is_falcon) return mix == F::Q3_K_L ? W::Q4_K : t;
    if (s.n_expert == 8) {
      const bool bump = is_one_of(mix, {F::Q2_K, F::Q3_K_S, F::Q3_K_M, F::IQ4_NL, F::Q4_K_S, F::Q4_K_M,
                                        F::IQ4_XS});
      return bump ? W::Q5_K : t;
    }
    if (mix == F::Q2_K) return W::Q3_K;
    if (mix == F::Q3_K_M) return W::Q4_K;
    if (mix == F::Q3_K_L) return W::Q5_K;
    return t;
  }
  // ffn_gate and ffn_up change only for IQ3_XS, but llama.cpp still counts them.
  if (cat == Category::FfnGate) ++s.i_ffn_gate;
  if (cat == Category::FfnUp) ++s.i_ffn_up;
  return t;
}

// llama.cpp's tensor_type_fallback: a row the block size does not divide takes the nearest type with
// 32-element blocks, or F16 when even 32 does not divide it.
WeightType fallback_type(WeightType t, int64_t row_length) {
  using W = WeightType;
  if (row_length % block_size(t) == 0) return t;
  W fallback = t;
  switch (t) {
    case W::IQ4_XS: fallback = W::IQ4_NL; break;
    case W::Q2_K:
    case W::Q3_K: fallback = W::Q4_0; break;
    case W::Q4_K: fallback = W::Q5_0; break;
    case W::Q5_K: fallback = W::Q5_1; break;
    case W::Q6_K: fallback = W::Q8_0; break;
    default: break;  // already a 32-element block type
  }
  return row_length % block_size(fallback) == 0 ? fallback : W::F16;
}

bool is_70b(const MixModel& m) {
  if (m.arch == "llama") return m.n_layer == 80 && m.n_head != m.n_head_kv;
  if (m.arch == "qwen2" || m.arch == "deci" || m.arch == "olmo") return m.n_layer == 80;
  if (m.arch == "jais2") return m.n_layer == 68;
  return false;
}

}  // namespace

std::optional<FileType> parse_file_type(std::string_view name) {
  for (const MixName& m : kMixNames)
    if (equal_ignoring_case(name, m.name)) return m.type;
  for (const MixName& m : kMixAliases)
    if (equal_ignoring_case(name, m.name)) return m.type;
  // llama-quantize's try_parse_ftype also takes the llama_ftype number ("15" for Q4_K_M).
  const auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  if (!name.empty() && name.size() <= 3 && std::all_of(name.begin(), name.end(), is_digit)) {
    const uint32_t id = uint32_t(std::stoul(std::string(name)));
    for (const MixName& m : kMixNames)
      if (uint32_t(m.type) == id) return m.type;
  }
  return std::nullopt;
}

std::string_view file_type_name(FileType t) {
  for (const MixName& m : kMixNames)
    if (m.type == t) return m.name;
  return "unknown";
}

std::string file_type_names() {
  std::string out;
  for (const MixName& m : kMixNames) {
    if (!out.empty()) out += ", ";
    out += m.name;
  }
  return out;
}

WeightType base_type(FileType t) {
  switch (t) {
    case FileType::F32: return WeightType::F32;
    case FileType::F16: return WeightType::F16;
    case FileType::BF16: return WeightType::BF16;
    case FileType::Q4_0: return WeightType::Q4_0;
    case FileType::Q4_1: return WeightType::Q4_1;
    case FileType::Q5_0: return WeightType::Q5_0;
    case FileType::Q5_1: return WeightType::Q5_1;
    case FileType::Q8_0: return WeightType::Q8_0;
    case FileType::Q2_K:
    case FileType::Q2_K_S: return WeightType::Q2_K;
    case FileType::Q3_K_S:
    case FileType::Q3_K_M:
    case FileType::Q3_K_L: return WeightType::Q3_K;
    case FileType::Q4_K_S:
    case FileType::Q4_K_M: return WeightType::Q4_K;
    case FileType::Q5_K_S:
    case FileType::Q5_K_M: return WeightType::Q5_K;
    case FileType::Q6_K: return WeightType::Q6_K;
    case FileType::IQ4_NL: return WeightType::IQ4_NL;
    case FileType::IQ4_XS: return WeightType::IQ4_XS;
  }
  return WeightType::F16;
}

std::vector<std::optional<WeightType>> choose_types(FileType mix, const MixModel& model,
                                                    const std::vector<MixTensor>& tensors, const MixOptions& options,
                                                    std::vector<Fallback>* fallbacks) {
  std::vector<std::optional<WeightType>> out(tensors.size());
  const WeightType base = base_type(mix);
  const bool mixed = base != WeightType::F32 && base != WeightType::F16 && base != WeightType::BF16;

  MixState s{mix, model};
  s.output_type = options.output_type;
  s.n_gqa = model.n_head_kv == 0 ? 0 : static_cast<int>(model.n_head / model.n_head_kv);
  s.n_expert = static_cast<int>(model.n_expert);
  s.is_70b = is_70b(model);
  s.is_falcon = model.arch == "falcon";
  s.n_ffn = static_cast<int>(model.n_layer);
  std::vector<Category> cats(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    cats[i] = category_of(tensors[i].name);
    if (is_attn_v_like(cats[i])) ++s.n_attention_wv;
    if (cats[i] == Category::Output) s.has_tied_embeddings = false;
  }

  // The counters advance in llama.cpp's walk order, whatever order the caller lists: tensors outside
  // blocks first, then by layer number, by name within a layer (llama_model_loader's weights_map).
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::vector<int> layers(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) layers[i] = layer_of(tensors[i].name);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (layers[a] != layers[b]) return layers[a] < layers[b];
    return tensors[a].name < tensors[b].name;
  });

  for (size_t i : order) {
    const MixTensor& tensor = tensors[i];
    if (!allows_quantization(model.arch, tensor.name, tensor.shape)) continue;
    const int64_t row_length = tensor.shape.empty() ? 1 : tensor.shape.back();
    // llama_tensor_get_type: the explicit types first, then the mix's rules (skipped by --pure) and
    // the fallback, for quantized mixes only.
    WeightType t = base;
    if (options.token_embd_type && cats[i] == Category::TokenEmbd) t = *options.token_embd_type;
    else if (options.output_type && cats[i] == Category::Output) t = *options.output_type;
    else if (!mixed) {
      out[i] = base;
      continue;
    } else if (!options.pure) {
      t = mixed_type(s, base, cats[i], tensor.name, row_length);
    }
    out[i] = fallback_type(t, row_length);
    if (*out[i] != t && fallbacks) fallbacks->push_back({i, t, *out[i]});
  }
  if (fallbacks)  // in the caller's order, not the walk's
    std::sort(fallbacks->begin(), fallbacks->end(),
              [](const Fallback& a, const Fallback& b) { return a.tensor < b.tensor; });
  return out;
}

}  // namespace tandem::quant
