// Behaviour that the recorded vectors do not pin down: errors and warnings from metadata, pattern
// rewriting, invalid UTF-8 that crashes llama.cpp, streaming detokenization, special-token rules.
#include <gtest/gtest.h>

#include <filesystem>

#include "test_data.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace tandem::tokenizer {
namespace {

namespace fs = std::filesystem;

const std::string kModels = test_data::dir() + "/";

std::unique_ptr<Tokenizer> open_or_skip(const std::string& name) {
  auto t = Tokenizer::open(kModels + "ggml-vocab-" + name + ".gguf");
  return t ? std::move(*t) : nullptr;
}

#define OPEN_OR_SKIP(var, name)                                                               \
  if (!fs::exists(kModels + "ggml-vocab-" name ".gguf")) GTEST_SKIP() << name " vocab absent"; \
  auto var = open_or_skip(name);                                                              \
  ASSERT_TRUE(var)

gguf::Metadata tiny_metadata(const std::string& model, const std::string& pre) {
  gguf::Metadata md;
  md.add("tokenizer.ggml.model", gguf::Value::string(model));
  if (!pre.empty()) md.add("tokenizer.ggml.pre", gguf::Value::string(pre));
  md.add("tokenizer.ggml.tokens", gguf::Value::string_array({"a", "b", "ab", "<s>", "</s>", "Ġ"}));
  md.add("tokenizer.ggml.merges", gguf::Value::string_array({"a b"}));
  return md;
}

TEST(Tokenizer, RefusesAnUnknownVocabTypeByName) {
  auto t = Tokenizer::from_metadata(tiny_metadata("t5", ""), "x.gguf");
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code(), StatusCode::Unsupported);
  EXPECT_NE(t.error().message().find("'t5'"), std::string::npos) << t.error().message();
}

TEST(Tokenizer, RefusesAFileWithoutTokenizer) {
  gguf::Metadata md;
  auto t = Tokenizer::from_metadata(md, "x.gguf");
  ASSERT_FALSE(t);
  EXPECT_NE(t.error().message().find("tokenizer.ggml.model"), std::string::npos);
}

TEST(Tokenizer, WarnsAndFallsBackToDefaultOnAnUnknownPreTokenizer) {
  auto t = Tokenizer::from_metadata(tiny_metadata("gpt2", "no-such-pre"), "x.gguf");
  ASSERT_TRUE(t) << t.error().message();
  EXPECT_EQ((*t)->pre_family(), "default");
  ASSERT_EQ((*t)->warnings().size(), 1u);
  EXPECT_NE((*t)->warnings()[0].find("'no-such-pre'"), std::string::npos);
  EXPECT_EQ(*(*t)->tokenize("ab", false, false), std::vector<TokenId>({2}));
}

TEST(Tokenizer, WarnsWhenThePreTokenizerIsMissing) {
  auto t = Tokenizer::from_metadata(tiny_metadata("gpt2", ""), "x.gguf");
  ASSERT_TRUE(t);
  EXPECT_EQ((*t)->pre_family(), "default");
  EXPECT_EQ((*t)->warnings().size(), 1u);
}

// Gemma 4 (tokenizer.ggml.model "gemma4"), as llama.cpp: spaces become U+2581, merges run over whole
// lines of raw UTF-8, a byte without a token falls back to <0xXX>, a run of newlines that is a token is
// taken whole, BOS is added even when the metadata says no, and pieces turn U+2581 back into spaces.
// The ids are llama-tokenize's (0.3.36's llama.cpp) on this vocab written as a GGUF with gguf-py.
TEST(Tokenizer, Gemma4WorksLikeLlamaCpp) {
  gguf::Metadata md;
  md.add("tokenizer.ggml.model", gguf::Value::string("gemma4"));
  md.add("tokenizer.ggml.pre", gguf::Value::string("default"));  // ignored, as llama.cpp does
  md.add("tokenizer.ggml.tokens", gguf::Value::string_array({"<pad>", "<eos>", "<bos>", "\xE2\x96\x81", "a", "b",
                                                             "\xE2\x96\x81" "a", "\n", "\n\n", "<0xC3>", "<0xA9>", "ab"}));
  const std::vector<int32_t> types = {3, 3, 3, 1, 1, 1, 1, 1, 1, 6, 6, 1};
  md.add("tokenizer.ggml.token_type", gguf::Value::array_of(gguf::ValueType::I32, std::span<const int32_t>(types)));
  md.add("tokenizer.ggml.merges", gguf::Value::string_array({"\xE2\x96\x81 a", "a b"}));
  md.add("tokenizer.ggml.bos_token_id", gguf::Value::u32(2));
  md.add("tokenizer.ggml.add_bos_token", gguf::Value::boolean(false));
  auto t = Tokenizer::from_metadata(md, "gemma4.gguf");
  ASSERT_TRUE(t) << t.error().message();
  EXPECT_EQ((*t)->pre_family(), "gemma4");
  EXPECT_TRUE((*t)->vocab().add_bos);
  EXPECT_EQ((*t)->warnings().size(), 1u);  // the add_bos override is reported
  // " ab" is one line: the merges run across the space (no word split), "▁a" before "a b" by rank.
  EXPECT_EQ(*(*t)->tokenize(" ab\n\n\u00e9", true, false), std::vector<TokenId>({2, 6, 5, 8, 9, 10}));
  EXPECT_EQ((*t)->detokenize(std::vector<TokenId>{6, 5, 8, 9, 10}, false, false), " ab\n\n\u00e9");
}

TEST(PreTokenizer, EveryKnownFamilyCompiles) {
  for (const std::string& name : known_pre_tokenizer_names()) {
    auto p = PreTokenizer::create(*find_pre_tokenizer(name));
    EXPECT_TRUE(p) << name << ": " << p.error().message();
  }
}

TEST(PreTokenizer, RewritesWhitespaceAndCategoriesToLlamaCppMeaning) {
  const std::string p = to_pcre2_pattern(R"(\s+(?!\S)|[^\s\p{L}]|\p{N})");
  EXPECT_NE(p.find(R"([\t\n\x{0b}\f\r \x{85})"), std::string::npos) << p;
  EXPECT_NE(p.find(R"((?![^\t\n)"), std::string::npos) << p;
  EXPECT_NE(p.find(R"([\p{N}\x{11f50})"), std::string::npos) << p;
  EXPECT_NE(p.find(R"(\p{L}\x{1123f})"), std::string::npos) << p;  // inside a class: no extra brackets
}

TEST(PreTokenizer, SplitsLikeLlama3) {
  auto p = PreTokenizer::create(*find_pre_tokenizer("llama-bpe"));
  ASSERT_TRUE(p);
  const std::string text = "Hello  world's 12345\n\n \u00a0x";
  std::vector<std::string> words;
  size_t at = 0;
  const auto pieces = (*p)->split(text);
  ASSERT_TRUE(pieces) << pieces.error().message();
  for (size_t n : *pieces) words.push_back(text.substr(at, n)), at += n;
  EXPECT_EQ(words, std::vector<std::string>({"Hello", " ", " world", "'s", " ", "123", "45", "\n\n", " ", "\u00a0x"}));
}

TEST(Unicode, DecodesInvalidBytesLikeLlamaCpp) {
  EXPECT_EQ(decode_utf8_lenient("a\x80"), std::vector<uint32_t>({'a', 0xFFFD}));
  EXPECT_EQ(decode_utf8_lenient("\xC0\x80"), std::vector<uint32_t>({0}));           // overlong kept
  EXPECT_EQ(decode_utf8_lenient("\xED\xA0\x80"), std::vector<uint32_t>({0xD800}));  // surrogate kept
  EXPECT_EQ(decode_utf8_lenient("\xE2\x82"), std::vector<uint32_t>({0xFFFD, 0xFFFD}));
  EXPECT_EQ(decode_utf8_lenient("\xF7\xBF\xBF\xBF"), std::vector<uint32_t>(4, 0xFFFD));
}

TEST(Unicode, KeepsBackOnlyAnUnfinishedCharacter) {
  EXPECT_EQ(complete_utf8_prefix("ab\xF0\x9F"), 2u);
  EXPECT_EQ(complete_utf8_prefix("ab\xF0\x9F\xA6\x99"), 6u);
  EXPECT_EQ(complete_utf8_prefix("ab\x80"), 3u);      // can never complete: not held
  EXPECT_EQ(complete_utf8_prefix("ab\xE0\x80"), 4u);  // invalid second byte: not held
  EXPECT_EQ(sanitize_utf8("a\xFF" "b"), "a\xEF\xBF\xBD" "b");
}

TEST(Tokenizer, CodePointsAboveUnicodeBecomeReplacementCharacters) {
  // llama.cpp throws (and llama-tokenize aborts) on F5..F7 lead bytes with a BPE vocabulary.
  OPEN_OR_SKIP(t, "llama-bpe");
  EXPECT_EQ(*t->tokenize("a\xF7\xBF\xBF\xBF" "b", false, false),
            *t->tokenize("a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "b", false, false));
}

TEST(Tokenizer, ParsesControlTokensOnlyWhenAsked) {
  OPEN_OR_SKIP(t, "qwen2");
  const TokenId im_end = t->vocab().find("<|im_end|>");
  ASSERT_NE(im_end, kNoToken);
  EXPECT_EQ(*t->tokenize("<|im_end|>", false, true), std::vector<TokenId>({im_end}));
  EXPECT_GT(t->tokenize("<|im_end|>", false, false)->size(), 1u);
}

TEST(Tokenizer, AddsBosPerVocabulary) {
  OPEN_OR_SKIP(spm, "llama-spm");
  EXPECT_EQ(*spm->tokenize("", true, true), std::vector<TokenId>({spm->vocab().special.bos}));
  EXPECT_TRUE(spm->tokenize("", false, true)->empty());
  EXPECT_TRUE(spm->vocab().add_bos);
  EXPECT_EQ(spm->vocab().special.eos, 2);
  EXPECT_TRUE(spm->vocab().is_eog(2));
}

TEST(Tokenizer, DetokenizesSpmWithoutThePrefixSpace) {
  OPEN_OR_SKIP(t, "llama-spm");
  const std::vector<TokenId> ids = *t->tokenize("Hello  world", true, false);
  EXPECT_EQ(t->detokenize(ids, true, false), " Hello  world");  // llama.cpp keeps the space after a removed BOS
  EXPECT_EQ(t->detokenize(std::span(ids).subspan(1), false, false), "Hello  world");
  EXPECT_EQ(t->detokenize(ids, false, true), "<s> Hello  world");
}

TEST(Tokenizer, CleansSpacesWhereTheVocabularyAsks) {
  OPEN_OR_SKIP(t, "gpt-2");
  ASSERT_TRUE(t->vocab().clean_spaces);
  const std::vector<TokenId> ids = *t->tokenize("a , b . c ' d 's", false, false);
  EXPECT_EQ(t->detokenize(ids, false, false), "a, b. c'd's");
}

TEST(StreamDecoder, HoldsBackBytesOfAnUnfinishedCharacter) {
  OPEN_OR_SKIP(t, "llama-spm");
  const std::vector<TokenId> ids = *t->tokenize("ok 🦙!", false, false);  // the llama is four byte tokens
  StreamDecoder stream(*t, false, true);
  std::string text;
  size_t max_held = 0;
  for (const TokenId id : ids) {
    const std::string piece = stream.push(id);
    EXPECT_EQ(sanitize_utf8(piece), piece);
    max_held = std::max(max_held, stream.held_bytes());
    text += piece;
  }
  text += stream.flush();
  EXPECT_EQ(text, "ok 🦙!");
  EXPECT_EQ(max_held, 3u);
}

TEST(StreamDecoder, ReplacesBytesThatCanNeverFormACharacter) {
  OPEN_OR_SKIP(t, "llama-spm");
  StreamDecoder stream(*t, false, false);
  EXPECT_EQ(stream.push(t->vocab().spm_byte_token(0xF0)), "");  // may still become a character: held
  EXPECT_EQ(stream.push(t->vocab().find("a")), "\xEF\xBF\xBD" "a");
  EXPECT_EQ(stream.push(t->vocab().spm_byte_token(0xE2)), "");
  EXPECT_EQ(stream.flush(), "\xEF\xBF\xBD");  // the stream ended inside a character
  EXPECT_EQ(stream.held_bytes(), 0u);
}

}  // namespace
}  // namespace tandem::tokenizer
