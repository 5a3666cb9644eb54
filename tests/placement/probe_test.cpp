// tandem probe's cache: a round trip keeps every figure, a file from other hardware is ignored with the
// reason, a damaged one is an error naming it; a quick probe measures what it is asked for.
#include "placement/probe.h"

#include <unistd.h>

#include <cmath>
#include <fstream>

#include <gtest/gtest.h>

namespace tandem::placement {
namespace {

std::string temp_path(const char* name) {
  return testing::TempDir() + "/" + name + std::to_string(::getpid()) + ".json";
}

Probe sample() {
  Probe p;
  p.date = "2026-11-30T12:00:00Z";
  p.hardware = hardware_description();
  p.hardware_hash = hardware_hash(p.hardware);
  p.n_threads = 2;
  p.bandwidth = {{0, {1, 2}, {8e9, 12e9}}, {1, {1, 2}, {7e9, 11e9}}};
  p.matmul = {{WeightType::Q4_K, 10e9, 200e9, 512, 100e9, 5e-6, 4096, 40e9, 80e9},
              {WeightType::Q4_K, 6e9, 100e9, 512, 50e9, 3e-6, 512, 20e9, 40e9},
              {WeightType::Q6_K, 9e9, 80e9, 512, 40e9, 4e-6, 4096}};  // no expert figures: a probe cached before
  p.ops = {1e-6, 3e9, 1e9, {{128, 6e-6, 120e9}, {576, 9e-6, 60e9}}};
  p.per_isa = {{"avx2", WeightType::Q4_K, 60e9}, {"avx512", WeightType::Q4_K, 100e9}};
  p.disk = DiskRate{"/models/x.gguf", 3e9, 1.5e9, true, 1 << 30};
  p.sims = {{"SIM0", 1 << 30, 24e9, 12e-6, 2e-6}};
  return p;
}

TEST(Probe, SurvivesTheCacheFile) {
  const std::string path = temp_path("probe");
  ASSERT_TRUE(save_probe(sample(), path).is_ok());
  auto back = load_probe(path);
  ASSERT_TRUE(back.has_value()) << back.error().message();
  ASSERT_TRUE(back->has_value());
  EXPECT_EQ(probe_to_json(**back), probe_to_json(sample()));
  EXPECT_DOUBLE_EQ((*back)->read_bytes_per_s(), 23e9);  // each node's best, summed
  const DeviceSpeed cpu = cpu_speed(**back);
  EXPECT_DOUBLE_EQ(cpu.kernel(WeightType::Q6_K, 4096)->decode_bytes_per_s, 9e9);
  EXPECT_DOUBLE_EQ(cpu.kernel(WeightType::Q6_K, 4096)->decode_call_s, 4e-6);
  EXPECT_DOUBLE_EQ(cpu.flops(WeightType::Q4_K, 4096), 200e9);
  EXPECT_DOUBLE_EQ(cpu.flops(WeightType::IQ2_XXS, 4096), 80e9);  // not timed: the slowest figure
  // Between the timed row lengths, in log(row length): 1448 is half way from 512 to 4096.
  EXPECT_NEAR(cpu.kernel(WeightType::Q4_K, 1448)->decode_bytes_per_s, 8e9, 0.01e9);
  EXPECT_NEAR(cpu.kernel(WeightType::Q4_K, 1448)->decode_call_s, 4e-6, 0.01e-6);
  EXPECT_DOUBLE_EQ(cpu.flops(WeightType::Q4_K, 256), 100e9);     // outside: the nearest
  EXPECT_DOUBLE_EQ(cpu.flops(WeightType::Q4_K, 7168), 200e9);
  // By tokens, in log(tokens) between 64 and 512: 181 is half way; fewer than 64 take the 64 figure.
  EXPECT_NEAR(cpu.flops(WeightType::Q4_K, 4096, 181), 150e9, 0.1e9);
  EXPECT_DOUBLE_EQ(cpu.flops(WeightType::Q4_K, 4096, 16), 100e9);
  // Experts by tokens per expert, in log(tokens) between 16 and 64 (32: half way); fewer take the 16
  // figure; more, the 64 figure times the dense kernel's gain from 64 tokens (181: 1.5x); without expert
  // figures, the dense kernel's rate.
  EXPECT_NEAR(cpu.expert_flops(WeightType::Q4_K, 4096, 32), 60e9, 0.01e9);
  EXPECT_DOUBLE_EQ(cpu.expert_flops(WeightType::Q4_K, 4096, 8), 40e9);
  EXPECT_NEAR(cpu.expert_flops(WeightType::Q4_K, 4096, 181), 80e9 * 1.5, 0.1e9);
  EXPECT_NEAR(cpu.expert_flops(WeightType::Q4_K, 1448, 16), 30e9, 0.01e9);
  EXPECT_DOUBLE_EQ(cpu.expert_flops(WeightType::Q6_K, 4096, 16), 40e9);
  EXPECT_DOUBLE_EQ(cpu.attention_at(128).call_s, 6e-6);
  EXPECT_DOUBLE_EQ(cpu.attention_at(576).flops_per_s, 60e9);
  EXPECT_NEAR(cpu.attention_at(192).flops_per_s, 120e9 - 60e9 * std::log(1.5) / std::log(4.5), 1e3);  // DeepSeek's 192
  EXPECT_DOUBLE_EQ(cpu.elementwise_per_s, 3e9);
  EXPECT_DOUBLE_EQ(cpu.gelu_per_s, 1e9);
  std::remove(path.c_str());
}

TEST(Probe, FromOtherHardwareIsIgnoredWithTheReason) {
  const std::string path = temp_path("other");
  Probe p = sample();
  p.hardware = "Some Other CPU, 128 CPUs, 64 cores, 512.0 GiB, amx";
  p.hardware_hash = hardware_hash(p.hardware);
  ASSERT_TRUE(save_probe(p, path).is_ok());
  std::string why;
  auto back = load_probe(path, &why);
  ASSERT_TRUE(back.has_value()) << back.error().message();
  EXPECT_FALSE(back->has_value());
  EXPECT_NE(why.find("other hardware (Some Other CPU"), std::string::npos) << why;
  std::remove(path.c_str());
  back = load_probe(path, &why);
  ASSERT_TRUE(back.has_value());
  EXPECT_FALSE(back->has_value());
  EXPECT_NE(why.find("no probe at"), std::string::npos) << why;
}

TEST(Probe, ADamagedCacheIsAnErrorNamingIt) {
  const std::string path = temp_path("bad");
  std::ofstream(path) << "{\"date\": 3}";
  auto back = load_probe(path);
  ASSERT_FALSE(back.has_value());
  EXPECT_NE(back.error().message().find(path + ": not a probe file"), std::string::npos) << back.error().message();
  std::remove(path.c_str());
}

TEST(Probe, AQuickProbeMeasuresWhatItIsAskedFor) {
  ProbeOptions o;
  o.quick = true;
  o.types = {WeightType::Q4_K};
  o.sim_devices = {64 << 20};
  auto p = run_probe(o);
  ASSERT_TRUE(p.has_value()) << p.error().message();
  ASSERT_FALSE(p->bandwidth.empty());
  EXPECT_EQ(p->bandwidth[0].threads.front(), 1);
  EXPECT_GT(p->read_bytes_per_s(), 1e8);  // a tenth of a GB/s: far below any machine's
  ASSERT_EQ(p->matmul.size(), std::size(kProbeRowLengths));  // the type at each row length
  for (size_t i = 0; i < p->matmul.size(); ++i) {
    EXPECT_EQ(p->matmul[i].row_length, kProbeRowLengths[i]);
    EXPECT_GT(p->matmul[i].decode_bytes_per_s, 1e8);
    EXPECT_GT(p->matmul[i].prefill_flops_per_s, 1e8);
    EXPECT_GT(p->matmul[i].prefill_few_flops_per_s, 1e8);
    EXPECT_GT(p->matmul[i].expert_few_flops_per_s, 1e8);
    EXPECT_GT(p->matmul[i].expert_flops_per_s, 1e8);
    // A call of a small matrix costs more than its bytes at the streaming rate, by less than a millisecond.
    EXPECT_GT(p->matmul[i].decode_call_s, 0);
    EXPECT_LT(p->matmul[i].decode_call_s, 1e-3);
  }
  EXPECT_GT(p->ops.op_call_s, 0);
  EXPECT_LT(p->ops.op_call_s, 1e-3);
  ASSERT_EQ(p->ops.attention.size(), 2u);  // 128-wide heads and MLA's 576
  for (const AttentionRate& a : p->ops.attention) {
    EXPECT_GT(a.call_s, 0);
    EXPECT_GT(a.flops_per_s, 1e8);
  }
  EXPECT_GT(p->ops.elementwise_per_s, 1e7);
  EXPECT_GT(p->ops.gelu_per_s, 1e7);
  // One thread per ISA level, at least the generic kernel's and the best level's.
  ASSERT_FALSE(p->per_isa.empty());
  EXPECT_EQ(p->per_isa.front().isa, "generic");
  for (const IsaRate& r : p->per_isa) EXPECT_GT(r.flops_per_s, 1e6) << r.isa;
  ASSERT_EQ(p->sims.size(), 1u);
  // The sim's link model is 25 GB/s and 10 us per copy (sim_backend.h); the measurement finds about that.
  EXPECT_GT(p->sims[0].link_latency_s, 9e-6);
  EXPECT_LE(p->sims[0].link_bytes_per_s, 25e9);
  EXPECT_GT(p->sims[0].link_bytes_per_s, 1e9);
  // An op's hand-over to the device's thread: a difference of two timings, so at least 0; well below a
  // millisecond (a few microseconds on the 2-core Zen 4 under load).
  EXPECT_GE(p->sims[0].op_handover_s, 0);
  EXPECT_LT(p->sims[0].op_handover_s, 1e-3);
  EXPECT_FALSE(p->disk.has_value());
}

}  // namespace
}  // namespace tandem::placement
