// Request JSON -> ParsedRequest for the three generation endpoints (OpenAI's /v1/chat/completions and
// /v1/completions, llama-server's /completion). A pure function of the body and the server's
// defaults, so it is fuzzed (fuzz/server_request_fuzz.cpp) and tested without a model. Every problem is
// an InvalidArgument naming the field; Unsupported marks a field Tandem refuses rather than ignores.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "sampling/sampler.h"

namespace tandem::server {

enum class Endpoint { Chat, Completions, Native };

// One prompt as the request gives it: a string, a list of token ids, or (llama-server's mixed form)
// a list of both, [12, "text", 34]. Parts in order; consecutive ids form one part.
struct PromptPart {
  bool is_tokens = false;
  std::string text;
  std::vector<int32_t> tokens;
};
using Prompt = std::vector<PromptPart>;

struct RequestDefaults {
  sampling::SamplerParams sampling;  // the server's sampling flags
  int64_t n_predict = -1;            // -n; -1: until end of generation or a full slot
  int64_t n_keep = 0;                // --keep: prompt tokens kept at a context shift (-1: all)
};

inline constexpr int64_t kMaxTokensLimit = INT32_MAX;  // larger max_tokens are refused as absurd
inline constexpr int32_t kMaxChoices = 16;
inline constexpr int32_t kMaxTopLogprobs = 20;  // OpenAI's bound on top_logprobs
inline constexpr int32_t kMaxNProbs = 100;      // /completion's n_probs
inline constexpr size_t kMaxStops = 16;

enum class ToolChoice { Auto, None, Required };

struct ParsedRequest {
  Endpoint endpoint = Endpoint::Chat;
  std::string model;
  // Chat: an array of {role, content (a string, a list of text parts, or null on a tool-call turn),
  // ...}, tool-call arguments parsed into objects; the client's key order kept (templates show it).
  nlohmann::ordered_json messages;
  nlohmann::ordered_json tools;  // Chat: the request's tools, checked (null when none)
  // OpenAI's tool_choice: Auto (the model may call), None (tools rendered, output never parsed as
  // calls), Required (the output is held to calls by a grammar; to `tool_choice_name` alone when set).
  ToolChoice tool_choice = ToolChoice::Auto;
  std::string tool_choice_name;
  bool parallel_tool_calls = false;  // several calls in one reply (llama-server's default: off)
  nlohmann::ordered_json template_kwargs = nlohmann::ordered_json::object();  // chat_template_kwargs
  // false: the prompt ends where the messages end (no assistant turn opened). A last assistant message
  // is continued either way (the reply extends it), as llama-server's prefill does.
  bool add_generation_prompt = true;
  std::optional<bool> reasoning_deepseek;  // reasoning_format "deepseek" / "none" (llama-server's field)
  std::vector<Prompt> prompts;  // Completions/Native: one entry per prompt
  bool stream = false, include_usage = false;
  std::vector<std::string> stop;
  int64_t n_predict = -1;
  sampling::SamplerParams sampling;
  int32_t n_choices = 1;
  bool logprobs = false;  // report the chosen token's log-probability
  int32_t n_probs = 0;    // and this many alternatives
  bool echo = false;      // Completions: the prompt precedes the text
  bool ignore_eos = false;
  bool cache_prompt = true;
  int32_t id_slot = -1;
  int64_t n_keep = 0;  // llama-server's n_keep: prompt tokens (BOS not counted) kept at a context shift; -1: all
  bool return_tokens = false, timings = false;  // Native
  // response_format json_object / json_schema, json_schema and grammar (llama-server's fields) become
  // sampling.grammar (sampling/json_schema.h grammar_for_request): the output is held to it.
};

// Content-part lists joined into one string (text parts, "\n" between), for templates that only read
// string content.
void join_content_parts(nlohmann::ordered_json* messages);

Result<ParsedRequest> parse_request(std::string_view body, Endpoint endpoint, const RequestDefaults& defaults);

// The body of a JSON request that must be an object (tokenize, detokenize, apply-template).
Result<nlohmann::json> parse_object(std::string_view body);

}  // namespace tandem::server
