// Tool calls in a model's output, parsed back into OpenAI's {id, name, arguments} for the formats of
// the families Tandem serves: Hermes/Qwen <tool_call> JSON, Llama 3.x JSON, DeepSeek V3/R1/V3.1
// tool-call tokens, Mistral [TOOL_CALLS], Kimi-K2 sections. Malformed output is plain content.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/status.h"

namespace tandem::chat {

enum class ToolCallFormat { None, Hermes, Llama3, DeepSeek, Mistral, KimiK2 };

const char* tool_call_format_name(ToolCallFormat format);

// The format a chat template asks its model to write, from the markers in its source.
ToolCallFormat detect_tool_call_format(std::string_view template_source);

struct ToolCall {
  std::string id;         // the model's id where it writes one (Mistral, Kimi-K2), else "call_<n>"
  std::string name;
  std::string arguments;  // compact JSON text of an object, as OpenAI's `arguments` string
};

struct ParsedToolCalls {
  std::string content;  // the text outside the calls (all of the output when nothing parsed)
  std::vector<ToolCall> tool_calls;
};

// Parses a complete output. Any malformed call (bad JSON, a missing name, an unclosed section)
// leaves the whole output as content and no calls, never a partial result.
ParsedToolCalls parse_tool_calls(std::string_view output, ToolCallFormat format);

// Where a tool-call section starts in streamed text so far (npos: none yet), counting a trailing
// partial marker as a start, so a streaming server holds that text back instead of sending it as
// content.
size_t tool_call_start(std::string_view text, ToolCallFormat format);

// The calls already whole in streamed text so far, for a server that sends each call as it completes:
// those closed by their family's per-call end marker (Hermes, DeepSeek, Kimi-K2). Llama 3 and Mistral
// outputs end all their calls at once, so they give none until parse_tool_calls reads the whole output.
std::vector<ToolCall> complete_tool_calls(std::string_view text, ToolCallFormat format);

// complete_tool_calls for a server streaming one reply: push() reads only what the output added since
// the last closed call (complete_tool_calls rereads it all, which over a reply's steps is quadratic).
// Together the pushes return the calls complete_tool_calls gives on the output so far; a malformed call
// or the section's end ends them (complete_tool_calls then gives none at all, or no more). One per reply;
// not thread-safe.
class ToolCallStream {
 public:
  explicit ToolCallStream(ToolCallFormat format);
  // The calls closed since the previous push. `text` is the whole output so far: the previous one
  // with text added.
  std::vector<ToolCall> push(std::string_view text);

 private:
  void take(std::optional<ToolCall> call, std::vector<ToolCall>* out);

  ToolCallFormat format_;
  size_t scan_ = 0;                         // where the next marker is looked for: none starts before
  size_t call_ = std::string_view::npos;    // the open call's text starts here (npos: none open)
  bool in_section_ = false;                 // DeepSeek, Kimi-K2: the section's begin marker was seen
  bool ended_ = false;                      // no more calls
  size_t n_calls_ = 0;
};

// GBNF that holds a model's whole output to tool calls in `format`, for tool_choice "required" or a
// named function (llama-server forces these with a grammar too): one call, or one or more when
// `parallel`, each to a function of `tools` (OpenAI's list; only `name` when it is not empty) with
// arguments that match its `parameters` schema (sampling/json_schema.h; none given: any object).
// `template_source` picks the written form where a family has two: DeepSeek R1/V3's ```json block or
// V3.1's bare arguments, Mistral Nemo's JSON list or Small 3.2's [ARGS]. InvalidArgument names the
// bad tool or schema, or a `name` that no tool has. `in_reasoning`: the prompt opened <think> (R1's
// templates), so the output first ends that: reasoning text (without "</"), "</think>", then the calls.
Result<std::string> tool_call_grammar(ToolCallFormat format, std::string_view template_source,
                                      const nlohmann::ordered_json& tools, std::string_view name, bool parallel,
                                      bool in_reasoning = false);

}  // namespace tandem::chat
