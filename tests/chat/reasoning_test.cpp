// The reasoning/content split: whole outputs, and the same outputs streamed in every possible pair
// of pieces and one byte at a time (a tag cut anywhere must give the same parts).
#include "chat/reasoning.h"

#include <gtest/gtest.h>

namespace tandem::chat {
namespace {

ReasoningDelta streamed(std::string_view out, bool forced, const std::vector<size_t>& cuts) {
  ReasoningSplitter s(forced);
  ReasoningDelta all;
  size_t prev = 0;
  auto add = [&](const ReasoningDelta& d) {
    all.reasoning += d.reasoning;
    all.content += d.content;
  };
  for (size_t cut : cuts) {
    add(s.push(out.substr(prev, cut - prev)));
    prev = cut;
  }
  add(s.push(out.substr(prev)));
  add(s.flush());
  return all;
}

void expect_split(std::string_view out, bool forced, const std::string& reasoning, const std::string& content) {
  const ReasoningDelta whole = split_reasoning(out, forced);
  EXPECT_EQ(whole.reasoning, reasoning) << out;
  EXPECT_EQ(whole.content, content) << out;
  for (size_t cut = 0; cut <= out.size(); ++cut) {
    const ReasoningDelta two = streamed(out, forced, {cut});
    ASSERT_EQ(two.reasoning, reasoning) << "cut at " << cut << " of " << out;
    ASSERT_EQ(two.content, content) << "cut at " << cut << " of " << out;
  }
  std::vector<size_t> every;
  for (size_t i = 1; i < out.size(); ++i) every.push_back(i);
  const ReasoningDelta bytes = streamed(out, forced, every);
  EXPECT_EQ(bytes.reasoning, reasoning);
  EXPECT_EQ(bytes.content, content);
}

TEST(ReasoningSplit, ThinkBlockThenAnswer) {
  expect_split("<think>\nThree sevens: 21.\n</think>\n\n3 * 7 = 21.", false, "Three sevens: 21.", "3 * 7 = 21.");
}

TEST(ReasoningSplit, NoThinkIsAllContent) {
  expect_split("Just an answer with <b>tags</b>.", false, "", "Just an answer with <b>tags</b>.");
  expect_split("<thin>not a tag", false, "", "<thin>not a tag");
}

TEST(ReasoningSplit, ThinkOnlyCountsAtTheStart) {
  expect_split("Answer first <think>not reasoning</think> end", false, "",
               "Answer first <think>not reasoning</think> end");
  expect_split("  \n<think>r</think>c", false, "r", "c");
}

TEST(ReasoningSplit, PromptOpenedThinkStartsInReasoning) {
  // DeepSeek-R1's generation prompt ends with "<think>\n": the output has only the closing tag.
  expect_split("Let me add: 4.\n</think>\n\nThe answer is 4.", true, "Let me add: 4.", "The answer is 4.");
  // A model that writes the opening tag once more: the tag is not reasoning.
  expect_split("<think>\nLet me add: 4.\n</think>\n\nThe answer is 4.", true, "Let me add: 4.", "The answer is 4.");
  expect_split("<b>bold</b> thought</think>c", true, "<b>bold</b> thought", "c");
  EXPECT_TRUE(prompt_opens_reasoning("<｜User｜>2+2?<｜Assistant｜><think>\n"));
  EXPECT_FALSE(prompt_opens_reasoning("<|im_start|>assistant\n"));
  EXPECT_FALSE(prompt_opens_reasoning("<think>\n\n</think>\n\n"));
}

TEST(ReasoningSplit, UnclosedReasoningStaysReasoning) {
  expect_split("<think>still thinking when the budget ran out ", false, "still thinking when the budget ran out", "");
  expect_split("cut off", true, "cut off", "");
}

TEST(ReasoningSplit, EmptyThinkBlock) {
  // Qwen3 with enable_thinking=false, SmolLM3 /no_think: an empty block before the answer.
  expect_split("<think>\n\n</think>\n\nHello!", false, "", "Hello!");
}

TEST(ReasoningSplit, ClosingTagLookalikesInsideReasoning) {
  expect_split("<think>a </thin b </think > c</think>ok", false, "a </thin b </think > c", "ok");
}

}  // namespace
}  // namespace tandem::chat
