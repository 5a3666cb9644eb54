// The expert tier as placement sees it (issue 15, docs/expert-tier.md): whether a MoE model's routed experts
// run from a RAM cache over the file, how big that cache is (what RAM has left after everything else), and
// what decode and prefill speed it allows. Pure arithmetic on sizes: the engine set-up (run, bench, serve,
// perplexity, --fit) and tandem plan call the same functions; src/expert/ does the reading.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"
#include "placement/predict.h"

namespace tandem::placement {

// --expert-cache: nothing said (the tier only when the model does not fit RAM), auto (the tier, sized to
// what RAM has left), off (or 0), or a size.
struct ExpertCacheSetting {
  enum class Mode { Default, Auto, Off, Size };
  Mode mode = Mode::Default;
  uint64_t bytes = 0;  // Mode::Size
};

// What RAM holds besides the cache, and the experts the cache is for. Bytes unless said.
struct RamNeeds {
  uint64_t ram_bytes = 0;        // what the process may take: MemAvailable or the cgroup's limit (or plan's --ram)
  uint64_t resident_bytes = 0;   // weights read into RAM: every tensor but the routed experts
  uint64_t expert_bytes = 0;     // the routed experts, all layers
  uint64_t kv_bytes = 0;         // the CPU's KV cache
  uint64_t compute_bytes = 0;    // the CPU's activations and logits
  uint64_t slot_bytes = 0;       // one expert's slot in the cache (expert::expert_slot_bytes)
  int64_t n_experts_total = 0;   // routed experts over all MoE layers (slots that hold every one)
  int64_t n_expert_used = 0;     // top-k: one layer's set is the least cache a token does not re-read within
};

struct ExpertTier {
  bool on = false;
  uint64_t cache_bytes = 0;  // on: the cache's budget
  uint64_t margin_bytes = 0; // left free beyond the needs (expert_tier_margin)
  // Why, for the start-up summary: "the model (12.0 GiB) does not fit the 8.0 GiB available ...".
  std::string reason;
  // Default mode only: the model does not fit, yet the tier could not be used (too little room): the file
  // is mapped as before and this says why (a warning).
  std::string warning;
};

// RAM left free beyond what RamNeeds counts (the tokenizer, the server's buffers, the allocator's slack):
// 1 GiB, at most an eighth of the RAM (so small machines and tests keep most of theirs), as --fit's margin.
uint64_t expert_tier_margin(uint64_t ram_bytes);

// The least cache `auto` and the default accept: one layer's top-k experts (n_expert_used slots; a
// smaller cache re-reads experts within a token's layer). An explicit size may go down to one slot.
uint64_t min_expert_cache_bytes(const RamNeeds& n);

// Off: no tier. Size: the tier at that size (the cache refuses one below a slot, with the number).
// Default: no tier when resident + experts + KV + compute + margin fit the RAM; else the tier, its cache
// what RAM has left (at most every expert's slot); when that is below min_expert_cache_bytes, no tier and
// a warning. Auto: the tier at what RAM has left; below the minimum an OutOfMemory naming every number.
Result<ExpertTier> size_expert_tier(const ExpertCacheSetting& setting, const RamNeeds& n);

// What the tier does to a decoded token and a prompt, over a prediction made with every expert in RAM.
struct ExpertTierPrediction {
  int64_t n_slots = 0;
  double hit_rate = 0;                 // the cache's share of the experts: uniform routing (conservative)
  uint64_t disk_bytes_per_token = 0;   // the missed share of the experts a token routes to
  double tg_tokens_per_s = 0;          // 1 / (the all-in-RAM time + missed bytes / disk bandwidth)
  double pp_tokens_per_s = 0;          // each micro-batch reads the missed share of every expert
};

// `routed_bytes_per_token`: the experts' bytes one token reads (n_expert_used of each MoE layer's);
// `decode`/`prefill`: the prediction of the same placement with every expert in RAM. Reads are counted
// after the compute, not overlapped with it (the router's prefetch overlaps some: this is a floor).
ExpertTierPrediction predict_expert_tier(const RamNeeds& n, uint64_t cache_bytes, uint64_t routed_bytes_per_token,
                                         const Prediction& decode, const Prediction& prefill, int64_t n_prompt,
                                         int64_t n_ubatch, double disk_bytes_per_s);

}  // namespace tandem::placement
