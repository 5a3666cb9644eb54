// Tool calls in a model's output, parsed back into OpenAI's {id, name, arguments} for the formats of
// the families Tandem serves: Hermes/Qwen <tool_call> JSON, Llama 3.x JSON, DeepSeek V3/R1/V3.1
// tool-call tokens, Mistral [TOOL_CALLS], Kimi-K2 sections. Malformed output is plain content.
#pragma once

#include <string>
#include <string_view>
#include <vector>

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

}  // namespace tandem::chat
