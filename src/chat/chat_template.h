// Which chat template a model runs with, as llama-server chooses it: --chat-template-file F, else
// --chat-template NAME (a built-in, or Jinja source itself), else the GGUF's tokenizer.chat_template;
// and the built-in templates behind the names (Jinja source, rendered by our engine like any other).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chat/template.h"
#include "core/function_ref.h"
#include "core/status.h"

namespace tandem::chat {

// Built-in template names, as llama.cpp spells them: chatml, llama3, gemma, deepseek3, deepseek-r1...
std::vector<std::string_view> builtin_template_names();
// The Jinja source of a built-in template; nullopt for an unknown name.
std::optional<std::string_view> builtin_template(std::string_view name);

// The built-in a model without tokenizer.chat_template runs with: the one its vocabulary's turn tokens name
// (has_token(text): the vocabulary holds that token) — Gemma's, Llama 3's, DeepSeek-V3's, ChatML's — else
// "chatml", the template llama-server falls back to (common/chat.cpp, common_chat_templates_init).
std::string builtin_for_vocabulary(FunctionRef<bool(std::string_view)> has_token);

struct ChosenTemplate {
  std::string source;  // Jinja
  std::string origin;  // for messages: "tokenizer.chat_template", "built-in 'chatml'", "file t.jinja"
  bool guessed = false;  // the model has none and no flag named one: builtin_for_vocabulary's choice
};

// `name_or_source`: --chat-template's value (empty: not given); `file`: --chat-template-file's
// (empty: not given); `gguf_template`: the model's tokenizer.chat_template. NotFound with a message
// naming the flags when there is no template at all.
Result<ChosenTemplate> choose_chat_template(const std::optional<std::string>& gguf_template,
                                            const std::string& name_or_source, const std::string& file);
// The template a loaded model runs with, as llama-server picks it (run -cnv and serve): choose_chat_template,
// and for a model without one that no flag names, builtin_for_vocabulary's built-in (`guessed` set).
Result<ChosenTemplate> template_for_model(const std::optional<std::string>& gguf_template,
                                          const std::string& name_or_source, const std::string& file,
                                          FunctionRef<bool(std::string_view)> has_token);

// One conversation turn for the helpers below.
struct ChatMessage {
  std::string role;
  std::string content;
};

// Renders `messages` with the variables transformers passes (messages, add_generation_prompt,
// bos_token, eos_token) plus `extra` (a dict, e.g. tools or enable_thinking; may be undefined).
Result<std::string> apply_chat_template(const Template& tmpl, const std::vector<ChatMessage>& messages,
                                        bool add_generation_prompt, const std::string& bos_token,
                                        const std::string& eos_token, const Value& extra = Value());
// The same with `messages` as a value (a list of dicts, e.g. parse_json of an OpenAI request's
// messages: content parts, tool_calls and tool results pass through as they are).
Result<std::string> apply_chat_template(const Template& tmpl, const Value& messages, bool add_generation_prompt,
                                        const std::string& bos_token, const std::string& eos_token,
                                        const Value& extra = Value());

}  // namespace tandem::chat
