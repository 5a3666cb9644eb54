// The chain's stages over a CandidateList; semantics follow llama.cpp src/llama-sampler.cpp
// (llama_sampler_{top_k,typical,top_p,min_p,temp,dist}_apply). Parameters are validated in sampler.cpp.
#include "sampling/candidates.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/status.h"

namespace tandem::sampling {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// top-p on a long unsorted list sorts this many first; most nucleus sets are far smaller, and the rest
// is sorted only when their mass falls short (llama.cpp's top-p uses the same 256).
constexpr size_t kTopPFirstSort = 256;
constexpr size_t kTopPSortAllBelow = 1024;  // shorter lists are sorted whole: cheaper than two passes

float clean(float logit) { return std::isnan(logit) ? kNegInf : logit; }

}  // namespace

void CandidateList::reserve(size_t n) {
  if (buf_.size() < n) buf_.resize(n);
}

void CandidateList::assign(std::span<const float> logits) {
  reserve(logits.size());
  Candidate* out = buf_.data();
  for (size_t i = 0; i < logits.size(); ++i) out[i] = {static_cast<int32_t>(i), clean(logits[i]), 0.0f};
  size_ = logits.size();
  sorted_ = false;
}

void CandidateList::assign_top_k(std::span<const float> logits, size_t k) {
  TANDEM_CHECK(k >= 1);
  k = std::min(k, logits.size());
  reserve(k);
  // Max-heap under ranks_before keeps the worst kept candidate on top, the one a newcomer must beat.
  // Ids rise through the scan, so a newcomer with an equal logit ranks after and is rightly skipped.
  Candidate* heap = buf_.data();
  size_t n = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float v = logits[i];
    if (n < k) {
      heap[n++] = {static_cast<int32_t>(i), clean(v), 0.0f};
      std::push_heap(heap, heap + n, ranks_before);
    } else if (v > heap[0].logit) {  // false for NaN
      std::pop_heap(heap, heap + n, ranks_before);
      heap[n - 1] = {static_cast<int32_t>(i), v, 0.0f};
      std::push_heap(heap, heap + n, ranks_before);
    }
  }
  std::sort_heap(heap, heap + n, ranks_before);
  size_ = n;
  sorted_ = true;
}

void CandidateList::assign_single(int32_t id, float logit) {
  reserve(1);
  buf_[0] = {id, logit, 1.0f};
  size_ = 1;
  sorted_ = true;
}

void CandidateList::truncate(size_t n) {
  TANDEM_CHECK(n <= size_);
  size_ = n;
}

void CandidateList::sort_prefix(size_t n) {
  Candidate* b = buf_.data();
  if (n >= size_) {
    if (!sorted_) std::sort(b, b + size_, ranks_before);
    sorted_ = true;
    return;
  }
  if (sorted_) return;
  std::nth_element(b, b + n, b + size_, ranks_before);
  std::sort(b, b + n, ranks_before);
}

size_t softmax(CandidateList& c) {
  const size_t n = c.size();
  if (n == 0) return 0;
  size_t best = 0;
  if (!c.sorted()) {
    for (size_t i = 1; i < n; ++i)
      if (c[i].logit > c[best].logit) best = i;
  }
  const float max_logit = c[best].logit;
  if (max_logit == kNegInf) {  // everything banned: no preference left to express
    for (size_t i = 0; i < n; ++i) c[i].p = 1.0f / static_cast<float>(n);
    return best;
  }
  float sum = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    c[i].p = std::exp(c[i].logit - max_logit);
    sum += c[i].p;
  }
  const float inv = 1.0f / sum;
  for (size_t i = 0; i < n; ++i) c[i].p *= inv;
  return best;
}

void apply_top_k(CandidateList& c, int32_t k) {
  if (k <= 0 || static_cast<size_t>(k) >= c.size()) {
    // llama.cpp sorts here too when k >= size; later stages sort on demand, so skip the work.
    return;
  }
  c.sort_prefix(static_cast<size_t>(k));
  c.truncate(static_cast<size_t>(k));
  c.set_sorted(true);
}

void apply_typical(CandidateList& c, float p, size_t min_keep) {
  if (p >= 1.0f || c.size() == 0) return;
  c.sort_all();
  softmax(c);
  const size_t n = c.size();

  // Entropy of the candidates; p == 0 terms contribute 0 (their limit), where llama.cpp would add NaN.
  float entropy = 0.0f;
  for (size_t i = 0; i < n; ++i)
    if (c[i].p > 0.0f) entropy -= c[i].p * std::log(c[i].p);

  std::vector<float>& score = c.scratch_scores();
  score.resize(n);
  for (size_t i = 0; i < n; ++i)
    score[i] = c[i].p > 0.0f ? std::fabs(-std::log(c[i].p) - entropy) : std::numeric_limits<float>::infinity();

  std::vector<Candidate>& order = c.scratch();
  order.assign(c.view().begin(), c.view().end());
  // Sort positions by typicality; position breaks ties, so equal scores keep the probability order.
  std::vector<uint32_t>& pos = c.scratch_index();
  pos.resize(n);
  std::iota(pos.begin(), pos.end(), 0u);
  std::sort(pos.begin(), pos.end(), [&](uint32_t a, uint32_t b) {
    return score[a] < score[b] || (score[a] == score[b] && a < b);
  });

  float cum = 0.0f;
  size_t last = n;
  for (size_t i = 0; i < n; ++i) {
    cum += order[pos[i]].p;
    if (cum > p && (min_keep == 0 || i + 1 >= min_keep)) {  // strict '>', unlike top-p: as llama.cpp
      last = i + 1;
      break;
    }
  }
  for (size_t i = 0; i < last; ++i) c[i] = order[pos[i]];
  c.truncate(last);
  c.set_sorted(false);
}

void apply_top_p(CandidateList& c, float p, size_t min_keep) {
  if (p >= 1.0f || c.size() == 0) return;
  softmax(c);
  const size_t n = c.size();
  size_t n_sorted = n;
  if (!c.sorted()) {
    n_sorted = n > kTopPSortAllBelow ? kTopPFirstSort : n;
    c.sort_prefix(n_sorted);
  }
  float cum = 0.0f;
  size_t last = n;
  for (size_t i = 0; i < n; ++i) {
    cum += c[i].p;
    if (cum >= p && i + 1 >= min_keep) {
      last = i + 1;
      break;
    }
    if (i + 1 == n_sorted && n_sorted < n) {
      // Everything past the prefix ranks after it (nth_element), so ordering the next chunk of the tail
      // extends the sorted prefix. Growing 4x keeps a flat distribution at O(n log n) overall, while a
      // peaked one never gets here.
      const size_t next = std::min(n, n_sorted * 4);
      Candidate* b = c.view().data();
      if (next < n) std::nth_element(b + n_sorted, b + next, b + n, ranks_before);
      std::sort(b + n_sorted, b + next, ranks_before);
      n_sorted = next;
    }
  }
  c.truncate(last);
  c.set_sorted(true);
}

void apply_min_p(CandidateList& c, float p, size_t min_keep) {
  if (p <= 0.0f || c.size() == 0) return;
  const size_t want = std::max<size_t>(min_keep, 1);
  if (!c.sorted()) {
    float max_logit = kNegInf;
    for (const Candidate& x : c.view()) max_logit = std::max(max_logit, x.logit);
    const float min_logit = max_logit + std::log(p);
    size_t kept = 0;
    for (const Candidate& x : c.view()) kept += x.logit >= min_logit;
    if (kept >= want) {
      size_t out = 0;
      for (size_t i = 0; i < c.size(); ++i)
        if (c[i].logit >= min_logit) c[out++] = c[i];
      c.truncate(out);
      return;
    }
    c.sort_all();  // too few pass: the sorted path tops up to min_keep with the next best
  }
  const float min_logit = c[0].logit + std::log(p);
  size_t i = 1;  // the best token always passes
  while (i < c.size() && !(c[i].logit < min_logit && i >= min_keep)) ++i;
  c.truncate(i);
}

void apply_temperature(CandidateList& c, float temp) {
  if (c.size() == 0) return;
  if (temp <= 0.0f) {
    size_t best = 0;
    for (size_t i = 1; i < c.size(); ++i)
      if (c[i].logit > c[best].logit) best = i;
    c[0] = c[best];
    c.truncate(1);
    c.set_sorted(true);
    return;
  }
  for (Candidate& x : c.view()) x.logit /= temp;
}

double uniform_01(std::mt19937& rng) {
  const uint32_t a = rng() >> 5;  // 27 bits
  const uint32_t b = rng() >> 6;  // 26 bits
  return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

size_t draw(CandidateList& c, std::mt19937& rng) {
  const size_t n = c.size();
  TANDEM_CHECK(n > 0);
  const double u = uniform_01(rng);  // drawn even for one candidate: one draw per token keeps streams aligned
  size_t best = 0;
  for (size_t i = 1; i < n; ++i)
    if (c[i].logit > c[best].logit) best = i;
  const float max_logit = c[best].logit;
  if (max_logit == kNegInf) {  // everything banned: uniform over what is left
    for (size_t i = 0; i < n; ++i) c[i].p = 1.0f / static_cast<float>(n);
    return std::min(n - 1, static_cast<size_t>(u * static_cast<double>(n)));
  }
  double sum = 0.0;  // double, as llama.cpp's dist: 262,144 float adds would drift
  for (size_t i = 0; i < n; ++i) {
    c[i].p = std::exp(c[i].logit - max_logit);
    sum += c[i].p;
  }
  const double target = sum * u;
  double run = 0.0;
  size_t picked = best;  // reached only if rounding leaves the running sum short of the target
  for (size_t i = 0; i < n; ++i) {
    run += c[i].p;
    if (run >= target && c[i].p > 0.0f) {  // a zero-probability token is never picked, even for u == 0
      picked = i;
      break;
    }
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (size_t i = 0; i < n; ++i) c[i].p *= inv;
  return picked;
}

}  // namespace tandem::sampling
