// One HTTP request's generations (n choices) in flight: the tasks handed to the scheduler, and what
// their callbacks collect on the scheduler thread (text, tokens, log-probabilities, stop strings), read
// by the request's own thread, which waits for more or for the end. Stop strings end a generation
// as soon as the text contains one; the text before it is kept.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/scheduler.h"
#include "tokenizer/tokenizer.h"

namespace tandem::server {

struct TokenRecord {
  GeneratedToken token;
  std::string piece;  // the token's bytes (may be part of a UTF-8 character)
};

struct ChoiceState {
  std::string text;                  // the generated text, cut before a stop string
  std::vector<TokenRecord> tokens;   // every reported token, in order
  std::vector<TokenRecord> prompt_tokens;  // make_task(i, true): the prompt's tokens after the first, scored
  bool done = false, stopped_by_word = false;
  std::string stopping_word;
  FinishReason reason = FinishReason::Stop;
  GenerationStats stats;
  Status error;
};

// Held by shared_ptr: the tasks' callbacks keep it alive until the scheduler is done with them.
class Exchange : public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(const tokenizer::Tokenizer& tok, std::vector<std::string> stop, size_t n_choices);

  // Makes the task of choice i (callbacks filled; score_prompt: on_prompt_tokens too); the caller sets
  // the rest and submits it.
  std::shared_ptr<GenerationTask> make_task(size_t i, bool score_prompt = false);
  void cancel_all();

  // Waits until something changed since the last call, or all choices are done, or timeout_ms passed.
  // Returns false on timeout. `fn` runs under the lock with the state.
  template <typename Fn>
  bool wait(int timeout_ms, Fn fn) {
    std::unique_lock<std::mutex> lock(mu_);
    const bool ok = cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                                 [&] { return version_ != seen_ || n_done_ == choices_.size(); });
    seen_ = version_;
    fn(choices_, n_done_ == choices_.size());
    return ok;
  }
  // How many bytes of text may be sent now: all of it once done, else all but a trailing part that
  // could still become a stop string.
  size_t sendable(const ChoiceState& c) const;

 private:
  void on_token(size_t i, const GeneratedToken& t);
  const tokenizer::Tokenizer& tok_;
  std::vector<std::string> stop_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ChoiceState> choices_;
  std::vector<tokenizer::StreamDecoder> decoders_;
  std::vector<std::weak_ptr<GenerationTask>> tasks_;  // weak: no cycle through the callbacks
  size_t n_done_ = 0;
  uint64_t version_ = 0, seen_ = 0;
};

}  // namespace tandem::server
