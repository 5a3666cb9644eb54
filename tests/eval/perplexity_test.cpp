// Scoring math of tandem perplexity: log-softmax, the 16-bit base rows (exact values, rounding ties),
// KL-divergence against a row, the running statistics and quantiles, all against values worked out
// here in long double or by hand.
#include "eval/perplexity.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "eval/kld_file.h"

namespace tandem::eval {
namespace {

std::vector<float> random_logits(int64_t n, uint32_t seed, float spread = 8.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, spread);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

// log softmax(logits)[i], long double.
std::vector<long double> exact_log_probs(const std::vector<float>& logits) {
  long double m = *std::max_element(logits.begin(), logits.end()), s = 0;
  for (float l : logits) s += std::exp((long double)l - m);
  std::vector<long double> out;
  for (float l : logits) out.push_back((long double)l - m - std::log(s));
  return out;
}

float row_f32(const std::vector<uint16_t>& row, size_t at) {
  float v;
  std::memcpy(&v, row.data() + at, sizeof v);
  return v;
}

TEST(Perplexity, TokenNllIsMinusLogSoftmax) {
  const std::vector<float> logits = random_logits(1000, 1);
  const auto lp = exact_log_probs(logits);
  for (int32_t t : {0, 17, 999}) EXPECT_NEAR(token_nll(logits, t), -double(lp[size_t(t)]), 2e-5) << t;
  const std::vector<float> uniform(256, 3.5f);
  EXPECT_NEAR(token_nll(uniform, 7), std::log(256.0), 1e-6);
}

TEST(Perplexity, BaseRowHoldsExactValuesAndRoundsTiesToEven) {
  // max 16, min 0: scale 16/65535; 8 sits exactly halfway between two levels (32767.5 -> 32768).
  const std::vector<float> logits = {0.f, 16.f, 8.f};
  std::vector<uint16_t> row(size_t(base_row_u16(3)));
  ASSERT_EQ(row.size(), 8u);  // 4 for the floats, 3 values, 1 padding
  const double nll = encode_base_row(logits, 2, row);
  const long double lse = std::log(1 + std::exp(16.0L) + std::exp(8.0L)) - 16.0L;
  EXPECT_NEAR(nll, double(16.0L + lse - 8.0L), 1e-5);
  EXPECT_FLOAT_EQ(row_f32(row, 0), 16.f / 65535.f);
  EXPECT_NEAR(row_f32(row, 2), double(-16.0L - lse), 1e-6);
  EXPECT_EQ(row[4], 0);
  EXPECT_EQ(row[5], 65535);
  EXPECT_EQ(row[6], 32768);
  EXPECT_EQ(row[7], 0);  // padding
}

TEST(Perplexity, BaseRowKeepsLogProbsWithinSixteenOfTheBest) {
  const std::vector<float> logits = random_logits(4097, 2, 10.f);
  std::vector<uint16_t> row(size_t(base_row_u16(4097)));
  encode_base_row(logits, 5, row);
  const auto lp = exact_log_probs(logits);
  const float scale = row_f32(row, 0), floor = row_f32(row, 2);
  const long double best = *std::max_element(lp.begin(), lp.end());
  int n_kept = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (lp[i] > best - 16) {
      ++n_kept;
      EXPECT_NEAR(base_log_prob(row, int64_t(i)), double(lp[i]), scale * 0.5 + 1e-4) << i;
    } else {
      EXPECT_EQ(row[4 + i], 0) << i;
      EXPECT_FLOAT_EQ(base_log_prob(row, int64_t(i)), floor);
    }
  }
  EXPECT_GT(n_kept, 100);
  EXPECT_LT(n_kept, 4097);
}

TEST(Perplexity, EqualLogitsGiveAZeroScale) {
  const std::vector<float> logits(10, 2.f);
  std::vector<uint16_t> row(size_t(base_row_u16(10)), 7);
  encode_base_row(logits, 0, row);
  EXPECT_EQ(row_f32(row, 0), 0.f);
  EXPECT_NEAR(row_f32(row, 2), -std::log(10.0), 1e-6);
  for (size_t i = 4; i < row.size(); ++i) EXPECT_EQ(row[i], 0);
  const KldPoint p = compare_with_base(logits, row, 3);
  EXPECT_NEAR(p.kld, 0, 1e-6);
  EXPECT_TRUE(p.same_top);
}

TEST(Perplexity, ComparingWithOwnRowGivesNearZero) {
  const std::vector<float> logits = random_logits(50000, 3);
  std::vector<uint16_t> row(size_t(base_row_u16(50000)));
  const int32_t top = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  const double nll = encode_base_row(logits, top, row);
  const KldPoint p = compare_with_base(logits, row, top);
  // Only the 16-bit grid separates them: log p off by up to half a step (16/65535/2), to first order.
  EXPECT_NEAR(p.kld, 0, 1.3e-4);
  EXPECT_TRUE(p.same_top);
  EXPECT_NEAR(p.nll, nll, 1e-4);
  EXPECT_NEAR(p.nll_base, nll, 1e-3);
  EXPECT_NEAR(p.p_diff, 0, 1e-5);
}

TEST(Perplexity, KldMatchesTheDefinitionOverTheRow) {
  const std::vector<float> base = random_logits(3000, 4, 3.f), test = random_logits(3000, 5, 3.f);
  std::vector<uint16_t> row(size_t(base_row_u16(3000)));
  encode_base_row(base, 9, row);
  const auto lq = exact_log_probs(test);
  long double kld = 0;
  int64_t top_p = 0;
  for (int64_t i = 0; i < 3000; ++i) {
    const long double lp = base_log_prob(row, i);
    if (lp > base_log_prob(row, top_p)) top_p = i;
    if (lp > -16) kld += std::exp(lp) * (lp - lq[size_t(i)]);
  }
  const KldPoint p = compare_with_base(test, row, 9);
  EXPECT_NEAR(p.kld, double(kld), 1e-5);
  EXPECT_GT(p.kld, 0.1);
  const int64_t top_q = std::max_element(test.begin(), test.end()) - test.begin();
  EXPECT_EQ(p.same_top, top_p == top_q);
  EXPECT_NEAR(p.nll, -double(lq[9]), 1e-4);
  EXPECT_NEAR(p.p_diff, std::exp(double(lq[9])) - std::exp(double(base_log_prob(row, 9))), 1e-6);
}

TEST(Perplexity, DifferentTopTokenIsCounted) {
  const std::vector<float> base = {0.f, 5.f, 1.f}, test = {0.f, 1.f, 5.f};
  std::vector<uint16_t> row(size_t(base_row_u16(3)));
  encode_base_row(base, 1, row);
  EXPECT_FALSE(compare_with_base(test, row, 1).same_top);
  EXPECT_TRUE(compare_with_base(base, row, 1).same_top);
}

TEST(Perplexity, ThreadedScoringEqualsSerial) {
  const int64_t n = 37, n_vocab = 2001;
  const std::vector<float> logits = random_logits(n * n_vocab, 6);
  std::vector<int32_t> targets(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) targets[size_t(i)] = int32_t((i * 97) % n_vocab);
  ThreadPool one(1), four(4);
  std::vector<uint16_t> rows1(size_t(n * base_row_u16(n_vocab))), rows4(rows1.size());
  const auto a = score_positions(one, logits.data(), n_vocab, targets, rows1);
  const auto b = score_positions(four, logits.data(), n_vocab, targets, rows4);
  const auto c = score_positions(four, logits.data(), n_vocab, targets, {});
  EXPECT_EQ(a, b);
  EXPECT_EQ(rows1, rows4);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_NEAR(c[size_t(i)], a[size_t(i)], 1e-5);
    EXPECT_EQ(c[size_t(i)], token_nll({logits.data() + i * n_vocab, size_t(n_vocab)}, targets[size_t(i)]));
  }
  const auto k1 = compare_positions(one, logits.data(), n_vocab, targets, rows1);
  const auto k4 = compare_positions(four, logits.data(), n_vocab, targets, rows1);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(k1[size_t(i)].kld, k4[size_t(i)].kld);
    EXPECT_NEAR(k1[size_t(i)].kld, 0, 1.3e-4);
  }
}

TEST(Perplexity, StatsFollowLlamaPerplexityFormulas) {
  PerplexityStats s;
  const std::vector<double> nll = {1.0, 2.0, 3.0, 2.0};
  for (double v : nll) s.add(v);
  EXPECT_DOUBLE_EQ(s.ppl(), std::exp(2.0));
  // mean 2, population variance 0.5, error of the mean sqrt(0.5 / 3), times ppl.
  EXPECT_NEAR(s.ppl_error(), std::sqrt(0.5 / 3) * std::exp(2.0), 1e-12);

  const MeanAndError few = mean_and_error(10, 30, 5);
  EXPECT_DOUBLE_EQ(few.mean, 2.0);
  EXPECT_EQ(few.error, 0.0);  // 10 samples or fewer: no error
  const MeanAndError many = mean_and_error(20 * 2.0, 20 * 4.5, 20);
  EXPECT_DOUBLE_EQ(many.mean, 2.0);
  EXPECT_NEAR(many.error, std::sqrt(0.5 / 19), 1e-12);
}

TEST(Perplexity, QuantilesInterpolateSortedValues) {
  std::vector<float> v(101);
  std::iota(v.begin(), v.end(), 0.f);
  std::shuffle(v.begin(), v.end(), std::mt19937(7));
  const Quantiles q = quantiles(v);
  EXPECT_EQ(q.min, 0.f);
  EXPECT_EQ(q.max, 100.f);
  EXPECT_EQ(q.median, 50.f);
  EXPECT_FLOAT_EQ(q.p900, 90.f);
  EXPECT_FLOAT_EQ(q.p999, 99.9f);
  EXPECT_FLOAT_EQ(q.p001, 0.1f);
  EXPECT_EQ(quantiles({1.f, 4.f, 2.f, 3.f}).median, 2.5f);
  EXPECT_EQ(quantiles({}).max, 0.f);
}

TEST(Perplexity, SummaryOfIdenticalModelsShowsNoDifference) {
  KldStats s;
  std::vector<float> kld, p_diff;
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> u(0.1f, 5.f);
  for (int i = 0; i < 200; ++i) {
    KldPoint p;
    p.nll = p.nll_base = u(rng);
    p.same_top = i % 4 != 0;
    s.add(p);
    kld.push_back(0.f);
    p_diff.push_back(0.f);
  }
  const KldSummary r = summarize(s, kld, p_diff);
  EXPECT_EQ(r.count, 200);
  EXPECT_NEAR(r.ppl.mean, r.ppl_base.mean, 1e-12);
  EXPECT_NEAR(r.log_ppl_ratio.mean, 0, 1e-12);
  EXPECT_NEAR(r.log_ppl_ratio.error, 0, 1e-6);
  EXPECT_NEAR(r.ppl_ratio.mean, 1, 1e-12);
  EXPECT_NEAR(r.log_ppl_correlation, 1, 1e-6);
  EXPECT_EQ(r.kld.mean, 0);
  EXPECT_EQ(r.rms_p_diff.mean, 0);
  EXPECT_DOUBLE_EQ(r.same_top.mean, 0.75);
  EXPECT_NEAR(r.same_top.error, std::sqrt(0.75 * 0.25 / 199), 1e-12);
  const KldRunning run = running(s);
  EXPECT_NEAR(run.ppl.mean, r.ppl.mean, 1e-12);
  EXPECT_DOUBLE_EQ(run.same_top.mean, 0.75);
}

}  // namespace
}  // namespace tandem::eval
