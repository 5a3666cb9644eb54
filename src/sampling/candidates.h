// The candidate list one sampling step works on, and the stages of the chain that narrow or reshape it
// (top-k, typical, top-p, min-p, temperature, the final draw). Parameters and the chain live in sampler.h.
// Each stage follows the semantics of llama.cpp's src/llama-sampler.cpp; differences are noted per stage.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace tandem::sampling {

struct Candidate {
  int32_t id;
  float logit;
  float p;  // probability; valid only after a stage that computes it (softmax, top-p, typical, the draw)
};

// Candidates in a buffer that keeps its capacity between steps, so a step allocates nothing once the
// buffer has seen the vocabulary size. Not thread-safe; one per sequence.
class CandidateList {
 public:
  // All tokens 0..n-1 with their logits, unsorted. NaN logits become -inf: a broken row must not win.
  void assign(std::span<const float> logits);
  // Only the k best tokens of `logits` (k >= 1), sorted; one pass with a k-sized heap, which beats
  // building the full list when k is much smaller than the vocabulary.
  void assign_top_k(std::span<const float> logits, size_t k);

  // Exactly one candidate with probability 1: a greedy pick that skipped the chain.
  void assign_single(int32_t id, float logit);

  std::span<Candidate> view() { return {buf_.data(), size_}; }
  std::span<const Candidate> view() const { return {buf_.data(), size_}; }
  size_t size() const { return size_; }
  Candidate& operator[](size_t i) { return buf_[i]; }
  const Candidate& operator[](size_t i) const { return buf_[i]; }

  // Descending by logit, ties by ascending id, so every ordering is the same on every platform.
  bool sorted() const { return sorted_; }
  void set_sorted(bool s) { sorted_ = s; }
  void truncate(size_t n);  // keeps the first n (n <= size)
  // Sorts the first n entries (the n best) in place; O(size) + O(n log n). Marks sorted when n == size.
  void sort_prefix(size_t n);
  void sort_all() { sort_prefix(size_); }

  // Scratch reused by stages that need a second array (typical's reordering).
  std::vector<Candidate>& scratch() { return scratch_; }
  std::vector<float>& scratch_scores() { return scratch_scores_; }
  std::vector<uint32_t>& scratch_index() { return scratch_index_; }

 private:
  void reserve(size_t n);

  std::vector<Candidate> buf_;
  size_t size_ = 0;
  bool sorted_ = false;
  std::vector<Candidate> scratch_;
  std::vector<float> scratch_scores_;
  std::vector<uint32_t> scratch_index_;
};

// true when a's logit is higher, or equal with a lower id: the order every stage sorts by.
inline bool ranks_before(const Candidate& a, const Candidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// Fills p with softmax(logit) over the current candidates; returns the index of the max logit.
// If every logit is -inf, p is uniform (llama.cpp would produce NaN here).
size_t softmax(CandidateList& c);

// Keeps the k best (k <= 0: no-op). Ignores min_keep, as llama.cpp's top-k does.
void apply_top_k(CandidateList& c, int32_t k);
// Locally typical sampling (Meister et al.): keeps the candidates whose surprise is closest to the
// entropy until their mass exceeds p. p >= 1: no-op. Leaves the list in typicality order (unsorted).
void apply_typical(CandidateList& c, float p, size_t min_keep);
// Nucleus: the smallest prefix, best first, whose probability reaches p (and has min_keep). p >= 1: no-op.
// Sorts lazily: the best 256 first, then 4x more each time their mass falls short (llama.cpp: 256, then all).
void apply_top_p(CandidateList& c, float p, size_t min_keep);
// Keeps tokens with probability >= p * max probability, i.e. logit >= max_logit + log(p), at least
// max(min_keep, 1). p <= 0: no-op. Keeps the current order.
void apply_min_p(CandidateList& c, float p, size_t min_keep);
// temp > 0 divides logits by temp; temp <= 0 keeps only the best candidate (first in current order
// among equals), which makes the final draw greedy, as llama.cpp's temperature sampler does.
void apply_temperature(CandidateList& c, float temp);

// A uniform double in [0, 1) from two mt19937 outputs (53 random bits, genrand_res53 of the Mersenne
// Twister reference code). Spelled out instead of std::uniform_real_distribution, whose draws differ
// between standard libraries, so a seed gives the same tokens everywhere.
double uniform_01(std::mt19937& rng);

// Draws one candidate from softmax(logits) by inverse CDF in the list's current order: the first index
// whose running probability sum reaches u * total. Leaves normalized probabilities in p. Returns the index.
size_t draw(CandidateList& c, std::mt19937& rng);

}  // namespace tandem::sampling
