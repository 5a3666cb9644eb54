// libFuzzer target: tandem serve's request parsing (server/request.h), the first byte choosing the
// endpoint (chat, completions, /completion) and the rest the JSON body. Nothing may crash or throw out;
// an accepted request must satisfy the bounds the scheduler relies on.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "server/request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  using tandem::server::Endpoint;
  const Endpoint endpoints[] = {Endpoint::Chat, Endpoint::Completions, Endpoint::Native};
  const Endpoint endpoint = endpoints[data[0] % 3];
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  auto r = tandem::server::parse_request(body, endpoint, {});
  if (!r) return 0;
  if (r->n_choices < 1 || r->n_choices > tandem::server::kMaxChoices) std::abort();
  if (r->n_probs < 0 || r->n_probs > tandem::server::kMaxNProbs) std::abort();
  if (r->n_predict < -1 || r->n_predict > tandem::server::kMaxTokensLimit) std::abort();
  if (endpoint == Endpoint::Chat) {
    if (!r->messages.is_array() || r->messages.empty()) std::abort();
    // Content: a string, a list of text parts, or null on an assistant's tool-call turn.
    for (const auto& m : r->messages) {
      const auto role = m.find("role"), content = m.find("content");
      if (role == m.end() || content == m.end() || !role->is_string()) std::abort();
      if (content->is_null() && !(*role == "assistant" && m.contains("tool_calls"))) std::abort();
      if (content->is_array())
        for (const auto& part : *content)
          if (!part.is_object() || part.value("type", "") != "text" || !part["text"].is_string()) std::abort();
      if (!content->is_string() && !content->is_array() && !content->is_null()) std::abort();
    }
  } else {
    // Every prompt has parts, and a part of token ids holds some (the server tokenizes the rest).
    if (r->prompts.empty()) std::abort();
    for (const auto& p : r->prompts) {
      if (p.empty()) std::abort();
      for (const auto& part : p)
        if (part.is_tokens && part.tokens.empty()) std::abort();
    }
  }
  (void)tandem::server::parse_object(body);
  return 0;
}
