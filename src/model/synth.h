// Synthetic models: valid GGUF files with random weights at the real shapes of known models, for
// benchmarks at sizes no small real model has. Weights are scaled like a trained model's so that
// activations stay finite through the whole stack; the tokenizer is copied from a real vocab GGUF.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "quant/mix.h"

namespace tandem::model {

// Experts (deepseek2, qwen3moe) and deepseek2's multi-head latent attention (llama.cpp's key names in
// comments); the MLA fields stay 0 for qwen3moe.
struct MoeShape {
  int64_t q_lora_rank = 0;        // attention.q_lora_rank; 0: a direct attn_q (V2-Lite), the key not written
  int64_t kv_lora_rank = 0;       // attention.kv_lora_rank
  int64_t qk_nope = 0, qk_rope = 0, v_head_dim = 0;  // per head: key_length_mla = nope + rope, value_length_mla
  int64_t n_expert = 0, n_expert_used = 0, n_expert_shared = 0, n_ff_exp = 0;
  int64_t n_dense_lead = 0;       // leading_dense_block_count
  int64_t n_group = 0, n_group_used = 0;  // expert_group_count / expert_group_used_count (0: no groups)
  bool sigmoid_gating = false;    // expert_gating_func 2 (V3, with exp_probs_b) or 1 (softmax, V2)
  bool norm_topk = false;         // expert_weights_norm
  double routed_scale = 1;        // expert_weights_scale
  double yarn_factor = 0;         // > 0: rope.scaling.type yarn with this factor
  int64_t yarn_orig_ctx = 0;
  double mscale_all_dim = 0;      // rope.scaling.yarn_log_multiplier = 0.1 * this
  bool combined_kv_b = false;     // one attn_kv_b per layer (older conversions) instead of attn_k_b/attn_v_b
};

struct SynthPreset {
  std::string name;  // "Llama-3.2-1B"
  std::string arch;  // "llama"
  int64_t n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff, n_ctx;
  double rope_theta, norm_eps;
  bool tied_embeddings;
  std::string vocab_file;  // file name in shared/models
  double llama3_rope_factor = 0;  // > 0: Llama 3.1-style rope scaling, stored as rope_freqs.weight
  MoeShape moe = {};              // deepseek2 (moe.kv_lora_rank > 0) and qwen3moe (moe.n_expert > 0)
};

const std::vector<SynthPreset>& synth_presets();
std::string synth_preset_names();  // "Llama-3.2-1B, Llama-3-8B, ..."
const SynthPreset* find_synth_preset(const std::string& name);  // case-insensitive

struct SynthOptions {
  SynthPreset preset;
  quant::FileType mix = quant::FileType::Q4_K_M;
  std::string vocab_path;   // GGUF whose tokenizer.* metadata is copied
  std::string output_path;
  uint64_t seed = 42;
  int n_threads = 1;
  uint64_t split_max_bytes = 0;
  uint64_t split_max_tensors = 0;
  bool progress = true;
  // Stop after the tensor table: a description of the model (what tandem plan reads) without its
  // data, at any size (a 671B model's is a few MB).
  bool header_only = false;
  // deepseek2: each layer's gate and up experts as one ffn_gate_up_exps tensor, holding the values the
  // split tensors would (so the two files compute the same).
  bool fuse_gate_up_exps = false;
};

struct SynthSummary {
  std::vector<std::string> paths;
  uint64_t n_params = 0;
  uint64_t n_bytes = 0;      // tensor data
  int64_t n_vocab = 0;
  std::vector<std::pair<std::string, uint64_t>> bytes_by_type;
};

// Writes the model, streaming tensor by tensor (memory use is a few MB per thread).
Result<SynthSummary> write_synth_model(const SynthOptions& options);

}  // namespace tandem::model
