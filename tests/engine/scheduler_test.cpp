// The continuous-batching scheduler with stories260K (or its stand-in, test_data.h): greedy tokens of
// prompts that share batches equal their solo tokens, a repeated prompt reuses its slot's cells, a
// cancelled task frees its slot, n_predict / the slot context end a task with Length, and the loop
// driven on the caller's thread (`tandem run`) gives the same tokens, and a scored prompt (echo with
// logprobs) gives each token's log-probability from the position before it.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <future>

#include "test_data.h"

namespace tandem {
namespace {

struct Outcome {
  std::vector<int32_t> tokens;
  FinishReason reason = FinishReason::Error;
  GenerationStats stats;
};

class SchedulerTest : public test_data::SmallLlamaTest {
 protected:
  std::unique_ptr<Context> context(int64_t n_ctx, int64_t n_batch = 64, bool batch_invariant = false) {
    auto c = Context::create(*model_, {.n_ctx = n_ctx, .n_batch = n_batch, .n_ubatch = n_batch,
                                       .batch_invariant = batch_invariant});
    EXPECT_TRUE(c.has_value());
    return std::move(c).value();
  }
  // A greedy task whose outcome arrives in the future.
  std::pair<std::shared_ptr<GenerationTask>, std::future<Outcome>> task(std::vector<int32_t> prompt, int64_t n_predict) {
    auto t = std::make_shared<GenerationTask>();
    auto promise = std::make_shared<std::promise<Outcome>>();
    auto out = std::make_shared<Outcome>();
    t->prompt = std::move(prompt);
    t->sampling.temp = 0;
    t->n_predict = n_predict;
    t->ignore_eos = true;
    t->on_token = [out](const GeneratedToken& g) {
      out->tokens.push_back(g.id);
      return true;
    };
    t->on_done = [out, promise](FinishReason r, const GenerationStats& s, const Status&) {
      out->reason = r;
      out->stats = s;
      promise->set_value(*out);
    };
    return {t, promise->get_future()};
  }
  Outcome wait(std::future<Outcome>& f) {
    EXPECT_EQ(f.wait_for(std::chrono::seconds(60)), std::future_status::ready);
    return f.get();
  }
};

const std::vector<std::vector<int32_t>> kPrompts = {
    {1, 403, 407, 261, 378, 400, 300, 270}, {1, 312, 290, 330, 431}, {1, 260, 261},
    {1, 403, 407, 261, 378, 290, 290, 311, 312, 313, 320, 330, 340, 350, 360, 370, 380}, {1, 500}};

TEST_F(SchedulerTest, SharedBatchesGiveTheSoloGreedyTokens) {
  std::vector<std::vector<int32_t>> solo;
  for (const auto& p : kPrompts) {
    auto ctx = context(64);
    Scheduler s(*ctx, tok_->vocab(), {.n_slots = 1, .n_ctx_slot = 64});
    auto [t, f] = task(p, 12);
    ASSERT_TRUE(s.submit(t));
    const Outcome o = wait(f);
    EXPECT_EQ(o.reason, FinishReason::Length);
    ASSERT_EQ(o.tokens.size(), 12u);
    solo.push_back(o.tokens);
  }
  // Three slots for five prompts, prompts fed in 4-token chunks beside the running decodes.
  auto ctx = context(3 * 64, 64);
  Scheduler s(*ctx, tok_->vocab(), {.n_slots = 3, .n_ctx_slot = 64, .n_prefill_chunk = 4});
  std::vector<std::future<Outcome>> futures;
  for (const auto& p : kPrompts) {
    auto [t, f] = task(p, 12);
    ASSERT_TRUE(s.submit(t));
    futures.push_back(std::move(f));
  }
  for (size_t i = 0; i < kPrompts.size(); ++i) EXPECT_EQ(wait(futures[i]).tokens, solo[i]) << "prompt " << i;
}

TEST_F(SchedulerTest, RepeatedPromptReusesTheSlotsCells) {
  auto ctx = context(2 * 64);
  Scheduler s(*ctx, tok_->vocab(), {.n_slots = 2, .n_ctx_slot = 64});
  auto [a, fa] = task(kPrompts[0], 3);
  ASSERT_TRUE(s.submit(a));
  const Outcome first = wait(fa);
  EXPECT_EQ(first.stats.n_cached, 0);
  auto [b, fb] = task(kPrompts[0], 3);
  ASSERT_TRUE(s.submit(b));
  const Outcome second = wait(fb);
  EXPECT_EQ(second.stats.n_cached, int64_t(kPrompts[0].size()) - 1);  // the last token is decoded again
  EXPECT_EQ(second.stats.id_slot, first.stats.id_slot);                // routed to the slot holding the prefix
  EXPECT_EQ(second.tokens, first.tokens);
}

TEST_F(SchedulerTest, SlotContextEndsWithLengthAndLongPromptsAreRefused) {
  auto ctx = context(2 * 16);
  Scheduler s(*ctx, tok_->vocab(), {.n_slots = 2, .n_ctx_slot = 16});
  auto [t, f] = task(kPrompts[0], -1);
  ASSERT_TRUE(s.submit(t));
  const Outcome o = wait(f);
  EXPECT_EQ(o.reason, FinishReason::Length);
  EXPECT_EQ(int64_t(kPrompts[0].size() + o.tokens.size()), 16 + 1);  // the last token needs no cell
  const Status st = s.check_prompt(16);
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("16 tokens but the context of a slot holds 16"), std::string::npos) << st.message();
  EXPECT_TRUE(s.check_prompt(15).is_ok());
}

TEST_F(SchedulerTest, CancelledTaskFreesItsSlotForTheNext) {
  auto ctx = context(64);
  Scheduler s(*ctx, tok_->vocab(), {.n_slots = 1, .n_ctx_slot = 64, .max_queue = 1});
  auto [a, fa] = task(kPrompts[1], -1);
  // The first token holds the scheduler until the test has queued and cancelled: this model is fast
  // enough to fill the slot before the test thread runs otherwise.
  std::promise<void> started, go;
  auto on_token = a->on_token;
  bool once = false;
  a->on_token = [&, on_token](const GeneratedToken& g) {
    if (!once) once = true, started.set_value(), go.get_future().wait();
    return on_token(g);
  };
  ASSERT_TRUE(s.submit(a));
  started.get_future().wait();
  auto [b, fb] = task(kPrompts[2], 2);
  ASSERT_TRUE(s.submit(b));
  auto [c, fc] = task(kPrompts[2], 2);
  EXPECT_FALSE(s.submit(c));  // the queue holds one
  a->cancelled = true;
  go.set_value();
  const Outcome cancelled = wait(fa);
  EXPECT_EQ(cancelled.reason, FinishReason::Cancelled);
  EXPECT_EQ(cancelled.tokens.size(), 1u);  // ended at the next step
  EXPECT_EQ(wait(fb).reason, FinishReason::Length);
}

// `tandem run` drives the loop on its own thread: the same tokens as the scheduler's thread gives.
TEST_F(SchedulerTest, CallerDrivenLoopGivesTheThreadedTokens) {
  auto threaded_ctx = context(64);
  Scheduler threaded(*threaded_ctx, tok_->vocab(), {.n_slots = 1, .n_ctx_slot = 64});
  auto [a, fa] = task(kPrompts[0], 8);
  ASSERT_TRUE(threaded.submit(a));
  const Outcome expected = wait(fa);

  auto ctx = context(64);
  Scheduler s(*ctx, tok_->vocab(), {.n_slots = 1, .n_ctx_slot = 64, .own_thread = false});
  auto [b, fb] = task(kPrompts[0], 8);
  ASSERT_TRUE(s.submit(b));
  s.run_until_idle();
  ASSERT_EQ(fb.wait_for(std::chrono::seconds(0)), std::future_status::ready);  // done on this thread
  EXPECT_EQ(fb.get().tokens, expected.tokens);
  // n_predict 0 generates nothing (run -n 0), not the one token the prompt's logits give.
  auto [c, fc] = task(kPrompts[1], 0);
  ASSERT_TRUE(s.submit(c));
  s.run_until_idle();
  const Outcome none = fc.get();
  EXPECT_EQ(none.reason, FinishReason::Length);
  EXPECT_TRUE(none.tokens.empty());
}

// A full slot keeps its first n_keep tokens (BOS not counted, as llama-server), drops half of the
// rest and goes on: what follows equals a fresh prompt of the cells it kept plus the last token.
TEST_F(SchedulerTest, ContextShiftContinuesAsAFreshPromptOfTheKeptCells) {
  const std::vector<int32_t>& prompt = kPrompts[0];  // 8 tokens, BOS first
  ASSERT_EQ(prompt[0], tok_->vocab().special.bos);
  auto ctx = context(16, 64, true);
  Scheduler s(*ctx, tok_->vocab(), {.n_slots = 1, .n_ctx_slot = 16, .context_shift = true});
  auto [t, f] = task(prompt, 20);
  t->n_keep = 3;
  ASSERT_TRUE(s.submit(t));
  const Outcome o = wait(f);
  ASSERT_EQ(o.reason, FinishReason::Length);
  ASSERT_EQ(o.tokens.size(), 20u);  // without the shift the slot ends after 16 - 8 + 1 tokens
  EXPECT_EQ(o.stats.n_shifts, 2);
  // The first shift comes when g9 is sampled with the slot full (the prompt and g1..g8): 1 + 3 tokens
  // stay, (16 - 4) / 2 = 6 go (prompt[4..8), g1, g2), and g3..g8 then g9 are decoded again.
  std::vector<int32_t> kept(prompt.begin(), prompt.begin() + 4);
  kept.insert(kept.end(), o.tokens.begin() + 2, o.tokens.begin() + 9);
  auto fresh_ctx = context(64, 64, true);
  Scheduler fresh(*fresh_ctx, tok_->vocab(), {.n_slots = 1, .n_ctx_slot = 64});
  auto [r, fr] = task(kept, 6);
  ASSERT_TRUE(fresh.submit(r));
  // g10..g15: until the second shift.
  EXPECT_EQ(wait(fr).tokens, std::vector<int32_t>(o.tokens.begin() + 9, o.tokens.begin() + 15));
}

// --swap-space: a slot handed to another prompt keeps its cells in host RAM, and the first prompt
// coming back gets them (byte copies: the same tokens) instead of decoding them again.
TEST_F(SchedulerTest, SwappedCellsComeBackForAReturningPrompt) {
  const auto& a = kPrompts[3];
  const auto& b = kPrompts[4];
  for (const size_t swap_bytes : {size_t(0), size_t(1), size_t(1) << 20}) {
    auto ctx = context(64);
    Scheduler s(*ctx, tok_->vocab(), {.n_slots = 1, .n_ctx_slot = 64, .swap_bytes = swap_bytes});
    std::vector<Outcome> outcomes;
    for (const auto* p : {&a, &b, &a}) {
      auto [t, f] = task(*p, 4);
      ASSERT_TRUE(s.submit(t));
      outcomes.push_back(wait(f));
    }
    const bool kept = swap_bytes > 1;  // one byte holds no entry
    EXPECT_EQ(outcomes[2].stats.n_cached, kept ? int64_t(a.size()) - 1 : 1) << swap_bytes;  // else only BOS is shared
    EXPECT_EQ(outcomes[2].tokens, outcomes[0].tokens);
  }
}

// --cache-reuse N: past the common prefix, runs of at least N old cells holding the new prompt's tokens
// at the same positions are kept; the others are freed and decoded again.
TEST_F(SchedulerTest, CacheReuseKeepsRunsAtTheirPositions) {
  const std::vector<int32_t> a = {1, 403, 407, 261, 378, 400, 300, 270, 290, 311, 312, 313};
  const std::vector<int32_t> b = {1, 500, 501, 502, 378, 400, 300, 270, 290, 311, 312, 313};  // a's positions 4..11
  for (const int64_t cache_reuse : {0, 4, 8}) {
    auto ctx = context(64);
    Scheduler s(*ctx, tok_->vocab(), {.n_slots = 1, .n_ctx_slot = 64, .cache_reuse = cache_reuse});
    std::vector<Outcome> outcomes;
    for (const auto* p : {&a, &b, &b}) {
      auto [t, f] = task(*p, 2);
      ASSERT_TRUE(s.submit(t));
      outcomes.push_back(wait(f));
    }
    // a's run 4..10 (7 tokens: the last prompt token is always decoded) is kept when N <= 7.
    EXPECT_EQ(outcomes[1].stats.n_cached, cache_reuse == 4 ? 1 + 7 : 1) << cache_reuse;
    EXPECT_EQ(outcomes[2].stats.n_cached, int64_t(b.size()) - 1);
    EXPECT_EQ(outcomes[2].tokens, outcomes[1].tokens);  // the same cells: none missing, none twice
    EXPECT_EQ(ctx->kv().n_used(), int64_t(b.size()) + 1);  // b and its first generated token
  }
}

// -nocb: a task queued while another generates starts only when that one has finished.
TEST_F(SchedulerTest, WithoutContinuousBatchingTasksDoNotJoinRunningOnes) {
  for (const bool cont_batching : {true, false}) {
    auto ctx = context(2 * 64);
    Scheduler s(*ctx, tok_->vocab(), {.n_slots = 2, .n_ctx_slot = 64, .cont_batching = cont_batching});
    std::vector<std::string> events;  // appended on the scheduler thread only
    auto [b, fb] = task(kPrompts[2], 2);
    auto b_token = b->on_token;
    b->on_token = [&events, b_token](const GeneratedToken& g) {
      events.push_back("b token");
      return b_token(g);
    };
    auto [a, fa] = task(kPrompts[0], 8);
    auto a_token = a->on_token;
    auto a_done = a->on_done;
    bool submitted = false;
    a->on_token = [&, a_token](const GeneratedToken& g) {
      if (!submitted) {
        submitted = true;
        EXPECT_TRUE(s.submit(b));
      }
      return a_token(g);
    };
    a->on_done = [&events, a_done](FinishReason r, const GenerationStats& st, const Status& status) {
      events.push_back("a done");
      a_done(r, st, status);
    };
    ASSERT_TRUE(s.submit(a));
    wait(fa);
    wait(fb);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.front(), cont_batching ? "b token" : "a done");
  }
}

}  // namespace
}  // namespace tandem

namespace tandem {
namespace {

// The server answers from a task's callbacks, so what slots() and stats() say must already hold when
// they run: the slot busy at the first token, idle and every token counted at the end.
TEST_F(SchedulerTest, SlotsAndStatsArePublishedBeforeTheCallbacks) {
  auto ctx = context(256);
  Scheduler s(*ctx, tok_->vocab(), {.n_slots = 2, .n_ctx_slot = 128});
  auto t = std::make_shared<GenerationTask>();
  t->prompt = kPrompts[0];
  t->sampling.temp = 0;
  t->n_predict = 5;
  t->ignore_eos = true;
  t->id_slot = 1;
  int n_tokens = 0;
  bool busy_at_first_token = false, idle_at_done = false;
  SchedulerStats at_done;
  std::promise<void> done;
  t->on_token = [&](const GeneratedToken&) {
    if (n_tokens++ == 0) busy_at_first_token = s.slots()[1].busy;
    return true;
  };
  t->on_done = [&](FinishReason, const GenerationStats&, const Status&) {
    idle_at_done = !s.slots()[1].busy;
    at_done = s.stats();
    done.set_value();
  };
  ASSERT_TRUE(s.submit(t));
  ASSERT_EQ(done.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
  EXPECT_TRUE(busy_at_first_token);
  EXPECT_TRUE(idle_at_done);
  EXPECT_EQ(at_done.n_generated, 5u);
  EXPECT_EQ(at_done.n_prompt_tokens, kPrompts[0].size());
  EXPECT_EQ(at_done.n_requests_finished[int(FinishReason::Length)], 1u);
  EXPECT_EQ(at_done.ttft_s.count, 1u);
  EXPECT_EQ(at_done.latency_s.count, 1u);
  EXPECT_GE(at_done.latency_s.sum, at_done.ttft_s.sum);
  EXPECT_EQ(at_done.n_steps, 5u);  // the prompt and its first token, then one step per further token
}

// on_prompt_tokens (/v1/completions' echo with logprobs): every prompt token after the first, scored from
// the logits of the position before it, against one plain prefill of the prompt. The scored prompt joins
// while another slot generates (its rows follow the neighbour's in each batch), in 4-token chunks, and its
// slot's cells already hold the prompt: they are decoded again, since cached cells have no logits.
TEST_F(SchedulerTest, ScoredPromptGivesEachTokensLogprobFromThePositionBefore) {
  const std::vector<int32_t>& prompt = kPrompts[3];
  std::vector<double> want;  // log-softmax of prompt[i + 1] at position i
  {
    auto ref = context(64, 64, /*batch_invariant=*/true);
    ASSERT_TRUE(ref->prefill(0, prompt, 0, 0, int64_t(prompt.size())).is_ok());
    for (size_t i = 0; i + 1 < prompt.size(); ++i) {
      const auto row = ref->logits(int64_t(i));
      double sum = 0;
      for (float l : row) sum += std::exp(double(l) - double(row[0]));
      want.push_back(double(row[size_t(prompt[i + 1])]) - double(row[0]) - std::log(sum));
    }
  }
  auto ctx = context(2 * 64, 64, /*batch_invariant=*/true);
  Scheduler s(*ctx, tok_->vocab(), {.n_slots = 2, .n_ctx_slot = 64, .n_prefill_chunk = 4});
  auto [warm, fw] = task(prompt, 1);
  warm->id_slot = 1;
  ASSERT_TRUE(s.submit(warm));
  wait(fw);
  auto [scored, fs] = task(prompt, 2);
  scored->id_slot = 1;
  scored->n_probs = 2;
  std::vector<GeneratedToken> got;
  int n_chunks = 0;
  scored->on_prompt_tokens = [&](std::span<const GeneratedToken> t) {
    ++n_chunks;
    got.insert(got.end(), t.begin(), t.end());
  };
  auto [neighbour, fn] = task(kPrompts[0], 40);
  neighbour->id_slot = 0;
  neighbour->on_token = [&s, scored = scored, on_token = neighbour->on_token, submitted = false](const GeneratedToken& g) mutable {
    if (!submitted) {  // the neighbour is generating from here on
      submitted = true;
      EXPECT_TRUE(s.submit(scored));
    }
    return on_token(g);
  };
  ASSERT_TRUE(s.submit(neighbour));
  const Outcome o = wait(fs);
  wait(fn);
  EXPECT_EQ(o.stats.n_cached, 0);
  EXPECT_EQ(n_chunks, 5);  // 17 tokens, 4 a step beside the generating neighbour
  ASSERT_EQ(got.size(), prompt.size() - 1);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].id, prompt[i + 1]);
    EXPECT_NEAR(got[i].logprob, want[i], 1e-4) << "prompt token " << i + 1;  // float log-softmax against double
    ASSERT_EQ(got[i].top.size(), 2u);
    EXPECT_GE(got[i].top[0].logprob, got[i].logprob - 1e-6f);
  }
}

}  // namespace
}  // namespace tandem
