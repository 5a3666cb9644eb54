// Tool-call output parsers, one per family (markers as each family's chat template writes them in
// tests/fixtures/chat/templates; llama.cpp's common/chat.cpp for which variants models emit).
#include "chat/tool_calls.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <optional>
#include <set>

#include "sampling/json_schema.h"

namespace tandem::chat {
namespace {

using Json = nlohmann::ordered_json;

constexpr std::string_view kHermesOpen = "<tool_call>", kHermesClose = "</tool_call>";
constexpr std::string_view kPythonTag = "<|python_tag|>";
constexpr std::string_view kDsCallsBegin = "<｜tool▁calls▁begin｜>", kDsCallsEnd = "<｜tool▁calls▁end｜>";
constexpr std::string_view kDsCallBegin = "<｜tool▁call▁begin｜>", kDsCallEnd = "<｜tool▁call▁end｜>";
constexpr std::string_view kDsSep = "<｜tool▁sep｜>";
constexpr std::string_view kMistralCalls = "[TOOL_CALLS]", kMistralArgs = "[ARGS]", kMistralId = "[CALL_ID]";
constexpr std::string_view kKimiBegin = "<|tool_calls_section_begin|>", kKimiEnd = "<|tool_calls_section_end|>";
constexpr std::string_view kKimiCall = "<|tool_call_begin|>", kKimiArgs = "<|tool_call_argument_begin|>";
constexpr std::string_view kKimiCallEnd = "<|tool_call_end|>";

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// JSON text to a value; nullopt when malformed (nlohmann throws; the exception stops here).
std::optional<Json> parse(std::string_view text) {
  try {
    return Json::parse(text);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// OpenAI's `arguments`: compact JSON of an object. Models write an object, or a string holding one.
std::optional<std::string> arguments_text(const Json& args) {
  if (args.is_object()) return args.dump();
  if (args.is_string()) {
    auto inner = parse(args.get<std::string>());
    if (inner && inner->is_object()) return inner->dump();
  }
  return std::nullopt;
}

// {"name": ..., "arguments" | "parameters": {...}, "id"?: ...} as Hermes, Llama 3 and Mistral write it.
std::optional<ToolCall> call_from_object(const Json& j, size_t index) {
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) return std::nullopt;
  const char* key = j.contains("arguments") ? "arguments" : j.contains("parameters") ? "parameters" : nullptr;
  if (!key) return std::nullopt;
  auto args = arguments_text(j[key]);
  if (!args) return std::nullopt;
  ToolCall call{"call_" + std::to_string(index), j["name"].get<std::string>(), *args};
  if (j.contains("id") && j["id"].is_string()) call.id = j["id"].get<std::string>();
  return call;
}

using Calls = std::optional<std::vector<ToolCall>>;

// One call's text between its family's call markers, and the call's index in the output -> the call.
using CallParser = std::optional<ToolCall> (*)(std::string_view body, size_t index);

std::optional<ToolCall> hermes_call(std::string_view body, size_t index) {
  auto j = parse(trim(body));
  if (!j) return std::nullopt;
  return call_from_object(*j, index);
}

Calls parse_hermes(std::string_view out, std::string* content) {
  std::vector<ToolCall> calls;
  size_t pos = 0;
  while (true) {
    const size_t open = out.find(kHermesOpen, pos);
    if (open == std::string_view::npos) break;
    const size_t close = out.find(kHermesClose, open);
    if (close == std::string_view::npos) return std::nullopt;
    *content += out.substr(pos, open - pos);
    auto call = hermes_call(out.substr(open + kHermesOpen.size(), close - open - kHermesOpen.size()), calls.size());
    if (!call) return std::nullopt;
    calls.push_back(std::move(*call));
    pos = close + kHermesClose.size();
  }
  *content += out.substr(pos);
  return calls;
}

Calls parse_llama3(std::string_view out, std::string* content) {
  std::string_view body = trim(out);
  if (body.substr(0, kPythonTag.size()) == kPythonTag) body = trim(body.substr(kPythonTag.size()));
  if (body.empty() || (body.front() != '{' && body.front() != '[')) return std::vector<ToolCall>{};
  auto j = parse(body);
  if (!j) return std::nullopt;
  std::vector<ToolCall> calls;
  const Json items = j->is_array() ? *j : Json::array({*j});
  for (const Json& item : items) {
    auto call = call_from_object(item, calls.size());
    if (!call) return std::nullopt;
    calls.push_back(std::move(*call));
  }
  content->clear();
  return calls;
}

// V3/R1: function<sep>NAME\n```json\n{...}\n```; V3.1: NAME<sep>{...} (between <call_begin> and <call_end>).
std::optional<ToolCall> deepseek_call(std::string_view call, size_t index) {
  const size_t sep = call.find(kDsSep);
  if (sep == std::string_view::npos) return std::nullopt;
  std::string_view name = call.substr(0, sep), json = call.substr(sep + kDsSep.size());
  if (name == "function") {
    const size_t nl = json.find('\n');
    if (nl == std::string_view::npos) return std::nullopt;
    name = json.substr(0, nl);
    json = trim(json.substr(nl + 1));
    if (json.substr(0, 7) == "```json") json.remove_prefix(7);
    json = trim(json);
    if (json.size() >= 3 && json.substr(json.size() - 3) == "```") json.remove_suffix(3);
  }
  auto j = parse(trim(json));
  if (!j || trim(name).empty()) return std::nullopt;
  auto args = arguments_text(*j);
  if (!args) return std::nullopt;
  return ToolCall{"call_" + std::to_string(index), std::string(trim(name)), *args};
}

// functions.NAME:IDX<argument_begin>{...} (between <call_begin> and <call_end>); the id is functions.NAME:IDX.
std::optional<ToolCall> kimi_call(std::string_view call, size_t) {
  const size_t args = call.find(kKimiArgs);
  if (args == std::string_view::npos) return std::nullopt;
  const std::string_view id = trim(call.substr(0, args));
  auto j = parse(trim(call.substr(args + kKimiArgs.size())));
  std::string_view name = id.substr(0, id.rfind(':'));
  if (name.substr(0, 10) == "functions.") name.remove_prefix(10);
  if (!j || name.empty()) return std::nullopt;
  auto text = arguments_text(*j);
  if (!text) return std::nullopt;
  return ToolCall{std::string(id), std::string(name), *text};
}

// A family whose calls stand in one section: <begin> (<call_begin> ... <call_end>)+ <end>, with only
// white space between the calls (DeepSeek, Kimi-K2).
struct Section {
  std::string_view begin, end, call_begin, call_end;
  CallParser call;
};
constexpr Section kDeepSeekSection{kDsCallsBegin, kDsCallsEnd, kDsCallBegin, kDsCallEnd, deepseek_call};
constexpr Section kKimiSection{kKimiBegin, kKimiEnd, kKimiCall, kKimiCallEnd, kimi_call};

Calls parse_section(std::string_view out, const Section& f, std::string* content) {
  const size_t begin = out.find(f.begin);
  if (begin == std::string_view::npos) {
    *content = out;
    return std::vector<ToolCall>{};
  }
  const size_t end = out.find(f.end, begin);
  if (end == std::string_view::npos) return std::nullopt;
  *content = std::string(out.substr(0, begin)) + std::string(out.substr(end + f.end.size()));
  std::string_view section = out.substr(begin + f.begin.size(), end - begin - f.begin.size());
  std::vector<ToolCall> calls;
  while (!trim(section).empty()) {
    section = trim(section);
    if (section.substr(0, f.call_begin.size()) != f.call_begin) return std::nullopt;
    const size_t call_end = section.find(f.call_end);
    if (call_end == std::string_view::npos) return std::nullopt;
    auto call = f.call(section.substr(f.call_begin.size(), call_end - f.call_begin.size()), calls.size());
    if (!call) return std::nullopt;
    calls.push_back(std::move(*call));
    section.remove_prefix(call_end + f.call_end.size());
  }
  return calls;
}

// [TOOL_CALLS][{"name": ..., "arguments": {...}, "id": ...}, ...] (Nemo) or, repeated,
// [TOOL_CALLS]name[CALL_ID]id[ARGS]{...} (Small 3.2; [CALL_ID] optional).
Calls parse_mistral(std::string_view out, std::string* content) {
  size_t at = out.find(kMistralCalls);
  if (at == std::string_view::npos) {
    *content = out;
    return std::vector<ToolCall>{};
  }
  *content = out.substr(0, at);
  std::vector<ToolCall> calls;
  std::string_view rest = trim(out.substr(at + kMistralCalls.size()));
  if (!rest.empty() && rest.front() == '[') {
    auto j = parse(rest);
    if (!j || !j->is_array()) return std::nullopt;
    for (const Json& item : *j) {
      auto call = call_from_object(item, calls.size());
      if (!call) return std::nullopt;
      calls.push_back(std::move(*call));
    }
    return calls;
  }
  while (!rest.empty()) {
    const size_t args = rest.find(kMistralArgs);
    if (args == std::string_view::npos) return std::nullopt;
    std::string_view name = trim(rest.substr(0, args));
    std::string id = "call_" + std::to_string(calls.size());
    if (const size_t id_at = name.find(kMistralId); id_at != std::string_view::npos) {
      id = trim(name.substr(id_at + kMistralId.size()));
      name = trim(name.substr(0, id_at));
    }
    rest.remove_prefix(args + kMistralArgs.size());
    const size_t next = rest.find(kMistralCalls);
    auto j = parse(trim(rest.substr(0, next)));
    if (!j || name.empty()) return std::nullopt;
    auto text = arguments_text(*j);
    if (!text) return std::nullopt;
    calls.push_back({id, std::string(name), *text});
    rest = next == std::string_view::npos ? std::string_view() : trim(rest.substr(next + kMistralCalls.size()));
  }
  return calls;
}

}  // namespace

const char* tool_call_format_name(ToolCallFormat format) {
  switch (format) {
    case ToolCallFormat::Hermes: return "hermes";
    case ToolCallFormat::Llama3: return "llama3";
    case ToolCallFormat::DeepSeek: return "deepseek";
    case ToolCallFormat::Mistral: return "mistral";
    case ToolCallFormat::KimiK2: return "kimi-k2";
    default: return "none";
  }
}

ToolCallFormat detect_tool_call_format(std::string_view src) {
  auto has = [&](std::string_view marker) { return src.find(marker) != std::string_view::npos; };
  if (has(kKimiBegin)) return ToolCallFormat::KimiK2;
  if (has(kDsCallBegin)) return ToolCallFormat::DeepSeek;
  if (has(kMistralCalls)) return ToolCallFormat::Mistral;
  if (has(kHermesOpen)) return ToolCallFormat::Hermes;
  if (has("<|start_header_id|>") && has("tools")) return ToolCallFormat::Llama3;
  return ToolCallFormat::None;
}

ParsedToolCalls parse_tool_calls(std::string_view output, ToolCallFormat format) {
  std::string content;
  Calls calls;
  switch (format) {
    case ToolCallFormat::Hermes: calls = parse_hermes(output, &content); break;
    case ToolCallFormat::Llama3: content = output; calls = parse_llama3(output, &content); break;
    case ToolCallFormat::DeepSeek: calls = parse_section(output, kDeepSeekSection, &content); break;
    case ToolCallFormat::Mistral: calls = parse_mistral(output, &content); break;
    case ToolCallFormat::KimiK2: calls = parse_section(output, kKimiSection, &content); break;
    case ToolCallFormat::None: break;
  }
  if (!calls || calls->empty()) return {std::string(output), {}};
  return {std::string(trim(content)), std::move(*calls)};
}

size_t tool_call_start(std::string_view text, ToolCallFormat format) {
  std::string_view marker;
  switch (format) {
    case ToolCallFormat::Hermes: marker = kHermesOpen; break;
    case ToolCallFormat::DeepSeek: marker = kDsCallsBegin; break;
    case ToolCallFormat::Mistral: marker = kMistralCalls; break;
    case ToolCallFormat::KimiK2: marker = kKimiBegin; break;
    case ToolCallFormat::Llama3: {
      // A Llama 3 call is the whole message: JSON (or the python tag) from the first character.
      size_t i = 0;
      while (i < text.size() && is_space(text[i])) ++i;
      const std::string_view rest = text.substr(i);
      if (rest.empty()) return std::string_view::npos;
      if (rest.front() == '{' || rest.front() == '[' || kPythonTag.substr(0, rest.size()) == rest.substr(0, kPythonTag.size()))
        return i;
      return std::string_view::npos;
    }
    case ToolCallFormat::None: return std::string_view::npos;
  }
  if (const size_t at = text.find(marker); at != std::string_view::npos) return at;
  for (size_t n = std::min(text.size(), marker.size() - 1); n > 0; --n)
    if (text.substr(text.size() - n) == marker.substr(0, n)) return text.size() - n;
  return std::string_view::npos;
}

std::vector<ToolCall> complete_tool_calls(std::string_view text, ToolCallFormat format) {
  std::string_view call_end, section_begin, section_end;
  switch (format) {
    case ToolCallFormat::Hermes: call_end = kHermesClose; break;
    case ToolCallFormat::DeepSeek:
      call_end = kDsCallEnd, section_begin = kDsCallsBegin, section_end = kDsCallsEnd;
      break;
    case ToolCallFormat::KimiK2: call_end = kKimiCallEnd, section_begin = kKimiBegin, section_end = kKimiEnd; break;
    default: return {};
  }
  const size_t last = text.rfind(call_end);
  if (last == std::string_view::npos) return {};
  // Up to the last closed call; a section still open is closed so the parser takes it.
  std::string done(text.substr(0, last + call_end.size()));
  if (!section_end.empty() && done.find(section_end, done.find(section_begin)) == std::string::npos)
    done += section_end;
  return parse_tool_calls(done, format).tool_calls;
}

ToolCallStream::ToolCallStream(ToolCallFormat format) : format_(format) {}

namespace {

// Where `marker` may still start once `text` grows: a match needs marker.size() bytes.
size_t resume_at(std::string_view text, std::string_view marker, size_t from) {
  return std::max(from, text.size() < marker.size() ? 0 : text.size() - marker.size() + 1);
}

}  // namespace

std::vector<ToolCall> ToolCallStream::push(std::string_view text) {
  std::vector<ToolCall> out;
  if (format_ == ToolCallFormat::Hermes) {
    while (!ended_) {
      if (call_ == std::string_view::npos) {  // content: look for the next call
        const size_t open = text.find(kHermesOpen, scan_);
        if (open == std::string_view::npos) {
          scan_ = resume_at(text, kHermesOpen, scan_);
          break;
        }
        call_ = scan_ = open + kHermesOpen.size();
      }
      const size_t close = text.find(kHermesClose, scan_);
      if (close == std::string_view::npos) {
        scan_ = resume_at(text, kHermesClose, scan_);
        break;
      }
      take(hermes_call(text.substr(call_, close - call_), n_calls_), &out);
      call_ = std::string_view::npos;
      scan_ = close + kHermesClose.size();
    }
    return out;
  }
  const Section* f = format_ == ToolCallFormat::DeepSeek ? &kDeepSeekSection
                     : format_ == ToolCallFormat::KimiK2 ? &kKimiSection
                                                         : nullptr;
  if (!f) return out;  // Llama 3, Mistral: their calls end together, at the end of the output
  while (!ended_) {
    if (!in_section_) {
      const size_t begin = text.find(f->begin, scan_);
      if (begin == std::string_view::npos) {
        scan_ = resume_at(text, f->begin, scan_);
        break;
      }
      in_section_ = true;
      scan_ = begin + f->begin.size();
    }
    if (call_ == std::string_view::npos) {  // between calls: white space, then a call or the section's end
      while (scan_ < text.size() && is_space(text[scan_])) ++scan_;
      const std::string_view rest = text.substr(scan_);
      if (rest.substr(0, f->call_begin.size()) == f->call_begin) {
        call_ = scan_ = scan_ + f->call_begin.size();
      } else {
        // The whole-output parse takes no call after the section's end or after text that is not a call.
        const bool partial = f->call_begin.substr(0, rest.size()) == rest || f->end.substr(0, rest.size()) == rest;
        ended_ = !partial;
        break;
      }
    }
    // The call ends at its end marker, unless the section's end comes first (then it never does).
    const size_t call_end = text.find(f->call_end, scan_);
    if (text.substr(0, call_end).find(f->end, scan_) != std::string_view::npos) {
      ended_ = true;
      break;
    }
    if (call_end == std::string_view::npos) {
      scan_ = resume_at(text, f->call_end.size() > f->end.size() ? f->call_end : f->end, scan_);
      break;
    }
    take(f->call(text.substr(call_, call_end - call_), n_calls_), &out);
    call_ = std::string_view::npos;
    scan_ = call_end + f->call_end.size();
  }
  return out;
}

void ToolCallStream::take(std::optional<ToolCall> call, std::vector<ToolCall>* out) {
  if (!call) {
    ended_ = true;  // a malformed call: the whole-output parse gives no calls from here on
    return;
  }
  out->push_back(std::move(*call));
  ++n_calls_;
}

Result<std::string> tool_call_grammar(ToolCallFormat format, std::string_view template_source,
                                      const nlohmann::ordered_json& tools, std::string_view name, bool parallel,
                                      bool in_reasoning) {
  using sampling::gbnf_literal;
  if (format == ToolCallFormat::None) return invalid_argument("the chat template has no tool-call format");
  if (!tools.is_array()) return invalid_argument("tools must be a list");
  const bool r1_block = template_source.find("```json") != std::string_view::npos;
  const bool mistral_args = template_source.find(kMistralArgs) != std::string_view::npos;
  std::string rules;
  std::set<std::string> seen;  // rule lines already in `rules` (the shared primitives repeat)
  std::vector<std::string> calls;
  for (size_t i = 0; i < tools.size(); ++i) {
    const Json& tool = tools[i];
    const Json fn = tool.is_object() ? tool.value("function", Json()) : Json();
    if (!fn.is_object() || !fn.contains("name") || !fn["name"].is_string())
      return invalid_argument("tools[%zu] must be {\"type\": \"function\", \"function\": {\"name\": ..., ...}}", i);
    const std::string fn_name = fn["name"].get<std::string>();
    if (!name.empty() && fn_name != name) continue;
    Json params = {{"type", "object"}};
    if (fn.contains("parameters") && !fn["parameters"].is_null()) params = fn["parameters"];
    const std::string args = "tool-" + std::to_string(i) + "-arguments";
    auto tool_rules = sampling::json_schema_rules(params, args);
    if (!tool_rules) return invalid_argument("tools[%zu] (%s) parameters: %s", i, fn_name.c_str(),
                                             tool_rules.error().message().c_str());
    for (size_t at = 0; at < tool_rules->size();) {
      const size_t nl = tool_rules->find('\n', at);
      std::string line = tool_rules->substr(at, nl - at);
      at = nl == std::string::npos ? tool_rules->size() : nl + 1;
      if (seen.insert(line).second) rules += line + "\n";
    }
    const std::string quoted = gbnf_literal(Json(fn_name).dump()), bare = gbnf_literal(fn_name);
    std::string call;
    switch (format) {
      case ToolCallFormat::Hermes:
        call = gbnf_literal("<tool_call>\n{\"name\": ") + " " + quoted + " " + gbnf_literal(", \"arguments\": ") + " " +
               args + " " + gbnf_literal("}\n</tool_call>");
        break;
      case ToolCallFormat::Llama3:
        call = gbnf_literal("{\"name\": ") + " " + quoted + " " + gbnf_literal(", \"parameters\": ") + " " + args + " \"}\"";
        break;
      case ToolCallFormat::DeepSeek:
        call = r1_block ? gbnf_literal(std::string(kDsCallBegin) + "function" + std::string(kDsSep)) + " " + bare + " " +
                              gbnf_literal("\n```json\n") + " " + args + " " + gbnf_literal("\n```" + std::string(kDsCallEnd))
                        : gbnf_literal(std::string(kDsCallBegin)) + " " + bare + " " + gbnf_literal(std::string(kDsSep)) + " " +
                              args + " " + gbnf_literal(std::string(kDsCallEnd));
        break;
      case ToolCallFormat::Mistral:
        // Nemo's template wants ids of nine letters and digits.
        call = mistral_args ? gbnf_literal(std::string(kMistralCalls)) + " " + bare + " " +
                                  gbnf_literal(std::string(kMistralArgs)) + " " + args
                            : gbnf_literal("{\"name\": ") + " " + quoted + " " + gbnf_literal(", \"arguments\": ") + " " +
                                  args + " " + gbnf_literal(", \"id\": \"") + " [a-zA-Z0-9]{9} " +
                                  gbnf_literal("\"}");
        break;
      case ToolCallFormat::KimiK2:
        call = gbnf_literal(std::string(kKimiCall) + "functions.") + " " + bare + " \":\" [0-9]{1,3} " +
               gbnf_literal(std::string(kKimiArgs)) + " " + args + " " + gbnf_literal(std::string(kKimiCallEnd));
        break;
      case ToolCallFormat::None: break;
    }
    calls.push_back(std::move(call));
  }
  if (calls.empty()) return invalid_argument("tool_choice names the function '%s', which is not among the tools",
                                             std::string(name).c_str());
  std::string call = "tool-call ::= ";
  for (size_t i = 0; i < calls.size(); ++i) call += (i ? " | " : "") + calls[i];
  const std::string more = parallel ? "tool-call*" : "";
  std::string root;
  switch (format) {
    case ToolCallFormat::Hermes: root = parallel ? "tool-call (\"\\n\" tool-call)*" : "tool-call"; break;
    case ToolCallFormat::Llama3:
      root = parallel ? "tool-call | \"[\" tool-call (\", \" tool-call)* \"]\"" : "tool-call";
      break;
    case ToolCallFormat::DeepSeek:
      root = gbnf_literal(std::string(kDsCallsBegin)) + " tool-call " + more + " " + gbnf_literal(std::string(kDsCallsEnd));
      break;
    case ToolCallFormat::Mistral:
      root = mistral_args ? "tool-call " + more
                          : gbnf_literal(std::string(kMistralCalls) + "[") + " tool-call" +
                                (parallel ? " (\", \" tool-call)*" : "") + " \"]\"";
      break;
    case ToolCallFormat::KimiK2:
      root = gbnf_literal(std::string(kKimiBegin)) + " tool-call " + more + " " + gbnf_literal(std::string(kKimiEnd));
      break;
    case ToolCallFormat::None: break;
  }
  if (in_reasoning) root = "([^<] | \"<\" [^/])* \"</think>\" [ \\n]{0,4} (" + root + ")";
  return "root ::= " + root + "\n" + call + "\n" + rules;
}

}  // namespace tandem::chat
