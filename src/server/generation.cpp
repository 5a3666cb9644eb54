// Exchange: collecting a request's generations from the scheduler thread (server/generation.h).
#include "server/generation.h"

namespace tandem::server {

Exchange::Exchange(const tokenizer::Tokenizer& tok, std::vector<std::string> stop, size_t n_choices)
    : tok_(tok), stop_(std::move(stop)), choices_(n_choices) {
  for (size_t i = 0; i < n_choices; ++i) decoders_.emplace_back(tok, false, false);
  tasks_.resize(n_choices);
}

std::shared_ptr<GenerationTask> Exchange::make_task(size_t i, bool score_prompt) {
  auto task = std::make_shared<GenerationTask>();
  if (score_prompt)
    task->on_prompt_tokens = [this, self = shared_from_this(), i](std::span<const GeneratedToken> scored) {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& t : scored) choices_[i].prompt_tokens.push_back({t, tok_.token_to_piece(t.id, false)});
    };
  // The scheduler holds the task until on_done; the callbacks keep the exchange alive with it.
  task->on_token = [this, self = shared_from_this(), i](const GeneratedToken& t) {
    std::lock_guard<std::mutex> lock(mu_);
    on_token(i, t);
    ++version_;
    cv_.notify_all();
    return !choices_[i].stopped_by_word;
  };
  task->on_done = [this, self = shared_from_this(), i](FinishReason reason, const GenerationStats& stats, const Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    ChoiceState& c = choices_[i];
    if (!c.stopped_by_word) c.text += decoders_[i].flush();
    c.reason = reason;
    c.stats = stats;
    c.error = status;
    c.done = true;
    ++n_done_;
    ++version_;
    cv_.notify_all();
  };
  tasks_[i] = task;
  return task;
}

void Exchange::cancel_all() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& weak : tasks_)
    if (auto t = weak.lock()) t->cancelled = true;
}

void Exchange::on_token(size_t i, const GeneratedToken& t) {
  ChoiceState& c = choices_[i];
  if (c.stopped_by_word) return;
  c.stats.id_slot = t.id_slot;
  const std::string piece = decoders_[i].push(t.id);
  c.tokens.push_back({t, tok_.token_to_piece(t.id, false)});
  const size_t old = c.text.size();
  c.text += piece;
  // A stop string may start up to its length - 1 bytes before this piece.
  size_t cut = std::string::npos;
  for (const auto& s : stop_) {
    const size_t from = old >= s.size() ? old - s.size() + 1 : 0;
    const size_t at = c.text.find(s, from);
    if (at != std::string::npos && at < cut) cut = at, c.stopping_word = s;
  }
  if (cut != std::string::npos) {
    c.text.resize(cut);
    c.stopped_by_word = true;
  }
}

size_t Exchange::sendable(const ChoiceState& c) const {
  if (c.done || c.stopped_by_word) return c.text.size();
  size_t held = 0;
  for (const auto& s : stop_)
    for (size_t n = std::min(s.size() - 1, c.text.size()); n > held; --n)
      if (c.text.compare(c.text.size() - n, n, s, 0, n) == 0) {
        held = n;
        break;
      }
  return c.text.size() - held;
}

}  // namespace tandem::server
