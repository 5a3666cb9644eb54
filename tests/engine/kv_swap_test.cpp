// KvSwap: a sequence's rows go to host memory and come back byte for byte into other cells (a dense
// and a latent layer, cells not consecutive), entries a later one covers go, and the capacity holds.
#include "engine/kv_swap.h"

#include <gtest/gtest.h>

#include <cstring>

#include "backend/cpu/cpu_backend.h"

namespace tandem {
namespace {

// Row bytes of (layer, K or V, cell): a pattern no two rows share.
uint8_t pattern(size_t layer, bool v, int64_t cell, size_t byte) {
  return uint8_t(layer * 97 + (v ? 53 : 0) + size_t(cell) * 31 + byte * 7);
}

struct Arrays {
  size_t layer;
  bool v;
  uint8_t* base;
  size_t row;
};

std::vector<Arrays> arrays(const KvCache& kv) {
  std::vector<Arrays> out;
  for (size_t l = 0; l < kv.n_layers(); ++l) {
    out.push_back({l, false, static_cast<uint8_t*>(kv.layer(l).k), row_bytes(kv.type_k(), kv.layer(l).row_k)});
    if (kv.layer(l).v) out.push_back({l, true, static_cast<uint8_t*>(kv.layer(l).v), row_bytes(kv.type_v(), kv.layer(l).row_v)});
  }
  return out;
}

TEST(KvSwap, RowsComeBackByteForByteIntoOtherCells) {
  cpu::CpuBackend cpu(1);
  auto kv = KvCache::create({&cpu, &cpu}, 16, {64, 576}, {64, 0}, WeightType::F16, WeightType::Q8_0);
  ASSERT_TRUE(kv.has_value()) << kv.error().message();
  // Sequences 0 and 1 interleaved: sequence 0 holds cells 0, 2, 4, 6, 8.
  Batch b;
  for (int32_t i = 0; i < 5; ++i) b.add(10 + i, i, 0, false), b.add(20 + i, i, 1, false);
  std::vector<int32_t> cells;
  ASSERT_TRUE(kv->place(b, &cells).is_ok());
  for (const Arrays& a : arrays(*kv))
    for (int64_t c = 0; c < kv->n_cells(); ++c)
      for (size_t i = 0; i < a.row; ++i) a.base[size_t(c) * a.row + i] = pattern(a.layer, a.v, c, i);

  KvSwap swap(size_t(1) << 20);
  swap.save(*kv, 0, {10, 11, 12, 13, 14});
  ASSERT_EQ(swap.n_entries(), 1u);
  EXPECT_EQ(swap.bytes_used(), 5 * kv->bytes_per_token());
  kv->remove(0);
  const KvSwap::Entry* entry = nullptr;
  EXPECT_EQ(swap.best({10, 11, 12, 99}, &entry), 3u);
  ASSERT_NE(entry, nullptr);
  // Restored as sequence 2: the freed cells 0, 2, 4 (first fit), positions 0..2 from cells 0, 2, 4.
  ASSERT_TRUE(swap.restore(*kv, entry, 2, 3).is_ok());
  EXPECT_EQ(kv->n_used(), 5 + 3);
  for (int64_t c = 0; c < kv->n_cells(); ++c) {
    if (kv->cell_seq()[c] != 2) continue;
    const int64_t from = 2 * kv->cell_pos()[c];  // where sequence 0 held that position
    for (const Arrays& a : arrays(*kv))
      for (size_t i = 0; i < a.row; ++i)
        ASSERT_EQ(a.base[size_t(c) * a.row + i], pattern(a.layer, a.v, from, i)) << "cell " << c << " layer " << a.layer;
  }
}

TEST(KvSwap, CoveredEntriesGoAndTheCapacityHolds) {
  cpu::CpuBackend cpu(1);
  auto kv = KvCache::create({&cpu}, 16, {64}, {64}, WeightType::F16, WeightType::F16);
  ASSERT_TRUE(kv.has_value());
  Batch b;
  for (int32_t i = 0; i < 8; ++i) b.add(i, i, 0, false);
  std::vector<int32_t> cells;
  ASSERT_TRUE(kv->place(b, &cells).is_ok());
  const size_t per_token = kv->bytes_per_token();
  KvSwap swap(10 * per_token);
  swap.save(*kv, 0, {0, 1, 2, 3});
  swap.save(*kv, 0, {0, 1, 2, 3, 4, 5});  // covers the first
  EXPECT_EQ(swap.n_entries(), 1u);
  swap.save(*kv, 0, {0, 1, 2, 3, 4, 5, 6, 7});  // covers it too
  EXPECT_EQ(swap.bytes_used(), 8 * per_token);
  KvSwap small(4 * per_token);
  small.save(*kv, 0, {0, 1, 2, 3, 4});  // larger than the whole store: not kept
  EXPECT_EQ(small.n_entries(), 0u);
  small.save(*kv, 0, {0, 1, 2});
  small.save(*kv, 1, {0});  // sequence 1 holds no cells: nothing whole to keep
  EXPECT_EQ(small.n_entries(), 1u);
  small.save(*kv, 0, {9, 9});  // 3 + 2 tokens do not fit: the least recently used entry goes
  const KvSwap::Entry* entry = nullptr;
  EXPECT_EQ(small.n_entries(), 1u);
  EXPECT_EQ(small.best({9, 9}, &entry), 2u);
  EXPECT_EQ(small.best({0, 1, 2}, &entry), 0u);
}

}  // namespace
}  // namespace tandem
