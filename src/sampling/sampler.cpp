// Sampler: parameter checks, the logit bias and penalty stages (which need the accepted-token window),
// and the fixed chain order. Stage semantics follow llama.cpp src/llama-sampler.cpp.
#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace tandem::sampling {

namespace {

uint32_t resolve_seed(uint32_t seed) {
  if (seed != kDefaultSeed) return seed;
  std::random_device rd;  // llama.cpp falls back to the clock when this is a PRNG; libstdc++'s is not
  return rd();
}

Status check_unit_interval(const char* name, float v) {
  if (!(v >= 0.0f && v <= 1.0f))  // also rejects NaN
    return invalid_argument("sampler: %s = %g is outside [0, 1]", name, static_cast<double>(v));
  return Status::ok();
}

Status check_finite(const char* name, float v) {
  if (!std::isfinite(v)) return invalid_argument("sampler: %s = %g is not finite", name, static_cast<double>(v));
  return Status::ok();
}

}  // namespace

Result<Sampler> Sampler::create(const SamplerParams& params, int32_t n_vocab,
                                std::shared_ptr<const GrammarVocab> grammar_vocab) {
  TANDEM_TRY(check_finite("temp", params.temp));
  if (params.top_k < -1)
    return invalid_argument("sampler: top_k = %d (use 0 or -1 to disable top-k)", params.top_k);
  TANDEM_TRY(check_unit_interval("top_p", params.top_p));
  TANDEM_TRY(check_unit_interval("min_p", params.min_p));
  TANDEM_TRY(check_unit_interval("typical_p", params.typical_p));
  if (params.repeat_last_n < 0)
    return invalid_argument("sampler: repeat_last_n = %d is negative (0 disables penalties)", params.repeat_last_n);
  // As llama.cpp's common_sampler_init: a tiny penalty whose inverse overflows is as broken as zero.
  if (!std::isfinite(params.repeat_penalty) || params.repeat_penalty <= 0.0f ||
      !std::isfinite(1.0f / params.repeat_penalty))
    return invalid_argument("sampler: repeat_penalty = %g must be finite and greater than 0",
                            static_cast<double>(params.repeat_penalty));
  TANDEM_TRY(check_finite("frequency_penalty", params.frequency_penalty));
  TANDEM_TRY(check_finite("presence_penalty", params.presence_penalty));
  if (params.n_probs < 0) return invalid_argument("sampler: n_probs = %d is negative", params.n_probs);
  if (params.min_keep < 0) return invalid_argument("sampler: min_keep = %d is negative", params.min_keep);
  for (const auto& [token, bias] : params.logit_bias) {
    if (token < 0 || (n_vocab > 0 && token >= n_vocab))
      return invalid_argument("sampler: logit_bias token %d is outside the vocabulary [0, %d)", token, n_vocab);
    if (std::isnan(bias) || bias == std::numeric_limits<float>::infinity())
      return invalid_argument("sampler: logit_bias for token %d is %g (finite or -inf expected)", token,
                              static_cast<double>(bias));
  }

  Sampler s(params);
  if (!params.grammar.empty()) {
    if (!grammar_vocab) return invalid_argument("sampler: a grammar needs the model's vocabulary (GrammarVocab)");
    auto grammar = Grammar::parse(params.grammar);
    if (!grammar) return Status(grammar.error().code(), "sampler: " + grammar.error().message());
    s.grammar_vocab_ = std::move(grammar_vocab);
    s.grammar_.emplace(std::move(*grammar));
    if (s.grammar_->is_dead())  // the grammar is too ambiguous to even start
      return invalid_argument("sampler: %s", s.grammar_->accept("").message().c_str());
  }
  if (s.penalties_active()) s.counts_.reserve(static_cast<size_t>(std::min(params.repeat_last_n, 4096)));
  s.reset();
  return s;
}

bool Sampler::penalties_active() const {
  return params_.repeat_last_n > 0 && (params_.repeat_penalty != 1.0f || params_.frequency_penalty != 0.0f ||
                                       params_.presence_penalty != 0.0f);
}

void Sampler::reset() {
  reset_grammar();
  window_.clear();
  window_head_ = 0;
  counts_.clear();
  seed_ = resolve_seed(params_.seed);
  rng_.seed(seed_);
}

void Sampler::reset_grammar() {
  if (grammar_) grammar_->reset();
}

void Sampler::accept(int32_t token, bool accept_grammar) {
  // A rejected text leaves the matcher dead, and sample() then ends the generation.
  if (grammar_ && accept_grammar && !grammar_vocab_->is_eog(token) && token >= 0 &&
      static_cast<size_t>(token) < grammar_vocab_->n_tokens())
    (void)grammar_->accept(grammar_vocab_->piece(token));
  if (!penalties_active()) return;
  const size_t cap = static_cast<size_t>(params_.repeat_last_n);
  if (window_.size() < cap) {
    window_.push_back(token);
  } else {
    const int32_t old = window_[window_head_];
    auto it = counts_.find(old);
    if (--it->second == 0) counts_.erase(it);
    window_[window_head_] = token;
    window_head_ = (window_head_ + 1) % cap;
  }
  ++counts_[token];
}

void Sampler::apply_logit_bias(std::span<float> logits) const {
  for (const auto& [token, bias] : params_.logit_bias)
    if (static_cast<size_t>(token) < logits.size()) logits[token] += bias;
}

void Sampler::apply_penalties(std::span<float> logits) const {
  for (const auto& [token, count] : counts_) {
    if (token < 0 || static_cast<size_t>(token) >= logits.size()) continue;
    float& l = logits[token];
    // Dividing a negative logit would raise it; llama.cpp multiplies those instead (CTRL's fix).
    if (l <= 0.0f) l *= params_.repeat_penalty;
    else l /= params_.repeat_penalty;
    l -= static_cast<float>(count) * params_.frequency_penalty + params_.presence_penalty;
  }
}

int32_t Sampler::sample(std::span<const float> logits) {
  TANDEM_CHECK(!logits.empty());
  std::span<const float> row = logits;
  if (!params_.logit_bias.empty() || !counts_.empty()) {
    adjusted_.assign(logits.begin(), logits.end());  // keeps capacity: no allocation after the first step
    apply_logit_bias(adjusted_);
    apply_penalties(adjusted_);
    row = adjusted_;
  }
  return grammar_ ? sample_with_grammar(row) : sample_row(row);
}

int32_t Sampler::sample_with_grammar(std::span<const float> row) {
  const int32_t first = sample_row(row);
  if (grammar_vocab_->allows(*grammar_, first)) return first;
  // Rows may be longer than the vocabulary (padded output matrices): those ids are never allowed.
  const size_t n_allowed = grammar_vocab_->allowed_tokens(*grammar_, &allowed_);
  int32_t id = -1;
  if (n_allowed > 0) {
    masked_.assign(row.begin(), row.end());
    for (size_t i = 0; i < masked_.size(); ++i)
      if (i >= allowed_.size() || !allowed_[i]) masked_[i] = -std::numeric_limits<float>::infinity();
    id = sample_row(masked_);
  }
  // Nothing allowed, or only tokens the bias banned (-inf everywhere makes the chain's pick arbitrary).
  if (id < 0 || static_cast<size_t>(id) >= allowed_.size() || !allowed_[size_t(id)] ||
      std::isinf(masked_[size_t(id)])) {
    const auto& eog = grammar_vocab_->eog_ids();
    id = eog.empty() ? first : eog.front();
    cur_.assign_single(id, size_t(id) < row.size() ? row[size_t(id)] : -std::numeric_limits<float>::infinity());
    selected_ = 0;
  }
  return id;
}

size_t argmax(std::span<const float> row) {
  // A server samples every slot's 262144-logit row each step: the maximum over blocks of independent lanes
  // (vector max instructions; NaN never wins a `>`), then the first index in the first block that holds it.
  constexpr size_t kLanes = 16, kBlock = 256;
  constexpr float kNone = -std::numeric_limits<float>::infinity();
  float best = kNone;
  size_t best_block = 0;
  for (size_t b = 0; b < row.size(); b += kBlock) {
    const size_t end = std::min(row.size(), b + kBlock);
    float lanes[kLanes];
    std::fill(std::begin(lanes), std::end(lanes), kNone);
    size_t i = b;
    for (; i + kLanes <= end; i += kLanes)
      for (size_t j = 0; j < kLanes; ++j) lanes[j] = row[i + j] > lanes[j] ? row[i + j] : lanes[j];
    for (; i < end; ++i) lanes[0] = row[i] > lanes[0] ? row[i] : lanes[0];
    float m = kNone;
    for (float l : lanes) m = l > m ? l : m;
    if (m > best) best = m, best_block = b;
  }
  if (best == kNone) return 0;  // every logit -inf or NaN
  size_t i = best_block;
  while (row[i] != best) ++i;
  return i;
}

int32_t Sampler::sample_row(std::span<const float> row) {
  // Greedy without typical: top-k, top-p and min-p all keep the best token, so the chain would end at
  // the argmax anyway (first index among equals, as llama.cpp over the unsorted vocabulary).
  if (params_.temp <= 0.0f && params_.typical_p >= 1.0f) {
    const size_t best = argmax(row);
    const float best_logit = std::isnan(row[best]) ? -std::numeric_limits<float>::infinity() : row[best];
    cur_.assign_single(static_cast<int32_t>(best), best_logit);
    selected_ = 0;
    return static_cast<int32_t>(best);
  }

  const int32_t k = params_.top_k;
  if (k > 0 && k <= kMaxHeapTopK && static_cast<size_t>(k) < row.size()) {
    cur_.assign_top_k(row, static_cast<size_t>(k));
  } else {
    cur_.assign(row);
    apply_top_k(cur_, k);
  }
  const size_t min_keep = static_cast<size_t>(params_.min_keep);
  apply_typical(cur_, params_.typical_p, min_keep);
  apply_top_p(cur_, params_.top_p, min_keep);
  apply_min_p(cur_, params_.min_p, min_keep);
  apply_temperature(cur_, params_.temp);
  selected_ = draw(cur_, rng_);
  return cur_[selected_].id;
}

void Sampler::top_probs(size_t n, std::vector<TokenProb>* out) const {
  out->clear();
  for (const Candidate& c : cur_.view()) out->push_back({c.id, c.p});
  n = std::min(n, out->size());
  std::partial_sort(out->begin(), out->begin() + static_cast<ptrdiff_t>(n), out->end(),
                    [](const TokenProb& a, const TokenProb& b) { return a.p > b.p || (a.p == b.p && a.id < b.id); });
  out->resize(n);
}

void full_vocab_top_probs(std::span<const float> logits, size_t n, std::vector<TokenProb>* out) {
  out->clear();
  n = std::min(n, logits.size());
  if (n == 0) return;
  float max_logit = -std::numeric_limits<float>::infinity();
  for (float l : logits)
    if (l > max_logit) max_logit = l;
  double sum = 0.0;
  if (max_logit != -std::numeric_limits<float>::infinity())
    for (float l : logits)
      if (!std::isnan(l)) sum += std::exp(l - max_logit);

  // Min-heap of the best n by logit (ties: lower id kept), filled in one pass.
  auto worse_first = [&](const TokenProb& a, const TokenProb& b) {
    const float la = logits[a.id], lb = logits[b.id];
    return la > lb || (la == lb && a.id < b.id);
  };
  for (size_t i = 0; i < logits.size(); ++i) {
    if (std::isnan(logits[i])) continue;
    const TokenProb t{static_cast<int32_t>(i), 0.0f};
    if (out->size() < n) {
      out->push_back(t);
      std::push_heap(out->begin(), out->end(), worse_first);
    } else if (logits[i] > logits[out->front().id]) {
      std::pop_heap(out->begin(), out->end(), worse_first);
      out->back() = t;
      std::push_heap(out->begin(), out->end(), worse_first);
    }
  }
  std::sort_heap(out->begin(), out->end(), worse_first);
  for (TokenProb& t : *out)
    t.p = sum > 0.0 ? static_cast<float>(std::exp(static_cast<double>(logits[t.id] - max_logit)) / sum)
                    : 1.0f / static_cast<float>(logits.size());
}

}  // namespace tandem::sampling
