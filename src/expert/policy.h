// Which cached expert to evict: plain LRU, or LFU with exponential decay (frequency-aware, so a burst of
// one-off experts does not flush the hot ones). Also a simulator that replays a routing trace through a
// policy, and a synthetic skewed trace for when no recorded one is at hand.
#pragma once

#include <cstdint>
#include <vector>

namespace tandem::expert {

enum class PolicyKind { Lru, LfuDecay };
const char* policy_name(PolicyKind kind);

// Per-key history over keys [0, n_keys) (one key per expert of every MoE layer). LfuDecay keeps the
// history of experts that are not resident too: an expert evicted and asked for again returns with its
// count, which is what lets it beat LRU. Not thread-safe; O(1) per call.
class EvictionPolicy {
 public:
  // half_life: accesses after which an unused expert's count has halved (LfuDecay only).
  EvictionPolicy(PolicyKind kind, int n_keys, double half_life);

  void on_access(int key);  // every request, hit or miss
  // True when `a` should be evicted before `b` (both resident).
  bool evict_before(int a, int b) const;

 private:
  double decayed_count(int key) const;

  PolicyKind kind_;
  double half_life_;
  uint64_t now_ = 0;                 // accesses so far
  std::vector<uint64_t> last_;       // access number of each key's last access, 0: never
  std::vector<double> count_;        // LfuDecay: the count as of last_
};

struct SimResult {
  uint64_t accesses = 0, hits = 0;
  double hit_rate() const { return accesses ? double(hits) / double(accesses) : 0; }
};

// Replays `trace` (keys in access order) through a cache of `n_slots` one-expert slots.
SimResult simulate(PolicyKind kind, int n_keys, const std::vector<int32_t>& trace, int n_slots, double half_life);

// A routing trace without a model: n_tokens tokens, each choosing k distinct experts of n_expert in each of
// n_layers layers (key = layer * n_expert + expert), with Zipf(s) popularity over a per-layer order that
// drifts: every phase_tokens tokens, `drift` of the order's positions are swapped at random (topics change).
std::vector<int32_t> zipf_trace(int n_layers, int n_expert, int k, int n_tokens, double s, int phase_tokens,
                                double drift, uint64_t seed);

}  // namespace tandem::expert
