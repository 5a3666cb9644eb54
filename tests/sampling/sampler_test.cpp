// Sampler and its stages on crafted logits: each stage's effect, the chain's order, penalties and their
// window, logit bias, seeding and determinism, the draw's distribution, parameter validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "sampling/candidates.h"
#include "sampling/sampler.h"

namespace tandem::sampling {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Logits whose softmax is exactly proportional to `probs`.
std::vector<float> logits_for(const std::vector<float>& probs) {
  std::vector<float> l;
  for (float p : probs) l.push_back(std::log(p));
  return l;
}

// Every stage off, temperature 1, fixed seed: the chain is a plain softmax draw.
SamplerParams plain() {
  SamplerParams p;
  p.seed = 42;
  p.temp = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.typical_p = 1.0f;
  return p;
}

Sampler make(const SamplerParams& p, int32_t n_vocab = 0) {
  auto s = Sampler::create(p, n_vocab);
  EXPECT_TRUE(s.has_value()) << s.status().message();
  return std::move(s).value();
}

std::set<int32_t> ids(std::span<const Candidate> c) {
  std::set<int32_t> out;
  for (const Candidate& x : c) out.insert(x.id);
  return out;
}

std::vector<float> random_logits(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> l(n);
  for (float& x : l) x = d(rng);
  return l;
}

// The candidates' logits by id, for checking what bias and penalties did (all other stages off).
float logit_of(const Sampler& s, int32_t id) {
  for (const Candidate& c : s.candidates())
    if (c.id == id) return c.logit;
  ADD_FAILURE() << "token " << id << " not among the candidates";
  return 0.0f;
}

TEST(SamplingStages, TopKKeepsTheKBestSorted) {
  CandidateList c;
  const std::vector<float> l = {1.0f, 5.0f, 3.0f, 4.0f, 2.0f};
  c.assign(l);
  apply_top_k(c, 2);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].id, 1);
  EXPECT_EQ(c[1].id, 3);
  EXPECT_TRUE(c.sorted());
  apply_top_k(c, 0);  // off
  EXPECT_EQ(c.size(), 2u);
}

TEST(SamplingStages, HeapTopKMatchesFullSelectionIncludingTies) {
  std::vector<float> l = random_logits(5000, 7);
  for (size_t i = 0; i < l.size(); i += 50) l[i] = 4.0f;  // many ties across the cut
  for (size_t k : {1u, 40u, 150u}) {
    CandidateList heap, full;
    heap.assign_top_k(l, k);
    full.assign(l);
    apply_top_k(full, static_cast<int32_t>(k));
    ASSERT_EQ(heap.size(), k);
    ASSERT_EQ(full.size(), k);
    for (size_t i = 0; i < k; ++i) {
      EXPECT_EQ(heap[i].id, full[i].id) << "k=" << k << " i=" << i;
      if (i > 0) {
        EXPECT_TRUE(ranks_before(heap[i - 1], heap[i]));
      }
    }
  }
}

TEST(SamplingStages, TopPKeepsSmallestSetReachingP) {
  const std::vector<float> l = logits_for({0.15f, 0.5f, 0.05f, 0.3f});
  CandidateList c;
  c.assign(l);
  apply_top_p(c, 0.75f, 0);
  EXPECT_EQ(ids(c.view()), (std::set<int32_t>{1, 3}));
  c.assign(l);
  apply_top_p(c, 0.85f, 0);
  EXPECT_EQ(ids(c.view()), (std::set<int32_t>{1, 3, 0}));
  c.assign(l);
  apply_top_p(c, 0.0f, 0);  // smallest set is the single best token
  EXPECT_EQ(ids(c.view()), (std::set<int32_t>{1}));
  c.assign(l);
  apply_top_p(c, 0.4f, 3);  // min_keep wins over p
  EXPECT_EQ(c.size(), 3u);
}

TEST(SamplingStages, TopPOnLongListSortsPastTheFirstChunkWhenNeeded) {
  // 3000 near-flat logits: the nucleus needs far more than the 256 sorted first.
  std::vector<float> l(3000);
  std::mt19937 rng(3);
  for (size_t i = 0; i < l.size(); ++i) l[i] = -0.0005f * static_cast<float>(i);
  std::shuffle(l.begin(), l.end(), rng);
  CandidateList c;
  c.assign(l);
  apply_top_p(c, 0.6f, 0);
  ASSERT_TRUE(c.sorted());
  ASSERT_GT(c.size(), 256u);
  double cum = 0.0;
  for (size_t i = 0; i < c.size(); ++i) {
    if (i > 0) {
      ASSERT_TRUE(ranks_before(c[i - 1], c[i]));
    }
    cum += c[i].p;
    if (i + 1 < c.size()) {
      ASSERT_LT(cum, 0.6 + 1e-4) << "set is not the smallest";
    }
  }
  EXPECT_GE(cum, 0.6 - 1e-4);
  // The kept set is exactly the best c.size() logits.
  std::vector<float> sorted = l;
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  EXPECT_EQ(c[c.size() - 1].logit, sorted[c.size() - 1]);
}

TEST(SamplingStages, MinPThresholdIsRelativeToTheBest) {
  const std::vector<float> l = logits_for({0.15f, 0.5f, 0.05f, 0.3f});
  CandidateList c;
  c.assign(l);  // unsorted path
  apply_min_p(c, 0.2f, 0);  // keeps p >= 0.1
  EXPECT_EQ(ids(c.view()), (std::set<int32_t>{0, 1, 3}));
  c.assign(l);
  c.sort_all();  // sorted path, same answer
  apply_min_p(c, 0.2f, 0);
  EXPECT_EQ(ids(c.view()), (std::set<int32_t>{0, 1, 3}));
  c.assign(l);
  apply_min_p(c, 0.9f, 0);
  EXPECT_EQ(ids(c.view()), (std::set<int32_t>{1}));
  c.assign(l);
  apply_min_p(c, 0.9f, 3);  // tops up with the next best
  EXPECT_EQ(ids(c.view()), (std::set<int32_t>{0, 1, 3}));
}

TEST(SamplingStages, TypicalKeepsTokensNearTheEntropyAndMayDropTheBest) {
  // H = 1.2799 nats; |surprise - H|: id0 0.364, id1 0.076, id2 0.329, id3 1.023.
  const std::vector<float> l = logits_for({0.4f, 0.3f, 0.2f, 0.1f});
  CandidateList c;
  c.assign(l);
  apply_typical(c, 0.45f, 0);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].id, 1);
  EXPECT_EQ(c[1].id, 2);
  EXPECT_FALSE(c.sorted());
  c.assign(l);
  apply_typical(c, 0.85f, 0);
  EXPECT_EQ(ids(c.view()), (std::set<int32_t>{0, 1, 2}));
  c.assign(l);
  apply_typical(c, 1.0f, 0);  // off
  EXPECT_EQ(c.size(), 4u);
}

TEST(SamplingStages, TemperatureScalesOrKeepsOnlyTheBest) {
  const std::vector<float> l = {1.0f, 4.0f, -2.0f, 4.0f};
  CandidateList c;
  c.assign(l);
  apply_temperature(c, 2.0f);
  EXPECT_FLOAT_EQ(c[0].logit, 0.5f);
  EXPECT_FLOAT_EQ(c[2].logit, -1.0f);
  c.assign(l);
  apply_temperature(c, 0.0f);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].id, 1);  // first of two equal bests
}

TEST(SamplingStages, DrawNeverPicksZeroProbabilityAndNormalizes) {
  CandidateList c;
  std::mt19937 rng(1);
  const std::vector<float> l = {-kInf, 0.0f, -kInf, 1.0f};
  for (int i = 0; i < 200; ++i) {
    c.assign(l);
    const size_t k = draw(c, rng);
    EXPECT_TRUE(c[k].id == 1 || c[k].id == 3);
    float sum = 0.0f;
    for (const Candidate& x : c.view()) sum += x.p;
    EXPECT_NEAR(sum, 1.0f, 1e-6f);
  }
}

TEST(Sampler, GreedyIsArgmax) {
  SamplerParams p;  // llama.cpp defaults but temp 0
  p.temp = 0.0f;
  Sampler s = make(p);
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const std::vector<float> l = random_logits(1000, seed);
    const int32_t want = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
    EXPECT_EQ(s.sample(l), want);
  }
  const std::vector<float> nan_first = {std::nanf(""), 1.0f, 3.0f, 3.0f};
  EXPECT_EQ(s.sample(nan_first), 2);  // NaN never wins; first of equal bests
}

// argmax against the plain scan it replaced (first index whose logit beats every earlier one): lengths around its
// 16-lane vectors and 256-logit blocks, ties across blocks, NaN and -inf anywhere, signed zeros.
TEST(Sampler, ArgmaxIsTheFirstLargestLogitLikeAPlainScan) {
  auto scan = [](const std::vector<float>& l) {
    size_t best = 0;
    float b = std::isnan(l[0]) ? -kInf : l[0];
    for (size_t i = 1; i < l.size(); ++i)
      if (l[i] > b) best = i, b = l[i];
    return best;
  };
  std::mt19937 rng(7);
  for (size_t n : {1, 2, 15, 16, 17, 255, 256, 257, 1000, 4096, 262144}) {
    for (int variant = 0; variant < 6; ++variant) {
      std::vector<float> l = random_logits(n, uint32_t(n * 10 + variant));
      if (variant == 1) for (float& x : l) x = std::round(x);            // many ties, across blocks
      if (variant == 2) for (size_t i = 0; i < n; i += 3) l[i] = std::nanf("");
      if (variant == 3) std::fill(l.begin(), l.end(), -kInf);
      if (variant == 4) std::fill(l.begin(), l.end(), std::nanf(""));
      if (variant == 5) { std::fill(l.begin(), l.end(), -0.0f); l[rng() % n] = 0.0f; }
      EXPECT_EQ(argmax(l), scan(l)) << "n " << n << " variant " << variant;
    }
  }
}

TEST(Sampler, GreedyWithTypicalFollowsTheChainLikeLlamaCpp) {
  SamplerParams p = plain();
  p.temp = 0.0f;
  p.typical_p = 0.45f;
  Sampler s = make(p);
  EXPECT_EQ(s.sample(logits_for({0.4f, 0.3f, 0.2f, 0.1f})), 1);  // typical removed the argmax
}

TEST(Sampler, LogitBiasAddsAndMinusInfinityBans) {
  SamplerParams p = plain();
  p.temp = 0.0f;
  p.logit_bias = {{2, -kInf}};
  Sampler s = make(p);
  EXPECT_EQ(s.sample(std::vector<float>{1.0f, 2.0f, 9.0f, 3.0f}), 3);
  p.logit_bias = {{0, 5.0f}, {99, 1.0f}};  // 99 is past this vocabulary: ignored
  Sampler t = make(p);
  EXPECT_EQ(t.sample(std::vector<float>{1.0f, 2.0f, 5.5f, 3.0f}), 0);

  // A banned token is never drawn, whatever the seed.
  SamplerParams q = plain();
  q.logit_bias = {{1, -kInf}};
  Sampler u = make(q);
  for (int i = 0; i < 2000; ++i) EXPECT_NE(u.sample(std::vector<float>{0.0f, 3.0f, 0.0f}), 1);
}

TEST(Sampler, RepeatPenaltyDividesPositiveAndMultipliesNegative) {
  SamplerParams p = plain();
  p.repeat_penalty = 1.5f;
  Sampler s = make(p);
  s.accept(0);
  s.accept(2);
  s.sample(std::vector<float>{2.0f, 1.0f, -1.0f, -3.0f});
  EXPECT_FLOAT_EQ(logit_of(s, 0), 2.0f / 1.5f);
  EXPECT_FLOAT_EQ(logit_of(s, 1), 1.0f);
  EXPECT_FLOAT_EQ(logit_of(s, 2), -1.5f);
  EXPECT_FLOAT_EQ(logit_of(s, 3), -3.0f);
}

TEST(Sampler, FrequencyAndPresencePenaltiesCountOccurrences) {
  SamplerParams p = plain();
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  Sampler s = make(p);
  for (int32_t t : {1, 1, 1, 2}) s.accept(t);
  s.sample(std::vector<float>{0.0f, 0.0f, 0.0f, 0.0f});
  EXPECT_FLOAT_EQ(logit_of(s, 0), 0.0f);
  EXPECT_FLOAT_EQ(logit_of(s, 1), -(3 * 0.5f + 0.25f));
  EXPECT_FLOAT_EQ(logit_of(s, 2), -(0.5f + 0.25f));
}

TEST(Sampler, PenaltyWindowEvictsTheOldestAndResetEmptiesIt) {
  SamplerParams p = plain();
  p.presence_penalty = 1.0f;
  p.frequency_penalty = 1.0f;
  p.repeat_last_n = 3;
  Sampler s = make(p);
  for (int32_t t : {0, 1, 1, 2}) s.accept(t);  // window {1, 1, 2}: token 0 evicted
  const std::vector<float> zeros(4, 0.0f);
  s.sample(zeros);
  EXPECT_FLOAT_EQ(logit_of(s, 0), 0.0f);
  EXPECT_FLOAT_EQ(logit_of(s, 1), -3.0f);
  EXPECT_FLOAT_EQ(logit_of(s, 2), -2.0f);
  s.accept(3);  // window {1, 2, 3}
  s.sample(zeros);
  EXPECT_FLOAT_EQ(logit_of(s, 1), -2.0f);
  EXPECT_FLOAT_EQ(logit_of(s, 3), -2.0f);
  s.reset();
  s.sample(zeros);
  for (int32_t t = 0; t < 4; ++t) EXPECT_FLOAT_EQ(logit_of(s, t), 0.0f);

  p.repeat_last_n = 0;  // off: accept() changes nothing
  Sampler off = make(p);
  off.accept(1);
  off.sample(zeros);
  EXPECT_FLOAT_EQ(logit_of(off, 1), 0.0f);
}

TEST(Sampler, BiasComesBeforePenalties) {
  SamplerParams p = plain();
  p.logit_bias = {{0, -2.0f}};
  p.repeat_penalty = 2.0f;
  Sampler s = make(p);
  s.accept(0);
  s.sample(std::vector<float>{1.0f, 0.0f});
  EXPECT_FLOAT_EQ(logit_of(s, 0), -2.0f);  // (1 - 2) * 2; penalty first would give 1/2 - 2
}

TEST(Sampler, TopKComesBeforeTopP) {
  SamplerParams p = plain();
  p.top_k = 2;
  p.top_p = 0.5f;  // on the renormalized top 2 {0.571, 0.429} one token suffices; on all four, two
  Sampler s = make(p);
  s.sample(logits_for({0.4f, 0.3f, 0.2f, 0.1f}));
  EXPECT_EQ(ids(s.candidates()), (std::set<int32_t>{0}));
}

TEST(Sampler, TemperatureComesAfterTheFilters) {
  SamplerParams p = plain();
  p.min_p = 0.2f;
  p.temp = 10.0f;  // applied first it would flatten the distribution and let id2 through
  Sampler s = make(p);
  s.sample(logits_for({0.15f, 0.5f, 0.05f, 0.3f}));
  EXPECT_EQ(ids(s.candidates()), (std::set<int32_t>{0, 1, 3}));
}

TEST(Sampler, DefaultChainKeepsAtMostTopKAndProbabilitiesSumToOne) {
  Sampler s = make([] {
    SamplerParams p;
    p.seed = 5;
    p.min_p = 0.0f;
    p.top_p = 1.0f;
    return p;
  }());
  const std::vector<float> l = random_logits(262144, 11);
  const int32_t tok = s.sample(l);
  EXPECT_EQ(s.candidates().size(), 40u);
  std::vector<float> sorted = l;
  std::nth_element(sorted.begin(), sorted.begin() + 39, sorted.end(), std::greater<float>());
  EXPECT_GE(l[tok], sorted[39]);
  double sum = 0.0;
  for (const Candidate& c : s.candidates()) sum += c.p;
  EXPECT_NEAR(sum, 1.0, 1e-5);
  std::vector<TokenProb> top;
  s.top_probs(5, &top);
  ASSERT_EQ(top.size(), 5u);
  for (size_t i = 1; i < top.size(); ++i) EXPECT_GE(top[i - 1].p, top[i].p);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedsDiffer) {
  SamplerParams p;  // llama.cpp defaults
  p.seed = 1234;
  p.repeat_penalty = 1.1f;
  auto run = [&](uint32_t seed) {
    p.seed = seed;
    Sampler s = make(p);
    std::vector<int32_t> out;
    for (uint32_t i = 0; i < 300; ++i) {
      std::vector<float> l = random_logits(512, i);
      for (float& x : l) x *= 0.3f;  // flat enough that draws matter
      out.push_back(s.sample(l));
      s.accept(out.back());
    }
    return out;
  };
  const std::vector<int32_t> a = run(1234);
  EXPECT_EQ(a, run(1234));
  EXPECT_NE(a, run(1235));

  p.seed = 77;
  Sampler s = make(p);
  EXPECT_EQ(s.seed(), 77u);
  const std::vector<float> l = random_logits(64, 0);
  std::vector<int32_t> first, again;
  for (int i = 0; i < 50; ++i) first.push_back(s.sample(l));
  s.reset();
  for (int i = 0; i < 50; ++i) again.push_back(s.sample(l));
  EXPECT_EQ(first, again);
}

TEST(Sampler, DefaultSeedIsRandom) {
  SamplerParams p;
  ASSERT_EQ(p.seed, kDefaultSeed);
  std::set<uint32_t> seeds;
  for (int i = 0; i < 4; ++i) seeds.insert(make(p).seed());
  EXPECT_GT(seeds.size(), 1u);  // four equal 32-bit random seeds: chance 2^-96
}

TEST(Sampler, DrawFrequenciesMatchSoftmax) {
  // 100,000 draws with a fixed seed: each frequency within 5 standard errors (<= 0.0079 here).
  const std::vector<float> probs = {0.5f, 0.25f, 0.15f, 0.1f};
  for (float temp : {1.0f, 2.0f}) {
    SamplerParams p = plain();
    p.temp = temp;
    p.seed = 2024;
    Sampler s = make(p);
    const std::vector<float> l = logits_for(probs);
    std::vector<double> want(probs.size());
    double z = 0.0;
    for (size_t i = 0; i < probs.size(); ++i) z += want[i] = std::pow(probs[i], 1.0 / temp);
    constexpr int kDraws = 100000;
    std::vector<int> hits(probs.size(), 0);
    for (int i = 0; i < kDraws; ++i) ++hits[s.sample(l)];
    for (size_t i = 0; i < probs.size(); ++i) {
      const double q = want[i] / z;
      const double sigma = std::sqrt(q * (1 - q) / kDraws);
      EXPECT_NEAR(hits[i] / double(kDraws), q, 5 * sigma) << "temp " << temp << " token " << i;
    }
  }
}

TEST(Sampler, AllTokensBannedStillReturnsAToken) {
  SamplerParams p = plain();
  p.logit_bias = {{0, -kInf}, {1, -kInf}};
  Sampler s = make(p);
  const int32_t t = s.sample(std::vector<float>{0.0f, 1.0f});
  EXPECT_TRUE(t == 0 || t == 1);
}

TEST(Sampler, FullVocabTopProbsIsTheUnfilteredSoftmax) {
  std::vector<TokenProb> out;
  full_vocab_top_probs(logits_for({0.1f, 0.6f, 0.3f}), 2, &out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].id, 1);
  EXPECT_NEAR(out[0].p, 0.6f, 1e-6f);
  EXPECT_EQ(out[1].id, 2);
  EXPECT_NEAR(out[1].p, 0.3f, 1e-6f);
}

TEST(Sampler, RejectsNonsenseParameters) {
  struct Case {
    const char* field;
    void (*edit)(SamplerParams&);
  };
  const Case cases[] = {
      {"temp", [](SamplerParams& p) { p.temp = std::nanf(""); }},
      {"temp", [](SamplerParams& p) { p.temp = kInf; }},
      {"top_k", [](SamplerParams& p) { p.top_k = -2; }},
      {"top_p", [](SamplerParams& p) { p.top_p = 1.5f; }},
      {"top_p", [](SamplerParams& p) { p.top_p = -0.1f; }},
      {"min_p", [](SamplerParams& p) { p.min_p = std::nanf(""); }},
      {"typical_p", [](SamplerParams& p) { p.typical_p = 2.0f; }},
      {"repeat_last_n", [](SamplerParams& p) { p.repeat_last_n = -1; }},
      {"repeat_penalty", [](SamplerParams& p) { p.repeat_penalty = 0.0f; }},
      {"repeat_penalty", [](SamplerParams& p) { p.repeat_penalty = 1e-40f; }},
      {"frequency_penalty", [](SamplerParams& p) { p.frequency_penalty = kInf; }},
      {"presence_penalty", [](SamplerParams& p) { p.presence_penalty = std::nanf(""); }},
      {"n_probs", [](SamplerParams& p) { p.n_probs = -1; }},
      {"min_keep", [](SamplerParams& p) { p.min_keep = -3; }},
      {"logit_bias token -1", [](SamplerParams& p) { p.logit_bias[-1] = 1.0f; }},
      {"logit_bias token 1000", [](SamplerParams& p) { p.logit_bias[1000] = 1.0f; }},
      {"logit_bias for token 3", [](SamplerParams& p) { p.logit_bias[3] = kInf; }},
      {"logit_bias for token 4", [](SamplerParams& p) { p.logit_bias[4] = std::nanf(""); }},
  };
  for (const Case& c : cases) {
    SamplerParams p;
    c.edit(p);
    auto s = Sampler::create(p, 1000);
    ASSERT_FALSE(s.has_value()) << c.field;
    EXPECT_EQ(s.error().code(), StatusCode::InvalidArgument);
    EXPECT_NE(s.error().message().find(c.field), std::string::npos) << s.error().message();
  }
  SamplerParams ok;
  ok.top_k = -1;  // documented: off
  ok.temp = -1.0f;  // greedy
  ok.logit_bias[999] = -kInf;
  EXPECT_TRUE(Sampler::create(ok, 1000).has_value());
}

}  // namespace
}  // namespace tandem::sampling
