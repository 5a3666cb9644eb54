// Template selection and the built-in templates. The built-ins are written here in Jinja from each
// family's published turn format (llama.cpp's names); scripts/fixtures/gen_chat.py reads them out of
// this file (the R"JINJA( )JINJA" literals) and records jinja2's renderings for the tests.
#include "chat/chat_template.h"

#include <fstream>
#include <sstream>

namespace tandem::chat {
namespace {

struct Builtin {
  std::string_view name;
  std::string_view source;
};

constexpr Builtin kBuiltins[] = {
    {"chatml", R"JINJA({%- for message in messages -%}
{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\n' -}}
{%- endif -%})JINJA"},
    {"llama3", R"JINJA({{- bos_token -}}
{%- for message in messages -%}
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
{%- endif -%})JINJA"},
    // Gemma has no system role: the system text opens the first user turn.
    {"gemma", R"JINJA({{- bos_token -}}
{%- if messages and messages[0]['role'] == 'system' -%}
{%- set first_prefix = messages[0]['content'] | trim + '\n\n' -%}
{%- set messages = messages[1:] -%}
{%- else -%}
{%- set first_prefix = '' -%}
{%- endif -%}
{%- for message in messages -%}
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
{{- '<start_of_turn>' + role + '\n' + (first_prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<start_of_turn>model\n' -}}
{%- endif -%})JINJA"},
    {"deepseek3", R"JINJA({{- bos_token -}}
{%- for message in messages if message['role'] == 'system' -%}
{{- message['content'] -}}
{%- endfor -%}
{%- for message in messages -%}
{%- if message['role'] == 'user' -%}
{{- '<｜User｜>' + message['content'] -}}
{%- elif message['role'] == 'assistant' -%}
{{- '<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<｜Assistant｜>' -}}
{%- endif -%})JINJA"},
    // R1: earlier answers lose their reasoning; the generation prompt opens <think>.
    {"deepseek-r1", R"JINJA({{- bos_token -}}
{%- for message in messages if message['role'] == 'system' -%}
{{- message['content'] -}}
{%- endfor -%}
{%- for message in messages -%}
{%- if message['role'] == 'user' -%}
{{- '<｜User｜>' + message['content'] -}}
{%- elif message['role'] == 'assistant' -%}
{%- set content = message['content'] -%}
{%- if '</think>' in content -%}
{%- set content = content.split('</think>')[-1] | trim -%}
{%- endif -%}
{{- '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<｜Assistant｜><think>\n' -}}
{%- endif -%})JINJA"},
};

}  // namespace

std::vector<std::string_view> builtin_template_names() {
  std::vector<std::string_view> names;
  for (const Builtin& b : kBuiltins) names.push_back(b.name);
  return names;
}

std::optional<std::string_view> builtin_template(std::string_view name) {
  for (const Builtin& b : kBuiltins)
    if (b.name == name) return b.source;
  return std::nullopt;
}

static std::string joined_names() {
  std::string s;
  for (std::string_view n : builtin_template_names()) s += (s.empty() ? "" : ", ") + std::string(n);
  return s;
}

std::string builtin_for_vocabulary(FunctionRef<bool(std::string_view)> has_token) {
  static constexpr std::pair<std::string_view, std::string_view> kMarkers[] = {{"<start_of_turn>", "gemma"},
                                                                               {"<|start_header_id|>", "llama3"},
                                                                               {"<｜Assistant｜>", "deepseek3"},
                                                                               {"<|im_start|>", "chatml"}};
  for (const auto& [marker, name] : kMarkers)
    if (has_token(marker)) return std::string(name);
  return "chatml";
}

Result<ChosenTemplate> choose_chat_template(const std::optional<std::string>& gguf_template,
                                            const std::string& name_or_source, const std::string& file) {
  if (!file.empty()) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return not_found("--chat-template-file: cannot read %s", file.c_str());
    std::stringstream ss;
    ss << in.rdbuf();
    return ChosenTemplate{ss.str(), "file " + file};
  }
  if (!name_or_source.empty()) {
    if (auto src = builtin_template(name_or_source)) return ChosenTemplate{std::string(*src), "built-in '" + name_or_source + "'"};
    // As llama.cpp with --jinja: a value that is Jinja is the template itself.
    if (name_or_source.find("{{") != std::string::npos || name_or_source.find("{%") != std::string::npos)
      return ChosenTemplate{name_or_source, "--chat-template"};
    return invalid_argument("--chat-template: '%s' is not a built-in template (%s) nor Jinja source",
                            name_or_source.c_str(), joined_names().c_str());
  }
  if (gguf_template && !gguf_template->empty()) return ChosenTemplate{*gguf_template, "tokenizer.chat_template"};
  return not_found("the model has no chat template (tokenizer.chat_template); give --chat-template NAME (%s) or "
                   "--chat-template-file FILE",
                   joined_names().c_str());
}

Result<ChosenTemplate> template_for_model(const std::optional<std::string>& gguf_template,
                                          const std::string& name_or_source, const std::string& file,
                                          FunctionRef<bool(std::string_view)> has_token) {
  const bool guessed = (!gguf_template || gguf_template->empty()) && name_or_source.empty() && file.empty();
  auto chosen = choose_chat_template(gguf_template, guessed ? builtin_for_vocabulary(has_token) : name_or_source, file);
  if (chosen) chosen->guessed = guessed;
  return chosen;
}

Result<std::string> apply_chat_template(const Template& tmpl, const Value& messages, bool add_generation_prompt,
                                        const std::string& bos_token, const std::string& eos_token,
                                        const Value& extra) {
  Dict context;
  context.items.emplace_back(Value("messages"), messages);
  context.items.emplace_back(Value("add_generation_prompt"), Value(add_generation_prompt));
  context.items.emplace_back(Value("bos_token"), Value(bos_token));
  context.items.emplace_back(Value("eos_token"), Value(eos_token));
  if (extra.is_dict())
    for (const auto& [k, v] : extra.as_dict().items) context.set(k, v);
  return tmpl.render(Value::dict(std::move(context)));
}

Result<std::string> apply_chat_template(const Template& tmpl, const std::vector<ChatMessage>& messages,
                                        bool add_generation_prompt, const std::string& bos_token,
                                        const std::string& eos_token, const Value& extra) {
  List list;
  list.reserve(messages.size());
  for (const ChatMessage& m : messages) {
    Dict d;
    d.items.emplace_back(Value("role"), Value(m.role));
    d.items.emplace_back(Value("content"), Value(m.content));
    list.push_back(Value::dict(std::move(d)));
  }
  return apply_chat_template(tmpl, Value::list(std::move(list)), add_generation_prompt, bos_token, eos_token, extra);
}

}  // namespace tandem::chat
