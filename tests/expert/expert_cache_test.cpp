// The expert cache against the normal loader: every expert's bytes at every cache size, eviction under
// pressure, truncated files, prefetch overlap, split models. Models: the tiny-deepseek-v3 synth preset.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "expert/expert_cache.h"
#include "gguf/gguf_file.h"
#include "expert_models.h"

namespace tandem::expert {
namespace {

// tiny-deepseek-v3 in Q4_K_M (expert_models.h): 3 MoE layers of 16 experts, Q4_K/Q6_K slices whose file
// offsets are not 4 KiB aligned; with `split`, in 5 parts.
std::string model_path(bool split, std::string* why) {
  return split ? test::tiny_deepseek_split(why) : test::tiny_deepseek_q4(why);
}

struct Model {
  std::unique_ptr<gguf::GgufFile> file;
  ExpertLayout layout;
};

std::unique_ptr<Model> open_model(bool split = false) {
  std::string why;
  const std::string path = model_path(split, &why);
  if (path.empty()) return nullptr;
  auto f = gguf::GgufFile::open(path);
  EXPECT_TRUE(f) << f.error().message();
  if (!f) return nullptr;
  auto m = std::make_unique<Model>();
  m->file = std::move(*f);
  auto l = ExpertLayout::from_gguf(*m->file);
  EXPECT_TRUE(l) << l.error().message();
  if (!l) return nullptr;
  m->layout = std::move(*l);
  return m;
}

#define OPEN_MODEL_OR_SKIP(m, ...)                                  \
  auto m = open_model(__VA_ARGS__);                                 \
  if (!m) GTEST_SKIP() << "tiny-deepseek-v3 synth model unavailable (its vocabulary: scripts/fetch-test-data.sh)"

// The expert's bytes as the normal loader maps them.
std::span<const uint8_t> loader_slice(const gguf::GgufFile& f, const ExpertTensor& t, int expert) {
  const gguf::TensorInfo* info = f.find(t.name);
  return {info->data + uint64_t(expert) * t.expert_bytes, t.expert_bytes};
}

void expect_same_bytes(const Model& m, const MoeLayer& l, int e, const ExpertView& v) {
  ASSERT_EQ(v.slices.size(), l.tensors.size());
  for (size_t t = 0; t < l.tensors.size(); ++t) {
    const auto want = loader_slice(*m.file, l.tensors[t], e);
    ASSERT_EQ(v.slices[t].size(), want.size());
    EXPECT_EQ(std::memcmp(v.slices[t].data(), want.data(), want.size()), 0)
        << l.tensors[t].name << " expert " << e;
  }
}

TEST(ExpertLayout, FindsEveryMoeLayersExpertTensors) {
  OPEN_MODEL_OR_SKIP(m);
  ASSERT_EQ(m->layout.layers().size(), 3u);  // layer 0 is dense (n_dense_lead = 1)
  for (const auto& l : m->layout.layers()) {
    EXPECT_GE(l.layer, 1);
    EXPECT_EQ(l.n_expert, 16);
    ASSERT_EQ(l.tensors.size(), 3u);
    EXPECT_NE(l.tensors[0].name.find("ffn_down_exps"), std::string::npos);
    for (const auto& t : l.tensors) EXPECT_EQ(t.expert_bytes * 16, m->file->find(t.name)->size_bytes);
  }
  EXPECT_EQ(m->layout.n_experts_total(), 48);
}

TEST(ExpertLayout, LeavesOutALayerWhoseExpertsAnOffloadDeviceHolds) {
  OPEN_MODEL_OR_SKIP(m);
  // One of layer 2's three expert tensors offloaded: the whole layer is left out, the others stay.
  auto l = ExpertLayout::from_gguf(*m->file, {"blk.2.ffn_up_exps.weight", "blk.2.attn_q_a.weight"});
  ASSERT_TRUE(l) << l.error().message();
  ASSERT_EQ(l->layers().size(), 2u);
  EXPECT_EQ(l->layers()[0].layer, 1);
  EXPECT_EQ(l->layers()[1].layer, 3);
  EXPECT_EQ(l->find(2), nullptr);
  EXPECT_FALSE(l->is_expert_tensor("blk.2.ffn_down_exps.weight"));
  EXPECT_EQ(l->n_experts_total(), 32);
}

// Every expert, acquired in a shuffled order (three passes), is byte-identical to the loader's slices at
// cache sizes from one slot to all experts, both policies, direct and buffered reads.
TEST(ExpertCache, EveryExpertMatchesTheLoaderAtEveryCacheSize) {
  OPEN_MODEL_OR_SKIP(m);
  const int n_total = m->layout.n_experts_total();
  std::vector<std::pair<int, int>> order;
  for (const auto& l : m->layout.layers())
    for (int e = 0; e < l.n_expert; ++e) order.push_back({l.layer, e});
  std::mt19937 rng(7);
  for (int slots : {1, 2, 5, n_total / 4, n_total / 2, n_total})
    for (PolicyKind policy : {PolicyKind::Lru, PolicyKind::LfuDecay})
      // O_DIRECT + io_uring; buffered + io_uring with one read in flight at a time; O_DIRECT + pread
      for (int mode = 0; mode < 3; ++mode) {
        const bool direct = mode != 1;
        SCOPED_TRACE(std::to_string(slots) + " slots, " + policy_name(policy) + ", mode " + std::to_string(mode));
        ExpertCacheOptions o;
        o.io_uring = mode != 2;
        if (mode == 1) o.queue_depth = 1;
        o.budget_bytes = uint64_t(slots) * expert_slot_bytes(m->layout);
        o.policy = policy;
        o.direct = direct;
        auto c = ExpertCache::open(m->layout, o);
        ASSERT_TRUE(c) << c.error().message();
        ASSERT_EQ((*c)->n_slots(), slots);
        if (mode == 0 && slots == 1 && policy == PolicyKind::Lru)
          std::printf("direct reads: %s\n", (*c)->direct() ? "O_DIRECT" : (*c)->warning().c_str());
        for (int pass = 0; pass < 3; ++pass) {
          std::shuffle(order.begin(), order.end(), rng);
          for (auto [layer, e] : order) {
            auto v = (*c)->acquire(layer, e);
            ASSERT_TRUE(v) << v.error().message();
            expect_same_bytes(*m, *m->layout.find(layer), e, *v);
            (*c)->release(layer, e);
          }
        }
        const auto& s = (*c)->stats();
        EXPECT_EQ(s.hits + s.late + s.misses, uint64_t(3 * n_total));
        if (slots == n_total) {
          EXPECT_EQ(s.misses, uint64_t(n_total));  // after the first pass, all hits
        }
        EXPECT_EQ(s.late, 0u);  // acquire alone never finds a read in flight
        EXPECT_GE(s.bytes_read, s.misses * m->layout.layers()[0].expert_bytes());
      }
}

// Pinned experts are never evicted; a full cache of pinned experts refuses, releasing one makes room
// and the others keep their bytes where they were (eviction moves nothing).
TEST(ExpertCache, EvictsOnlyUnpinnedExpertsUnderPressure) {
  OPEN_MODEL_OR_SKIP(m);
  const MoeLayer& l = m->layout.layers()[1];
  ExpertCacheOptions o;
  o.budget_bytes = 4 * expert_slot_bytes(m->layout);
  auto c = ExpertCache::open(m->layout, o);
  ASSERT_TRUE(c) << c.error().message();
  std::vector<ExpertView> views;
  for (int e = 0; e < 4; ++e) {
    auto v = (*c)->acquire(l.layer, e);
    ASSERT_TRUE(v) << v.error().message();
    views.push_back(*v);
  }
  auto full = (*c)->acquire(l.layer, 9);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code(), StatusCode::OutOfMemory);
  EXPECT_NE(full.error().message().find("expert 9"), std::string::npos) << full.error().message();
  (*c)->release(l.layer, 2);
  auto v9 = (*c)->acquire(l.layer, 9);
  ASSERT_TRUE(v9) << v9.error().message();
  expect_same_bytes(*m, l, 9, *v9);
  EXPECT_EQ((*c)->stats().evictions, 1u);
  EXPECT_FALSE((*c)->is_resident(l.layer, 2));
  for (int e : {0, 1, 3}) {
    EXPECT_TRUE((*c)->is_resident(l.layer, e));
    expect_same_bytes(*m, l, e, views[size_t(e)]);  // the views taken before the eviction
  }
}

// A model file cut short after the index was read: the experts past the cut are errors naming the file,
// layer and expert; those before it still load; nothing crashes.
TEST(ExpertCache, TruncatedFileIsAnErrorNamingFileLayerAndExpert) {
  OPEN_MODEL_OR_SKIP(m);
  const ExpertTensor* last = nullptr;  // the expert tensor that ends last in the file
  const MoeLayer* last_layer = nullptr;
  for (const auto& l : m->layout.layers())
    for (const auto& t : l.tensors)
      if (!last || t.file_offset > last->file_offset) last = &t, last_layer = &l;
  const std::string copy = std::string(TANDEM_BINARY_DIR) + "/expert-truncated." + std::to_string(getpid()) + ".gguf";
  std::filesystem::copy_file(m->layout.paths()[0], copy, std::filesystem::copy_options::overwrite_existing);
  const uint64_t cut = last->file_offset + 8 * last->expert_bytes + last->expert_bytes / 2;  // mid expert 8
  std::filesystem::resize_file(copy, cut);
  for (int mode = 0; mode < 3; ++mode) {  // O_DIRECT + io_uring, buffered + io_uring, O_DIRECT + pread
    ExpertCacheOptions o;
    o.budget_bytes = 4 * expert_slot_bytes(m->layout);
    o.direct = mode != 1;
    o.io_uring = mode != 2;
    o.paths = {copy};
    auto c = ExpertCache::open(m->layout, o);
    ASSERT_TRUE(c) << c.error().message();
    auto ok = (*c)->acquire(last_layer->layer, 7);
    ASSERT_TRUE(ok) << ok.error().message();
    expect_same_bytes(*m, *last_layer, 7, *ok);
    (*c)->release(last_layer->layer, 7);
    for (int e : {8, 12}) {
      auto bad = (*c)->acquire(last_layer->layer, e);
      ASSERT_FALSE(bad);
      const std::string& msg = bad.error().message();
      EXPECT_EQ(bad.error().code(), StatusCode::IoError);
      EXPECT_NE(msg.find(copy), std::string::npos) << msg;
      EXPECT_NE(msg.find("layer " + std::to_string(last_layer->layer) + " expert " + std::to_string(e)),
                std::string::npos) << msg;
      EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
    }
    // A prefetched expert past the cut reports the same at its acquire.
    const int32_t twelve = 12;
    ASSERT_TRUE((*c)->prefetch(last_layer->layer, {&twelve, 1}).is_ok());
    EXPECT_FALSE((*c)->acquire(last_layer->layer, 12));
  }
  std::filesystem::remove(copy);
}

// Reads started by prefetch run while the caller does other work: once they have finished, acquire finds
// the experts ready and waits for nothing.
TEST(ExpertCache, AcquireAfterAFinishedPrefetchDoesNotWait) {
  OPEN_MODEL_OR_SKIP(m);
  const MoeLayer& l = m->layout.layers()[0];
  ExpertCacheOptions o;
  o.budget_bytes = 8 * expert_slot_bytes(m->layout);
  auto c = ExpertCache::open(m->layout, o);
  ASSERT_TRUE(c) << c.error().message();
  const std::vector<int32_t> experts = {3, 5, 11, 14};
  ASSERT_TRUE((*c)->prefetch(l.layer, experts).is_ok());
  for (;;) {  // the caller's "attention": here, just reaping until the reads are done
    auto left = (*c)->poll();
    ASSERT_TRUE(left) << left.error().message();
    if (*left == 0) break;
  }
  for (int32_t e : experts) {
    auto v = (*c)->acquire(l.layer, e);
    ASSERT_TRUE(v) << v.error().message();
    expect_same_bytes(*m, l, e, *v);
  }
  const auto& s = (*c)->stats();
  EXPECT_EQ(s.hits, 4u);
  EXPECT_EQ(s.late + s.misses, 0u);
  EXPECT_EQ(s.wait_us, 0u);
  EXPECT_GE(s.bytes_read, 4 * l.expert_bytes());
  // Prefetch then acquire at once: every acquire is a hit or a late one, never a miss.
  const std::vector<int32_t> more = {0, 1};
  ASSERT_TRUE((*c)->prefetch(l.layer, more).is_ok());
  for (int32_t e : more) ASSERT_TRUE((*c)->acquire(l.layer, e));
  EXPECT_EQ(s.hits + s.late, 6u);
  EXPECT_EQ(s.misses, 0u);
}

TEST(ExpertCache, ReadsEveryPartOfASplitModel) {
  OPEN_MODEL_OR_SKIP(m, true);
  ASSERT_EQ(m->layout.paths().size(), 5u);
  uint32_t max_part = 0;
  for (const auto& l : m->layout.layers())
    for (const auto& t : l.tensors) max_part = std::max(max_part, t.part);
  EXPECT_GT(max_part, 0u);
  ExpertCacheOptions o;
  o.budget_bytes = 3 * expert_slot_bytes(m->layout);
  auto c = ExpertCache::open(m->layout, o);
  ASSERT_TRUE(c) << c.error().message();
  for (const auto& l : m->layout.layers())
    for (int e = 0; e < l.n_expert; ++e) {
      auto v = (*c)->acquire(l.layer, e);
      ASSERT_TRUE(v) << v.error().message();
      expect_same_bytes(*m, l, e, *v);
      (*c)->release(l.layer, e);
    }
}

TEST(ExpertCache, RefusesABudgetBelowOneExpertAndUnknownExperts) {
  OPEN_MODEL_OR_SKIP(m);
  ExpertCacheOptions o;
  o.budget_bytes = expert_slot_bytes(m->layout) - 1;
  auto none = ExpertCache::open(m->layout, o);
  ASSERT_FALSE(none);
  EXPECT_NE(none.error().message().find("holds no expert"), std::string::npos);
  o.budget_bytes = expert_slot_bytes(m->layout);
  auto c = ExpertCache::open(m->layout, o);
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_FALSE((*c)->acquire(0, 0));   // layer 0 is dense
  EXPECT_FALSE((*c)->acquire(1, 16));  // 16 experts: 0..15
}

}  // namespace
}  // namespace tandem::expert
