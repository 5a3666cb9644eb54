// The expert tier's size (placement/expert_tier.h): what RAM has left after everything else, only when the
// model does not fit by default, refused below one layer's top-k under auto; and the speed it allows.
#include "placement/expert_tier.h"

#include <gtest/gtest.h>

namespace tandem::placement {
namespace {

constexpr uint64_t kMiB = uint64_t(1) << 20, kGiB = uint64_t(1) << 30;
using Mode = ExpertCacheSetting::Mode;

// DeepSeek-R1-like at Q4_K_M: 58 MoE layers of 256 experts (8 used) of 6.5 MiB each, 17 GiB of the rest.
RamNeeds r1(uint64_t ram) {
  RamNeeds n;
  n.ram_bytes = ram;
  n.resident_bytes = 17 * kGiB;
  n.n_experts_total = 58 * 256;
  n.slot_bytes = 6656 * 1024;  // 6.5 MiB
  n.expert_bytes = uint64_t(n.n_experts_total) * n.slot_bytes;
  n.kv_bytes = 2 * kGiB;
  n.compute_bytes = 500 * kMiB;
  n.n_expert_used = 8;
  return n;
}

TEST(ExpertTier, DefaultTakesWhatRamHasLeftWhenTheModelDoesNotFit) {
  const RamNeeds n = r1(64 * kGiB);
  auto t = size_expert_tier({}, n);
  ASSERT_TRUE(t.has_value()) << t.error().message();
  EXPECT_TRUE(t->on);
  EXPECT_EQ(t->margin_bytes, kGiB);
  EXPECT_EQ(t->cache_bytes, 64 * kGiB - 17 * kGiB - 2 * kGiB - 500 * kMiB - kGiB);
  EXPECT_NE(t->reason.find("automatic:"), std::string::npos) << t->reason;
  EXPECT_TRUE(t->warning.empty());
}

TEST(ExpertTier, DefaultLeavesAModelThatFitsMapped) {
  RamNeeds n = r1(1024 * kGiB);
  auto t = size_expert_tier({}, n);
  ASSERT_TRUE(t.has_value());
  EXPECT_FALSE(t->on);
  // One byte short of fitting (the margin included) turns it on, with nearly every expert cached.
  n.ram_bytes = n.resident_bytes + n.expert_bytes + n.kv_bytes + n.compute_bytes + kGiB - 1;
  t = size_expert_tier({}, n);
  ASSERT_TRUE(t.has_value());
  EXPECT_TRUE(t->on);
  EXPECT_EQ(t->cache_bytes, n.expert_bytes - 1);
}

TEST(ExpertTier, AutoIsCappedAtEveryExpertsSlot) {
  const RamNeeds n = r1(1024 * kGiB);
  auto t = size_expert_tier({Mode::Auto, 0}, n);
  ASSERT_TRUE(t.has_value());
  EXPECT_TRUE(t->on);
  EXPECT_EQ(t->cache_bytes, n.expert_bytes);
  EXPECT_NE(t->reason.find("holds every expert"), std::string::npos) << t->reason;
}

TEST(ExpertTier, OffAndSizeAreKept) {
  const RamNeeds n = r1(64 * kGiB);
  auto off = size_expert_tier({Mode::Off, 0}, n);
  ASSERT_TRUE(off.has_value());
  EXPECT_FALSE(off->on);
  auto sized = size_expert_tier({Mode::Size, 3 * kGiB}, n);
  ASSERT_TRUE(sized.has_value());
  EXPECT_TRUE(sized->on);
  EXPECT_EQ(sized->cache_bytes, 3 * kGiB);
}

TEST(ExpertTier, BelowOneLayersTopKAutoIsRefusedWithTheNumbers) {
  // 20 GiB: the other weights, KV and buffers take 19.5 GiB, the margin 1 GiB: nothing left.
  const RamNeeds n = r1(20 * kGiB);
  auto t = size_expert_tier({Mode::Auto, 0}, n);
  ASSERT_FALSE(t.has_value());
  EXPECT_EQ(t.error().code(), StatusCode::OutOfMemory);
  const std::string& m = t.error().message();
  EXPECT_NE(m.find("--expert-cache auto: RAM has 0.0 KiB left"), std::string::npos) << m;
  EXPECT_NE(m.find("the least is one layer's 8 experts, 52.0 MiB (8 x 6.5 MiB)"), std::string::npos) << m;
  EXPECT_NE(m.find("17.00 GiB of other weights"), std::string::npos) << m;
  // The default maps the file as before and says why.
  auto d = size_expert_tier({}, n);
  ASSERT_TRUE(d.has_value());
  EXPECT_FALSE(d->on);
  EXPECT_NE(d->warning.find("the expert tier cannot help"), std::string::npos) << d->warning;
  // Exactly the minimum is accepted.
  RamNeeds just = n;
  just.ram_bytes = 17 * kGiB + 2 * kGiB + 500 * kMiB + kGiB + 8 * just.slot_bytes;
  auto j = size_expert_tier({Mode::Auto, 0}, just);
  ASSERT_TRUE(j.has_value()) << j.error().message();
  EXPECT_EQ(j->cache_bytes, 8 * just.slot_bytes);
}

TEST(ExpertTier, ThePredictionAddsTheMissedExpertsAtDiskSpeed) {
  const RamNeeds n = r1(64 * kGiB);
  Prediction tg(1), pp(1);
  tg.tokens_per_s = 10;   // 100 ms per token with every expert in RAM
  pp.tokens_per_s = 100;  // 5.12 s for 512 tokens
  const uint64_t routed = 58 * 8 * n.slot_bytes;  // a token's experts
  const uint64_t cache = n.expert_bytes / 4;      // a quarter of the experts
  const ExpertTierPrediction p = predict_expert_tier(n, cache, routed, tg, pp, 512, 512, 4e9);
  EXPECT_EQ(p.n_slots, 58 * 256 / 4);
  EXPECT_DOUBLE_EQ(p.hit_rate, 0.25);
  EXPECT_EQ(p.disk_bytes_per_token, uint64_t(double(routed) * 0.75));
  EXPECT_NEAR(p.tg_tokens_per_s, 1 / (0.1 + double(routed) * 0.75 / 4e9), 1e-9);
  // One micro-batch: three quarters of every expert read once.
  EXPECT_NEAR(p.pp_tokens_per_s, 512 / (5.12 + double(n.expert_bytes) * 0.75 / 4e9), 1e-9);
}

}  // namespace
}  // namespace tandem::placement
