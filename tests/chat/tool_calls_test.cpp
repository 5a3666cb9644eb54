// Tool-call parsers on outputs written the way each family's template renders a call (the strings
// below are the assistant turns of tests/fixtures/chat/expected_templates.json, "tool_calls"), and
// malformed outputs falling back to plain content.
#include "chat/tool_calls.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace tandem::chat {
namespace {

const std::string kArgs = R"({"city":"Paris","days":2,"unit":"celsius"})";

void expect_one_call(const ParsedToolCalls& p, const std::string& content, const std::string& id) {
  ASSERT_EQ(p.tool_calls.size(), 1u) << p.content;
  EXPECT_EQ(p.content, content);
  EXPECT_EQ(p.tool_calls[0].name, "get_weather");
  EXPECT_EQ(p.tool_calls[0].arguments, kArgs);
  EXPECT_EQ(p.tool_calls[0].id, id);
}

TEST(ToolCalls, HermesQwen) {
  const std::string out =
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2, "
      "\"unit\": \"celsius\"}}\n</tool_call>";
  expect_one_call(parse_tool_calls(out, ToolCallFormat::Hermes), "Let me check.", "call_0");
  const auto two = parse_tool_calls(out + "\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": \"x\"}}\n</tool_call>",
                                    ToolCallFormat::Hermes);
  ASSERT_EQ(two.tool_calls.size(), 2u);
  EXPECT_EQ(two.tool_calls[1].name, "search");
  EXPECT_EQ(two.tool_calls[1].id, "call_1");
}

TEST(ToolCalls, Llama3Json) {
  expect_one_call(parse_tool_calls(R"({"name": "get_weather", "parameters": {"city": "Paris", "days": 2, "unit": "celsius"}})",
                                   ToolCallFormat::Llama3),
                  "", "call_0");
  expect_one_call(parse_tool_calls(R"(<|python_tag|>{"name": "get_weather", "arguments": {"city": "Paris", "days": 2, "unit": "celsius"}})",
                                   ToolCallFormat::Llama3),
                  "", "call_0");
  EXPECT_TRUE(parse_tool_calls("The weather is {probably} fine.", ToolCallFormat::Llama3).tool_calls.empty());
}

TEST(ToolCalls, DeepSeekR1AndV31) {
  expect_one_call(parse_tool_calls("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
                                   "{\"city\": \"Paris\", \"days\": 2, \"unit\": \"celsius\"}\n```<｜tool▁call▁end｜>"
                                   "<｜tool▁calls▁end｜>",
                                   ToolCallFormat::DeepSeek),
                  "", "call_0");
  expect_one_call(parse_tool_calls("Checking.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>"
                                   "{\"city\": \"Paris\", \"days\": 2, \"unit\": \"celsius\"}<｜tool▁call▁end｜>"
                                   "<｜tool▁calls▁end｜>",
                                   ToolCallFormat::DeepSeek),
                  "Checking.", "call_0");
}

TEST(ToolCalls, MistralNemoAndSmall) {
  expect_one_call(parse_tool_calls(R"([TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "days": 2, "unit": "celsius"}, "id": "call12345"}])",
                                   ToolCallFormat::Mistral),
                  "", "call12345");
  expect_one_call(parse_tool_calls(R"([TOOL_CALLS]get_weather[CALL_ID]call12345[ARGS]{"city": "Paris", "days": 2, "unit": "celsius"})",
                                   ToolCallFormat::Mistral),
                  "", "call12345");
  expect_one_call(parse_tool_calls(R"([TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": 2, "unit": "celsius"})",
                                   ToolCallFormat::Mistral),
                  "", "call_0");
}

TEST(ToolCalls, KimiK2) {
  expect_one_call(parse_tool_calls("<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
                                   "<|tool_call_argument_begin|>{\"city\": \"Paris\", \"days\": 2, \"unit\": \"celsius\"}"
                                   "<|tool_call_end|><|tool_calls_section_end|>",
                                   ToolCallFormat::KimiK2),
                  "", "functions.get_weather:0");
}

TEST(ToolCalls, ArgumentsGivenAsAJsonString) {
  expect_one_call(parse_tool_calls(R"(<tool_call>{"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"days\": 2, \"unit\": \"celsius\"}"}</tool_call>)",
                                   ToolCallFormat::Hermes),
                  "", "call_0");
}

TEST(ToolCalls, MalformedOutputIsPlainContent) {
  const std::vector<std::pair<std::string, ToolCallFormat>> bad = {
      {"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par", ToolCallFormat::Hermes},  // cut off
      {"<tool_call>{\"arguments\": {}}</tool_call>", ToolCallFormat::Hermes},                            // no name
      {"<tool_call>{\"name\": \"f\", \"arguments\": [1]}</tool_call>", ToolCallFormat::Hermes},         // not an object
      {"<tool_call>not json</tool_call> and text", ToolCallFormat::Hermes},
      {"{\"name\": \"f\"}", ToolCallFormat::Llama3},
      {"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{bad}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
       ToolCallFormat::DeepSeek},
      {"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{}", ToolCallFormat::DeepSeek},
      {"[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}", ToolCallFormat::Mistral},
      {"[TOOL_CALLS]f{}", ToolCallFormat::Mistral},
      {"<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{", ToolCallFormat::KimiK2},
  };
  for (const auto& [out, format] : bad) {
    const ParsedToolCalls p = parse_tool_calls(out, format);
    EXPECT_TRUE(p.tool_calls.empty()) << out;
    EXPECT_EQ(p.content, out);
  }
}

TEST(ToolCalls, FormatFromTheTemplate) {
  auto read = [](const std::string& name) {
    std::ifstream f(std::string(TANDEM_SOURCE_DIR) + "/tests/fixtures/chat/templates/" + name + ".jinja");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  EXPECT_EQ(detect_tool_call_format(read("Qwen-Qwen3-0.6B")), ToolCallFormat::Hermes);
  EXPECT_EQ(detect_tool_call_format(read("NousResearch-Hermes-3-Llama-3.1-8B-tool_use")), ToolCallFormat::Hermes);
  EXPECT_EQ(detect_tool_call_format(read("meta-llama-Llama-3.1-8B-Instruct")), ToolCallFormat::Llama3);
  EXPECT_EQ(detect_tool_call_format(read("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B")), ToolCallFormat::DeepSeek);
  EXPECT_EQ(detect_tool_call_format(read("deepseek-ai-DeepSeek-V3.1")), ToolCallFormat::DeepSeek);
  EXPECT_EQ(detect_tool_call_format(read("mistralai-Mistral-Nemo-Instruct-2407")), ToolCallFormat::Mistral);
  EXPECT_EQ(detect_tool_call_format(read("Kimi-K2-Instruct")), ToolCallFormat::KimiK2);
  EXPECT_EQ(detect_tool_call_format(read("google-gemma-2-2b-it")), ToolCallFormat::None);
}

TEST(ToolCalls, StreamingHoldsBackAPartialMarker) {
  EXPECT_EQ(tool_call_start("Sure. <tool_", ToolCallFormat::Hermes), 6u);
  EXPECT_EQ(tool_call_start("Sure. <tool_call>{", ToolCallFormat::Hermes), 6u);
  EXPECT_EQ(tool_call_start("Sure.", ToolCallFormat::Hermes), std::string_view::npos);
  EXPECT_EQ(tool_call_start("text [TOOL_", ToolCallFormat::Mistral), 5u);
  EXPECT_EQ(tool_call_start("  {\"name\"", ToolCallFormat::Llama3), 2u);
  EXPECT_EQ(tool_call_start("<|python", ToolCallFormat::Llama3), 0u);
  EXPECT_EQ(tool_call_start("Hello", ToolCallFormat::Llama3), std::string_view::npos);
}

}  // namespace
}  // namespace tandem::chat
