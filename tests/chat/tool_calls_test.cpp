// Tool-call parsers on outputs written the way each family's template renders a call (the strings
// below are the assistant turns of tests/fixtures/chat/expected_templates.json, "tool_calls"), and
// malformed outputs falling back to plain content.
#include "chat/tool_calls.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>

#include "sampling/grammar.h"

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

std::string read_template(const std::string& name) {
  std::ifstream f(std::string(TANDEM_SOURCE_DIR) + "/tests/fixtures/chat/templates/" + name + ".jinja");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(ToolCalls, FormatFromTheTemplate) {
  auto read = read_template;
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

// tool_choice "required" / a named function: the grammar takes a call as the family writes it (which
// the parser reads back), and nothing else: another function, arguments outside the schema, a second
// call unless parallel, text around the call.
const nlohmann::ordered_json kTools = nlohmann::ordered_json::parse(R"([
  {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
   "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                  "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city", "days", "unit"]}}},
  {"type": "function", "function": {"name": "search", "parameters": {"type": "object",
   "properties": {"query": {"type": "string"}}, "required": ["query"]}}}])");

bool grammar_takes(const std::string& gbnf, const std::string& text) {
  auto g = sampling::Grammar::parse(gbnf);
  EXPECT_TRUE(g.has_value()) << (g ? "" : g.error().message()) << "\n" << gbnf;
  if (!g) return false;
  sampling::GrammarMatcher m(*g);
  return m.accept(text).is_ok() && m.is_complete();
}

TEST(ToolCalls, GrammarForcesACallInEachFamilysForm) {
  const std::string args = R"({"city": "Paris", "days": 2, "unit": "celsius"})";
  const std::string ds = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>";
  struct Case {
    const char* tmpl;
    std::string call;   // one call to get_weather(kArgs)
    std::string other;  // the same call to `search` with {"query": "x"}
    std::string two;    // two calls, for parallel
  };
  const Case cases[] = {
      {"Qwen-Qwen3-0.6B", "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": " + args + "}\n</tool_call>",
       "<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": \"x\"}}\n</tool_call>",
       "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": " + args + "}\n</tool_call>\n<tool_call>\n{\"name\": "
       "\"search\", \"arguments\": {\"query\": \"x\"}}\n</tool_call>"},
      {"meta-llama-Llama-3.1-8B-Instruct", "{\"name\": \"get_weather\", \"parameters\": " + args + "}",
       "{\"name\": \"search\", \"parameters\": {\"query\": \"x\"}}",
       "[{\"name\": \"get_weather\", \"parameters\": " + args + "}, {\"name\": \"search\", \"parameters\": {\"query\": \"x\"}}]"},
      {"deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
       ds + "function<｜tool▁sep｜>get_weather\n```json\n" + args + "\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
       ds + "function<｜tool▁sep｜>search\n```json\n{\"query\": \"x\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
       ds + "function<｜tool▁sep｜>get_weather\n```json\n" + args + "\n```<｜tool▁call▁end｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>"
       "search\n```json\n{\"query\": \"x\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>"},
      {"deepseek-ai-DeepSeek-V3.1", ds + "get_weather<｜tool▁sep｜>" + args + "<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
       ds + "search<｜tool▁sep｜>{\"query\": \"x\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
       ds + "get_weather<｜tool▁sep｜>" + args + "<｜tool▁call▁end｜><｜tool▁call▁begin｜>search<｜tool▁sep｜>{\"query\": \"x\"}"
       "<｜tool▁call▁end｜><｜tool▁calls▁end｜>"},
      {"mistralai-Mistral-Nemo-Instruct-2407",
       "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": " + args + ", \"id\": \"a1b2c3d4e\"}]",
       "[TOOL_CALLS][{\"name\": \"search\", \"arguments\": {\"query\": \"x\"}, \"id\": \"a1b2c3d4e\"}]",
       "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": " + args + ", \"id\": \"a1b2c3d4e\"}, {\"name\": \"search\", "
       "\"arguments\": {\"query\": \"x\"}, \"id\": \"zzzzzzzzz\"}]"},
      {"Mistral-Small-3.2-24B-Instruct-2506", "[TOOL_CALLS]get_weather[ARGS]" + args,
       "[TOOL_CALLS]search[ARGS]{\"query\": \"x\"}",
       "[TOOL_CALLS]get_weather[ARGS]" + args + "[TOOL_CALLS]search[ARGS]{\"query\": \"x\"}"},
      {"Kimi-K2-Instruct",
       "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>" + args +
           "<|tool_call_end|><|tool_calls_section_end|>",
       "<|tool_calls_section_begin|><|tool_call_begin|>functions.search:0<|tool_call_argument_begin|>{\"query\": \"x\"}"
       "<|tool_call_end|><|tool_calls_section_end|>",
       "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>" + args +
           "<|tool_call_end|><|tool_call_begin|>functions.search:1<|tool_call_argument_begin|>{\"query\": \"x\"}"
           "<|tool_call_end|><|tool_calls_section_end|>"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.tmpl);
    const std::string src = read_template(c.tmpl);
    const ToolCallFormat format = detect_tool_call_format(src);
    auto any = tool_call_grammar(format, src, kTools, "", false);
    ASSERT_TRUE(any.has_value()) << any.error().message();
    EXPECT_TRUE(grammar_takes(*any, c.call));
    EXPECT_TRUE(grammar_takes(*any, c.other));
    EXPECT_FALSE(grammar_takes(*any, c.two));
    EXPECT_FALSE(grammar_takes(*any, "Sure. " + c.call));
    const auto parsed = parse_tool_calls(c.call, format);
    ASSERT_EQ(parsed.tool_calls.size(), 1u);
    EXPECT_EQ(parsed.tool_calls[0].name, "get_weather");
    EXPECT_EQ(parsed.tool_calls[0].arguments, kArgs);
    EXPECT_EQ(parse_tool_calls(c.two, format).tool_calls.size(), 2u);

    auto named = tool_call_grammar(format, src, kTools, "search", false);
    ASSERT_TRUE(named.has_value());
    EXPECT_FALSE(grammar_takes(*named, c.call));
    EXPECT_TRUE(grammar_takes(*named, c.other));

    auto parallel = tool_call_grammar(format, src, kTools, "", true);
    ASSERT_TRUE(parallel.has_value());
    EXPECT_TRUE(grammar_takes(*parallel, c.call));
    EXPECT_TRUE(grammar_takes(*parallel, c.two));
  }
}

TEST(ToolCalls, GrammarHoldsArgumentsToTheSchema) {
  const std::string src = read_template("Qwen-Qwen3-0.6B");
  auto g = tool_call_grammar(ToolCallFormat::Hermes, src, kTools, "get_weather", false);
  ASSERT_TRUE(g.has_value());
  auto call = [](const std::string& args) {
    return "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": " + args + "}\n</tool_call>";
  };
  EXPECT_TRUE(grammar_takes(*g, call(R"({"city": "Oslo", "days": 10, "unit": "fahrenheit"})")));
  EXPECT_FALSE(grammar_takes(*g, call(R"({"city": "Oslo", "days": 10})")));                       // unit required
  EXPECT_FALSE(grammar_takes(*g, call(R"({"city": "Oslo", "days": 1.5, "unit": "celsius"})")));   // not an integer
  EXPECT_FALSE(grammar_takes(*g, call(R"({"city": "Oslo", "days": 1, "unit": "kelvin"})")));      // not in the enum
}

TEST(ToolCalls, CompleteCallsWhileStreaming) {
  const std::string one = "<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>";
  EXPECT_TRUE(complete_tool_calls("<tool_call>\n{\"name\": \"a\", \"argu", ToolCallFormat::Hermes).empty());
  EXPECT_EQ(complete_tool_calls(one + "\n<tool_call>\n{\"na", ToolCallFormat::Hermes).size(), 1u);
  EXPECT_EQ(complete_tool_calls(one + "\n" + one, ToolCallFormat::Hermes).size(), 2u);
  const std::string ds = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>a<｜tool▁sep｜>{}<｜tool▁call▁end｜>";
  const auto open = complete_tool_calls(ds + "<｜tool▁call▁begin｜>b<｜tool▁sep｜>{\"x", ToolCallFormat::DeepSeek);
  ASSERT_EQ(open.size(), 1u);
  EXPECT_EQ(open[0].name, "a");
  EXPECT_EQ(complete_tool_calls(ds + "<｜tool▁calls▁end｜>", ToolCallFormat::DeepSeek).size(), 1u);
  EXPECT_TRUE(complete_tool_calls("{\"name\": \"a\", \"parameters\": {}}", ToolCallFormat::Llama3).empty());
}

TEST(ToolCalls, CompleteCallsTakeASectionEndOnlyAfterItsBegin) {
  // A stray end marker before the section: the open section is still closed for the parser.
  const std::string ds = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>a<｜tool▁sep｜>{}<｜tool▁call▁end｜>";
  EXPECT_EQ(complete_tool_calls("a <｜tool▁calls▁end｜> b" + ds, ToolCallFormat::DeepSeek).size(), 1u);
}

std::string calls_text(const std::vector<ToolCall>& calls) {
  std::string out;
  for (const ToolCall& c : calls) out += c.id + " " + c.name + " " + c.arguments + "\n";
  return out;
}

// Feeds `text` to a ToolCallStream in pieces of 1..7 bytes (markers and UTF-8 characters split too) and
// checks after every piece that the calls streamed so far are those complete_tool_calls gives on the
// text so far, whenever it gives any. Returns the streamed calls.
std::vector<ToolCall> stream_in_pieces(const std::string& text, ToolCallFormat format, uint32_t seed) {
  ToolCallStream stream(format);
  std::vector<ToolCall> streamed, most;
  std::mt19937 rng(seed);
  for (size_t end = 0; end < text.size();) {
    end = std::min(text.size(), end + 1 + rng() % 7);
    for (ToolCall& c : stream.push(std::string_view(text).substr(0, end))) streamed.push_back(std::move(c));
    const auto whole = complete_tool_calls(std::string_view(text).substr(0, end), format);
    if (!whole.empty()) {
      EXPECT_EQ(calls_text(streamed), calls_text(whole)) << "after " << end << " bytes";
    }
    if (whole.size() > most.size()) most = whole;
  }
  EXPECT_EQ(calls_text(streamed), calls_text(most)) << "the most complete_tool_calls gave";
  return streamed;
}

// A long reply: content, then `n` calls of `call(k)` separated by `between`, then more content.
std::string reply(int n, const std::function<std::string(int)>& call, const std::string& between,
                  const std::string& before = "Let me look that up < carefully >.\n",
                  const std::string& after = "") {
  std::string out = before;
  for (int k = 0; k < n; ++k) out += (k ? between : "") + call(k);
  return out + after;
}

std::string args(int k) {
  return "{\"city\": \"Paris " + std::to_string(k) + "\", \"note\": \"" + std::string(size_t(40 + 13 * k), 'x') +
         " <b> \\\"quoted\\\"\", \"days\": " + std::to_string(k) + "}";
}

TEST(ToolCallStream, LongRepliesStreamTheCallsOfTheWholeTextParse) {
  const std::string hermes = reply(
      12,
      [](int k) {
        return "<tool_call>\n{\"name\": \"f" + std::to_string(k) + "\", \"arguments\": " + args(k) + "}\n</tool_call>";
      },
      "\nNow the next one.\n", "Let me look that up < carefully >.\n", "\nThat is all " + std::string(300, '.'));
  const std::string v31 = reply(
      10,
      [](int k) { return "<｜tool▁call▁begin｜>f" + std::to_string(k) + "<｜tool▁sep｜>" + args(k) + "<｜tool▁call▁end｜>"; },
      "\n", "Checking.<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>Done.");
  const std::string r1 = reply(
      6, [](int k) {
        return "<｜tool▁call▁begin｜>function<｜tool▁sep｜>f" + std::to_string(k) + "\n```json\n" + args(k) +
               "\n```<｜tool▁call▁end｜>";
      },
      "", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>");
  const std::string kimi = reply(
      9, [](int k) {
        return "<|tool_call_begin|>functions.f" + std::to_string(k) + ":" + std::to_string(k) +
               "<|tool_call_argument_begin|>" + args(k) + "<|tool_call_end|>";
      },
      " \n", "Sure.<|tool_calls_section_begin|>", "<|tool_calls_section_end|>");
  const std::pair<const std::string*, ToolCallFormat> cases[] = {{&hermes, ToolCallFormat::Hermes},
                                                                 {&v31, ToolCallFormat::DeepSeek},
                                                                 {&r1, ToolCallFormat::DeepSeek},
                                                                 {&kimi, ToolCallFormat::KimiK2}};
  for (const auto& [text, format] : cases)
    for (uint32_t seed : {1u, 2u, 3u}) {
      SCOPED_TRACE(std::string(tool_call_format_name(format)) + ", seed " + std::to_string(seed));
      const auto whole = parse_tool_calls(*text, format).tool_calls;
      ASSERT_GE(whole.size(), 6u);
      EXPECT_EQ(calls_text(stream_in_pieces(*text, format, seed)), calls_text(whole));
    }
  // Whole in one push, as a first step may hold several calls.
  ToolCallStream once(ToolCallFormat::Hermes);
  EXPECT_EQ(calls_text(once.push(hermes)), calls_text(parse_tool_calls(hermes, ToolCallFormat::Hermes).tool_calls));
}

TEST(ToolCallStream, StopsWhereTheWholeTextParseStops) {
  auto hermes = [](int k) {
    const std::string a = k == 2 ? "{bad" : args(k);
    return "<tool_call>\n{\"name\": \"f\", \"arguments\": " + a + "}\n</tool_call>";
  };
  EXPECT_EQ(stream_in_pieces(reply(5, hermes, "\n"), ToolCallFormat::Hermes, 4).size(), 2u);  // a malformed call
  auto ds = [](int k) { return "<｜tool▁call▁begin｜>f<｜tool▁sep｜>" + args(k) + "<｜tool▁call▁end｜>"; };
  const std::string begin = "<｜tool▁calls▁begin｜>", end = "<｜tool▁calls▁end｜>";
  EXPECT_EQ(stream_in_pieces(begin + ds(0) + "text" + ds(1), ToolCallFormat::DeepSeek, 5).size(), 1u);
  EXPECT_EQ(stream_in_pieces(begin + ds(0) + end + begin + ds(1) + end, ToolCallFormat::DeepSeek, 6).size(), 1u);
  const std::string end_inside = "<｜tool▁call▁begin｜>f<｜tool▁sep｜>{\"a\": \"" + end + "\"}<｜tool▁call▁end｜>";
  EXPECT_EQ(stream_in_pieces(begin + ds(0) + end_inside + ds(2) + end, ToolCallFormat::DeepSeek, 7).size(), 1u);
  EXPECT_EQ(stream_in_pieces("no calls at all " + ds(0), ToolCallFormat::DeepSeek, 8).size(), 0u);
  const std::string kimi = "<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{}"
                           "<|tool_call_end|><|tool_call_begin|>functions.g:1 {}<|tool_call_end|>";
  EXPECT_EQ(stream_in_pieces(kimi, ToolCallFormat::KimiK2, 9).size(), 1u);  // no argument marker
  EXPECT_TRUE(ToolCallStream(ToolCallFormat::Llama3).push(R"({"name": "a", "parameters": {}})").empty());
}

TEST(ToolCalls, GrammarAfterAnOpenThinkBlock) {
  const std::string src = read_template("llama-cpp-deepseek-r1");
  auto g = tool_call_grammar(ToolCallFormat::DeepSeek, src, kTools, "search", false, true);
  ASSERT_TRUE(g.has_value()) << g.error().message();
  const std::string call = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>search\n```json\n{\"query\": "
                           "\"x\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
  EXPECT_TRUE(grammar_takes(*g, "I should search a < b.\n</think>\n\n" + call));
  EXPECT_TRUE(grammar_takes(*g, "</think>" + call));
  EXPECT_FALSE(grammar_takes(*g, call));  // the think block must end first
}

TEST(ToolCalls, GrammarErrorsNameTheProblem) {
  const std::string src = read_template("Qwen-Qwen3-0.6B");
  auto missing = tool_call_grammar(ToolCallFormat::Hermes, src, kTools, "get_time", false);
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.error().message().find("get_time"), std::string::npos);
  auto bad = tool_call_grammar(ToolCallFormat::Hermes, src, nlohmann::ordered_json::parse(R"([{"type": "function"}])"), "", false);
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message().find("tools[0]"), std::string::npos);
  auto schema = tool_call_grammar(ToolCallFormat::Hermes, src, nlohmann::ordered_json::parse(
      R"([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {}}}}])"), "", false);
  ASSERT_FALSE(schema.has_value());
  EXPECT_NE(schema.error().message().find("'not'"), std::string::npos) << schema.error().message();
  EXPECT_FALSE(tool_call_grammar(ToolCallFormat::None, "", kTools, "", false).has_value());
  // No parameters: any object.
  auto none = tool_call_grammar(ToolCallFormat::Hermes, src, nlohmann::ordered_json::parse(
      R"([{"type": "function", "function": {"name": "now"}}])"), "", false);
  ASSERT_TRUE(none.has_value());
  EXPECT_TRUE(grammar_takes(*none, "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>"));
}

}  // namespace
}  // namespace tandem::chat
