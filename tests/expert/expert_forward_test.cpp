// The forward pass with --expert-cache against the runs without: the same greedy tokens, and the same logits
// bit for bit as the experts read through the mapping (expect_same_run), at every cache size from one expert to
// all of them (smaller than a batch's experts runs them in groups), for split, fused and quantized files; a file
// truncated mid-run is an error of the step that needs a missing expert, not a crash. Models: expert_models.h.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "backend/cpu/cpu_backend.h"
#include "engine/context.h"
#include "expert_models.h"

namespace tandem::expert {
namespace {

struct Run {
  std::vector<int32_t> tokens;              // greedy continuation
  std::vector<std::vector<float>> logits;   // every prompt token's row, then each decode step's
  ExpertCacheStats stats;
  int n_slots = 0;
};

constexpr int kPrompt = 24, kGenerate = 6;

int32_t argmax(std::span<const float> v) { return int32_t(std::max_element(v.begin(), v.end()) - v.begin()); }

// Prefills kPrompt tokens (micro-batches of 16, so routing sees batches and single tokens alike), then
// decodes kGenerate greedy tokens; cache_bytes 0: all in RAM, larger_than_memory: as on a machine the file does not
// fit (TANDEM_MEMORY_LIMIT), where the routed experts stay in the file's layout (Model::repack_matrices).
Result<Run> greedy(const std::string& path, uint64_t cache_bytes, bool larger_than_memory = false) {
  cpu::CpuBackend cpu(2);
  model::ModelLoadOptions o;
  o.expert_cache_bytes = cache_bytes;
  if (larger_than_memory) setenv("TANDEM_MEMORY_LIMIT", "4096", 1);
  auto loaded = model::Model::load(path, o, cpu);
  if (larger_than_memory) unsetenv("TANDEM_MEMORY_LIMIT");
  TANDEM_ASSIGN(auto m, std::move(loaded));
  ContextOptions co;
  co.n_ctx = 64;
  co.n_batch = 16;
  co.n_ubatch = 16;
  TANDEM_ASSIGN(auto ctx, Context::create(*m, co));
  std::vector<int32_t> prompt;
  for (int i = 0; i < kPrompt; ++i) prompt.push_back(int32_t(100 + 37 * i));
  Run r;
  TANDEM_TRY(ctx->prefill(0, prompt, 0, 0, kPrompt));
  for (int i = 0; i < kPrompt; ++i) r.logits.emplace_back(ctx->logits(i).begin(), ctx->logits(i).end());
  for (int i = 0; i < kGenerate; ++i) {
    r.tokens.push_back(argmax(r.logits.back()));
    const int32_t t = r.tokens.back();
    TANDEM_TRY(ctx->prefill(0, {&t, 1}, kPrompt + i));
    r.logits.emplace_back(ctx->logits(0).begin(), ctx->logits(0).end());
  }
  if (m->expert_cache()) {
    r.stats = m->expert_cache()->stats();
    r.n_slots = m->expert_cache()->n_slots();
  }
  return r;
}

uint64_t slot_bytes(const std::string& path) {
  auto f = gguf::GgufFile::open(path);
  EXPECT_TRUE(f);
  auto l = ExpertLayout::from_gguf(**f);
  EXPECT_TRUE(l);
  return expert_slot_bytes(*l);
}

// n_used: experts per token; n_total: over all layers.
// The cache's slots hold the file's layout and run its kernels: their logits are bit for bit those of the model
// read through the mapping where it does not fit memory (the experts in the file's layout too), and their greedy
// tokens those of the run all in RAM, whose routed experts are repacked (at AVX2 the packed tiles add in another
// order than the row kernels: the last bits differ).
void expect_same_run(const std::string& path, int n_used = 4, int n_total = 48) {
  auto repacked = greedy(path, 0);
  ASSERT_TRUE(repacked) << repacked.error().message();
  auto resident = greedy(path, 0, true);
  ASSERT_TRUE(resident) << resident.error().message();
  EXPECT_EQ(repacked->tokens, resident->tokens);
  const uint64_t slot = slot_bytes(path);
  // Fewer slots than one token's experts, exactly those, more, and all.
  for (int n_slots : {1, n_used - 1, n_used, n_used + 3, 16, n_total}) {
    auto cached = greedy(path, uint64_t(n_slots) * slot);
    ASSERT_TRUE(cached) << n_slots << " slots: " << cached.error().message();
    EXPECT_EQ(cached->n_slots, n_slots);
    EXPECT_EQ(cached->tokens, resident->tokens) << n_slots << " slots";
    ASSERT_EQ(cached->logits.size(), resident->logits.size());
    for (size_t i = 0; i < resident->logits.size(); ++i)
      ASSERT_EQ(std::memcmp(cached->logits[i].data(), resident->logits[i].data(), resident->logits[i].size() * 4), 0)
          << n_slots << " slots: logits row " << i << " differs";
    const ExpertCacheStats& s = cached->stats;
    EXPECT_GT(s.misses, 0u);
    EXPECT_GT(s.bytes_read, 0u);
    if (n_slots < n_total) EXPECT_GT(s.evictions, 0u) << n_slots << " slots";
    // All experts fit: each is read at most once (requested or guessed), and later steps hit.
    if (n_slots == n_total) {
      EXPECT_EQ(s.evictions, 0u);
      EXPECT_GT(s.hits, 0u);
      EXPECT_LE(s.misses + s.late, uint64_t(n_total));
    }
    // The next layer's guess needs this layer's experts in one group (a decode step's at least).
    if (n_slots >= n_used) EXPECT_GT(s.routed, 0u) << n_slots << " slots: the next layer's experts were never guessed";
    else EXPECT_EQ(s.guessed, 0u);
  }
}

#define MODEL_OR_SKIP(path, fn)      \
  std::string why;                   \
  const std::string path = fn(&why); \
  if (path.empty()) GTEST_SKIP() << why

TEST(ExpertForward, SameTokensAndLogitsAsAllInRamAtEveryCacheSize) {
  MODEL_OR_SKIP(path, test::tiny_deepseek_q4);
  expect_same_run(path);
}

TEST(ExpertForward, SameTokensAndLogitsFromASplitModel) {
  MODEL_OR_SKIP(path, test::tiny_deepseek_split);
  expect_same_run(path);
}

TEST(ExpertForward, SameTokensAndLogitsWithFusedGateUpExperts) {
  MODEL_OR_SKIP(path, test::tiny_deepseek_fused);
  expect_same_run(path);
}

// The llama.cpp architectures' MoE (qwen3moe, Mixtral-style: no shared experts) through the same path.
TEST(ExpertForward, SameTokensAndLogitsOnQwen3Moe) {
  std::string why;
  const std::string path = test_data::synth_model("tiny-qwen3moe", quant::FileType::F32, &why);
  if (path.empty()) GTEST_SKIP() << why;
  auto f = gguf::GgufFile::open(path);
  ASSERT_TRUE(f);
  const auto& meta = (*f)->metadata();
  auto layout = ExpertLayout::from_gguf(**f);
  ASSERT_TRUE(layout);
  const int n_used = int(*meta.get_u64("qwen3moe.expert_used_count"));
  expect_same_run(path, n_used, layout->n_experts_total());
}

TEST(ExpertForward, RefusesACacheBelowOneExpertNamingTheSlotSize) {
  MODEL_OR_SKIP(path, test::tiny_deepseek_q4);
  auto r = greedy(path, slot_bytes(path) - 1);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("--expert-cache"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find(std::to_string(slot_bytes(path))), std::string::npos) << r.error().message();
}

// Locked bytes of this process (VmLck of /proc/self/status); -1 when unreadable.
int64_t locked_bytes() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmLck:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return -1;
}

// --mlock with --expert-cache locks the cache's slots and the resident tensors (not the experts' bytes in
// the file): VmLck grows by at least the slots.
TEST(ExpertForward, MlockLocksTheCacheSlotsAndResidentTensors) {
  MODEL_OR_SKIP(path, test::tiny_deepseek_q4);
  const int64_t before = locked_bytes();
  if (before < 0) GTEST_SKIP() << "no VmLck in /proc/self/status";
  cpu::CpuBackend cpu(2);
  model::ModelLoadOptions o;
  o.expert_cache_bytes = 8 * slot_bytes(path);
  o.mlock = true;
  auto m = model::Model::load(path, o, cpu);
  ASSERT_TRUE(m) << m.error().message();
  if (!(*m)->warnings().empty()) GTEST_SKIP() << "mlock refused here: " << (*m)->warnings().front();
  EXPECT_GE(locked_bytes() - before, int64_t(8 * slot_bytes(path)));
}

// The file cut inside the last layer's experts while the model runs: steps whose experts are cached
// still run; the first that needs one past the cut fails with the file, layer and expert; no crash.
TEST(ExpertForward, FileTruncatedMidRunIsAnErrorOfTheStep) {
  MODEL_OR_SKIP(src, test::tiny_deepseek_q4);
  const std::string copy = std::string(TANDEM_BINARY_DIR) + "/expert-forward-cut." + std::to_string(getpid()) + ".gguf";
  std::filesystem::copy_file(src, copy, std::filesystem::copy_options::overwrite_existing);
  cpu::CpuBackend cpu(2);
  model::ModelLoadOptions o;
  o.expert_cache_bytes = 4 * slot_bytes(src);
  auto m = model::Model::load(copy, o, cpu);
  ASSERT_TRUE(m) << m.error().message();
  ContextOptions co;
  co.n_ctx = 64;
  auto ctx = Context::create(**m, co);
  ASSERT_TRUE(ctx) << ctx.error().message();
  const int32_t first = 100;
  ASSERT_TRUE((*ctx)->prefill(0, {&first, 1}, 0).is_ok());
  // Cut at the start of the last MoE layer's last expert tensor: every expert of that layer is gone.
  const MoeLayer& last = (*m)->expert_cache()->layout().layers().back();
  uint64_t cut = 0;
  for (const auto& t : last.tensors) cut = std::max(cut, t.file_offset);
  std::filesystem::resize_file(copy, cut);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 16; ++i) prompt.push_back(int32_t(200 + 11 * i));  // routes to experts not yet cached
  const Status s = (*ctx)->prefill(0, prompt, 1);
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), StatusCode::IoError);
  EXPECT_NE(s.message().find(copy), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("layer " + std::to_string(last.layer)), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s.message();
  std::filesystem::remove(copy);
}

}  // namespace
}  // namespace tandem::expert
