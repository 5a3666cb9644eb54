// SamplerParams (llama.cpp's common_params_sampling names and defaults) and Sampler, the fixed chain that
// turns one position's logits into a token. The stages themselves live in candidates.h.
//
// Chain, in llama.cpp's default order (common/common.h `samplers`, common/sampling.cpp):
//   logit bias -> penalties (repeat, frequency, presence over the last repeat_last_n accepted tokens)
//   -> top-k -> typical -> top-p -> min-p -> temperature -> draw (mt19937, seeded)
// temp <= 0 keeps only the best candidate at the temperature stage, so the draw is greedy.
// With a grammar (params.grammar, GBNF; grammar.h), as llama.cpp's common_sampler_sample: the chain picks
// a token as usual; if the grammar does not allow it, every token the grammar rejects is set to -inf
// (after bias and penalties) and the chain runs again. The check-first step keeps the cost of masking
// the whole vocabulary to the steps that need it; it samples from the masked distribution only
// approximately (a token the grammar allows is kept when the unconstrained chain picked it).
// Not implemented (llama.cpp's defaults leave them off): DRY, top-n-sigma, XTC, dynamic temperature,
// mirostat, adaptive-p, infill.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "sampling/candidates.h"
#include "sampling/grammar.h"

namespace tandem::sampling {

inline constexpr uint32_t kDefaultSeed = 0xFFFFFFFF;  // LLAMA_DEFAULT_SEED: pick a random seed

struct SamplerParams {
  uint32_t seed = kDefaultSeed;  // kDefaultSeed: from std::random_device at create() and each reset()
  float temp = 0.80f;            // <= 0: greedy
  int32_t top_k = 40;            // 0 or -1: off (llama.cpp: "<= 0 to use vocab size")
  float top_p = 0.95f;           // [0, 1]; 1: off
  float min_p = 0.05f;           // [0, 1]; 0: off
  float typical_p = 1.00f;       // [0, 1]; 1: off
  int32_t repeat_last_n = 64;    // window of accepted tokens the penalties look at; 0: penalties off
  float repeat_penalty = 1.00f;  // > 0; 1: off
  float frequency_penalty = 0.00f;  // subtracted once per occurrence in the window
  float presence_penalty = 0.00f;   // subtracted once if present in the window
  std::map<int32_t, float> logit_bias;  // added to the logit; -inf bans the token, +inf is rejected
  int32_t n_probs = 0;   // for callers reporting the top n probabilities (see top_probs); >= 0
  int32_t min_keep = 0;  // typical, top-p and min-p keep at least this many (top-k ignores it, as llama.cpp)
  std::string grammar;   // GBNF the output must match (root rule `root`); empty: unconstrained.
                         // json_schema.h turns a JSON Schema into one.
};

struct TokenProb {
  int32_t id;
  float p;
};

// One sequence's sampler. Movable, not thread-safe. After the first call with a vocabulary of n tokens,
// sample() allocates nothing; with 0 < top_k <= kMaxHeapTopK it never builds the full candidate list.
class Sampler {
 public:
  // Checks every parameter; the message names the field and value. n_vocab > 0 also bounds logit_bias ids.
  // A grammar needs the model's GrammarVocab (build it once per model and share it); its parse errors
  // come back as "sampler: grammar: line L, column C: ...".
  static Result<Sampler> create(const SamplerParams& params, int32_t n_vocab = 0,
                                std::shared_ptr<const GrammarVocab> grammar_vocab = nullptr);

  // Picks a token from one position's full-vocabulary logits (non-empty). Does not accept it: call
  // accept() with the token actually appended (it may differ, e.g. a forced stop). NaN logits count as -inf.
  // Same seed, same accepted tokens and same logits give the same tokens (the draw is spelled out, see
  // uniform_01; only a libm whose expf differs in the last bit could move a draw). Each token drawn
  // from the chain consumes one uniform; greedy steps that skip the chain (temp <= 0, typical off) none.
  // With a grammar: end-of-generation tokens only once the grammar is complete; when no token can
  // continue it (its text cannot be spelled by the vocabulary, or a forced token broke it), an
  // end-of-generation token (the vocabulary's first), so the output stays a valid prefix.
  int32_t sample(std::span<const float> logits);

  // Appends a token to the penalty window, evicting the oldest past repeat_last_n, and (accept_grammar)
  // advances the grammar by its text. llama.cpp's server also accepts the prompt tokens, so prompts
  // count toward penalties there: callers decide, but prompt tokens must pass accept_grammar = false
  // (llama.cpp's common_sampler_accept), or the grammar would have to match the prompt.
  void accept(int32_t token, bool accept_grammar = true);

  // Empties the window, restarts the grammar and reseeds (with a fresh random seed when params.seed
  // is kDefaultSeed).
  void reset();
  // Restarts only the grammar (a new reply in a chat).
  void reset_grammar();
  // The grammar's state (is_complete(): the output so far is a whole sentence); null without a grammar.
  const GrammarMatcher* grammar() const { return grammar_ ? &*grammar_ : nullptr; }

  uint32_t seed() const { return seed_; }  // the seed in use, random or given
  const SamplerParams& params() const { return params_; }

  // The candidates that survived the last sample(), with normalized probabilities after temperature,
  // in chain order (not sorted); valid until the next sample(). A greedy step leaves one with p = 1.
  std::span<const Candidate> candidates() const { return cur_.view(); }

  // The n most probable survivors of the last sample(), best first (ties: lower id first).
  void top_probs(size_t n, std::vector<TokenProb>* out) const;

  // top_k up to this selects with a k-sized heap in one pass over the logits; larger k builds the
  // full list and uses nth_element.
  static constexpr int32_t kMaxHeapTopK = 4096;

 private:
  explicit Sampler(const SamplerParams& params) : params_(params) {}
  int32_t sample_row(std::span<const float> row);
  int32_t sample_with_grammar(std::span<const float> row);
  bool penalties_active() const;
  void apply_logit_bias(std::span<float> logits) const;
  void apply_penalties(std::span<float> logits) const;

  SamplerParams params_;
  uint32_t seed_ = 0;
  std::mt19937 rng_;
  CandidateList cur_;
  size_t selected_ = 0;
  std::vector<float> adjusted_;  // logits after bias and penalties; only used when either applies

  std::shared_ptr<const GrammarVocab> grammar_vocab_;
  std::optional<GrammarMatcher> grammar_;
  std::vector<uint8_t> allowed_;  // the grammar's verdict per token, after a rejected pick
  std::vector<float> masked_;     // the row with every token the grammar rejects at -inf

  std::vector<int32_t> window_;  // ring of the last repeat_last_n accepted tokens
  size_t window_head_ = 0;       // oldest entry once the ring is full
  std::unordered_map<int32_t, int32_t> counts_;  // token -> occurrences in window_
};

// softmax over the full, unmodified logits and its n most probable tokens, best first: what llama.cpp's
// server reports as pre-sampling probabilities (post_sampling_probs = false). One pass plus an n-heap.
void full_vocab_top_probs(std::span<const float> logits, size_t n, std::vector<TokenProb>* out);

// Greedy sampling's pick: the first index of the largest logit, NaN never chosen (0 when every logit is -inf
// or NaN). row must not be empty.
size_t argmax(std::span<const float> row);

}  // namespace tandem::sampling
