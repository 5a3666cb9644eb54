// The speed model of placement/predict.h on hand-made plans whose answer is worked out here: decode
// sums bytes over rates, prefill takes the roofline's max of compute and memory per micro-batch.
#include "placement/predict.h"

#include <cmath>

#include <gtest/gtest.h>

namespace tandem::placement {
namespace {

// Two layers of one Q4_K matrix each (1000 x 1000, 1 MB), F32 norms, embeddings of 10 rows, an output
// matrix of 10 rows; all on the CPU.
struct Dense {
  std::vector<TensorInfo> tensors = {
      {"token_embd.weight", 10000, -1, "", WeightType::Q4_K, {10, 1000}},
      {"blk.0.attn_norm.weight", 4000, 0, "", WeightType::F32, {1000}},
      {"blk.0.attn_q.weight", 1000000, 0, "", WeightType::Q4_K, {1000, 1000}},
      {"blk.1.attn_norm.weight", 4000, 1, "", WeightType::F32, {1000}},
      {"blk.1.ffn_up.weight", 1000000, 1, "", WeightType::Q4_K, {1000, 1000}},
      {"output.weight", 10000, 2, "", WeightType::Q6_K, {10, 1000}},
  };
  Plan plan;
  ModelShape shape{1000, 10, 0, 0, 0, 0, 0};  // no heads: attention costs no compute here
  std::vector<size_t> kv_per_token = {100, 100};
  Dense() {
    plan.devices = {{"CPU", 1 << 30}};
    plan.device_ids = {0};
    plan.tensor_device.assign(tensors.size(), 0);
    plan.layer_device = {0, 0};
    plan.kv_device = {0, 0};
  }
  // Everything but the token embeddings (and the KV cache unless kv_too) on a second device, SIM0.
  void on_sim0(bool kv_too) {
    plan.devices.push_back({"SIM0", 1 << 30});
    plan.device_ids = {0, 1};
    plan.tensor_device.assign(tensors.size(), 1);
    plan.tensor_device[0] = 0;
    plan.layer_device = {1, 1};
    if (kv_too) plan.kv_device = {1, 1};
    plan.output_device = 1;
  }
};

Speeds cpu_at(double bytes_per_s, double flops_per_s) {
  Speeds s;
  s.devices.push_back({bytes_per_s, {}, flops_per_s});
  return s;
}

TEST(PredictDecode, SumsTheBytesOfATokenOverTheBandwidth) {
  Dense m;
  const Prediction p = predict_decode(m.plan, m.tensors, m.shape, m.kv_per_token, 50, cpu_at(1e9, 0));
  // One embedding row (1000 B), both norms, both matrices, the output, and 50 cells of 2 x 100 B.
  const double bytes = 1000 + 8000 + 2000000 + 10000 + 50 * 200;
  EXPECT_EQ(p.read_bytes[0], uint64_t(bytes));
  EXPECT_NEAR(p.tokens_per_s, 1e9 / bytes, 1e-9 * 1e9 / bytes);
  EXPECT_EQ(p.bottleneck, "CPU's memory bandwidth");
}

TEST(PredictDecode, AKernelSlowerThanMemoryBoundsTheDevice) {
  Dense m;
  Speeds s = cpu_at(1e9, 0);
  s.devices[0].kernels[WeightType::Q4_K] = {{1000, 0.25e9, 0, 0}};  // the two big matrices stream at a quarter
  const Prediction p = predict_decode(m.plan, m.tensors, m.shape, m.kv_per_token, 0, s);
  const double seconds = 2000000 / 0.25e9 + (1000 + 8000 + 10000) / 1e9;
  EXPECT_NEAR(p.seconds[0], seconds, 1e-12);
  EXPECT_EQ(p.bound[0], "Q4_K matmul kernels");
}

TEST(PredictPrefill, TakesTheSlowerOfComputeAndMemoryPerMicroBatch) {
  Dense m;
  // 1 GFLOP/s: each 100-token micro-batch computes 2 x 1e6 x 100 x 2 = 4e8 flop (0.4 s) and reads ~2 MB
  // (2 ms at 1 GB/s): compute-bound. The output row (2 x 1e4 flop) only in the last micro-batch, a
  // decode-shaped matmul: its 10 kB at the memory's 1 GB/s, in turn with the rest.
  const Prediction p = predict_prefill(m.plan, m.tensors, m.shape, m.kv_per_token, 300, 100, 0, cpu_at(1e9, 1e9));
  EXPECT_NEAR(p.flops[0], 3 * 4e8 + 2e4, 1);
  EXPECT_NEAR(p.tokens_per_s, 300 / (3 * 4e8 / 1e9 + 10000 / 1e9), 1e-6);
  EXPECT_EQ(p.bound[0], "Q4_K matmul throughput");
  // 1 TFLOP/s: now the weights' reads bound it (and the KV cache read once per micro-batch).
  const Prediction q = predict_prefill(m.plan, m.tensors, m.shape, m.kv_per_token, 300, 100, 0, cpu_at(1e9, 1e12));
  EXPECT_EQ(q.bound[0], "memory bandwidth");
  double memory_s = 0;
  for (int ub = 0; ub < 3; ++ub)
    memory_s += (100 * 1000.0 + 8000 + 2000000 + 200.0 * (ub + 1) * 100) / 1e9;
  EXPECT_NEAR(q.seconds[0], memory_s, 1e-12);
}

TEST(PredictPrefill, AMicroBatchReadsTheExpertsItsTokensPick) {
  Dense m;
  m.tensors[4] = {"blk.1.ffn_up_exps.weight", 1000000, 1, "", WeightType::Q4_K, {100, 10, 1000}};
  m.shape.n_expert = 100;
  m.shape.n_expert_used = 4;
  const Prediction p = predict_prefill(m.plan, m.tensors, m.shape, m.kv_per_token, 10, 10, 0, cpu_at(1e9, 1e15));
  // 10 tokens pick 4 of 100 experts each: 1 - 0.96^10 of the experts are read, and each token
  // multiplies by 4 experts of 10 rows.
  const double experts = 1e6 * (1 - std::pow(0.96, 10));
  EXPECT_NEAR(double(p.read_bytes[0]), 10 * 1000.0 + 8000 + 1e6 + experts + 10000 + 10 * 200, 2);
  EXPECT_NEAR(p.flops[0], 2 * 1e6 * 10 + 2 * 1e6 * 0.04 * 10 + 2e4, 1);
}

TEST(PredictPrefill, AnExpertRunsAtTheRateOfItsShareOfTheTokens) {
  Dense m;
  m.tensors[4] = {"blk.1.ffn_up_exps.weight", 1000000, 1, "", WeightType::Q4_K, {100, 10, 1000}};
  m.shape.n_expert = 100;
  m.shape.n_expert_used = 4;
  Speeds s = cpu_at(1e15, 1e9);
  s.devices[0].kernels[WeightType::Q4_K] = {{1000, 1e9, 0, 2e9, 1e9}};  // 64 tokens: half the 512-token rate
  const Prediction p = predict_prefill(m.plan, m.tensors, m.shape, m.kv_per_token, 512, 512, 0, s);
  // The dense matrix sees 512 tokens (2 GFLOP/s), each expert 4% of them, 20 (below 64: 1 GFLOP/s); the
  // Q6_K output row (no kernel figure) streams at the memory's rate.
  const double seconds = 2 * 1e6 * 512 / 2e9 + 2 * 1e6 * 0.04 * 512 / 1e9 + 10000 / 1e15;
  EXPECT_NEAR(p.seconds[0], seconds, 1e-9);
}

TEST(PredictPrefill, RoutedExpertsRunAtTheExpertMatmulsMeasuredRate) {
  Dense m;
  m.tensors[4] = {"blk.1.ffn_up_exps.weight", 1000000, 1, "", WeightType::Q4_K, {100, 10, 1000}};
  m.shape.n_expert = 100;
  m.shape.n_expert_used = 4;
  Speeds s = cpu_at(1e15, 1e9);
  // The dense kernel: 2 GFLOP/s at 512 tokens, 1 at 64; the grouped experts' matmul: 25 MFLOP/s at 16
  // tokens per expert, 50 at 64.
  s.devices[0].kernels[WeightType::Q4_K] = {{1000, 1e9, 0, 2e9, 1e9, 25e6, 50e6}};
  const Prediction p = predict_prefill(m.plan, m.tensors, m.shape, m.kv_per_token, 512, 512, 0, s);
  // Each expert gets 4% of 512 tokens, 20.48: log(20.48 / 16) / log(4) of the way from 25 to 50; the
  // dense matrix runs at the dense kernel's 512-token rate, as before.
  const double expert_rate = 25e6 + 25e6 * std::log(20.48 / 16) / std::log(4.0);
  const double seconds = 2 * 1e6 * 512 / 2e9 + 2 * 1e6 * 0.04 * 512 / expert_rate + 10000 / 1e15;
  EXPECT_NEAR(p.seconds[0], seconds, 1e-9);
  EXPECT_EQ(p.bound[0], "Q4_K expert matmul throughput");  // 1.4 s of experts against 0.5 s of dense
}

TEST(PredictDecode, EachCallAndEachLayersOtherOpsAddTheirFixedCosts) {
  Dense m;
  Speeds s = cpu_at(1e9, 0);
  s.devices[0].kernels[WeightType::Q4_K] = {{1000, 1e9, 20e-6, 0}};
  s.devices[0].op_call_s = 1e-6;
  s.devices[0].attention = {{0, 5e-6, 0}};  // any head width: the one figure
  const Prediction base = predict_decode(m.plan, m.tensors, m.shape, m.kv_per_token, 0, cpu_at(1e9, 0));
  const Prediction p = predict_decode(m.plan, m.tensors, m.shape, m.kv_per_token, 0, s);
  // Two Q4_K calls (the embedding row is a lookup, the Q6_K output has no kernel figure: no call cost);
  // per layer, attention and 1 norm + 5 other ops.
  EXPECT_NEAR(p.seconds[0] - base.seconds[0], 2 * 20e-6 + 2 * (5e-6 + 6 * 1e-6), 1e-12);
  EXPECT_EQ(p.read_bytes[0], base.read_bytes[0]);
}

TEST(PredictDecode, ARoutedExpertCallCostsOncePerExpertUsed) {
  Dense m;
  m.tensors[4] = {"blk.1.ffn_up_exps.weight", 1000000, 1, "", WeightType::Q4_K, {100, 10, 1000}};
  m.shape.n_expert = 100;
  m.shape.n_expert_used = 4;
  Speeds s = cpu_at(1e9, 0);
  s.devices[0].kernels[WeightType::Q4_K] = {{1000, 1e9, 20e-6, 0}};
  const Prediction p = predict_decode(m.plan, m.tensors, m.shape, m.kv_per_token, 0, s);
  const double bytes = 1000 + 8000 + 1e6 + 1e6 * 4 / 100 + 10000;
  EXPECT_NEAR(p.seconds[0], bytes / 1e9 + 20e-6 + 4 * 20e-6, 1e-12);
}

TEST(PredictPrefill, AttentionAndElementwiseOpsRunAtTheirOwnRates) {
  Dense m;
  m.shape.n_head = 2;
  m.shape.head_dim_k = m.shape.head_dim_v = 50;
  Speeds s = cpu_at(1e15, 1e9);
  s.devices[0].attention = {{50, 0, 1e8}};
  s.devices[0].elementwise_per_s = 1e6;  // the slowest part here, so it names the bound
  const Prediction p = predict_prefill(m.plan, m.tensors, m.shape, m.kv_per_token, 100, 100, 0, s);
  // Matrices: 2 x 1e6 x 100 x 2 + the output row; attention: 2 heads x 100 dims x 100 tokens x 50.5
  // cells x 2 per layer; elementwise: 100 tokens x (1 norm + 4) x 1000 values per layer (no ffn_up width:
  // layer 1's matrix is named ffn_up, 1000 rows more there).
  const double matmul_s = 4e8 / 1e9 + 10000 / 1e15;  // the output row streams at the memory's rate
  const double attention_s = 2 * (2.0 * 2 * 100 * 100 * 50.5) / 1e8;
  const double elementwise_s = (100 * 5000.0 + 100 * 6000.0) / 1e6;
  EXPECT_NEAR(p.seconds[0], matmul_s + attention_s + elementwise_s, 1e-9);
  EXPECT_EQ(p.bound[0], "elementwise ops");
  // A GeGLU model's activation (layer 1's 1000 values a token) at the GELU rate; a SiLU model's ignores it.
  s.devices[0].gelu_per_s = 0.25e6;
  EXPECT_NEAR(predict_prefill(m.plan, m.tensors, m.shape, m.kv_per_token, 100, 100, 0, s).seconds[0],
              matmul_s + attention_s + elementwise_s, 1e-9);
  m.shape.ffn_gelu = true;
  EXPECT_NEAR(predict_prefill(m.plan, m.tensors, m.shape, m.kv_per_token, 100, 100, 0, s).seconds[0],
              matmul_s + attention_s + elementwise_s + 100 * 1000 * (1 / 0.25e6 - 1 / 1e6), 1e-9);
}

TEST(PredictPrefill, LlamaCppsOpOffloadCopiesTheCpusMatricesWholeForBigMicroBatches) {
  Dense m;
  m.tensors[4] = {"blk.1.ffn_up_exps.weight", 1000000, 1, "", WeightType::Q4_K, {100, 10, 1000}};
  m.shape.n_expert = 100;
  m.shape.n_expert_used = 4;
  m.plan.devices.push_back({"CUDA0", 1 << 30});
  m.plan.device_ids = {0, 1};
  m.plan.tensor_device = {0, 1, 1, 1, 0, 1};  // layer 1's experts stay on the CPU (--n-cpu-moe 2)
  m.plan.layer_device = {1, 1};
  m.plan.kv_device = {1, 1};
  m.plan.output_device = 1;
  Speeds s = cpu_at(1e10, 1e9);
  s.devices.push_back({1e12, {}, 1e13});
  s.link_bytes_per_s = 1e9;
  s.link_latency_s = 0;
  const Prediction here = predict_prefill(m.plan, m.tensors, m.shape, m.kv_per_token, 100, 100, 0, s);
  const Prediction llama = predict_prefill(m.plan, m.tensors, m.shape, m.kv_per_token, 100, 100, 0, s, 32);
  // Tandem: the CPU multiplies its experts (2 x 1e6 x 4/100 x 100 flop at 1 GFLOP/s). llama.cpp: all
  // 1 MB of them cross the link (1 ms) and the GPU multiplies; the CPU only looks up embedding rows.
  EXPECT_NEAR(here.seconds[0], 2 * 1e6 * 0.04 * 100 / 1e9, 1e-9);
  EXPECT_NEAR(llama.seconds[0], 100 * 1000 / 1e10, 1e-15);
  EXPECT_NEAR(llama.link_seconds - here.link_seconds, 1e6 / 1e9, 1e-12);
  EXPECT_GT(llama.tokens_per_s, here.tokens_per_s);
  // Below the threshold both are the same.
  const Prediction small = predict_prefill(m.plan, m.tensors, m.shape, m.kv_per_token, 100, 20, 0, s, 32);
  const Prediction small_here = predict_prefill(m.plan, m.tensors, m.shape, m.kv_per_token, 100, 20, 0, s);
  EXPECT_DOUBLE_EQ(small.tokens_per_s, small_here.tokens_per_s);
}

TEST(PredictDecode, CrossingsCostTheLinkAndTheOutputDeviceSendsTheLogitsBack) {
  Dense m;
  m.on_sim0(false);  // both layers and the output
  Speeds s = cpu_at(1e9, 0);
  s.devices.push_back({1e10, {}, 0});
  s.link_bytes_per_s = 1e9;
  s.link_latency_s = 1e-5;
  const Prediction p = predict_decode(m.plan, m.tensors, m.shape, m.kv_per_token, 0, s);
  // One crossing (the hidden state to SIM0 before layer 0) and the logits back.
  EXPECT_NEAR(p.link_seconds, (1e-5 + 4000 / 1e9) + (1e-5 + 40 / 1e9), 1e-15);
}

TEST(PredictDecode, EachOpQueuedToADeviceAddsItsHandOver) {
  Dense m;
  m.on_sim0(true);  // both layers, their KV cache and the output
  Speeds s = cpu_at(1e9, 1e15);
  s.devices.push_back({1e15, {}, 1e15});
  const Prediction base = predict_decode(m.plan, m.tensors, m.shape, m.kv_per_token, 0, s);
  const Prediction base_pp = predict_prefill(m.plan, m.tensors, m.shape, m.kv_per_token, 100, 100, 0, s);
  s.devices[1].op_handover_s = 3e-6;
  const Prediction p = predict_decode(m.plan, m.tensors, m.shape, m.kv_per_token, 0, s);
  const Prediction pp = predict_prefill(m.plan, m.tensors, m.shape, m.kv_per_token, 100, 100, 0, s);
  // Three matrices (attn_q, ffn_up, the output) and per layer 1 norm + 5 other ops + attention; the CPU's
  // embedding lookup is not queued to SIM0. Prefill in one micro-batch queues as many.
  EXPECT_NEAR(p.seconds[1] - base.seconds[1], (3 + 2 * 7) * 3e-6, 1e-12);
  EXPECT_NEAR(pp.seconds[1] - base_pp.seconds[1], (3 + 2 * 7) * 3e-6, 1e-12);
  EXPECT_DOUBLE_EQ(p.seconds[0], base.seconds[0]);
}

TEST(PredictDecode, AMoeLayerOnADeviceSendsItsRouterLogitsToTheHostAndGetsThePicksBack) {
  Dense m;
  m.tensors.push_back({"blk.1.ffn_gate_inp.weight", 400000, 1, "", WeightType::F32, {100, 1000}});
  m.tensors.push_back({"blk.1.ffn_down_exps.weight", 1000000, 1, "", WeightType::Q4_K, {100, 10, 1000}});
  m.shape.n_expert = 100;
  m.shape.n_expert_used = 4;
  m.on_sim0(true);
  Speeds s = cpu_at(1e9, 0);
  s.devices.push_back({1e10, {}, 0});
  s.link_bytes_per_s = 1e9;
  s.link_latency_s = 1e-5;
  const Prediction p = predict_decode(m.plan, m.tensors, m.shape, m.kv_per_token, 0, s);
  // The hidden state's crossing and the logits back as before; then layer 1's 100 router logits down,
  // its 4 ids and 4 weights up.
  const double crossings = (1e-5 + 4000 / 1e9) + (1e-5 + 40 / 1e9);
  EXPECT_NEAR(p.link_seconds - crossings, (1e-5 + 400 / 1e9) + 2 * (1e-5 + 16 / 1e9), 1e-15);
  // Prefill: per micro-batch of 50 tokens, 50 tokens' worth of each.
  const Prediction pp = predict_prefill(m.plan, m.tensors, m.shape, m.kv_per_token, 100, 50, 0, s);
  const double pp_crossings = 2 * (1e-5 + 50 * 4000 / 1e9) + (1e-5 + 40 / 1e9);
  EXPECT_NEAR(pp.link_seconds - pp_crossings, 2 * ((1e-5 + 50 * 400 / 1e9) + 2 * (1e-5 + 50 * 16 / 1e9)), 1e-12);
  // With the experts and the router on the CPU nothing more crosses.
  m.plan.tensor_device[6] = m.plan.tensor_device[7] = 0;
  const Prediction cpu_moe = predict_decode(m.plan, m.tensors, m.shape, m.kv_per_token, 0, s);
  EXPECT_NEAR(cpu_moe.link_seconds, 3 * (1e-5 + 4000 / 1e9) + (1e-5 + 40 / 1e9), 1e-15);
}

}  // namespace
}  // namespace tandem::placement
