// Splits a model's output into reasoning (between <think> and </think>) and content, token by token,
// as llama-server's --reasoning-format deepseek does: a tag may arrive split across tokens, and R1
// templates that end the prompt with an open <think> start the output inside the reasoning.
#pragma once

#include <string>
#include <string_view>

namespace tandem::chat {

struct ReasoningDelta {
  std::string reasoning;  // for message.reasoning_content / delta.reasoning_content
  std::string content;
};

// Not thread-safe; one per generation. Reasoning is only recognized at the start of the output
// (leading whitespace allowed), as llama.cpp does; a <think> later in the answer is content.
// Whitespace right after the opening tag, before the closing tag and after it is dropped, so the
// parts come out trimmed as llama.cpp's non-streaming parser returns them.
class ReasoningSplitter {
 public:
  // starts_in_reasoning: the prompt already opened the reasoning (see prompt_opens_reasoning).
  explicit ReasoningSplitter(bool starts_in_reasoning = false, std::string open_tag = "<think>",
                             std::string close_tag = "</think>");

  // The text of the next token(s); returns what is certain so far (a possible partial tag waits).
  ReasoningDelta push(std::string_view text);
  // End of generation: whatever was held back. An unclosed reasoning stays reasoning.
  ReasoningDelta flush();

 private:
  enum class State { Start, Reasoning, AfterClose, Content };
  void drain(bool final, ReasoningDelta& out);

  State state_;
  std::string open_, close_;
  bool started_open_;    // just inside the opening tag: leading whitespace is dropped
  bool opened_by_prompt_;  // the prompt opened the tag: text with no tag of its own is reasoning
  std::string pending_;  // text not yet attributed: a possible tag prefix or trailing whitespace
};

// Both parts of a complete output at once.
ReasoningDelta split_reasoning(std::string_view output, bool starts_in_reasoning = false);

// True when a rendered prompt ends inside an open <think> (DeepSeek-R1's and Qwen3's templates add
// "<think>\n" to the generation prompt), so the output starts as reasoning.
bool prompt_opens_reasoning(std::string_view prompt, std::string_view open_tag = "<think>");

}  // namespace tandem::chat
