// A model split between the CPU and sim devices computes exactly what the CPU alone computes: the
// sim device runs the same kernels, so any difference is a missing copy, a missing wait or a wrong
// device (which its pointer checks also report). Placements: none, some and all layers on a sim,
// experts/FFN kept on the CPU by -ot, -nkvo, two sims split by -ts, quantized KV caches.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include "backend/cpu/cpu_backend.h"
#include "backend/sim/sim_backend.h"
#include "engine/context.h"
#include "test_data.h"

namespace tandem {
namespace {

struct Placed {
  std::vector<std::unique_ptr<sim::SimBackend>> sims;
  std::unique_ptr<model::Model> model;
};

constexpr int kThreads = 2;  // the CPU's and each sim's: decode attention splits cells by thread count
// The CPU's repacked Q8_0 panels round differently from the row kernels the sim devices run (as a GPU's
// kernels would): the comparison is of placements, so both sides keep the file's layout.
const model::ModelLoadOptions kRowLayout{.repack = false};

Placed place(const std::string& path, cpu::CpuBackend& cpu, int n_sims, const placement::PlacementFlags& flags,
             const ContextOptions& ctx) {
  Placed p;
  auto m = model::Model::open(path, kRowLayout);
  EXPECT_TRUE(m.has_value()) << m.error().message();
  if (!m) return p;
  std::vector<placement::DeviceInfo> infos = {{"CPU", size_t(1) << 34}};
  model::Placement where;
  where.devices = {&cpu};
  for (int i = 0; i < n_sims; ++i) {
    sim::SimOptions o;
    o.name = "SIM" + std::to_string(i);
    o.budget_bytes = size_t(2) << 30;
    o.n_threads = kThreads;
    o.link = {1e12, 0};  // correctness here, not timing
    p.sims.push_back(std::move(sim::SimBackend::create(o).value()));
    where.devices.push_back(p.sims.back().get());
    infos.push_back({o.name, o.budget_bytes});
  }
  std::vector<size_t> kv = (*m)->kv_bytes_per_cell(ctx.type_k, ctx.type_v);
  for (size_t& b : kv) b *= size_t(ctx.n_ctx);
  auto plan = placement::make_plan((*m)->tensor_infos(), int((*m)->hparams().n_layer), kv, infos, flags);
  EXPECT_TRUE(plan.has_value()) << plan.error().message();
  if (!plan) return p;
  where.plan = std::move(plan).value();
  const Status s = (*m)->place(where);
  EXPECT_TRUE(s.is_ok()) << s.message();
  p.model = std::move(m).value();
  return p;
}

// Logits of a 9-token prompt (one batch, two micro-batches) and then 4 one-token steps of a second
// sequence beside it, all concatenated.
std::vector<float> run(const model::Model& m, const ContextOptions& o, int32_t n_vocab) {
  auto ctx = Context::create(m, o);
  EXPECT_TRUE(ctx.has_value()) << ctx.error().message();
  std::vector<float> out;
  Batch b;
  for (int32_t i = 0; i < 9; ++i) b.add((7 * i + 3) % n_vocab, i, 0, true);
  Status s = (*ctx)->decode(b);
  EXPECT_TRUE(s.is_ok()) << s.message();
  for (int64_t i = 0; i < (*ctx)->n_logits(); ++i) {
    auto l = (*ctx)->logits(i);
    out.insert(out.end(), l.begin(), l.end());
  }
  for (int32_t step = 0; step < 4; ++step) {
    Batch d;
    d.add((11 * step + 5) % n_vocab, 9 + step, 0, true);
    d.add((13 * step + 1) % n_vocab, step, 1, true);
    s = (*ctx)->decode(d);
    EXPECT_TRUE(s.is_ok()) << s.message();
    for (int64_t i = 0; i < (*ctx)->n_logits(); ++i) {
      auto l = (*ctx)->logits(i);
      out.insert(out.end(), l.begin(), l.end());
    }
  }
  return out;
}

struct Case {
  const char* name;
  int n_sims;
  placement::PlacementFlags flags;
};

std::vector<Case> cases(int n_layer, const char* ffn_override) {
  placement::PlacementFlags none, some, all, ffn_cpu, nkvo, split;
  some.n_gpu_layers = n_layer / 2;
  all.n_gpu_layers = -2;
  ffn_cpu.n_gpu_layers = -2;
  ffn_cpu.overrides = {ffn_override};
  nkvo.n_gpu_layers = -2;
  nkvo.no_kv_offload = true;
  split.n_gpu_layers = -2;
  split.tensor_split = {1, 2};
  placement::PlacementFlags parted;  // llama.cpp recipes part a block's matrices: -ot "ffn_(up|down)_exps=CPU"
  parted.n_gpu_layers = -2;
  parted.overrides = {std::string(ffn_override).find("exps") != std::string::npos ? "ffn_(up|down)_exps=CPU"
                                                                                  : "ffn_(up|down)=CPU"};
  return {{"gate on the sim, up and down on the CPU", 1, parted}, {"no layers on the sim", 1, none}, {"half the layers", 1, some},  {"every layer and the output", 1, all},
          {"-ot <ffn>=CPU", 1, ffn_cpu},     {"-nkvo", 1, nkvo},             {"two sims, -ts 1,2", 2, split}};
}

// ffn_override: an -ot rule keeping the FFN's matrices (a MoE's experts) on the CPU.
void expect_same_as_cpu(const std::string& path, ContextOptions o, const char* ffn_override = "ffn_(gate|up|down)=CPU") {
  cpu::CpuBackend cpu(kThreads);
  auto alone = model::Model::load(path, kRowLayout, cpu);
  ASSERT_TRUE(alone.has_value()) << alone.error().message();
  const int32_t n_vocab = int32_t((*alone)->tok_embd().n_rows());
  const auto want = run(**alone, o, n_vocab);
  for (const Case& c : cases(int((*alone)->hparams().n_layer), ffn_override)) {
    SCOPED_TRACE(c.name);
    Placed p = place(path, cpu, c.n_sims, c.flags, o);
    ASSERT_TRUE(p.model);
    const auto got = run(*p.model, o, n_vocab);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0);
    if (c.flags.n_gpu_layers != 0) {
      uint64_t moved = 0;
      for (const auto& s : p.sims) moved += s->stats().bytes_from_host;
      EXPECT_GT(moved, 0u);  // the sim did take part
    }
  }
}

TEST(SimPlacement, SmallLlamaGivesTheCpusLogitsOnEveryPlacement) {
  std::string why;
  const std::string path = test_data::small_llama_model(&why);
  if (path.empty()) GTEST_SKIP() << why;
  expect_same_as_cpu(path, {.n_ctx = 64, .n_ubatch = 5, .flash_attn = true});
  expect_same_as_cpu(path, {.n_ctx = 64, .n_ubatch = 5, .flash_attn = false});
}

TEST(SimPlacement, GemmaWithAQuantizedCacheGivesTheCpusLogits) {
  const char* gemma = std::getenv("TANDEM_GEMMA_GGUF");
  if (!gemma || !*gemma) GTEST_SKIP() << "TANDEM_GEMMA_GGUF is not set (scripts/fetch-model.sh)";
  expect_same_as_cpu(gemma, {.n_ctx = 64, .n_ubatch = 5, .type_k = WeightType::Q8_0, .type_v = WeightType::Q4_0,
                             .flash_attn = true});
}

// deepseek2: MLA (strided views, head-indexed matmul_id), the router's host round trip and the experts
// kept on the CPU by -ot exps=CPU while the router and shared experts run on the sim.
TEST(SimPlacement, TinyDeepseekGivesTheCpusLogitsOnEveryPlacement) {
  std::string why;
  const std::string path = test_data::tiny_deepseek_model(&why);
  if (path.empty()) GTEST_SKIP() << why;
  expect_same_as_cpu(path, {.n_ctx = 64, .n_ubatch = 5, .flash_attn = true}, "exps=CPU");
  expect_same_as_cpu(path, {.n_ctx = 64, .n_ubatch = 5, .type_k = WeightType::Q8_0, .type_v = WeightType::Q8_0,
                            .flash_attn = false}, "exps=CPU");
}

// The older combined attn_kv_b form, run expanded: per-head K and V built by strided copies.
TEST(SimPlacement, TinyDeepseekWithCombinedKvBGivesTheCpusLogits) {
  std::string why;
  const std::string path = test_data::tiny_deepseek_model(&why, "tiny-deepseek-v3-kvb");
  if (path.empty()) GTEST_SKIP() << why;
  expect_same_as_cpu(path, {.n_ctx = 64, .n_ubatch = 5, .flash_attn = true}, "exps=CPU");
}

// Every KV cache type, with the first two layers' experts kept on the CPU by --n-cpu-moe and the rest
// of the model on the sim.
TEST(SimPlacement, TinyDeepseekGivesTheCpusLogitsWithEveryCacheTypeAndNCpuMoe) {
  std::string why;
  const std::string path = test_data::tiny_deepseek_model(&why);
  if (path.empty()) GTEST_SKIP() << why;
  cpu::CpuBackend cpu(kThreads);
  auto alone = model::Model::load(path, {}, cpu);
  ASSERT_TRUE(alone.has_value()) << alone.error().message();
  const int32_t n_vocab = int32_t((*alone)->tok_embd().n_rows());
  placement::PlacementFlags f;
  f.n_gpu_layers = -2;
  f.n_cpu_moe = 2;
  for (WeightType t : {WeightType::F32, WeightType::F16, WeightType::BF16, WeightType::Q8_0, WeightType::Q4_0,
                       WeightType::Q4_1, WeightType::Q5_0, WeightType::Q5_1, WeightType::IQ4_NL}) {
    SCOPED_TRACE(type_name(t));
    const ContextOptions o{.n_ctx = 64, .n_ubatch = 5, .type_k = t, .type_v = t, .flash_attn = true};
    const auto want = run(**alone, o, n_vocab);
    Placed p = place(path, cpu, 1, f, o);
    ASSERT_TRUE(p.model);
    const auto got = run(*p.model, o, n_vocab);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0);
  }
}

TEST(SimPlacement, ABlockSplitAcrossDevicesIsRefusedNamingTheTensors) {
  std::string why;
  const std::string path = test_data::small_llama_model(&why);
  if (path.empty()) GTEST_SKIP() << why;
  cpu::CpuBackend cpu(1);
  placement::PlacementFlags f;
  f.n_gpu_layers = -2;
  f.overrides = {"blk\\.0\\.attn_k=CPU"};
  auto m = model::Model::open(path, {});
  ASSERT_TRUE(m.has_value());
  sim::SimOptions o;
  o.name = "SIM0";
  auto sim = std::move(sim::SimBackend::create(o).value());
  std::vector<size_t> kv((*m)->hparams().n_layer, 0);
  auto plan = placement::make_plan((*m)->tensor_infos(), int((*m)->hparams().n_layer), kv,
                                   {{"CPU", size_t(1) << 34}, {"SIM0", o.budget_bytes}}, f);
  ASSERT_TRUE(plan.has_value());
  const Status s = (*m)->place({{&cpu, sim.get()}, std::move(plan).value()});
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("blk.0.attn_k.weight is on cpu but blk.0.attn_q.weight"), std::string::npos)
      << s.message();
}

}  // namespace
}  // namespace tandem
