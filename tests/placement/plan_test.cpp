// The placement plan against llama.cpp's rules (src/llama-model.cpp load_tensors: -ngl counts the
// output layer, the input layer stays on the CPU, -ts splits by cumulative shares; -ot first match wins).
#include "placement/plan.h"

#include <gtest/gtest.h>

namespace tandem::placement {
namespace {

constexpr size_t kMiB = size_t(1) << 20;

// A MoE-shaped model: per layer attention, norms, router and routed experts (10 MiB), plus
// embeddings and output.
std::vector<TensorInfo> moe_model(int n_layer) {
  std::vector<TensorInfo> t = {{"token_embd.weight", 8 * kMiB, -1}};
  for (int il = 0; il < n_layer; ++il) {
    const std::string b = "blk." + std::to_string(il) + ".";
    t.push_back({b + "attn_norm.weight", kMiB / 64, il});
    t.push_back({b + "attn_q.weight", kMiB, il});
    t.push_back({b + "attn_kv_a_mqa.weight", kMiB, il});
    t.push_back({b + "ffn_gate_inp.weight", kMiB / 16, il});
    t.push_back({b + "ffn_up_exps.weight", 4 * kMiB, il});
    t.push_back({b + "ffn_gate_exps.weight", 4 * kMiB, il});
    t.push_back({b + "ffn_down_exps.weight", 2 * kMiB, il});
  }
  t.push_back({"output_norm.weight", kMiB / 64, n_layer});
  t.push_back({"output.weight", 8 * kMiB, n_layer});
  return t;
}

std::vector<DeviceInfo> devices(std::vector<size_t> sim_mib) {
  std::vector<DeviceInfo> d = {{"CPU", 64 * 1024 * kMiB}};
  for (size_t i = 0; i < sim_mib.size(); ++i) d.push_back({"SIM" + std::to_string(i), sim_mib[i] * kMiB});
  return d;
}

int device_of(const Plan& p, const std::vector<TensorInfo>& t, const std::string& name) {
  for (size_t i = 0; i < t.size(); ++i)
    if (t[i].name == name) return p.tensor_device[i];
  ADD_FAILURE() << name;
  return -1;
}

TEST(PlacementPlan, NglCountsTheOutputLayerAndKeepsTheInputOnTheCpu) {
  const auto t = moe_model(4);
  const std::vector<size_t> kv(4, kMiB);
  PlacementFlags f;
  f.n_gpu_layers = 4;  // of 5 "layers": blocks 1..3 and the output
  auto p = make_plan(t, 4, kv, devices({1024}), f);
  ASSERT_TRUE(p.has_value()) << p.error().message();
  EXPECT_EQ(p->layer_device, (std::vector<int>{0, 1, 1, 1}));
  EXPECT_EQ(p->kv_device, (std::vector<int>{0, 1, 1, 1}));
  EXPECT_EQ(p->output_device, 1);
  EXPECT_EQ(device_of(*p, t, "token_embd.weight"), 0);
  EXPECT_EQ(device_of(*p, t, "output.weight"), 1);
  EXPECT_EQ(p->kv_bytes[1], 3 * kMiB);

  f.n_gpu_layers = -2;  // all
  p = make_plan(t, 4, kv, devices({1024}), f);
  EXPECT_EQ(p->layer_device, (std::vector<int>{1, 1, 1, 1}));
  f.n_gpu_layers = 99;
  p = make_plan(t, 4, kv, devices({1024}), f);
  EXPECT_EQ(p->n_gpu_layers, 5);
  f.n_gpu_layers = 1;  // the output layer only
  p = make_plan(t, 4, kv, devices({1024}), f);
  EXPECT_EQ(p->layer_device, (std::vector<int>{0, 0, 0, 0}));
  EXPECT_EQ(p->output_device, 1);
}

TEST(PlacementPlan, TensorSplitSharesTheLayersByCumulativeFractions) {
  const auto t = moe_model(4);
  PlacementFlags f;
  f.n_gpu_layers = -2;
  f.tensor_split = {1, 3};  // split points 0.25, 1: layer fractions 0, .2 -> SIM0; .4, .6, .8 -> SIM1
  auto p = make_plan(t, 4, std::vector<size_t>(4, kMiB), devices({1024, 1024}), f);
  ASSERT_TRUE(p.has_value()) << p.error().message();
  EXPECT_EQ(p->layer_device, (std::vector<int>{1, 1, 2, 2}));
  EXPECT_EQ(p->output_device, 2);
  f.tensor_split = {1, 1, 1};
  p = make_plan(t, 4, std::vector<size_t>(4, kMiB), devices({1024, 1024}), f);
  ASSERT_FALSE(p.has_value());
  EXPECT_NE(p.error().message().find("-ts: 3 values for 2 offload devices"), std::string::npos) << p.error().message();
}

TEST(PlacementPlan, OverridesWinInOrderAndCpuMoeKeepsExpertsOnTheCpu) {
  const auto t = moe_model(4);
  const std::vector<size_t> kv(4, kMiB);
  PlacementFlags f;
  f.n_gpu_layers = -2;
  f.overrides = {"exps=CPU"};
  auto p = make_plan(t, 4, kv, devices({1024}), f);
  ASSERT_TRUE(p.has_value()) << p.error().message();
  EXPECT_EQ(device_of(*p, t, "blk.2.ffn_up_exps.weight"), 0);
  EXPECT_EQ(device_of(*p, t, "blk.2.ffn_gate_inp.weight"), 1);
  EXPECT_EQ(p->weight_bytes[0], 8 * kMiB + 4 * 10 * kMiB);

  f.overrides = {"blk\\.1\\.=CPU,blk\\.[0-9]\\.attn=SIM0"};  // first match wins: block 1 stays on the CPU
  f.n_gpu_layers = 0;
  p = make_plan(t, 4, kv, devices({1024}), f);
  ASSERT_TRUE(p.has_value()) << p.error().message();
  EXPECT_EQ(device_of(*p, t, "blk.1.attn_q.weight"), 0);
  EXPECT_EQ(device_of(*p, t, "blk.2.attn_q.weight"), 1);

  f = {};
  f.n_gpu_layers = -2;
  f.n_cpu_moe = 2;
  p = make_plan(t, 4, kv, devices({1024}), f);
  ASSERT_TRUE(p.has_value()) << p.error().message();
  EXPECT_EQ(device_of(*p, t, "blk.1.ffn_down_exps.weight"), 0);
  EXPECT_EQ(device_of(*p, t, "blk.2.ffn_down_exps.weight"), 1);
  EXPECT_EQ(device_of(*p, t, "blk.1.attn_q.weight"), 1);
}

TEST(PlacementPlan, NoKvOffloadKeepsEveryCacheLayerOnTheCpu) {
  PlacementFlags f;
  f.n_gpu_layers = -2;
  f.no_kv_offload = true;
  auto p = make_plan(moe_model(3), 3, std::vector<size_t>(3, kMiB), devices({1024}), f);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->kv_device, (std::vector<int>{0, 0, 0}));
  EXPECT_EQ(p->kv_bytes[0], 3 * kMiB);
  EXPECT_EQ(p->layer_device, (std::vector<int>{1, 1, 1}));
}

TEST(PlacementPlan, BadFlagsAreErrorsNamingTheFlag) {
  const auto t = moe_model(2);
  const std::vector<size_t> kv(2, kMiB);
  auto err = [&](PlacementFlags f) {
    auto p = make_plan(t, 2, kv, devices({1024}), f);
    return p.has_value() ? std::string("(planned)") : p.error().message();
  };
  PlacementFlags f;
  f.overrides = {"exps=CUDA0"};
  EXPECT_NE(err(f).find("-ot exps=CUDA0: no device 'CUDA0' (devices: CPU, SIM0)"), std::string::npos) << err(f);
  f.overrides = {"nothing_like_this=CPU"};
  EXPECT_NE(err(f).find("-ot nothing_like_this=CPU: the pattern 'nothing_like_this' matches no tensor"), std::string::npos) << err(f);
  f.overrides = {"blk\\.(=CPU"};
  EXPECT_NE(err(f).find("is not a valid regular expression"), std::string::npos) << err(f);
  f.overrides = {"exps"};
  EXPECT_NE(err(f).find("expected REGEX=DEVICE"), std::string::npos) << err(f);
  f = {};
  f.devices = {"SIM7"};
  EXPECT_NE(err(f).find("-dev SIM7: no offload device of that name"), std::string::npos) << err(f);
  f = {};
  f.n_cpu_moe = -1;
  EXPECT_NE(err(f).find("--n-cpu-moe -1"), std::string::npos) << err(f);
  f = {};
  f.cpu_moe = true;
  auto dense = t;
  std::erase_if(dense, [](const TensorInfo& x) { return x.name.find("_exps") != std::string::npos; });
  auto p = make_plan(dense, 2, kv, devices({1024}), f);
  ASSERT_FALSE(p.has_value());
  EXPECT_NE(p.error().message().find("--cpu-moe: this model has no expert tensors"), std::string::npos) << p.error().message();
}

TEST(PlacementPlan, AnOverflowingPlanIsRefusedWithTheNumbersAndAnNglThatFits) {
  // Per block 12.1 MiB of weights + 1 MiB of KV cache, the output 8 MiB: 30 MiB hold the output and one
  // block (-ngl 2); without the experts (10 MiB a block) everything fits.
  const auto t = moe_model(4);
  PlacementFlags f;
  f.n_gpu_layers = 5;
  auto p = make_plan(t, 4, std::vector<size_t>(4, kMiB), devices({30}), f);
  ASSERT_FALSE(p.has_value());
  EXPECT_EQ(p.error().code(), StatusCode::OutOfMemory);
  EXPECT_NE(p.error().message().find("-ngl 5: SIM0 needs"), std::string::npos) << p.error().message();
  EXPECT_NE(p.error().message().find("needs 60.3 MiB (weights 56.3 MiB + KV cache 4.0 MiB + activations 0.0 MiB) but has 30.0 MiB; -ngl 2 fits"), std::string::npos) << p.error().message();

  f.n_gpu_layers = -1;  // auto: the same count
  p = make_plan(t, 4, std::vector<size_t>(4, kMiB), devices({30}), f);
  ASSERT_TRUE(p.has_value()) << p.error().message();
  EXPECT_EQ(p->n_gpu_layers, 2);
  EXPECT_LE(p->weight_bytes[1] + p->kv_bytes[1], 30 * kMiB);

  f.n_gpu_layers = -1;  // with experts on the CPU, everything else fits
  f.cpu_moe = true;
  p = make_plan(t, 4, std::vector<size_t>(4, kMiB), devices({30}), f);
  ASSERT_TRUE(p.has_value()) << p.error().message();
  EXPECT_EQ(p->n_gpu_layers, 5);
}

TEST(PlacementPlan, DevPicksDevicesByNameAndTheirIds) {
  const auto t = moe_model(2);
  PlacementFlags f;
  f.n_gpu_layers = -2;
  f.devices = {"SIM1"};
  auto p = make_plan(t, 2, std::vector<size_t>(2, kMiB), devices({8, 1024}), f);
  ASSERT_TRUE(p.has_value()) << p.error().message();
  ASSERT_EQ(p->devices.size(), 2u);
  EXPECT_EQ(p->devices[1].name, "SIM1");
  EXPECT_EQ(p->device_ids, (std::vector<int>{0, 2}));  // the caller maps plan device 1 to its backend 2
  f.devices = {"SIM0", "sim0"};
  p = make_plan(t, 2, std::vector<size_t>(2, kMiB), devices({8, 1024}), f);
  ASSERT_FALSE(p.has_value());
  EXPECT_NE(p.error().message().find("-dev: sim0 is named twice"), std::string::npos) << p.error().message();
}

TEST(PlacementPlan, AnEmptyDeviceNeedsNoRoomForActivations) {
  PlacementFlags f;
  f.reserve_bytes = 64 * kMiB;  // more than the 16 MiB device has, but nothing goes there
  auto p = make_plan(moe_model(2), 2, std::vector<size_t>(2, kMiB), devices({16}), f);
  ASSERT_TRUE(p.has_value()) << p.error().message();
  f.n_gpu_layers = 1;  // the output layer (8 MiB) and its activations do not fit
  p = make_plan(moe_model(2), 2, std::vector<size_t>(2, kMiB), devices({16}), f);
  ASSERT_FALSE(p.has_value());
  EXPECT_NE(p.error().message().find("activations 64.0 MiB"), std::string::npos) << p.error().message();
}

TEST(PlacementPlan, ARuleShadowedByAnEarlierOneIsReportedAsSuch) {
  PlacementFlags f;
  f.overrides = {"exps=CPU", "exps=SIM0"};
  auto p = make_plan(moe_model(2), 2, std::vector<size_t>(2, kMiB), devices({1024}), f);
  ASSERT_FALSE(p.has_value());
  EXPECT_NE(p.error().message().find("-ot exps=SIM0: every tensor 'exps' matches is taken by an earlier rule"),
            std::string::npos) << p.error().message();
}

TEST(PlacementPlan, ATiedOutputOnItsEmbeddingsDeviceCostsNothingMore) {
  std::vector<TensorInfo> t = moe_model(2);
  std::erase_if(t, [](const TensorInfo& x) { return x.name == "output.weight"; });
  t.push_back({"output.weight", 8 * kMiB, 2, "token_embd.weight"});
  PlacementFlags f;
  auto cpu_only = make_plan(t, 2, std::vector<size_t>(2, 0), devices({1024}), f);
  ASSERT_TRUE(cpu_only.has_value());
  f.n_gpu_layers = 1;  // the output layer on SIM0: a second copy there
  auto split = make_plan(t, 2, std::vector<size_t>(2, 0), devices({1024}), f);
  ASSERT_TRUE(split.has_value());
  EXPECT_EQ(cpu_only->weight_bytes[0], split->weight_bytes[0] + split->weight_bytes[1] - 8 * kMiB);  // one copy more
  EXPECT_EQ(split->weight_bytes[1], 8 * kMiB + kMiB / 64);
}

TEST(PlacementPlan, DevNoneOffloadsNothingAndTheTableShowsWhatWentWhere) {
  const auto t = moe_model(3);
  PlacementFlags f;
  f.n_gpu_layers = -2;
  f.devices = {"none"};
  auto p = make_plan(t, 3, std::vector<size_t>(3, kMiB), devices({1024}), f);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->devices.size(), 1u);
  EXPECT_EQ(p->layer_device, (std::vector<int>{0, 0, 0}));

  f.devices = {};
  f.overrides = {"exps=CPU"};
  p = make_plan(t, 3, std::vector<size_t>(3, kMiB), devices({1024}), f);
  ASSERT_TRUE(p.has_value());
  const std::string table = format_plan(*p, t);
  EXPECT_NE(table.find("routed experts     0-2       CPU"), std::string::npos) << table;
  EXPECT_NE(table.find("attention          0-2       SIM0"), std::string::npos) << table;
  EXPECT_NE(table.find("token embeddings   input     CPU"), std::string::npos) << table;
  EXPECT_NE(table.find("KV cache           0-2       SIM0"), std::string::npos) << table;
  EXPECT_NE(table.find("SIM0    weights"), std::string::npos) << table;
}

}  // namespace
}  // namespace tandem::placement
