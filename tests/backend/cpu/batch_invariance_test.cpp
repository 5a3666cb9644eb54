// Batch invariance of the CPU matmul (issue 11): row r's output for a token has the same bits whether
// the token is alone in the call or beside others (any count, any place), at every ISA level this host
// has and for both micro-architectures' kernel choices. The batch-invariant tables must always give
// that; of the default tables, the generic level's (kernels.h).
// Attention's counterpart is in attention_test.cpp, the whole model's in tests/engine.
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/cpu_matmul.h"
#include "backend/cpu/kernels.h"
#include "ops_test_util.h"
#include "quant/quant.h"

namespace tandem::cpu {
namespace {

using WT = WeightType;

const WT kTypes[] = {WT::F32,  WT::F16,  WT::BF16, WT::Q4_0, WT::Q4_1, WT::Q5_0, WT::Q5_1,   WT::Q8_0,
                     WT::Q2_K, WT::Q3_K, WT::Q4_K, WT::Q5_K, WT::Q6_K, WT::IQ4_NL, WT::IQ4_XS};

// Token counts around every kernel hand-off: rows4 (1), the 4- and 8-token tiles, the Zen decode
// kernels' 8, the panels' and AMX's 16, cpu_matmul's 64-token blocks.
const int64_t kCounts[] = {2, 3, 4, 5, 8, 9, 15, 16, 17, 33, 70};
constexpr int64_t kMaxTokens = 70;

using test::make_matrix;
using test::Matrix;

std::vector<float> activations(int64_t n_tokens, int64_t n_in, uint32_t seed) {
  return test::random_floats(size_t(n_tokens * n_in), seed);
}

// The first token whose outputs differ in any bit from `alone` (its outputs computed one token per
// call), or -1.
int64_t first_difference(const std::vector<float>& y, const std::vector<float>& alone, int64_t n_tokens,
                         int64_t n_rows) {
  for (int64_t t = 0; t < n_tokens; ++t)
    if (std::memcmp(y.data() + t * n_rows, alone.data() + t * n_rows, size_t(n_rows) * 4) != 0) return t;
  return -1;
}

class MatmulInvariance : public ::testing::TestWithParam<std::tuple<Isa, Uarch, bool>> {};

TEST_P(MatmulInvariance, TokenOutputsDoNotDependOnTheTokenCount) {
  const auto [isa, uarch, invariant] = GetParam();
  if (!isa_supported(isa)) GTEST_SKIP() << isa_name(isa) << " not supported by this CPU/OS";
  if (!invariant && isa != Isa::Generic)
    GTEST_SKIP() << "the default tables of this level decode or prefill with kernels of their own (kernels.h)";
  const int64_t n_in = 512, n_rows = 37;  // rows: 4-row groups, a remainder, a partial 16-row panel
  const auto x = activations(kMaxTokens, n_in, 7);
  for (WT type : kTypes) {
    const Matrix w = make_matrix(type, n_in, n_rows, uint32_t(type) + 1);
    std::vector<float> alone(size_t(kMaxTokens * n_rows));
    for (int64_t t = 0; t < kMaxTokens; ++t)
      matmul_f32(isa, uarch, type, n_in, w.data.data(), w.stride(), n_rows, x.data() + t * n_in, 1,
                 alone.data() + t * n_rows, size_t(n_rows), invariant);
    for (int64_t n : kCounts) {
      std::vector<float> y(size_t(n * n_rows));
      matmul_f32(isa, uarch, type, n_in, w.data.data(), w.stride(), n_rows, x.data(), n, y.data(), size_t(n_rows),
                 invariant);
      EXPECT_EQ(first_difference(y, alone, n, n_rows), -1)
          << type_name(type) << ": a token's outputs changed with " << n << " tokens in the call";
    }
  }
}

std::string invariance_name(const ::testing::TestParamInfo<std::tuple<Isa, Uarch, bool>>& info) {
  return std::string(isa_name(std::get<0>(info.param))) + "_" + uarch_name(std::get<1>(info.param)) +
         (std::get<2>(info.param) ? "_invariant" : "_default");
}

INSTANTIATE_TEST_SUITE_P(AllLevels, MatmulInvariance,
                         ::testing::Combine(::testing::Values(Isa::Generic, Isa::Avx2, Isa::Avx512, Isa::Amx),
                                            ::testing::Values(Uarch::Intel, Uarch::Zen), ::testing::Bool()),
                         invariance_name);

// Through the threaded driver at the host's best level: thread counts (row chunks), cpu_matmul's token
// blocks and the quantization of the activations per call do not reach a token's bits.
TEST(MatmulInvariance, ThreadedDriverMatchesOneTokenCalls) {
  const int64_t n_in = 1024, n_rows = 300;
  const auto x = activations(kMaxTokens, n_in, 9);
  for (WT type : {WT::Q4_K, WT::Q6_K, WT::Q8_0, WT::Q4_0, WT::F16}) {
    const Matrix data = make_matrix(type, n_in, n_rows, 3);
    Weight w;
    w.type = type;
    w.shape = {n_rows, n_in};
    w.data = data.data.data();
    w.row_stride = data.stride();
    std::vector<uint8_t> scratch;
    ThreadPool one(1), three(3);
    std::vector<float> alone(size_t(kMaxTokens * n_rows));
    for (int64_t t = 0; t < kMaxTokens; ++t)
      cpu_matmul(one, w, x.data() + t * n_in, 1, alone.data() + t * n_rows, scratch, true);
    for (int64_t n : {int64_t(16), kMaxTokens}) {
      std::vector<float> y(size_t(n * n_rows));
      cpu_matmul(three, w, x.data(), n, y.data(), scratch, true);
      EXPECT_EQ(first_difference(y, alone, n, n_rows), -1) << type_name(type) << ", " << n << " tokens";
    }
  }
}

}  // namespace
}  // namespace tandem::cpu
