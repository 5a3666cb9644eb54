// What a placement plan allows: decode and prefill speed from what each device reads and computes, and
// the command-line flags that reproduce the plan. docs/plan.md writes the model down with its sources.
//
// Decode (one token): every active weight byte is read once, so a device's time is the sum over its
// tensors of bytes / the rate its matmul kernel streams that type (the probe's figure; the memory
// bandwidth without one), plus its KV cache up to the depth / bandwidth. Prefill (a micro-batch of u
// tokens): a device's time is max(flops / matmul throughput per type, bytes read once / bandwidth),
// the roofline (Williams et al., CACM 2009). Devices take turns layer by layer, so their times add,
// plus per crossing of the hidden state: link latency + bytes / link bandwidth, and per op queued to an
// offload device its hand-over; a MoE layer's router on a device sends its logits to the host and the
// chosen experts' ids and weights go back to the experts' device: a transfer each.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "placement/plan.h"

namespace tandem::placement {

// A weight type's matmul kernel as tandem probe timed it at one row length (the kernels' per-row and
// per-call costs make short rows slower: Gemma 3 270M's 640-wide Q8_0 output streamed at 32 GB/s where
// 4096-wide rows read 39).
struct KernelRate {
  int64_t row_length = 0;
  double decode_bytes_per_s = 0;   // one token, weights streamed from DRAM
  double decode_call_s = 0;        // per call of a small matrix, beyond bytes / decode_bytes_per_s
  double prefill_flops_per_s = 0;  // a micro-batch of 512 tokens
  double prefill_few_flops_per_s = 0;  // 64 tokens (0: not timed, the above)
  // The routed experts' grouped matmul (matmul_id) at kExpertTokens[0] and [1] tokens per expert (0: not
  // timed): below the dense rate at as many tokens, since the picks are gathered, their activations
  // quantized per pick and the results scattered back (DeepSeek-V2-Lite's prefill, 48 tokens per expert).
  double expert_few_flops_per_s = 0, expert_flops_per_s = 0;
};

// Tokens per expert tandem probe times the experts' matmul at: a 512-token micro-batch gives
// DeepSeek-V3's experts (8 of 256) 16 each, DeepSeek-V2-Lite's (6 of 64) 48.
inline constexpr int64_t kExpertTokens[] = {16, 64};

// Attention as tandem probe timed it at one head shape: one token against 64 cells (nearly all fixed
// cost) and 512 tokens against themselves (flop/s). MLA's 576/512-wide latent heads ran at half the rate
// of 128-wide ones in DeepSeek-V2-Lite's prefill.
struct AttentionRate {
  int64_t head_dim_k = 0;
  double call_s = 0;
  double flops_per_s = 0;
};

struct DeviceSpeed {
  double bytes_per_s = 0;                                 // memory read bandwidth
  std::map<WeightType, std::vector<KernelRate>> kernels;  // per type, by row length ascending; none: the
                                                          // type streams at bytes_per_s, computes at flops_per_s
  double flops_per_s = 0;        // prefill throughput of a type `kernels` lacks; 0: compute never bounds
  // Per layer of a forward pass, besides the matmuls (0: not counted): an elementwise op's fixed cost per
  // call and its rate on a micro-batch (values/s); attention by head width (none: no fixed cost, and
  // flops(F16) stands in for its rate).
  double op_call_s = 0, elementwise_per_s = 0;
  double gelu_per_s = 0;  // GeGLU's rate on a micro-batch (values/s; 0: elementwise_per_s)
  std::vector<AttentionRate> attention;  // by head_dim_k ascending
  // Per op queued to the device, beyond the op's own cost: a sim device's queue and its thread's
  // hand-over (tandem probe measures it), a GPU's launch; 0 for the CPU, whose ops are plain calls.
  double op_handover_s = 0;

  // The kernel of type t for rows of row_length: interpolated in log(row length) between the timed
  // lengths, the nearest one outside them; nullopt when t was not timed.
  std::optional<KernelRate> kernel(WeightType t, int64_t row_length) const;
  // The kernel's prefill rate for `tokens` tokens (interpolated in log(tokens) between 64 and 512, the
  // nearest outside), else flops_per_s.
  double flops(WeightType t, int64_t row_length, double tokens = 512) const;
  // A routed expert's matmul rate when each expert gets `tokens` of the micro-batch: the probe's expert
  // figures interpolated in log(tokens) between kExpertTokens, the fewer's below; above them the 64-token
  // figure scaled as the dense kernel gains from 64 tokens to `tokens`. Without expert figures, flops().
  double expert_flops(WeightType t, int64_t row_length, double tokens) const;
  // Attention at heads of head_dim_k, interpolated in log(head_dim_k) like kernel(); zeros without figures.
  AttentionRate attention_at(int64_t head_dim_k) const;
};

struct Speeds {
  std::vector<DeviceSpeed> devices;  // per device given to make_plan (Plan::device_ids picks)
  double link_bytes_per_s = 25e9;    // host <-> device
  double link_latency_s = 10e-6;     // per transfer
};

struct ModelShape {
  int64_t n_embd = 0, n_vocab = 0, n_expert = 0, n_expert_used = 0;
  int64_t n_head = 0, head_dim_k = 0, head_dim_v = 0;  // as the attention runs (MLA: the latent widths)
  bool ffn_gelu = false;  // the FFN's activation is GeGLU (Gemma), priced at DeviceSpeed::gelu_per_s
};

struct Prediction {
  Prediction() = default;
  explicit Prediction(size_t n_dev)  // zeros for n_dev devices, each bound by its memory until shown otherwise
      : read_bytes(n_dev, 0), flops(n_dev, 0), seconds(n_dev, 0), bound(n_dev, "memory bandwidth") {}
  std::vector<uint64_t> read_bytes;  // per device: per token (decode) or summed over the prompt (prefill)
  std::vector<double> flops;         // per device, likewise
  std::vector<double> seconds;       // per device, likewise
  std::vector<std::string> bound;    // per device: "memory bandwidth" or "Q4_K matmul throughput", ...
  double link_seconds = 0;
  double tokens_per_s = 0;
  std::string bottleneck;            // "CPU's memory bandwidth", "CPU's Q4_K matmul throughput", "the host link"
};

// One decoded token at `depth` tokens of context: routed experts count n_expert_used / n_expert of
// their bytes, token embeddings one row, everything else (and the KV cache up to depth) in full.
Prediction predict_decode(const Plan& plan, const std::vector<TensorInfo>& tensors, const ModelShape& shape,
                          const std::vector<size_t>& kv_bytes_per_token_per_layer, int64_t depth, const Speeds& s);

// A prompt of n_prompt tokens after `depth` tokens, in micro-batches of n_ubatch: each micro-batch reads
// the weights once (of the routed experts, those its tokens are expected to pick), multiplies every
// token by them and attends over the cache so far.
//
// op_offload_min_batch > 0 predicts llama.cpp's op offload instead of Tandem's behaviour: for a
// micro-batch of at least that many tokens, a matrix held on the CPU is copied whole (every expert of
// an expert tensor) to the first offload device and multiplied there (ggml-backend.cpp
// ggml_backend_sched_backend_id_from_cur with op_offload, ggml-cuda.cu ..._offload_op: 32 tokens by
// default, GGML_OP_OFFLOAD_MIN_BATCH; --no-op-offload turns it off). The copy and the multiply share a
// stream, so their times add. Tandem multiplies every weight where it lives (0, the default).
Prediction predict_prefill(const Plan& plan, const std::vector<TensorInfo>& tensors, const ModelShape& shape,
                           const std::vector<size_t>& kv_bytes_per_token_per_layer, int64_t n_prompt, int64_t n_ubatch,
                           int64_t depth, const Speeds& s, int64_t op_offload_min_batch = 0);

// Mapped CPU weights of weight_bytes beyond the RAM they may use, cached_bytes of them in the page cache: the share
// of a token's CPU reads that miss it (weights are read about uniformly, routed experts picked about so), and the
// decode speed once those misses come from disk at disk_bytes_per_s (the disk's random reads: a few MiB apart).
double mmap_miss_share(uint64_t weight_bytes, double cached_bytes);
double tokens_per_s_from_disk(const Prediction& decode, double miss_share, double disk_bytes_per_s);

// The flags that give this plan in Tandem and llama-server: -ngl N and the overrides.
std::string equivalent_flags(const Plan& plan, const PlacementFlags& flags);

}  // namespace tandem::placement
