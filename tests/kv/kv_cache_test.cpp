// KvCache layer kinds: a latent layer (MLA, row_v 0) holds K rows only, and its bytes per token count them alone.
#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"
#include "kv/kv_cache.h"

namespace tandem {
namespace {

TEST(KvCache, LatentLayerHoldsKRowsOnly) {
  cpu::CpuBackend cpu(1);
  // Layer 0 as a dense model's (K and V of 64), layer 1 latent (rope key + latent: 576, as DeepSeek-V3).
  auto kv = KvCache::create({&cpu, &cpu}, 16, {64, 576}, {64, 0}, WeightType::F16, WeightType::Q8_0);
  ASSERT_TRUE(kv.has_value()) << kv.error().message();
  EXPECT_NE(kv->layer(0).v, nullptr);
  EXPECT_NE(kv->layer(1).k, nullptr);
  EXPECT_EQ(kv->layer(1).v, nullptr);
  EXPECT_EQ(kv->bytes_per_token(), row_bytes(WeightType::F16, 64) + row_bytes(WeightType::Q8_0, 64) +
                                       row_bytes(WeightType::F16, 576));  // V3 at f16: 1,152 bytes per layer
}

}  // namespace
}  // namespace tandem
