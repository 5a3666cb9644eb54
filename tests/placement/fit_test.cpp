// --fit's choices (placement/fit.h): what the user left open is chosen for the best predicted decode,
// what the user gave is kept and checked, and the context is lowered only when it was not given.
#include "placement/fit.h"

#include <gtest/gtest.h>

namespace tandem::placement {
namespace {

constexpr size_t kMiB = size_t(1) << 20;

// Per layer 2 MiB of attention and 10 MiB of routed experts (64 of them, 4 used); embeddings and output.
FitRequest moe_request(size_t sim_mib) {
  FitRequest r;
  r.n_layer = 8;
  r.tensors.push_back({"token_embd.weight", 4 * kMiB, -1, "", WeightType::Q8_0, {1000, 4000}});
  for (int il = 0; il < r.n_layer; ++il) {
    const std::string b = "blk." + std::to_string(il) + ".";
    r.tensors.push_back({b + "attn_q.weight", 2 * kMiB, il, "", WeightType::Q8_0, {500, 4000}});
    r.tensors.push_back({b + "ffn_up_exps.weight", 10 * kMiB, il, "", WeightType::Q8_0, {64, 40, 4000}});
  }
  r.tensors.push_back({"output.weight", 4 * kMiB, r.n_layer, "", WeightType::Q8_0, {1000, 4000}});
  r.kv_bytes_per_cell.assign(size_t(r.n_layer), 256);
  r.n_ctx = 4096;
  r.devices = {{"CPU", 64 * 1024 * kMiB}, {"SIM0", sim_mib * kMiB}};
  r.margin_bytes = {0};
  r.shape = {4000, 1000, 64, 4, 0, 0, 0};
  r.speeds.devices = {{20e9, {}, {}, 0}, {500e9, {}, {}, 0}};
  return r;
}

// What -ngl alone (as many whole layers as fit, their experts with them) decodes at, for r's model and devices.
double whole_layers_tokens_per_s(FitRequest r) {
  r.flags.n_gpu_layers = -1;
  r.ngl_given = true;
  auto f = fit(r);
  EXPECT_TRUE(f.has_value()) << f.error().message();
  return f ? f->decode.tokens_per_s : 0;
}

TEST(Fit, MovesExpertsRatherThanLayersWhenThatDecodesFaster) {
  FitRequest r = moe_request(60);  // 4 + 8 x 2 + 4 = 24 MiB of dense weights + 1 MiB of KV; 80 of experts
  auto f = fit(r);
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_EQ(f->plan.n_gpu_layers, 9);  // every layer and the output
  EXPECT_GT(f->flags.n_cpu_moe, 0);
  EXPECT_LT(f->flags.n_cpu_moe, 8);  // some layers' experts fit beside them
  EXPECT_GT(f->decode.tokens_per_s, whole_layers_tokens_per_s(r));  // -ngl auto takes fewer whole layers
  EXPECT_NE(f->summary.find("--n-cpu-moe"), std::string::npos) << f->summary;
}

TEST(Fit, KeepsTheUsersNglAndReportsWhenItDoesNotFit) {
  FitRequest r = moe_request(60);
  r.flags.n_gpu_layers = 9;
  r.ngl_given = true;
  auto f = fit(r);
  ASSERT_FALSE(f.has_value());
  EXPECT_NE(f.error().message().find("-ngl 9: SIM0 needs"), std::string::npos) << f.error().message();
  r.flags.n_gpu_layers = 3;
  f = fit(r);
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_EQ(f->plan.n_gpu_layers, 3);
  EXPECT_EQ(f->flags.n_cpu_moe, 0);
}

TEST(Fit, KeepsTheUsersExpertPlacement) {
  FitRequest r = moe_request(60);
  r.flags.cpu_moe = true;
  r.experts_given = true;
  auto f = fit(r);
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_EQ(f->flags.n_cpu_moe, 0);
  EXPECT_EQ(f->plan.n_gpu_layers, 9);  // everything else fits
}

TEST(Fit, LowersAContextNotGivenDownToFitCtx) {
  FitRequest r = moe_request(60);
  r.devices[0].free_bytes = 8 * 256 * 5000;  // the CPU holds the KV of 5000 cells
  r.flags.no_kv_offload = true;
  r.n_ctx = 16384;
  r.min_ctx = 2048;
  auto f = fit(r);
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_EQ(f->n_ctx, 4096);
  r.ctx_given = true;
  f = fit(r);
  ASSERT_FALSE(f.has_value());
  EXPECT_NE(f.error().message().find("lower -c"), std::string::npos) << f.error().message();
  r.ctx_given = false;
  r.min_ctx = 8192;
  f = fit(r);
  ASSERT_FALSE(f.has_value());
  EXPECT_NE(f.error().message().find("--fit-ctx 8192"), std::string::npos) << f.error().message();
}

TEST(Fit, ShortensAContextNotGivenToKeepTheMappedWeightsInRam) {
  FitRequest r = moe_request(0);
  r.devices.resize(1);  // the CPU alone: 104 MiB of weights, 2 KiB of KV cache per cell
  r.speeds.devices.resize(1);
  r.min_ctx = 1024;
  r.devices[0].free_bytes = 110 * kMiB;  // 4096 cells (8 MiB) overflow it, 2048 fit
  auto f = fit(r);
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_EQ(f->n_ctx, 2048);
  r.ctx_given = true;  // a context given is kept: the weights are read from disk where RAM lacks room
  f = fit(r);
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_EQ(f->n_ctx, 4096);
  r.ctx_given = false;
  r.devices[0].free_bytes = 100 * kMiB;  // the weights alone overflow it: a shorter context cannot help
  f = fit(r);
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_EQ(f->n_ctx, 4096);
}

TEST(Fit, PredictsMappedWeightsPastTheRamFromTheDisk) {
  FitRequest r = moe_request(0);
  r.devices.resize(1);  // the CPU alone: 104 MiB of weights
  r.speeds.devices.resize(1);
  r.disk_bytes_per_s = 1e9;
  auto in_ram = fit(r);
  ASSERT_TRUE(in_ram.has_value()) << in_ram.error().message();
  EXPECT_EQ(in_ram->disk_share, 0);
  r.devices[0].free_bytes = 60 * kMiB;  // 8 MiB of KV cache beside 52 MiB of the weights: half stay on disk
  auto f = fit(r);
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_NEAR(f->disk_share, 0.5, 0.01);
  // A token's CPU reads (as predict_decode counts them) from RAM at 20 GB/s, and half of them again from disk at 1.
  const double ram_s = 1 / in_ram->decode.tokens_per_s;
  const double disk_s = double(in_ram->decode.read_bytes[0]) * 0.5 / 1e9;
  EXPECT_NEAR(1 / f->decode.tokens_per_s, ram_s + disk_s, 0.02 * (ram_s + disk_s));
  EXPECT_NE(f->summary.find("read from disk"), std::string::npos) << f->summary;
  r.weights_mapped = false;  // read into RAM (--no-mmap): the RAM given is what they left
  f = fit(r);
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_EQ(f->disk_share, 0);
}

TEST(Fit, KeepsEveryExpertOnTheCpuWhenNotEvenTheDenseWeightsFit) {
  FitRequest r = moe_request(14);  // 24 MiB of dense weights: no whole model's worth, even without experts
  auto f = fit(r);
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_TRUE(f->flags.cpu_moe) << f->summary;
  EXPECT_GT(f->plan.n_gpu_layers, 0);
  EXPECT_NE(f->summary.find("--cpu-moe"), std::string::npos) << f->summary;
  EXPECT_GT(f->decode.tokens_per_s, whole_layers_tokens_per_s(r));
}

TEST(Fit, LeavesTheMarginFree) {
  EXPECT_EQ(default_fit_margin(64 * 1024 * kMiB), 1024 * kMiB);  // llama.cpp's 1 GiB
  EXPECT_EQ(default_fit_margin(64 * kMiB), 8 * kMiB);
  FitRequest r = moe_request(60);
  r.margin_bytes = {40 * kMiB};
  auto f = fit(r);
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_LE(f->plan.weight_bytes[1] + f->plan.kv_bytes[1], 20 * kMiB);
}

}  // namespace
}  // namespace tandem::placement
