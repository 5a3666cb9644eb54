// Request parsing of tandem serve (server/request.h) without a model: defaults, OpenAI's and
// llama-server's spellings, and the message every bad field gets.
#include "server/request.h"

#include <gtest/gtest.h>

#include <cmath>

namespace tandem::server {
namespace {

Result<ParsedRequest> parse(std::string_view body, Endpoint e = Endpoint::Chat) {
  RequestDefaults d;
  d.sampling.temp = 0.25f;
  d.n_predict = 7;
  return parse_request(body, e, d);
}

std::string error_of(std::string_view body, Endpoint e = Endpoint::Chat) {
  auto r = parse(body, e);
  return r ? "" : r.error().message();
}

// Content parts stay a list (templates that read parts get them); join_content_parts makes one string
// for the others.
TEST(ServerRequest, ChatTakesDefaultsAndKeepsContentParts) {
  auto r = parse(R"({"messages": [{"role": "developer", "content": "be brief"},
                                  {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->n_predict, 7);
  EXPECT_FLOAT_EQ(r->sampling.temp, 0.25f);
  EXPECT_EQ(r->messages[0]["role"], "system");
  EXPECT_EQ(r->messages[1]["content"].size(), 2u);
  join_content_parts(&r->messages);
  EXPECT_EQ(r->messages[1]["content"], "a\nb");
  EXPECT_FALSE(r->stream);
  EXPECT_EQ(r->n_choices, 1);
}

TEST(ServerRequest, ChatReadsOpenAiFields) {
  auto r = parse(R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "max_completion_tokens": 5,
                     "temperature": 0, "top_p": 0.5, "top_k": 4, "min_p": 0.2, "seed": 9, "presence_penalty": 0.5,
                     "frequency_penalty": 0.25, "logit_bias": {"12": -100, "13": false}, "n": 3, "logprobs": true,
                     "top_logprobs": 4, "stop": "END", "stream": true, "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->n_predict, 5);  // max_completion_tokens wins
  EXPECT_EQ(r->sampling.temp, 0.0f);
  EXPECT_EQ(r->sampling.top_k, 4);
  EXPECT_EQ(r->sampling.seed, 9u);
  EXPECT_EQ(r->sampling.logit_bias.at(12), -100.0f);
  EXPECT_TRUE(std::isinf(r->sampling.logit_bias.at(13)));
  EXPECT_EQ(r->n_choices, 3);
  EXPECT_TRUE(r->logprobs);
  EXPECT_EQ(r->n_probs, 4);
  EXPECT_EQ(r->stop, std::vector<std::string>{"END"});
  EXPECT_TRUE(r->stream && r->include_usage);
}

TEST(ServerRequest, CompletionsTakeStringsTokensAndLists) {
  auto r = parse(R"({"prompt": ["a", [1, 2]], "logprobs": 2, "echo": true})", Endpoint::Completions);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->prompts.size(), 2u);
  ASSERT_EQ(r->prompts[0].size(), 1u);
  EXPECT_EQ(r->prompts[0][0].text, "a");
  ASSERT_EQ(r->prompts[1].size(), 1u);
  EXPECT_EQ(r->prompts[1][0].tokens, (std::vector<int32_t>{1, 2}));
  EXPECT_TRUE(r->logprobs && r->echo);
  EXPECT_EQ(r->n_probs, 2);
  auto t = parse(R"({"prompt": [5, 6, 7]})", Endpoint::Completions);
  ASSERT_TRUE(t);
  ASSERT_EQ(t->prompts.size(), 1u);
  ASSERT_EQ(t->prompts[0].size(), 1u);
  EXPECT_TRUE(t->prompts[0][0].is_tokens);
}

// llama-server's shapes (tools/server/server-common.h, tokenize_input_prompts): a list holding any token id
// is one prompt mixing ids and strings; any other list is several prompts, each a string or such a list.
TEST(ServerRequest, CompletionsTakeMixedPromptsAsLlamaServerDoes) {
  auto one = parse(R"({"prompt": [12, 34, "text", 56]})", Endpoint::Completions);
  ASSERT_TRUE(one) << one.error().message();
  ASSERT_EQ(one->prompts.size(), 1u);
  ASSERT_EQ(one->prompts[0].size(), 3u);
  EXPECT_EQ(one->prompts[0][0].tokens, (std::vector<int32_t>{12, 34}));
  EXPECT_EQ(one->prompts[0][1].text, "text");
  EXPECT_EQ(one->prompts[0][2].tokens, (std::vector<int32_t>{56}));
  auto several = parse(R"({"prompt": ["a", [7, "b"], [8, 9]]})", Endpoint::Completions);
  ASSERT_TRUE(several) << several.error().message();
  ASSERT_EQ(several->prompts.size(), 3u);
  EXPECT_EQ(several->prompts[1].size(), 2u);
  EXPECT_EQ(several->prompts[2][0].tokens, (std::vector<int32_t>{8, 9}));
  for (const char* bad : {R"({"prompt": [1, -2]})", R"({"prompt": [1, 2.5]})", R"({"prompt": ["a", []]})",
                          R"({"prompt": ["a", [1, [2]]]})", R"({"prompt": [["a"], 3]})", R"({"prompt": ["a", {}]})"}) {
    auto r = parse(bad, Endpoint::Completions);
    ASSERT_FALSE(r) << bad;
    EXPECT_NE(r.error().message().find("prompt"), std::string::npos) << r.error().message();
  }
}

TEST(ServerRequest, NativeReadsLlamaServerFields) {
  auto r = parse(R"({"prompt": "p", "n_predict": -1, "n_probs": 3, "cache_prompt": false, "id_slot": 2,
                     "return_tokens": true, "logit_bias": [[7, 1.5]], "ignore_eos": true})", Endpoint::Native);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->n_predict, -1);
  EXPECT_EQ(r->n_probs, 3);
  EXPECT_FALSE(r->cache_prompt);
  EXPECT_EQ(r->id_slot, 2);
  EXPECT_TRUE(r->return_tokens && r->ignore_eos);
  EXPECT_EQ(r->sampling.logit_bias.at(7), 1.5f);
}

TEST(ServerRequest, BadFieldsAreNamed) {
  EXPECT_NE(error_of("{").find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of("[]").find("JSON object"), std::string::npos);
  EXPECT_NE(error_of("{}").find("'messages' is missing"), std::string::npos);
  EXPECT_NE(error_of(R"({"messages": []})").find("'messages' is empty"), std::string::npos);
  EXPECT_NE(error_of(R"({"messages": [{"role": "bot", "content": "x"}]})").find("role 'bot'"), std::string::npos);
  EXPECT_NE(error_of(R"({"messages": [{"role": "user"}]})").find("has no content"), std::string::npos);
  EXPECT_NE(error_of(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})").find("only text"),
            std::string::npos);
  const std::string m = R"({"messages": [{"role": "user", "content": "x"}], )";
  EXPECT_NE(error_of(m + R"("max_tokens": -2})").find("'max_tokens' is -2, outside [-1, 2147483647]"), std::string::npos);
  EXPECT_EQ(error_of(m + R"("max_tokens": -1})"), "");  // llama-server's "no limit"
  EXPECT_NE(error_of(m + R"("max_tokens": 1e300})").find("'max_tokens'"), std::string::npos);
  EXPECT_NE(error_of(m + R"("max_tokens": 2.5})").find("'max_tokens' must be an integer"), std::string::npos);
  EXPECT_NE(error_of(m + R"("temperature": "x"})").find("'temperature' must be a number"), std::string::npos);
  EXPECT_NE(error_of(m + R"("top_k": -2})").find("'top_k'"), std::string::npos);
  EXPECT_NE(error_of(m + R"("top_p": 2})").find("'top_p' is 2"), std::string::npos);
  EXPECT_NE(error_of(m + R"("n": 17})").find("'n' is 17"), std::string::npos);
  EXPECT_NE(error_of(m + R"("top_logprobs": 3})").find("needs 'logprobs'"), std::string::npos);
  EXPECT_NE(error_of(m + R"("stop": 3})").find("'stop'"), std::string::npos);
  EXPECT_NE(error_of(m + R"("logit_bias": {"x": 1}})").find("not a token id"), std::string::npos);
  EXPECT_NE(error_of(m + R"("response_format": {"type": "yaml"}})").find("response_format"), std::string::npos);
  EXPECT_NE(error_of(R"({"prompt": []})", Endpoint::Completions).find("empty list"), std::string::npos);
  EXPECT_NE(error_of(R"({"prompt": [-1]})", Endpoint::Completions).find("non-negative"), std::string::npos);
  EXPECT_NE(error_of(R"({"prompt": "x", "n_probs": 101})", Endpoint::Native).find("'n_probs'"), std::string::npos);
  EXPECT_NE(error_of(R"({"prompt": ["a", "b"]})", Endpoint::Native).find("one prompt"), std::string::npos);
}

TEST(ServerRequest, InvalidUtf8IsRefused) {
  EXPECT_NE(error_of("{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\"}]}").find("not valid JSON"),
            std::string::npos);
}

TEST(ServerRequest, ResponseFormatBecomesAGrammar) {
  auto r = parse(R"({"messages": [{"role": "user", "content": "x"}],
                     "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}}})");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_FALSE(r->sampling.grammar.empty());
  auto plain = parse(R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "text"}})");
  ASSERT_TRUE(plain);
  EXPECT_TRUE(plain->sampling.grammar.empty());
}

}  // namespace
}  // namespace tandem::server
