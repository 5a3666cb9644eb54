// The continuous-batching scheduler with stories260K (or its stand-in, test_data.h): greedy tokens of
// prompts that share batches equal their solo tokens, a repeated prompt reuses its slot's cells, a
// cancelled task frees its slot, and n_predict / the slot context end a task with Length.
#include "engine/scheduler.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>

#include "backend/cpu/cpu_backend.h"
#include "test_data.h"
#include "tokenizer/tokenizer.h"

namespace tandem {
namespace {

struct Outcome {
  std::vector<int32_t> tokens;
  FinishReason reason = FinishReason::Error;
  GenerationStats stats;
};

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    const std::string path = test_data::small_llama_model(&why);
    if (path.empty()) GTEST_SKIP() << why;
    auto m = model::Model::load(path, {}, backend_);
    ASSERT_TRUE(m.has_value()) << m.error().message();
    model_ = std::move(m).value();
    auto t = tokenizer::Tokenizer::from_metadata(model_->file().metadata(), path);
    ASSERT_TRUE(t.has_value()) << t.error().message();
    tok_ = std::move(t).value();
  }
  std::unique_ptr<Context> context(int64_t n_ctx, int64_t n_batch = 64) {
    auto c = Context::create(*model_, {.n_ctx = n_ctx, .n_batch = n_batch, .n_ubatch = n_batch});
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

  cpu::CpuBackend backend_{2};
  std::unique_ptr<model::Model> model_;
  std::unique_ptr<tokenizer::Tokenizer> tok_;
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

}  // namespace
}  // namespace tandem
