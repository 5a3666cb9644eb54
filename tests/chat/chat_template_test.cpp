// Template selection as llama-server does it, and the built-in templates against jinja2's renderings
// (tests/fixtures/chat/expected_templates.json, "builtins", from scripts/fixtures/gen_chat.py).
#include "chat/chat_template.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace tandem::chat {
namespace {

const std::string kDir = std::string(TANDEM_SOURCE_DIR) + "/tests/fixtures/chat/";

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(ChatTemplateChoice, BuiltinsCoverLlamaServerNames) {
  for (const char* name : {"chatml", "llama3", "gemma", "deepseek3", "deepseek-r1"}) {
    auto src = builtin_template(name);
    ASSERT_TRUE(src) << name;
    EXPECT_TRUE(Template::parse(*src)) << name;
  }
  EXPECT_FALSE(builtin_template("nosuch"));
}

TEST(ChatTemplateChoice, BuiltinsRenderAsJinja2) {
  const auto fixture = nlohmann::ordered_json::parse(read_file(kDir + "expected_templates.json"));
  int n = 0;
  for (const auto& [name, conversations] : fixture["builtins"].items()) {
    auto src = builtin_template(name);
    ASSERT_TRUE(src) << name;
    auto tmpl = Template::parse(*src);
    ASSERT_TRUE(tmpl) << tmpl.error().message();
    for (const auto& [conv, expected] : conversations.items()) {
      auto context = nlohmann::ordered_json::parse(read_file(kDir + "conversations/" + conv + ".json"));
      context["bos_token"] = "<BOS>";
      context["eos_token"] = "<EOS>";
      auto ctx = parse_json(context.dump());
      ASSERT_TRUE(ctx);
      auto out = tmpl->render(*ctx);
      ASSERT_TRUE(out) << name << " x " << conv << ": " << out.error().message();
      EXPECT_EQ(*out, expected["output"].get<std::string>()) << name << " x " << conv;
      ++n;
    }
  }
  EXPECT_EQ(n, 5 * 6);
}

TEST(ChatTemplateChoice, FileThenNameThenModel) {
  const std::string gguf = "{{ 'model' }}";
  auto from_model = choose_chat_template(gguf, "", "");
  ASSERT_TRUE(from_model);
  EXPECT_EQ(from_model->source, gguf);
  EXPECT_EQ(from_model->origin, "tokenizer.chat_template");

  auto named = choose_chat_template(gguf, "chatml", "");
  ASSERT_TRUE(named);
  EXPECT_EQ(named->source, *builtin_template("chatml"));
  EXPECT_EQ(named->origin, "built-in 'chatml'");

  auto inline_source = choose_chat_template(gguf, "{{ 'inline' }}", "");
  ASSERT_TRUE(inline_source);
  EXPECT_EQ(inline_source->source, "{{ 'inline' }}");

  const std::string path = std::string(TANDEM_BINARY_DIR) + "/chat_template_test.jinja";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_TRUE(f);
  std::fputs("{{ 'file' }}", f);
  std::fclose(f);
  auto from_file = choose_chat_template(gguf, "chatml", path);
  ASSERT_TRUE(from_file);
  EXPECT_EQ(from_file->source, "{{ 'file' }}");
  std::remove(path.c_str());
}

TEST(ChatTemplateChoice, ClearMessagesWhenThereIsNone) {
  auto none = choose_chat_template(std::nullopt, "", "");
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().message(),
            "the model has no chat template (tokenizer.chat_template); give --chat-template NAME (chatml, llama3, "
            "gemma, deepseek3, deepseek-r1) or --chat-template-file FILE");
  auto bad_name = choose_chat_template(std::nullopt, "chatmel", "");
  ASSERT_FALSE(bad_name);
  EXPECT_NE(bad_name.error().message().find("'chatmel' is not a built-in template"), std::string::npos);
  auto missing = choose_chat_template(std::nullopt, "", "/nonexistent/t.jinja");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message(), "--chat-template-file: cannot read /nonexistent/t.jinja");
}

TEST(ChatTemplateChoice, VocabularyWithoutTemplatePicksABuiltin) {
  auto pick = [](std::vector<std::string_view> tokens) {
    return builtin_for_vocabulary([&](std::string_view t) {
      return std::find(tokens.begin(), tokens.end(), t) != tokens.end();
    });
  };
  EXPECT_EQ(pick({"<bos>", "<start_of_turn>"}), "gemma");
  EXPECT_EQ(pick({"<|start_header_id|>", "<|im_start|>"}), "llama3");
  EXPECT_EQ(pick({"<｜begin▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"}), "deepseek3");
  EXPECT_EQ(pick({"<|im_start|>", "<|im_end|>"}), "chatml");
  EXPECT_EQ(pick({"<s>", "</s>"}), "chatml");  // nothing known: llama-server's fallback
  for (std::string_view name : {"gemma", "llama3", "deepseek3", "chatml"}) EXPECT_TRUE(builtin_template(name));
}

TEST(ChatTemplateChoice, AModelWithoutATemplateGetsItsVocabularysBuiltin) {
  auto gemma_vocab = [](std::string_view t) { return t == "<start_of_turn>"; };
  auto guessed = template_for_model(std::nullopt, "", "", gemma_vocab);
  ASSERT_TRUE(guessed);
  EXPECT_TRUE(guessed->guessed);
  EXPECT_EQ(guessed->origin, "built-in 'gemma'");
  auto named = template_for_model(std::nullopt, "chatml", "", gemma_vocab);  // a flag wins, and is no guess
  ASSERT_TRUE(named);
  EXPECT_FALSE(named->guessed);
  EXPECT_EQ(named->origin, "built-in 'chatml'");
  auto own = template_for_model(std::string("{{ 'own' }}"), "", "", gemma_vocab);
  ASSERT_TRUE(own);
  EXPECT_FALSE(own->guessed);
  EXPECT_EQ(own->origin, "tokenizer.chat_template");
}

TEST(ChatTemplateChoice, ApplyPassesTransformersVariables) {
  auto tmpl = Template::parse(
      "{{ bos_token }}{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}"
      "{% if add_generation_prompt %}>{% endif %}{{ eos_token }}{{ enable_thinking }}");
  ASSERT_TRUE(tmpl);
  Dict extra;
  extra.set(Value("enable_thinking"), Value(false));
  auto out = apply_chat_template(*tmpl, {{"system", "s"}, {"user", "u"}}, true, "<s>", "</s>", Value::dict(extra));
  ASSERT_TRUE(out);
  EXPECT_EQ(*out, "<s>[system:s][user:u]></s>False");
}

TEST(ChatTemplateChoice, ApplyWithJsonMessagesAndToolsMatchesJinja2) {
  // The server's path: an OpenAI-style request's messages and tools as JSON values.
  const auto fixture = nlohmann::ordered_json::parse(read_file(kDir + "expected_templates.json"));
  const std::string name = "Qwen-Qwen3-0.6B";
  auto tmpl = Template::parse(read_file(kDir + "templates/" + name + ".jinja"));
  ASSERT_TRUE(tmpl);
  const auto request = nlohmann::ordered_json::parse(read_file(kDir + "conversations/tool_calls.json"));
  auto messages = parse_json(request["messages"].dump());
  auto tools = parse_json(request["tools"].dump());
  ASSERT_TRUE(messages && tools);
  Dict extra;
  extra.set(Value("tools"), *tools);
  auto out = apply_chat_template(*tmpl, *messages, true, fixture["tokens"][name][0], fixture["tokens"][name][1],
                                 Value::dict(extra));
  ASSERT_TRUE(out) << out.error().message();
  EXPECT_EQ(*out, fixture["expected"][name]["tool_calls"]["output"].get<std::string>());
}

}  // namespace
}  // namespace tandem::chat
