// Parsing and checking generation requests (server/request.h). nlohmann-json throws; every call
// that can is inside parse_request's one try block or checks the type first.
#include "server/request.h"

#include <algorithm>
#include <cmath>

#include "sampling/json_schema.h"

namespace tandem::server {
namespace {

// Ordered: messages, tools and schemas keep the client's key order, which templates (tojson) and
// grammars (property order) show.
using json = nlohmann::ordered_json;

Status wrong_type(const char* field, const char* expected) {
  return invalid_argument("'%s' must be %s", field, expected);
}

// Optional fields: absent (or null) leaves *out unchanged.
Status get_bool(const json& j, const char* field, bool* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return Status::ok();
  if (!it->is_boolean()) return wrong_type(field, "true or false");
  *out = it->get<bool>();
  return Status::ok();
}

Status get_int(const json& j, const char* field, int64_t min, int64_t max, int64_t* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return Status::ok();
  if (it->is_number_float()) {
    const double d = it->get<double>();
    if (d != std::floor(d) || !std::isfinite(d)) return wrong_type(field, "an integer");
    if (d < double(min) || d > double(max))
      return invalid_argument("'%s' is %g, outside [%lld, %lld]", field, d, (long long)min, (long long)max);
    *out = int64_t(d);
    return Status::ok();
  }
  if (!it->is_number_integer()) return wrong_type(field, "an integer");
  if (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t(INT64_MAX))
    return invalid_argument("'%s' is out of range [%lld, %lld]", field, (long long)min, (long long)max);
  const int64_t v = it->get<int64_t>();
  if (v < min || v > max)
    return invalid_argument("'%s' is %lld, outside [%lld, %lld]", field, (long long)v, (long long)min, (long long)max);
  *out = v;
  return Status::ok();
}

template <typename T>
Status get_int_as(const json& j, const char* field, int64_t min, int64_t max, T* out) {
  int64_t v = int64_t(*out);
  TANDEM_TRY(get_int(j, field, min, max, &v));
  *out = T(v);
  return Status::ok();
}

Status get_float(const json& j, const char* field, float min, float max, float* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return Status::ok();
  if (!it->is_number()) return wrong_type(field, "a number");
  const double v = it->get<double>();
  if (!(v >= min && v <= max)) return invalid_argument("'%s' is %g, outside [%g, %g]", field, v, min, max);
  *out = float(v);
  return Status::ok();
}

Status get_string(const json& j, const char* field, std::string* out) {
  auto it = j.find(field);
  if (it == j.end() || it->is_null()) return Status::ok();
  if (!it->is_string()) return wrong_type(field, "a string");
  *out = it->get<std::string>();
  return Status::ok();
}

Status parse_stop(const json& j, std::vector<std::string>* out) {
  auto it = j.find("stop");
  if (it == j.end() || it->is_null()) return Status::ok();
  if (it->is_string()) {
    if (!it->get_ref<const std::string&>().empty()) out->push_back(it->get<std::string>());
    return Status::ok();
  }
  if (!it->is_array()) return wrong_type("stop", "a string or a list of strings");
  if (it->size() > kMaxStops) return invalid_argument("'stop' has %zu entries (at most %zu)", it->size(), kMaxStops);
  for (const auto& s : *it) {
    if (!s.is_string()) return wrong_type("stop", "a string or a list of strings");
    if (!s.get_ref<const std::string&>().empty()) out->push_back(s.get<std::string>());
  }
  return Status::ok();
}

// {"123": 1.5, ...} (OpenAI) or [[123, 1.5], ...] (llama-server); false as a bias bans the token.
Status parse_logit_bias(const json& j, std::map<int32_t, float>* out) {
  auto it = j.find("logit_bias");
  if (it == j.end() || it->is_null()) return Status::ok();
  auto add = [out](const std::string& key, const json& bias) -> Status {
    char* end = nullptr;
    const long long id = std::strtoll(key.c_str(), &end, 10);
    if (key.empty() || *end != '\0' || id < 0 || id > INT32_MAX)
      return invalid_argument("'logit_bias': '%s' is not a token id", key.c_str());
    if (bias.is_boolean() && !bias.get<bool>()) {
      (*out)[int32_t(id)] = -INFINITY;
    } else if (bias.is_number() && std::isfinite(bias.get<double>())) {
      (*out)[int32_t(id)] = bias.get<float>();
    } else {
      return invalid_argument("'logit_bias': the bias of token %lld must be a number or false", id);
    }
    return Status::ok();
  };
  if (it->is_object()) {
    for (const auto& [key, bias] : it->items()) TANDEM_TRY(add(key, bias));
  } else if (it->is_array()) {
    for (const auto& pair : *it) {
      if (!pair.is_array() || pair.size() != 2 || !pair[0].is_number_integer())
        return wrong_type("logit_bias", "an object {\"token id\": bias} or a list of [token id, bias]");
      TANDEM_TRY(add(std::to_string(pair[0].get<int64_t>()), pair[1]));
    }
  } else {
    return wrong_type("logit_bias", "an object {\"token id\": bias} or a list of [token id, bias]");
  }
  return Status::ok();
}

// A list of token ids and strings (llama-server's tokenize_mixed, tools/server/server-common.cpp).
Status parse_mixed(const json& arr, Prompt* out) {
  for (const auto& e : arr) {
    if (e.is_string()) {
      out->push_back({false, e.get<std::string>(), {}});
    } else if (e.is_number_integer() && e.get<int64_t>() >= 0 && e.get<int64_t>() <= INT32_MAX) {
      if (out->empty() || !out->back().is_tokens) out->push_back({true, "", {}});
      out->back().tokens.push_back(int32_t(e.get<int64_t>()));
    } else {
      return invalid_argument("'prompt': a list holds token ids (non-negative integers) and strings");
    }
  }
  return Status::ok();
}

// As llama-server's tokenize_input_prompts reads it: a string; a list holding any token id is one
// prompt (ids, or ids and strings mixed); any other list (Completions) is several prompts, each a
// string or a list of ids and strings.
Status parse_prompts(const json& j, Endpoint endpoint, std::vector<Prompt>* out) {
  auto it = j.find("prompt");
  if (it == j.end() || it->is_null()) return invalid_argument("'prompt' is missing");
  const char* expected = "a string, a list of token ids, or a list of strings or token lists";
  if (it->is_string()) {
    out->push_back({{false, it->get<std::string>(), {}}});
    return Status::ok();
  }
  if (!it->is_array()) return wrong_type("prompt", expected);
  if (it->empty()) return invalid_argument("'prompt' is an empty list");
  if (std::any_of(it->begin(), it->end(), [](const json& e) { return e.is_number(); })) {
    out->emplace_back();
    return parse_mixed(*it, &out->back());
  }
  if (it->size() > size_t(kMaxChoices))
    return invalid_argument("'prompt' has %zu prompts (at most %d)", it->size(), kMaxChoices);
  for (const auto& p : *it) {
    if (!p.is_string() && (!p.is_array() || p.empty())) return wrong_type("prompt", expected);
    out->emplace_back();
    TANDEM_TRY(p.is_string() ? parse_mixed(json::array({p}), &out->back()) : parse_mixed(p, &out->back()));
  }
  if (endpoint == Endpoint::Native && out->size() > 1)
    return invalid_argument("'prompt': /completion takes one prompt (use /v1/completions for several)");
  return Status::ok();
}

// An assistant message's tool_calls: [{"id"?, "type": "function", "function": {"name", "arguments"}}].
// OpenAI sends arguments as JSON text; templates index and `tojson` them as objects (Hugging Face's
// format), so they are parsed here, as llama-server does.
Status parse_tool_calls_of(size_t i, json* msg) {
  auto calls = msg->find("tool_calls");
  if (calls == msg->end()) return Status::ok();
  if (calls->is_null() || (calls->is_array() && calls->empty())) {
    msg->erase("tool_calls");
    return Status::ok();
  }
  if (!calls->is_array()) return invalid_argument("messages[%zu].tool_calls must be a list", i);
  for (size_t k = 0; k < calls->size(); ++k) {
    json& call = (*calls)[k];
    auto fn = call.is_object() ? call.find("function") : call.end();
    if (fn == call.end() || !fn->is_object() || !fn->contains("name") || !(*fn)["name"].is_string())
      return invalid_argument("messages[%zu].tool_calls[%zu] must be {\"type\": \"function\", \"function\": "
                              "{\"name\": ..., \"arguments\": ...}}", i, k);
    if (call.contains("id") && !call["id"].is_null() && !call["id"].is_string())
      return invalid_argument("messages[%zu].tool_calls[%zu].id must be a string", i, k);
    json& args = (*fn)["arguments"];
    if (args.is_null()) args = json::object();
    if (args.is_string()) {
      json parsed = json::parse(args.get<std::string>(), nullptr, false);
      if (!parsed.is_object())
        return invalid_argument("messages[%zu].tool_calls[%zu].function.arguments is not a JSON object", i, k);
      args = std::move(parsed);
    } else if (!args.is_object()) {
      return invalid_argument("messages[%zu].tool_calls[%zu].function.arguments must be a JSON object or its text", i, k);
    }
  }
  return Status::ok();
}

// OpenAI's tools: [{"type": "function", "function": {"name", "description"?, "parameters"?}}].
Status parse_tools(const json& j, json* out) {
  auto it = j.find("tools");
  if (it == j.end() || it->is_null()) return Status::ok();
  if (!it->is_array()) return wrong_type("tools", "a list");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& t = (*it)[i];
    auto fn = t.is_object() ? t.find("function") : t.end();
    if (!t.is_object() || t.value("type", json()) != "function" || fn == t.end() || !fn->is_object() ||
        !fn->contains("name") || !(*fn)["name"].is_string() || (*fn)["name"].get_ref<const std::string&>().empty())
      return invalid_argument("tools[%zu] must be {\"type\": \"function\", \"function\": {\"name\": \"...\", "
                              "\"parameters\": {...}}}", i);
    if (fn->contains("description") && !(*fn)["description"].is_string() && !(*fn)["description"].is_null())
      return invalid_argument("tools[%zu].function.description must be a string", i);
    if (fn->contains("parameters") && !(*fn)["parameters"].is_object() && !(*fn)["parameters"].is_null())
      return invalid_argument("tools[%zu].function.parameters must be a JSON Schema object", i);
  }
  *out = *it;
  return Status::ok();
}

// OpenAI's messages: role and content checked; content-part arrays of text parts only (this server
// reads no images or audio).
Status parse_messages(const json& j, json* out) {
  auto it = j.find("messages");
  if (it == j.end() || it->is_null()) return invalid_argument("'messages' is missing");
  if (!it->is_array()) return wrong_type("messages", "a list of messages");
  if (it->empty()) return invalid_argument("'messages' is empty");
  *out = json::array();
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    if (!m.is_object()) return invalid_argument("messages[%zu] must be an object", i);
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) return invalid_argument("messages[%zu].role must be a string", i);
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant" && r != "tool" && r != "developer")
      return invalid_argument("messages[%zu].role '%s' is not one of system, developer, user, assistant, tool", i,
                              r.c_str());
    json msg = m;
    msg["role"] = r == "developer" ? "system" : r;
    if (r == "assistant") TANDEM_TRY(parse_tool_calls_of(i, &msg));
    if (r == "tool")
      if (auto id = m.find("tool_call_id"); id != m.end() && !id->is_null() && !id->is_string())
        return invalid_argument("messages[%zu].tool_call_id must be a string", i);
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      if (r != "assistant") return invalid_argument("messages[%zu] (%s) has no content", i, r.c_str());
      // Templates test a tool-call turn's content with `is none`, as Hugging Face passes it.
      msg["content"] = msg.contains("tool_calls") ? json(nullptr) : json("");
    } else if (content->is_array()) {
      for (const auto& part : *content) {
        if (!part.is_object() || !part.contains("type") || !part["type"].is_string())
          return invalid_argument("messages[%zu].content: each part must be an object with a 'type'", i);
        if (part["type"] != "text" || !part.contains("text") || !part["text"].is_string())
          return unsupported("messages[%zu].content: only text parts are supported (got '%s')", i,
                             part["type"].get<std::string>().c_str());
      }
    } else if (!content->is_string()) {
      return invalid_argument("messages[%zu].content must be a string or a list of content parts", i);
    }
    out->push_back(std::move(msg));
  }
  return Status::ok();
}

Status parse_sampling(const json& j, sampling::SamplerParams* p) {
  TANDEM_TRY(get_float(j, "temperature", -1e6f, 1e6f, &p->temp));
  TANDEM_TRY(get_float(j, "top_p", 0, 1, &p->top_p));
  TANDEM_TRY(get_int_as(j, "top_k", -1, INT32_MAX, &p->top_k));
  TANDEM_TRY(get_float(j, "min_p", 0, 1, &p->min_p));
  TANDEM_TRY(get_float(j, "typical_p", 0, 1, &p->typical_p));
  TANDEM_TRY(get_float(j, "presence_penalty", -2e3f, 2e3f, &p->presence_penalty));
  TANDEM_TRY(get_float(j, "frequency_penalty", -2e3f, 2e3f, &p->frequency_penalty));
  TANDEM_TRY(get_float(j, "repeat_penalty", 1e-6f, 1e6f, &p->repeat_penalty));
  TANDEM_TRY(get_int_as(j, "repeat_last_n", 0, INT32_MAX, &p->repeat_last_n));
  int64_t seed = -1;
  if (j.contains("seed") && !j["seed"].is_null()) {
    TANDEM_TRY(get_int(j, "seed", INT64_MIN, INT64_MAX, &seed));
    p->seed = seed < 0 ? sampling::kDefaultSeed : uint32_t(uint64_t(seed));
  }
  TANDEM_TRY(parse_logit_bias(j, &p->logit_bias));
  return Status::ok();
}

// Variables the server gives every rendering; chat_template_kwargs may not replace them.
constexpr const char* kRenderVariables[] = {"messages", "tools", "add_generation_prompt", "bos_token", "eos_token"};

// "auto" | "none" | "required" | {"type": "function", "function": {"name": N}}, and parallel_tool_calls.
Status parse_tool_choice(const json& j, ParsedRequest* r) {
  const auto it = j.find("tool_choice");
  if (it != j.end() && !it->is_null()) {
    const auto fn = it->is_object() ? it->find("function") : it->end();
    if (it->is_string() && (*it == "auto" || *it == "none" || *it == "required")) {
      r->tool_choice = *it == "none" ? ToolChoice::None : *it == "required" ? ToolChoice::Required : ToolChoice::Auto;
    } else if (it->is_object() && it->value("type", json()) == "function" && fn != it->end() && fn->is_object() &&
               fn->contains("name") && (*fn)["name"].is_string()) {
      r->tool_choice = ToolChoice::Required;
      r->tool_choice_name = (*fn)["name"].get<std::string>();
    } else {
      return invalid_argument(
          "tool_choice must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}");
    }
  }
  TANDEM_TRY(get_bool(j, "parallel_tool_calls", &r->parallel_tool_calls));
  if (r->tool_choice == ToolChoice::Required && (!r->tools.is_array() || r->tools.empty()))
    return invalid_argument("tool_choice asks for a tool call, but the request has no tools");
  return Status::ok();
}

Status parse(const json& j, Endpoint endpoint, ParsedRequest* r) {
  if (!j.is_object()) return invalid_argument("the request body must be a JSON object");
  TANDEM_TRY(get_string(j, "model", &r->model));
  if (endpoint == Endpoint::Chat) {
    TANDEM_TRY(parse_messages(j, &r->messages));
    TANDEM_TRY(parse_tools(j, &r->tools));
    TANDEM_TRY(parse_tool_choice(j, r));
    if (auto kw = j.find("chat_template_kwargs"); kw != j.end() && !kw->is_null()) {
      if (!kw->is_object()) return wrong_type("chat_template_kwargs", "an object");
      for (const char* name : kRenderVariables)
        if (kw->contains(name))
          return invalid_argument("chat_template_kwargs: '%s' is set by the request itself, not as a template variable",
                                  name);
      r->template_kwargs = *kw;
    }
    TANDEM_TRY(get_bool(j, "add_generation_prompt", &r->add_generation_prompt));
    if (auto rf = j.find("reasoning_format"); rf != j.end() && !rf->is_null()) {
      if (!rf->is_string() || (*rf != "none" && *rf != "deepseek" && *rf != "auto"))
        return invalid_argument("reasoning_format must be \"none\", \"deepseek\" or \"auto\"");
      r->reasoning_deepseek = *rf != "none";
    }
  } else {
    TANDEM_TRY(parse_prompts(j, endpoint, &r->prompts));
  }
  TANDEM_TRY(get_bool(j, "stream", &r->stream));
  if (auto so = j.find("stream_options"); so != j.end() && !so->is_null()) {
    if (!so->is_object()) return wrong_type("stream_options", "an object");
    TANDEM_TRY(get_bool(*so, "include_usage", &r->include_usage));
  }
  TANDEM_TRY(parse_stop(j, &r->stop));
  if (endpoint == Endpoint::Native) {
    TANDEM_TRY(get_int(j, "n_predict", -1, kMaxTokensLimit, &r->n_predict));
    TANDEM_TRY(get_int_as(j, "n_probs", 0, kMaxNProbs, &r->n_probs));
    r->logprobs = r->n_probs > 0;
    TANDEM_TRY(get_bool(j, "cache_prompt", &r->cache_prompt));
    TANDEM_TRY(get_int_as(j, "id_slot", -1, INT32_MAX, &r->id_slot));
    TANDEM_TRY(get_bool(j, "return_tokens", &r->return_tokens));
    TANDEM_TRY(get_bool(j, "timings_per_token", &r->timings));
    TANDEM_TRY(get_bool(j, "ignore_eos", &r->ignore_eos));
  } else {
    // max_completion_tokens is OpenAI's newer name; when both are given it wins.
    // -1: until the end of generation or a full slot, as llama-server reads it.
    TANDEM_TRY(get_int(j, "max_tokens", -1, kMaxTokensLimit, &r->n_predict));
    TANDEM_TRY(get_int(j, "max_completion_tokens", -1, kMaxTokensLimit, &r->n_predict));
    TANDEM_TRY(get_int_as(j, "n", 1, kMaxChoices, &r->n_choices));
    if (endpoint == Endpoint::Chat) {
      TANDEM_TRY(get_bool(j, "logprobs", &r->logprobs));
      TANDEM_TRY(get_int_as(j, "top_logprobs", 0, kMaxTopLogprobs, &r->n_probs));
      if (r->n_probs > 0 && !r->logprobs) return invalid_argument("'top_logprobs' needs 'logprobs': true");
    } else {
      // /v1/completions: logprobs is the number of alternatives (0..5 at OpenAI; here up to 20).
      int64_t n = -1;
      TANDEM_TRY(get_int(j, "logprobs", 0, kMaxTopLogprobs, &n));
      r->logprobs = n >= 0;
      r->n_probs = n > 0 ? int32_t(n) : 0;
      TANDEM_TRY(get_bool(j, "echo", &r->echo));
    }
  }
  TANDEM_TRY(get_bool(j, "cache_prompt", &r->cache_prompt));
  TANDEM_TRY(get_int(j, "n_keep", -1, kMaxTokensLimit, &r->n_keep));
  TANDEM_TRY(parse_sampling(j, &r->sampling));
  TANDEM_ASSIGN(r->sampling.grammar, sampling::grammar_for_request(j));
  return Status::ok();
}

}  // namespace

void join_content_parts(nlohmann::ordered_json* messages) {
  for (auto& m : *messages) {
    if (!m["content"].is_array()) continue;
    std::string text;
    for (const auto& part : m["content"]) text += (text.empty() ? "" : "\n") + part["text"].get<std::string>();
    m["content"] = text;
  }
}

Result<ParsedRequest> parse_request(std::string_view body, Endpoint endpoint, const RequestDefaults& defaults) {
  ParsedRequest r;
  r.endpoint = endpoint;
  r.sampling = defaults.sampling;
  r.n_predict = defaults.n_predict;
  r.n_keep = defaults.n_keep;
  try {
    const json j = json::parse(body);
    TANDEM_TRY(parse(j, endpoint, &r));
  } catch (const json::exception& e) {
    return invalid_argument("the request is not valid JSON: %s", e.what());
  }
  return r;
}

Result<nlohmann::json> parse_object(std::string_view body) {
  try {
    nlohmann::json j = nlohmann::json::parse(body);
    if (!j.is_object()) return invalid_argument("the request body must be a JSON object");
    return j;
  } catch (const json::exception& e) {
    return invalid_argument("the request is not valid JSON: %s", e.what());
  }
}

}  // namespace tandem::server
