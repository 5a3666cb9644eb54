// Continuous batching over one Context: N slots (one KV sequence each) share every forward pass.
// Each step builds one Batch with the next token of every generating slot plus a bounded chunk of
// the prompts being prefilled, decodes it and samples each slot with its own Sampler. New tasks join
// at the next step; a slot keeps its last prompt's KV cells, and a task goes to the idle slot whose
// cells share the longest prefix with its prompt, so only the differing suffix is decoded again.
// Knows nothing about HTTP: the server (src/server) and `run` (one slot, on its own thread) drive it
// through GenerationTask, so both generate with this one loop.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "engine/context.h"
#include "engine/kv_swap.h"
#include "engine/stats.h"
#include "sampling/sampler.h"
#include "tokenizer/vocab.h"

namespace tandem {

struct TokenLogprob {
  int32_t id;
  float logprob;  // natural log of the softmax of the raw logits (before any sampler stage)
};

struct GeneratedToken {
  int32_t id;
  float logprob = 0;              // set when the task wants logprobs
  std::vector<TokenLogprob> top;  // the task's n_probs most likely tokens, best first
  int32_t id_slot = -1;           // the slot that generated it (streamed replies name it from the start)
};

enum class FinishReason { Stop, Length, Cancelled, Error };
const char* finish_reason_name(FinishReason r);  // "stop", "length", "cancelled", "error"

struct GenerationStats {
  int64_t n_prompt = 0, n_cached = 0, n_generated = 0;  // n_cached: prompt tokens reused from the slot's cells
  int64_t n_shifts = 0;                                 // context shifts (SchedulerOptions::context_shift)
  double t_prompt_ms = 0, t_generate_ms = 0;            // admission to first token; first token to the end
  int32_t id_slot = -1;
};

// One generation. The callbacks run on the scheduler thread, between steps: they must be quick and
// must not block (push to a queue, check stop strings). Owned by a shared_ptr held by the submitter
// and by the scheduler until on_done has run.
struct GenerationTask {
  std::vector<int32_t> prompt;  // non-empty, shorter than the slot context (Scheduler::check_prompt)
  sampling::SamplerParams sampling;
  int64_t n_predict = -1;  // -1: until end of generation or the slot's context is full
  bool ignore_eos = false;
  bool want_logprobs = false;
  int32_t n_probs = 0;      // top tokens reported per generated token
  bool cache_prompt = true; // reuse the slot's cells for the common prefix
  int32_t id_slot = -1;     // >= 0: wait for this slot
  int64_t n_keep = 0;       // prompt tokens kept at a context shift, BOS not counted (-1: the whole prompt)
  // Null: the scheduler makes one from `sampling` and feeds it the whole prompt. Set: used as it is,
  // fed only the prompt tokens past what the slot's last task left (its cells and last sampled token):
  // run's chat keeps one sampler across turns, so its random stream and penalty history go on as
  // llama-cli's do. Touched only while the task runs.
  std::shared_ptr<sampling::Sampler> sampler;
  // Set: the prompt is decoded afresh (no cached prefix) with the logits of every position, and this
  // gets the log-probability of each prompt token after the first given those before it (id, logprob
  // and the n_probs most likely alternatives), in order, a chunk at a time. Costs the whole prefill and
  // a vocabulary-sized row per prompt token: only for requests that ask (/v1/completions' echo with
  // logprobs).
  std::function<void(std::span<const GeneratedToken>)> on_prompt_tokens;
  // Each generated token (end-of-generation tokens are not reported); false stops the task (Stop).
  std::function<bool(const GeneratedToken&)> on_token;
  // Exactly once, last. status is set when reason is Error.
  std::function<void(FinishReason, const GenerationStats&, const Status&)> on_done;
  // Set by any thread; the scheduler ends the task (Cancelled) and frees its slot at the next step.
  std::atomic<bool> cancelled{false};
  double t_submit_ms = 0;  // set by Scheduler::submit (time-to-first-token and latency start there)
};

struct SchedulerOptions {
  int32_t n_slots = 1;
  int64_t n_ctx_slot = 4096;     // cells each slot may hold (prompt + generated); n_slots of them fit the cache
  int64_t max_queue = 64;        // tasks waiting for a slot beyond which submit() refuses
  int64_t n_prefill_chunk = 512; // prompt tokens per step while other slots are generating
  bool log_steps = false;        // one stderr line per step (--log-level debug)
  // A slot that fills up keeps its first n_keep tokens, drops half of the rest and goes on
  // (llama-server's --context-shift); false: the task ends with Length.
  bool context_shift = false;
  bool cont_batching = true;     // false (-nocb): a task starts only when no slot is generating
  // --cache-reuse N: a new prompt also keeps runs of at least N old cells that hold its tokens at the
  // same positions past the common prefix (llama-server moves such chunks; see reuse_cells). 0: off.
  int64_t cache_reuse = 0;
  // Host RAM for the cells of slots handed to other prompts (engine/kv_swap.h, --swap-space); 0: none.
  size_t swap_bytes = 0;
  // true: the scheduler runs its own thread (the server). false: the caller drives the same loop on
  // its thread with run_until_idle() (`tandem run`: no hand-over per token, --trace sees one thread).
  bool own_thread = true;
};

struct SlotInfo {
  int32_t id = 0;
  bool busy = false;
  int64_t n_past = 0;    // cells the slot holds
  int64_t n_prompt = 0;  // of the current or last task
  int64_t n_generated = 0;
};

class Scheduler {
 public:
  // The context and vocabulary must outlive the scheduler; nothing else may use the context while it runs.
  // grammar_vocab: what tasks with a grammar (SamplerParams::grammar) are sampled with; null: none may.
  Scheduler(Context& ctx, const tokenizer::Vocab& vocab, const SchedulerOptions& options,
            std::shared_ptr<const sampling::GrammarVocab> grammar_vocab = nullptr);
  ~Scheduler();  // stops the thread; queued and running tasks end as Cancelled

  // InvalidArgument when the prompt is empty or does not fit a slot (the message names both numbers).
  Status check_prompt(size_t n_prompt_tokens) const;
  // Queues the task; false (and nothing queued) when max_queue tasks are already waiting.
  bool submit(std::shared_ptr<GenerationTask> task);

  // own_thread false only: runs steps on the calling thread until no task is queued or running.
  void run_until_idle();

  std::vector<SlotInfo> slots() const;
  size_t n_queued() const;
  // Counters since start-up (a copy, as of the last step), for monitoring.
  SchedulerStats stats() const;
  const SchedulerOptions& options() const { return options_; }

 private:
  enum class State { Idle, Prefill, Generate };
  struct Slot {
    int32_t id = 0;
    State state = State::Idle;
    std::shared_ptr<GenerationTask> task;
    // The tokens of positions 0.. of this slot's sequence. The KV cells hold all of them but the
    // positions in pending[n_fed..]; the token sampled last is not among them until decoded.
    std::vector<int32_t> cells;
    struct Pending {
      int32_t pos, token;
    };
    std::vector<Pending> pending;  // to decode before the next sample, in position order; the last gives the logits
    size_t n_fed = 0;              // of pending, decoded so far
    int32_t next_token = -1;     // sampled, to be decoded in the next step
    int32_t last_token = -1;     // the last token sampled (the final one of a task is in no cell)
    bool score_prompt = false;   // pending is the task's whole prompt and on_prompt_tokens wants every row
    std::shared_ptr<sampling::Sampler> sampler;
    GenerationStats stats;
    double t_start_ms = 0, t_first_ms = 0;
  };

  void loop();
  bool busy() const;  // a slot holds a task
  void admit();  // under mu_
  void run_step();  // cancellations, one step, publish
  void start(Slot& slot, std::shared_ptr<GenerationTask> task);
  size_t reuse_cells(Slot& slot, const std::vector<int32_t>& prompt, bool cache_prompt);
  Status step();
  void sample(Slot& slot, std::span<const float> logits);
  GeneratedToken token_logprobs(std::span<const float> logits, int32_t id, int32_t n_probs) const;
  void shift(Slot& slot, int32_t next_token);
  void finish(Slot& slot, FinishReason reason, const Status& status = Status::ok());
  void publish();  // copies every slot's state into info_ for slots(), and stats_
  void publish_slot(const Slot& s);  // caller holds stats_mu_

  Context& ctx_;
  const tokenizer::Vocab& vocab_;
  SchedulerOptions options_;
  std::shared_ptr<const sampling::GrammarVocab> grammar_vocab_;
  std::vector<Slot> slots_;  // touched by the scheduler thread only
  SchedulerStats stats_;     // likewise; publish() copies it into published_stats_
  std::unique_ptr<KvSwap> swap_;  // likewise

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<GenerationTask>> queue_;
  uint64_t n_rejected_ = 0;
  // What slots() and stats() read, under a lock of its own: start() and finish() publish as they
  // happen (finish() before on_done, so a client with its reply finds it counted and its slot idle),
  // and start() runs under mu_ (lock order: mu_, then stats_mu_).
  mutable std::mutex stats_mu_;
  std::vector<SlotInfo> info_;
  SchedulerStats published_stats_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace tandem
