// The streaming reasoning/content split (llama.cpp common/chat.cpp, try_parse_reasoning, for the
// behaviour: tag at the start only, spaces around the tags consumed, unclosed reasoning kept).
#include "chat/reasoning.h"

#include <algorithm>

namespace tandem::chat {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Length of the longest suffix of `s` that is a proper prefix of `tag` (a tag cut by a token edge).
size_t partial_tag_suffix(std::string_view s, std::string_view tag) {
  for (size_t n = std::min(s.size(), tag.size() - 1); n > 0; --n)
    if (s.substr(s.size() - n) == tag.substr(0, n)) return n;
  return 0;
}

}  // namespace

ReasoningSplitter::ReasoningSplitter(bool starts_in_reasoning, std::string open_tag, std::string close_tag)
    : state_(State::Start), open_(std::move(open_tag)), close_(std::move(close_tag)), started_open_(false),
      opened_by_prompt_(starts_in_reasoning) {}

ReasoningDelta ReasoningSplitter::push(std::string_view text) {
  pending_ += text;
  ReasoningDelta out;
  drain(false, out);
  return out;
}

ReasoningDelta ReasoningSplitter::flush() {
  ReasoningDelta out;
  drain(true, out);
  return out;
}

void ReasoningSplitter::drain(bool final, ReasoningDelta& out) {
  while (!pending_.empty()) {
    switch (state_) {
      case State::Start: {
        size_t i = 0;
        while (i < pending_.size() && is_space(pending_[i])) ++i;
        const std::string_view rest = std::string_view(pending_).substr(i);
        if (rest.size() >= open_.size() && rest.substr(0, open_.size()) == open_) {
          pending_.erase(0, i + open_.size());
          state_ = State::Reasoning;
          started_open_ = true;
          continue;
        }
        if (!final && open_.compare(0, rest.size(), rest) == 0) return;  // maybe "<thi" so far
        // A model that opens the tag again after the prompt did: the tag is not part of the reasoning.
        state_ = opened_by_prompt_ ? State::Reasoning : State::Content;
        started_open_ = opened_by_prompt_;
        continue;
      }
      case State::Reasoning: {
        if (started_open_) {  // whitespace right after the opening tag is not reasoning
          size_t i = 0;
          while (i < pending_.size() && is_space(pending_[i])) ++i;
          pending_.erase(0, i);
          if (pending_.empty()) return;
          started_open_ = false;
        }
        const size_t close = pending_.find(close_);
        if (close != std::string::npos) {
          std::string_view body = std::string_view(pending_).substr(0, close);
          while (!body.empty() && is_space(body.back())) body.remove_suffix(1);
          out.reasoning += body;
          pending_.erase(0, close + close_.size());
          state_ = State::AfterClose;
          continue;
        }
        // Hold back a possible partial closing tag and trailing whitespace (dropped if the tag follows).
        size_t keep = final ? 0 : partial_tag_suffix(pending_, close_);
        size_t end = pending_.size() - keep;
        while (end > 0 && is_space(pending_[end - 1])) --end;
        out.reasoning.append(pending_, 0, end);
        pending_.erase(0, end);
        if (final) pending_.clear();  // trailing whitespace of unclosed reasoning
        return;
      }
      case State::AfterClose: {
        size_t i = 0;
        while (i < pending_.size() && is_space(pending_[i])) ++i;
        pending_.erase(0, i);
        if (pending_.empty()) return;
        state_ = State::Content;
        continue;
      }
      case State::Content:
        out.content += pending_;
        pending_.clear();
        return;
    }
  }
}

ReasoningDelta split_reasoning(std::string_view output, bool starts_in_reasoning) {
  ReasoningSplitter s(starts_in_reasoning);
  ReasoningDelta a = s.push(output);
  ReasoningDelta b = s.flush();
  a.reasoning += b.reasoning;
  a.content += b.content;
  return a;
}

bool prompt_opens_reasoning(std::string_view prompt, std::string_view open_tag) {
  while (!prompt.empty() && is_space(prompt.back())) prompt.remove_suffix(1);
  return prompt.size() >= open_tag.size() && prompt.substr(prompt.size() - open_tag.size()) == open_tag;
}

}  // namespace tandem::chat
