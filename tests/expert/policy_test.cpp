// Eviction policies on hand-worked traces, and LRU against LFU with decay on skewed routing traces.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "expert/policy.h"

namespace tandem::expert {
namespace {

// Keys a=0, b=1, c=2 in two slots. a a a b c b c a:
// LRU: c evicts a (least recent), b c hit, a misses: hits a a b c = 4.
// LFU-decay (half-life long): c evicts b (a counts 3), b evicts c, c evicts b, a hits: hits a a a = 3.
TEST(ExpertPolicy, LruAndLfuDecayEvictAsWorkedByHand) {
  const std::vector<int32_t> trace = {0, 0, 0, 1, 2, 1, 2, 0};
  EXPECT_EQ(simulate(PolicyKind::Lru, 3, trace, 2, 1000).hits, 4u);
  EXPECT_EQ(simulate(PolicyKind::LfuDecay, 3, trace, 2, 1000).hits, 3u);
  // Two one-off keys (3..9) between uses of a hot key (0) flush it from LRU, not from LFU: LRU hits only
  // 0's second use and, after the single 9, its last; LFU-decay hits every use of 0 after the first.
  const std::vector<int32_t> scan = {0, 0, 3, 4, 0, 5, 6, 0, 7, 8, 0, 9, 0};
  EXPECT_EQ(simulate(PolicyKind::Lru, 10, scan, 2, 1000).hits, 2u);
  EXPECT_EQ(simulate(PolicyKind::LfuDecay, 10, scan, 2, 1000).hits, 5u);
}

// The decay lets a once-hot key go: after the popularity moves, a short half-life follows it.
TEST(ExpertPolicy, DecayForgetsOldPopularity) {
  std::vector<int32_t> trace(50, 0);  // key 0 hot, then keys 1 and 2 alternate with one slot each besides
  for (int i = 0; i < 50; ++i) trace.push_back(1 + i % 2);
  const auto no_decay = simulate(PolicyKind::LfuDecay, 3, trace, 2, 1e9);
  const auto decay = simulate(PolicyKind::LfuDecay, 3, trace, 2, 4);
  EXPECT_GT(decay.hits, no_decay.hits + 20);
}

// The comparison of docs/expert-tier.md: Zipf-skewed traces (no recorded routing yet) of 4 MoE layers of
// DeepSeek-V3's 256 experts, top-8, 2000 tokens, the popularity drifting every 128 tokens; caches of
// 10/25/50% of the experts. Prints the table; LFU with decay must not lose to LRU.
TEST(ExpertPolicy, LfuDecayBeatsLruOnSkewedRouting) {
  const int n_layers = 4, n_expert = 256, k = 8, n_keys = n_layers * n_expert;
  for (double s : {0.6, 1.0, 1.2}) {
    const auto trace = zipf_trace(n_layers, n_expert, k, 2000, s, 128, 0.1, 42);
    for (int pct : {10, 25, 50}) {
      const int slots = n_keys * pct / 100;
      const double lru = simulate(PolicyKind::Lru, n_keys, trace, slots, 0).hit_rate();
      const double lfu = simulate(PolicyKind::LfuDecay, n_keys, trace, slots, 4.0 * slots).hit_rate();
      std::printf("zipf s=%.1f cache %2d%%: lru %.3f lfu-decay %.3f\n", s, pct, lru, lfu);
      EXPECT_GE(lfu, lru) << "s=" << s << " cache " << pct << "%";
    }
  }
}

// The same on routing recorded from a real model (scripts/fixtures/expert_traces.sh): DeepSeek-V2-Lite's
// first 4 layers (3 MoE: 64 experts, top-6) reading prose and C++, token by token; caches of 10/25/50% of
// the 192 experts. Prints the table of docs/expert-tier.md; LFU with decay must beat LRU.
TEST(ExpertPolicy, ReplaysRoutingRecordedFromDeepSeekV2Lite) {
  for (const char* kind : {"prose", "code"}) {
    std::ifstream in(std::string(TANDEM_SOURCE_DIR) + "/tests/fixtures/expert/v2lite-4l-" + kind + ".json");
    ASSERT_TRUE(in) << kind;
    const auto j = nlohmann::json::parse(in);
    const int n_keys = j["n_layer"].get<int>() * j["n_expert"].get<int>(), n_routed = 3 * j["n_expert"].get<int>();
    const auto trace = j["keys"].get<std::vector<int32_t>>();
    ASSERT_GT(trace.size(), 30000u);
    double previous = 0;
    for (int pct : {10, 25, 50}) {
      const int slots = n_routed * pct / 100;
      const double lru = simulate(PolicyKind::Lru, n_keys, trace, slots, 0).hit_rate();
      const double lfu = simulate(PolicyKind::LfuDecay, n_keys, trace, slots, 4.0 * slots).hit_rate();
      std::printf("v2-lite %s cache %2d%% (%d slots): lru %.3f lfu-decay %.3f\n", kind, pct, slots, lru, lfu);
      EXPECT_GT(lfu, lru) << kind << " " << pct << "%";  // the claim of docs/expert-tier.md
      EXPECT_GT(lfu, previous) << kind << " " << pct << "%: a larger cache must hit more";
      previous = lfu;
    }
  }
}

}  // namespace
}  // namespace tandem::expert
