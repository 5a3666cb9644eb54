// Exactness against llama.cpp: the .inp/.out vectors of llama.cpp's test-tokenizer-0 for every vocab in
// the test-data folder (test_data.h) and, when TANDEM_LLAMA_MODELS is set, in a llama.cpp models/ folder
// (the one scripts/fetch-llama-vocab.sh fetches), tokenized as that test does: add_special false,
// parse_special false.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "test_data.h"
#include "tokenizer/tokenizer.h"

namespace tandem::tokenizer {
namespace {

namespace fs = std::filesystem;

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Case {
  std::string text;
  std::vector<TokenId> ids;
};

// .inp: inputs separated by "\n__ggml_vocab_test__\n"; .out: one line of ids per input.
std::vector<Case> read_vectors(const fs::path& inp, const fs::path& out) {
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<Case> cases;
  std::string all = read_all(inp);
  size_t pos = 0;
  for (;;) {
    const size_t next = all.find(sep, pos);
    if (next == std::string::npos) break;
    cases.push_back({all.substr(pos, next - pos), {}});
    pos = next + sep.size();
  }
  std::istringstream lines(read_all(out));
  std::string line;
  for (Case& c : cases) {
    if (!std::getline(lines, line)) break;
    std::istringstream ids(line);
    TokenId id;
    while (ids >> id) c.ids.push_back(id);
  }
  return cases;
}

std::string ids_string(const std::vector<TokenId>& ids) {
  std::string s;
  for (TokenId id : ids) s += std::to_string(id) + " ";
  return s;
}

// Tokenizes every vector of one vocab; returns false when Tandem refuses the vocab as unsupported.
bool check_vocab(const fs::path& gguf) {
  const fs::path inp = gguf.string() + ".inp", out = gguf.string() + ".out";
  auto tok = Tokenizer::open(gguf.string());
  if (!tok && tok.error().code() == StatusCode::Unsupported) {
    std::printf("[ skipped  ] %s: %s\n", gguf.filename().c_str(), tok.error().message().c_str());
    return false;
  }
  EXPECT_TRUE(tok) << tok.error().message();
  if (!tok) return true;
  const std::vector<Case> cases = read_vectors(inp, out);
  EXPECT_FALSE(cases.empty()) << inp;
  int passed = 0;
  for (const Case& c : cases) {
    const auto tokenized = (*tok)->tokenize(c.text, false, false);
    EXPECT_TRUE(tokenized) << tokenized.error().message();
    const std::vector<TokenId> got = tokenized ? *tokenized : std::vector<TokenId>{};
    EXPECT_EQ(ids_string(got), ids_string(c.ids)) << gguf.filename() << " input '" << c.text << "'";
    passed += got == c.ids;
  }
  std::printf("[ vectors  ] %-36s %3d / %3zu pass (pre %s)\n", gguf.filename().c_str(), passed, cases.size(),
              (*tok)->pre_family().c_str());
  return true;
}

void check_folder(const fs::path& dir, int* n_vocabs) {
  if (!fs::is_directory(dir)) return;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const fs::path gguf = entry.path();
    if (gguf.extension() != ".gguf") continue;
    if (!fs::exists(gguf.string() + ".inp") || !fs::exists(gguf.string() + ".out")) continue;
    *n_vocabs += check_vocab(gguf);
  }
}

TEST(TokenizerVectors, MatchLlamaCppOnSharedModels) {
  const fs::path dir = test_data::dir();
  if (!fs::is_directory(dir)) GTEST_SKIP() << test_data::absent("");
  int n = 0;
  check_folder(dir, &n);
  EXPECT_GT(n, 0);
}

TEST(TokenizerVectors, MatchLlamaCppOnLlamaModelsFolder) {
  const char* dir = std::getenv("TANDEM_LLAMA_MODELS");
  if (!dir) GTEST_SKIP() << "set TANDEM_LLAMA_MODELS to a llama.cpp models/ folder to run its vocab vectors too";
  int n = 0;
  check_folder(dir, &n);
  EXPECT_GT(n, 0);
}

// Gemma 4's vocabulary (tokenizer.ggml.model "gemma4") must be read, not skipped as unsupported.
TEST(TokenizerVectors, MatchLlamaCppOnGemma4) {
  const char* dir = std::getenv("TANDEM_LLAMA_MODELS");
  if (!dir) GTEST_SKIP() << "set TANDEM_LLAMA_MODELS (scripts/fetch-llama-vocab.sh) to run Gemma 4's vectors";
  const fs::path gguf = fs::path(dir) / "ggml-vocab-gemma-4.gguf";
  ASSERT_TRUE(fs::exists(gguf)) << gguf << " is missing from TANDEM_LLAMA_MODELS";
  EXPECT_TRUE(check_vocab(gguf)) << "Gemma 4's vocabulary was refused";
}

}  // namespace
}  // namespace tandem::tokenizer
