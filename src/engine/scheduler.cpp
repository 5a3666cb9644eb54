// The slot/step loop of continuous batching (engine/scheduler.h).
#include "engine/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

namespace tandem {
namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

// log of the softmax denominator over the raw logits (NaN counts as -inf, as the sampler does).
double log_sum_exp(std::span<const float> logits) {
  float max_logit = -std::numeric_limits<float>::infinity();
  for (float l : logits)
    if (l > max_logit) max_logit = l;
  double sum = 0;
  for (float l : logits)
    if (!std::isnan(l)) sum += std::exp(double(l) - max_logit);
  return double(max_logit) + std::log(sum);
}

}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
  }
  return "error";
}

Scheduler::Scheduler(Context& ctx, const tokenizer::Vocab& vocab, const SchedulerOptions& options,
                     std::shared_ptr<const sampling::GrammarVocab> grammar_vocab)
    : ctx_(ctx), vocab_(vocab), options_(options), grammar_vocab_(std::move(grammar_vocab)) {
  slots_.resize(size_t(options_.n_slots));
  info_.resize(slots_.size());
  for (size_t i = 0; i < slots_.size(); ++i) slots_[i].id = info_[i].id = int32_t(i);
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
  for (auto& task : queue_) task->on_done(FinishReason::Cancelled, {}, Status::ok());
  for (Slot& s : slots_)
    if (s.task) finish(s, FinishReason::Cancelled);
}

Status Scheduler::check_prompt(size_t n) const {
  if (n == 0) return invalid_argument("the prompt is empty (no tokens)");
  if (int64_t(n) >= options_.n_ctx_slot)
    return invalid_argument("the prompt has %zu tokens but the context of a slot holds %lld (it needs room for at "
                            "least one generated token; raise -c or lower -np)",
                            n, (long long)options_.n_ctx_slot);
  return Status::ok();
}

bool Scheduler::submit(std::shared_ptr<GenerationTask> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (int64_t(queue_.size()) >= options_.max_queue) {
      ++n_rejected_;
      return false;
    }
    task->t_submit_ms = now_ms();
    queue_.push_back(std::move(task));
  }
  wake_.notify_one();
  return true;
}

std::vector<SlotInfo> Scheduler::slots() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return info_;
}

size_t Scheduler::n_queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

SchedulerStats Scheduler::stats() const {
  uint64_t n_rejected = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    n_rejected = n_rejected_;
  }
  std::lock_guard<std::mutex> lock(stats_mu_);
  SchedulerStats s = published_stats_;
  s.n_rejected = n_rejected;
  return s;
}

void Scheduler::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      const auto busy = [&] {
        return std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.state != State::Idle; });
      };
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || busy(); });
      if (stopping_) return;
      admit();
    }
    for (Slot& s : slots_)
      if (s.task && s.task->cancelled.load()) finish(s, FinishReason::Cancelled);
    if (std::none_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.state != State::Idle; })) {
      publish();
      continue;
    }
    if (Status st = step(); !st.is_ok()) {
      std::fprintf(stderr, "error: step failed: %s\n", st.message().c_str());
      for (Slot& s : slots_)
        if (s.task) {
          ctx_.kv().remove(s.id);
          s.cells.clear();
          finish(s, FinishReason::Error, st);
        }
    }
    publish();
  }
}

void Scheduler::admit() {
  for (auto it = queue_.begin(); it != queue_.end();) {
    auto& task = *it;
    if (task->cancelled.load()) {
      ++stats_.n_requests_finished[int(FinishReason::Cancelled)];
      task->on_done(FinishReason::Cancelled, {}, Status::ok());
      it = queue_.erase(it);
      continue;
    }
    Slot* best = nullptr;
    size_t best_common = 0;
    for (Slot& s : slots_) {
      if (s.state != State::Idle || (task->id_slot >= 0 && task->id_slot != s.id)) continue;
      const size_t common = common_prefix(s.cells, task->prompt);
      if (!best || common > best_common) best = &s, best_common = common;
    }
    if (!best) {
      ++it;
      continue;
    }
    start(*best, std::move(task));
    it = queue_.erase(it);
  }
}

void Scheduler::start(Slot& slot, std::shared_ptr<GenerationTask> task) {
  slot.stats = {};
  slot.stats.id_slot = slot.id;
  slot.stats.n_prompt = int64_t(task->prompt.size());
  slot.t_start_ms = now_ms();
  auto sampler = sampling::Sampler::create(task->sampling, int32_t(ctx_.n_vocab()), grammar_vocab_);
  if (!sampler) {
    slot.task = std::move(task);
    finish(slot, FinishReason::Error, sampler.error());
    return;
  }
  slot.sampler = std::make_unique<sampling::Sampler>(std::move(*sampler));
  // llama-server feeds the prompt to the sampler too, so penalties see it (not the grammar: it holds
  // only the output).
  for (int32_t t : task->prompt) slot.sampler->accept(t, /*accept_grammar=*/false);
  size_t keep = task->cache_prompt ? common_prefix(slot.cells, task->prompt) : 0;
  if (keep == task->prompt.size()) --keep;  // the last prompt token is decoded again for its logits
  ctx_.kv().remove(slot.id, int32_t(keep), -1);
  slot.cells.resize(keep);
  slot.n_prefilled = keep;
  slot.stats.n_cached = int64_t(keep);
  stats_.n_prompt_cached += keep;
  slot.task = std::move(task);
  slot.state = State::Prefill;
  std::lock_guard<std::mutex> lock(stats_mu_);
  publish_slot(slot);  // busy from now on: a client's first token must not find its slot idle
}

Status Scheduler::step() {
  const double t0 = now_ms();
  Batch batch;
  std::vector<Slot*> rows;  // the slot of each logits row, in batch order
  for (Slot& s : slots_) {
    if (s.state != State::Generate) continue;
    batch.add(s.next_token, int32_t(s.cells.size()), s.id, true);
    rows.push_back(&s);
  }
  const int64_t n_decode = batch.size();
  // Prompts share what is left of -b; while others are generating, at most one chunk per step so
  // their next tokens are not held up behind a long prompt.
  int64_t budget = ctx_.options().n_batch - n_decode;
  if (n_decode > 0) budget = std::min(budget, options_.n_prefill_chunk);
  std::vector<std::pair<Slot*, size_t>> chunks;
  for (Slot& s : slots_) {
    if (s.state != State::Prefill || budget <= 0) continue;
    const auto& prompt = s.task->prompt;
    const size_t n = std::min(prompt.size() - s.n_prefilled, size_t(budget));
    for (size_t i = s.n_prefilled; i < s.n_prefilled + n; ++i)
      batch.add(prompt[i], int32_t(i), s.id, i + 1 == prompt.size());
    if (s.n_prefilled + n == prompt.size()) rows.push_back(&s);
    chunks.push_back({&s, n});
    budget -= int64_t(n);
  }
  if (batch.size() == 0) return Status::ok();
  TANDEM_TRY(ctx_.decode(batch));
  for (Slot* s : rows)
    if (s->state == State::Generate) s->cells.push_back(s->next_token);
  for (auto& [s, n] : chunks) {
    s->cells.insert(s->cells.end(), s->task->prompt.begin() + long(s->n_prefilled),
                    s->task->prompt.begin() + long(s->n_prefilled + n));
    s->n_prefilled += n;
  }
  const double t_step_s = (now_ms() - t0) / 1e3;
  const int64_t n_prompt = batch.size() - n_decode;
  ++stats_.n_steps;
  stats_.n_passes += uint64_t((batch.size() + ctx_.options().n_ubatch - 1) / ctx_.options().n_ubatch);
  stats_.n_prompt_tokens += uint64_t(n_prompt);
  (n_prompt > 0 ? stats_.t_prompt_s : stats_.t_generate_s) += t_step_s;
  for (const Slot& s : slots_)
    if (s.task) {
      ++stats_.n_busy_slot_steps;
      stats_.n_tokens_max = std::max<uint64_t>(stats_.n_tokens_max, s.cells.size());
    }
  for (size_t r = 0; r < rows.size(); ++r) sample(*rows[r], ctx_.logits(int64_t(r)));
  if (options_.log_steps)
    std::fprintf(stderr, "step: %lld decode + %lld prompt tokens, %.2f ms, %zu slots busy\n", (long long)n_decode,
                 (long long)(batch.size() - n_decode), now_ms() - t0,
                 size_t(std::count_if(slots_.begin(), slots_.end(), [](const Slot& s) { return s.task != nullptr; })));
  return Status::ok();
}

void Scheduler::sample(Slot& slot, std::span<const float> logits) {
  GenerationTask& task = *slot.task;
  if (slot.state == State::Prefill) {
    slot.state = State::Generate;
    slot.t_first_ms = now_ms();
    slot.stats.t_prompt_ms = slot.t_first_ms - slot.t_start_ms;
    stats_.ttft_s.observe((slot.t_first_ms - task.t_submit_ms) / 1e3);
  }
  GeneratedToken out{slot.sampler->sample(logits)};
  slot.sampler->accept(out.id);
  if (!task.ignore_eos && vocab_.is_eog(out.id)) return finish(slot, FinishReason::Stop);
  if (task.want_logprobs || task.n_probs > 0) {
    const double lse = log_sum_exp(logits);
    out.logprob = std::isnan(logits[size_t(out.id)]) ? -INFINITY : float(double(logits[size_t(out.id)]) - lse);
    std::vector<sampling::TokenProb> top;
    sampling::full_vocab_top_probs(logits, size_t(task.n_probs), &top);
    for (const auto& t : top) out.top.push_back({t.id, float(double(logits[size_t(t.id)]) - lse)});
  }
  ++slot.stats.n_generated;
  ++stats_.n_generated;
  if (task.on_token && !task.on_token(out)) return finish(slot, FinishReason::Stop);
  if (task.n_predict >= 0 && slot.stats.n_generated >= task.n_predict) return finish(slot, FinishReason::Length);
  // The token is decoded next step at position cells.size(): the slot must have a cell for it.
  if (int64_t(slot.cells.size()) + 1 > options_.n_ctx_slot) return finish(slot, FinishReason::Length);
  slot.next_token = out.id;
}

void Scheduler::finish(Slot& slot, FinishReason reason, const Status& status) {
  if (slot.t_first_ms > 0) slot.stats.t_generate_ms = now_ms() - slot.t_first_ms;
  auto task = std::move(slot.task);
  slot.task.reset();
  slot.state = State::Idle;
  slot.next_token = -1;
  slot.t_first_ms = 0;
  if (task) {
    ++stats_.n_requests_finished[int(reason)];
    stats_.latency_s.observe((now_ms() - task->t_submit_ms) / 1e3);
    // Published before on_done, so a client that has its reply finds it counted and its slot idle.
    std::lock_guard<std::mutex> lock(stats_mu_);
    published_stats_ = stats_;
    publish_slot(slot);
  }
  // A prompt cut short (cancelled while prefilling) leaves only the tokens already in the cells.
  if (task && task->on_done) task->on_done(reason, slot.stats, status);
}

void Scheduler::publish() {
  std::lock_guard<std::mutex> lock(stats_mu_);
  for (const Slot& s : slots_) publish_slot(s);
  published_stats_ = stats_;
}

void Scheduler::publish_slot(const Slot& s) {
  info_[size_t(s.id)] = {s.id, s.task != nullptr, int64_t(s.cells.size()), s.stats.n_prompt, s.stats.n_generated};
}

}  // namespace tandem
