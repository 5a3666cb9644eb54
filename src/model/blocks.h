// The blocks architectures share, built from a Backend's ops: standard attention over the KV cache,
// the gated feed-forward, and the output head. Each architecture's file strings them into its layer.
// A block runs on the device of its matrices; its input and output are activations there. Shapes are
// [n_tokens, ...], outermost first.
#pragma once

#include <vector>

#include "expert/expert_cache.h"
#include "model/model.h"

namespace tandem::model {

// What every layer of one forward pass reads.
struct PassInputs {
  const Model& model;
  const Batch& batch;
  KvCache& kv;
  bool flash_attn;
};

// Q/K/V projections with grouped KV heads (llama.cpp's build_attn over attn_q/k/v/output).
struct AttentionWeights {
  const Weight *wq = nullptr, *wk = nullptr, *wv = nullptr, *wo = nullptr;
  const Weight *bq = nullptr, *bk = nullptr, *bv = nullptr;  // optional biases (qwen2)
  const Weight *q_norm = nullptr, *k_norm = nullptr;         // optional per-head RMS norms (qwen3, gemma3)
};

struct AttentionConfig {
  int n_head = 0, n_head_kv = 0, head_dim_k = 0, head_dim_v = 0;
  float scale = 1;          // applied to q·k
  float norm_eps = 0;       // of the per-head norms
  int sliding_window = 0;   // > 0: tokens see only the cells this close
  RopeParams rope;          // freq_factors unset: rope_freqs (below) as the block's device holds it
  const Weight* rope_freqs = nullptr;
};

// out = W_o attention(rope(W_q x), rope(W_k x), W_v x) on wq's device, storing K/V in layer `il`'s
// cache on its device (Q, K, V go there and the result comes back when that is another one, as with
// -nkvo). x, out: [n_tokens, n_embd] on wq's device; they may be the same buffer.
Status attention_block(const AttentionWeights& w, const AttentionConfig& c, const PassInputs& in, size_t il,
                       const float* x, float* out, ForwardScratch& s);

enum class GluKind { Silu, GeluTanh };  // SwiGLU (llama, qwen) or GeGLU (gemma)

// out = W_down (act(W_gate x) * W_up x) on gate's device. x, out: [n_tokens, n_embd] there; they may be
// the same buffer.
Status ffn_glu(const Weight& gate, const Weight& up, const Weight& down, GluKind act, int64_t n_tokens,
               const float* x, float* out, ForwardScratch& s);

// A Mixture-of-Experts FFN (llama.cpp's build_moe_ffn), with optional shared experts (deepseek2).
struct MoeWeights {
  const Weight* gate_inp = nullptr;     // the router: [n_expert, n_embd]
  const float* exp_probs_b = nullptr;   // selection bias (V3), the file's host copy: routing runs on the host
  const Weight *gate_exps = nullptr, *up_exps = nullptr, *down_exps = nullptr;  // [n_expert, ...]
  // Files with the fused form have this instead of gate_exps and up_exps: [n_expert, 2 n_ff, n_embd],
  // each expert's gate rows then its up rows (llama.cpp's ffn_gate_up_exps).
  const Weight* gate_up_exps = nullptr;
  const Weight *gate_shexp = nullptr, *up_shexp = nullptr, *down_shexp = nullptr;
  int64_t layer = -1;  // the block's layer, for ForwardScratch::expert_stats() and the expert cache
  // --expert-cache: the routed experts come from here, not from the *_exps weights' data (which is then
  // never read; the weights still give type and shape). Null: the experts are resident.
  expert::ExpertCache* cache = nullptr;
  // The next MoE layer (null: none or no cache): its router, applied to this layer's input, guesses its
  // experts so their reads start while this layer computes.
  const MoeWeights* next = nullptr;
};

struct MoeConfig {
  int64_t n_expert = 0, n_expert_used = 0;
  int64_t n_group = 0, n_group_used = 0;  // group-limited routing when n_group > 1
  bool sigmoid_gating = false;            // else softmax
  bool norm_weights = false;              // the chosen experts' weights divided by their sum
  float weights_scale = 0;                // then multiplied by this (0 or 1: not)
};

// Routes each token to its experts as llama.cpp's build_moe_ffn does: probabilities by softmax or
// sigmoid; selection by those plus exp_probs_b, within the best groups (a group scores the sum of its
// two best); weights from the unbiased probabilities, normalized and scaled. Among equal scores the lower
// index wins. Host memory: logits [n_tokens, n_expert]; ids, w [n_tokens, n_expert_used]. Allocates
// nothing once `scratch` has grown to the model's expert count.
void moe_route(const MoeConfig& c, const float* logits, const float* probs_b, int64_t n_tokens, int32_t* ids,
               float* w, MoeRouteScratch& scratch);

// The routed experts' weighted sum plus the shared experts' output, for x ([n_tokens, n_embd], normed,
// on the router's device); returns it there. Router, experts and shared experts may each have their
// own device (-ot exps=CPU keeps the experts on the CPU): activations move to each. With an expert
// cache the chosen experts' reads start right after routing, before the shared experts run, and the
// experts run from the cache's slots through the same kernels (the same bits), in groups when the batch
// chose more experts than the cache has slots; a failed read is this call's error.
Result<float*> moe_ffn(const MoeWeights& w, const MoeConfig& c, int64_t n_tokens, float* x, ForwardScratch& s);

// The rows of x whose tokens want logits, normed and through the output matrix on its device, then
// capped (softcap > 0) and copied to the host: logits [n_out, n_vocab]. x: [n_tokens, n_embd] on
// x_device. Waits for every device of the pass and returns the first error one reported.
Status output_logits(const PassInputs& in, const Weight& norm, const Weight& output, float eps, float softcap,
                     Backend& x_device, float* x, ForwardScratch& s, std::vector<float>& logits);

}  // namespace tandem::model
