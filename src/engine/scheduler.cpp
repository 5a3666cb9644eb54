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
  if (options_.swap_bytes > 0) swap_ = std::make_unique<KvSwap>(options_.swap_bytes);
  if (options_.own_thread) thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (auto& task : queue_) task->on_done(FinishReason::Cancelled, {}, Status::ok());
  for (Slot& s : slots_)
    if (s.task) finish(s, FinishReason::Cancelled);
}

Status Scheduler::check_prompt(size_t n) const {
  if (n == 0) return invalid_argument("the prompt is empty (no tokens)");
  if (int64_t(n) >= options_.n_ctx_slot)
    return invalid_argument("the prompt has %zu tokens but the context%s holds %lld (it needs room for at "
                            "least one generated token; raise -c%s)",
                            n, options_.n_slots > 1 ? " of a slot" : "", (long long)options_.n_ctx_slot,
                            options_.n_slots > 1 ? " or lower -np" : "");
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

bool Scheduler::busy() const {
  return std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.state != State::Idle; });
}

void Scheduler::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || busy(); });
      if (stopping_) return;
      admit();
    }
    run_step();
  }
}

void Scheduler::run_until_idle() {
  TANDEM_CHECK(!options_.own_thread);
  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (queue_.empty() && !busy()) return;
      admit();
    }
    run_step();
  }
}

void Scheduler::run_step() {
  for (Slot& s : slots_)
    if (s.task && s.task->cancelled.load()) finish(s, FinishReason::Cancelled);
  if (busy())
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

void Scheduler::admit() {
  // -nocb (llama-server's meaning): requests do not join running ones; they start together once all
  // running ones have finished.
  if (!options_.cont_batching && busy()) return;
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

// Sets the slot's cells to `prompt` and its pending list to the positions whose KV must be decoded:
// all but the longest prefix it can have without decoding (its own cells' common prefix, or a longer
// one from the swap store) and, with --cache-reuse N, runs of at least N of its old cells that hold the
// prompt's tokens at the same positions. The last prompt token is always decoded, for its logits.
// Returns the number of prompt tokens whose cells were reused.
size_t Scheduler::reuse_cells(Slot& slot, const std::vector<int32_t>& prompt, bool cache_prompt) {
  KvCache& kv = ctx_.kv();
  const size_t common = cache_prompt ? common_prefix(slot.cells, prompt) : 0;
  const KvSwap::Entry* entry = nullptr;
  const size_t n_swap = swap_ && cache_prompt ? swap_->best(prompt, &entry) : 0;
  const bool from_swap = n_swap > common;
  // The cells this prompt would overwrite go to host RAM first, for a later prompt that continues them.
  if (swap_ && slot.cells.size() > (from_swap ? 0 : common)) swap_->save(kv, slot.id, slot.cells);
  size_t keep = std::min(from_swap ? n_swap : common, prompt.size() - 1);
  // llama-server's --cache-reuse moves matching chunks of the old cells to their new positions by
  // rotating their keys; Tandem cannot rotate cached keys, so it keeps only chunks already at their
  // prompt positions. As in llama-server, their cells were computed after other tokens than the
  // prompt's: the reply may differ from one decoded afresh.
  std::vector<bool> reused(prompt.size(), false);
  const size_t n_old = std::min(slot.cells.size(), prompt.size() - 1);
  for (size_t i = keep; options_.cache_reuse > 0 && cache_prompt && !from_swap && i < n_old;) {
    size_t end = i;
    while (end < n_old && slot.cells[end] == prompt[end]) ++end;
    if (end - i >= size_t(options_.cache_reuse)) std::fill(reused.begin() + long(i), reused.begin() + long(end), true);
    i = std::max(end, i + 1);
  }
  if (from_swap) {
    kv.remove(slot.id);
    // The slot's own cells are gone and it never holds more than n_ctx_slot: the room is there.
    if (Status st = swap_->restore(kv, entry, slot.id, keep); !st.is_ok()) {
      std::fprintf(stderr, "warning: slot %d: swapped cells not restored (%s); the prompt is decoded\n", slot.id,
                   st.message().c_str());
      keep = 0;
    } else if (options_.log_steps) {
      std::fprintf(stderr, "slot %d: %zu cells back from host RAM (%zu entries, %.1f MiB held)\n", slot.id, keep,
                   swap_->n_entries(), double(swap_->bytes_used()) / (1 << 20));
    }
  } else {
    int32_t from = int32_t(keep);  // free every old cell past the prefix but the reused runs
    for (size_t p = keep; p < reused.size(); ++p) {
      if (!reused[p]) continue;
      size_t end = p;
      while (end < reused.size() && reused[end]) ++end;
      kv.remove(slot.id, from, int32_t(p));
      from = int32_t(end);
      p = end;
    }
    kv.remove(slot.id, from, -1);
  }
  size_t n_reused = keep;
  slot.pending.clear();
  slot.n_fed = 0;
  for (size_t p = keep; p < prompt.size(); ++p) {
    if (reused[p]) ++n_reused;
    else slot.pending.push_back({int32_t(p), prompt[p]});
  }
  slot.cells = prompt;
  return n_reused;
}

void Scheduler::start(Slot& slot, std::shared_ptr<GenerationTask> task) {
  slot.stats = {};
  slot.stats.id_slot = slot.id;
  slot.stats.n_prompt = int64_t(task->prompt.size());
  slot.t_start_ms = now_ms();
  std::shared_ptr<sampling::Sampler> sampler = task->sampler;
  if (!sampler) {
    auto made = sampling::Sampler::create(task->sampling, int32_t(ctx_.n_vocab()), grammar_vocab_);
    if (!made) {
      slot.task = std::move(task);
      finish(slot, FinishReason::Error, made.error());
      return;
    }
    sampler = std::make_shared<sampling::Sampler>(std::move(*made));
  }
  // A sampler the task brings saw the slot's last task: its cells and the token it sampled last.
  std::vector<int32_t> seen = slot.cells;
  if (slot.last_token >= 0) seen.push_back(slot.last_token);
  const size_t n_seen = task->sampler ? common_prefix(seen, task->prompt) : 0;
  slot.score_prompt = task->on_prompt_tokens != nullptr;  // cached cells have no logits to give
  const size_t n_reused = reuse_cells(slot, task->prompt, task->cache_prompt && !slot.score_prompt);
  // llama-server feeds the prompt to the sampler too, so penalties see it (not the grammar: it holds
  // only the output).
  for (size_t i = n_seen; i < task->prompt.size(); ++i)
    sampler->accept(task->prompt[i], /*accept_grammar=*/false);
  slot.sampler = std::move(sampler);
  slot.stats.n_cached = int64_t(n_reused);
  slot.last_token = -1;
  stats_.n_prompt_cached += n_reused;
  slot.task = std::move(task);
  slot.state = State::Prefill;
  std::lock_guard<std::mutex> lock(stats_mu_);
  publish_slot(slot);  // busy from now on: a client's first token must not find its slot idle
}

// A prompt scored for on_prompt_tokens asks for a vocabulary-sized row of logits per token: its chunks
// are cut so that a step's rows stay within this many bytes.
constexpr size_t kPromptLogitsBytes = size_t(64) << 20;

Status Scheduler::step() {
  const double t0 = now_ms();
  Batch batch;
  std::vector<Slot*> generating;  // one logits row each, first in the batch
  for (Slot& s : slots_) {
    if (s.state != State::Generate) continue;
    batch.add(s.next_token, int32_t(s.cells.size()), s.id, true);
    generating.push_back(&s);
  }
  const int64_t n_decode = batch.size();
  // Prompts share what is left of -b; while others are generating, at most one chunk per step so
  // their next tokens are not held up behind a long prompt.
  int64_t budget = ctx_.options().n_batch - n_decode;
  if (n_decode > 0) budget = std::min(budget, options_.n_prefill_chunk);
  const size_t max_scored = std::max<size_t>(1, kPromptLogitsBytes / (size_t(ctx_.n_vocab()) * sizeof(float)));
  struct Chunk {
    Slot* slot;
    size_t first, n;  // pending[first, first + n)
  };
  std::vector<Chunk> chunks;
  for (Slot& s : slots_) {
    if (s.state != State::Prefill || budget <= 0) continue;
    size_t n = std::min(s.pending.size() - s.n_fed, size_t(budget));
    if (s.score_prompt) n = std::min(n, max_scored);
    for (size_t i = s.n_fed; i < s.n_fed + n; ++i)
      batch.add(s.pending[i].token, s.pending[i].pos, s.id, s.score_prompt || i + 1 == s.pending.size());
    chunks.push_back({&s, s.n_fed, n});
    budget -= int64_t(n);
  }
  if (batch.size() == 0) return Status::ok();
  TANDEM_TRY(ctx_.decode(batch));
  for (Slot* s : generating) s->cells.push_back(s->next_token), s->last_token = -1;
  for (const Chunk& c : chunks) c.slot->n_fed += c.n;
  const double t_step_s = (now_ms() - t0) / 1e3;
  const int64_t n_prompt = batch.size() - n_decode;
  ++stats_.n_steps;
  if (const expert::ExpertCache* c = ctx_.model().expert_cache()) {
    const expert::ExpertCacheStats& e = c->stats();
    stats_.expert_cache = true;
    stats_.expert_hits = e.hits;
    stats_.expert_misses = e.misses + e.late;
    stats_.expert_disk_read_bytes = e.bytes_read;
    stats_.expert_disk_read_s = double(e.read_us) / 1e6;
  }
  stats_.n_passes += uint64_t((batch.size() + ctx_.options().n_ubatch - 1) / ctx_.options().n_ubatch);
  stats_.n_prompt_tokens += uint64_t(n_prompt);
  (n_prompt > 0 ? stats_.t_prompt_s : stats_.t_generate_s) += t_step_s;
  for (const Slot& s : slots_)
    if (s.task) {
      ++stats_.n_busy_slot_steps;
      stats_.n_tokens_max = std::max<uint64_t>(stats_.n_tokens_max, s.cells.size());
    }
  int64_t row = 0;  // the logits rows, in batch order
  for (Slot* s : generating) sample(*s, ctx_.logits(row++));
  for (const Chunk& c : chunks) {
    Slot& s = *c.slot;
    if (s.score_prompt) {
      // The row of prompt position p gives the log-probability of the token at p + 1.
      const auto& prompt = s.task->prompt;
      std::vector<GeneratedToken> scored;
      for (size_t i = c.first; i < c.first + c.n && size_t(s.pending[i].pos) + 1 < prompt.size(); ++i, ++row)
        scored.push_back(token_logprobs(ctx_.logits(row), prompt[size_t(s.pending[i].pos) + 1], s.task->n_probs));
      s.task->on_prompt_tokens(scored);
    }
    if (s.n_fed == s.pending.size()) {
      s.score_prompt = false;  // what a context shift decodes again is no prompt
      sample(s, ctx_.logits(row++));
    }
  }
  if (options_.log_steps)
    std::fprintf(stderr, "step: %lld decode + %lld prompt tokens, %.2f ms, %zu slots busy\n", (long long)n_decode,
                 (long long)(batch.size() - n_decode), now_ms() - t0,
                 size_t(std::count_if(slots_.begin(), slots_.end(), [](const Slot& s) { return s.task != nullptr; })));
  return Status::ok();
}

void Scheduler::sample(Slot& slot, std::span<const float> logits) {
  GenerationTask& task = *slot.task;
  slot.state = State::Generate;
  if (slot.t_first_ms == 0) {  // not after a context shift
    slot.t_first_ms = now_ms();
    slot.stats.t_prompt_ms = slot.t_first_ms - slot.t_start_ms;
    stats_.ttft_s.observe((slot.t_first_ms - task.t_submit_ms) / 1e3);
  }
  if (task.n_predict == 0) return finish(slot, FinishReason::Length);
  GeneratedToken out;
  out.id = slot.sampler->sample(logits);
  out.id_slot = slot.id;
  slot.sampler->accept(out.id);
  slot.last_token = out.id;
  if (!task.ignore_eos && vocab_.is_eog(out.id)) return finish(slot, FinishReason::Stop);
  if (task.want_logprobs || task.n_probs > 0) {
    const GeneratedToken lp = token_logprobs(logits, out.id, task.n_probs);
    out.logprob = lp.logprob;
    out.top = lp.top;
  }
  ++slot.stats.n_generated;
  ++stats_.n_generated;
  if (task.on_token && !task.on_token(out)) return finish(slot, FinishReason::Stop);
  if (task.n_predict >= 0 && slot.stats.n_generated >= task.n_predict) return finish(slot, FinishReason::Length);
  // The token is decoded next step at position cells.size(): the slot must have a cell for it.
  if (int64_t(slot.cells.size()) + 1 > options_.n_ctx_slot) {
    if (!options_.context_shift) return finish(slot, FinishReason::Length);
    return shift(slot, out.id);
  }
  slot.next_token = out.id;
}

GeneratedToken Scheduler::token_logprobs(std::span<const float> logits, int32_t id, int32_t n_probs) const {
  GeneratedToken out;
  out.id = id;
  const double lse = log_sum_exp(logits);
  out.logprob = std::isnan(logits[size_t(id)]) ? -INFINITY : float(double(logits[size_t(id)]) - lse);
  std::vector<sampling::TokenProb> top;
  sampling::full_vocab_top_probs(logits, size_t(n_probs), &top);
  for (const auto& t : top) out.top.push_back({t.id, float(double(logits[size_t(t.id)]) - lse)});
  return out;
}

// llama-server's context shift (tools/server/server.cpp): the first n_keep tokens stay, half of the
// rest are dropped, and the newer half moves down to follow the kept ones. llama.cpp moves those
// cells by rotating their keys in place; Tandem decodes them again at their new positions (a prefill
// of at most half a slot), which gives exactly the cells a fresh prompt of those tokens would have,
// whatever the KV type, and needs no per-architecture RoPE shift.
void Scheduler::shift(Slot& slot, int32_t next_token) {
  const int64_t n_past = int64_t(slot.cells.size());
  const auto& prompt = slot.task->prompt;
  int64_t n_keep = slot.task->n_keep < 0 ? int64_t(prompt.size()) : slot.task->n_keep;
  if (slot.task->n_keep > 0 && prompt[0] == vocab_.special.bos) ++n_keep;  // as llama-server: BOS is not counted
  n_keep = std::max<int64_t>(0, std::min(n_keep, options_.n_ctx_slot - 4));
  const int64_t n_discard = (n_past - n_keep) / 2;
  if (options_.log_steps)
    std::fprintf(stderr, "slot %d: context shift: %lld cells kept, %lld dropped, %lld decoded again\n", slot.id,
                 (long long)n_keep, (long long)n_discard, (long long)(n_past - n_keep - n_discard));
  slot.cells.erase(slot.cells.begin() + long(n_keep), slot.cells.begin() + long(n_keep + n_discard));
  slot.cells.push_back(next_token);
  slot.pending.clear();
  slot.n_fed = 0;
  for (size_t p = size_t(n_keep); p < slot.cells.size(); ++p) slot.pending.push_back({int32_t(p), slot.cells[p]});
  ctx_.kv().remove(slot.id, int32_t(n_keep), -1);
  slot.state = State::Prefill;
  ++slot.stats.n_shifts;
}

void Scheduler::finish(Slot& slot, FinishReason reason, const Status& status) {
  if (slot.t_first_ms > 0) slot.stats.t_generate_ms = now_ms() - slot.t_first_ms;
  auto task = std::move(slot.task);
  slot.task.reset();
  slot.state = State::Idle;
  slot.next_token = -1;
  slot.t_first_ms = 0;
  slot.sampler.reset();
  slot.score_prompt = false;
  // A prompt cut short (cancelled while prefilling) keeps the cells up to the first it did not decode.
  if (slot.n_fed < slot.pending.size()) {
    const int32_t first_missing = slot.pending[slot.n_fed].pos;
    ctx_.kv().remove(slot.id, first_missing, -1);
    if (size_t(first_missing) < slot.cells.size()) slot.cells.resize(size_t(first_missing));
  }
  slot.pending.clear();
  slot.n_fed = 0;
  if (task) {
    ++stats_.n_requests_finished[int(reason)];
    stats_.latency_s.observe((now_ms() - task->t_submit_ms) / 1e3);
    // Published before on_done, so a client that has its reply finds it counted and its slot idle.
    std::lock_guard<std::mutex> lock(stats_mu_);
    published_stats_ = stats_;
    publish_slot(slot);
  }
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
