// Pre-tokenization of long inputs: every family splits a run of half a million characters of one class
// as it splits a short run (PCRE2 running out of match stack or steps must never leave the rest of the
// text unsplit), and a split that cannot get what it needs is an error that reaches the caller.
#include <gtest/gtest.h>

#include <random>
#include <set>

#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace tandem::tokenizer {
namespace {

std::string repeat(std::string_view unit, size_t n) {
  std::string s;
  s.reserve(unit.size() * n);
  for (size_t i = 0; i < n; ++i) s += unit;
  return s;
}

// Where pieces end, counted back from the end of the text, within the last `window` bytes.
std::vector<size_t> cuts_near_end(const std::vector<size_t>& pieces, size_t window) {
  std::vector<size_t> cuts;
  size_t from_end = 0;
  for (size_t i = pieces.size(); i-- > 1 && from_end + pieces[i] <= window;) cuts.push_back(from_end += pieces[i]);
  return cuts;
}

struct CharRun {
  const char* name;
  const char* unit;
};
constexpr CharRun kRuns[] = {
    {"capitals", "A"},         {"lowercase", "a"},         {"mixed case", "aB"},     {"digits", "1"},
    {"spaces", " "},           {"newlines", "\n"},         {"tabs", "\t"},           {"space-newline", " \n"},
    {"no-break spaces", "\u00a0"}, {"punctuation", "."},   {"symbols", "$"},         {"CJK", "\u4e2d"},
    {"Hangul", "\uac00"},      {"combining marks", "a\u0301"}, {"contractions", "'s"}, {"words", "A a "},
};

// Run lengths in units: equal modulo 3 * 1024, so digit groups of three and jais-2's whitespace chunks
// of up to 512 end the same way in both; the long one is past what a 16 MiB match stack holds.
constexpr size_t kShortUnits = 3 * 1024, kLongUnits = 163 * 3 * 1024;

TEST(PreTokenizer, LongRunsOfEveryClassSplitLikeShortOnes) {
  const std::string tail = " hello 123";
  std::set<const PreTokenizerSpec*> seen;
  for (const std::string& name : known_pre_tokenizer_names()) {
    const PreTokenizerSpec* spec = find_pre_tokenizer(name);
    if (!seen.insert(spec).second) continue;
    auto p = PreTokenizer::create(*spec);
    ASSERT_TRUE(p) << p.error().message();
    for (const CharRun& run : kRuns) {
      const std::string short_text = repeat(run.unit, kShortUnits) + tail;
      const std::string long_text = repeat(run.unit, kLongUnits) + tail;
      const auto short_pieces = (*p)->split(short_text);
      const auto long_pieces = (*p)->split(long_text);
      ASSERT_TRUE(short_pieces) << short_pieces.error().message();
      ASSERT_TRUE(long_pieces) << name << ", " << run.name << ": " << long_pieces.error().message();
      size_t total = 0;
      for (const size_t n : *long_pieces) total += n;
      EXPECT_EQ(total, long_text.size()) << name << ", " << run.name;
      // The tail and the end of the run split the same way (the short run is longer than the window).
      const size_t window = tail.size() + 1024;
      EXPECT_EQ(cuts_near_end(*long_pieces, window), cuts_near_end(*short_pieces, window))
          << name << ", a run of " << run.name << " then '" << tail << "'";
    }
  }
}

// The case from the issue: after 500,000 capitals, tekken's split of " hello 123" is unchanged.
TEST(PreTokenizer, TekkenSplitsWhatFollowsHalfAMillionCapitals) {
  auto p = PreTokenizer::create(*find_pre_tokenizer("tekken"));
  ASSERT_TRUE(p);
  const auto pieces = (*p)->split(repeat("A", 500'000) + " hello 123");
  ASSERT_TRUE(pieces) << pieces.error().message();
  EXPECT_EQ(*pieces, std::vector<size_t>({500'000, 6, 1, 1, 1, 1}));
}

TEST(PreTokenizer, ReportsAnErrorWhenTheMatchStackCannotGrowEnough) {
  auto p = PreTokenizer::create(*find_pre_tokenizer("tekken"), size_t(1) << 20);  // a 1 MiB cap
  ASSERT_TRUE(p);
  const auto pieces = (*p)->split(repeat("A", 500'000) + " hello 123");
  ASSERT_FALSE(pieces) << "a split that ran out of match stack came back as " << pieces->size() << " pieces";
  EXPECT_EQ(pieces.error().code(), StatusCode::OutOfMemory);
  EXPECT_NE(pieces.error().message().find("'tekken'"), std::string::npos) << pieces.error().message();
}

// Random texts of runs (mostly short, some of hundreds) of the given pieces of text.
std::string random_runs(std::mt19937& rng, const std::vector<std::string>& alphabet) {
  std::string text;
  for (int i = int(rng() % 12); i >= 0; --i) {
    const std::string& unit = alphabet[rng() % alphabet.size()];
    const size_t n = rng() % 4 == 0 ? 300 + rng() % 1500 : 1 + rng() % 4;
    text += repeat(unit, n);
  }
  return text;
}

void expect_same_pieces(const PreTokenizerSpec& spec, const PreTokenizerSpec& reference,
                        const std::vector<std::string>& alphabet) {
  auto p = PreTokenizer::create(spec), ref = PreTokenizer::create(reference);
  ASSERT_TRUE(p && ref);
  std::mt19937 rng(19);
  for (int i = 0; i < 400; ++i) {
    const std::string text = random_runs(rng, alphabet);
    const auto got = (*p)->split(text), want = (*ref)->split(text);
    ASSERT_TRUE(got && want);
    ASSERT_EQ(*got, *want) << spec.family << " text #" << i << " of " << text.size() << " bytes";
  }
}

// jais-2's first pass (512-chunks of long whitespace runs) changes nothing but the cost.
TEST(PreTokenizer, Jais2WhitespaceChunksGiveThePiecesOfItsPatternAlone) {
  const PreTokenizerSpec& jais2 = *find_pre_tokenizer("jais-2");
  ASSERT_EQ(jais2.patterns.size(), 2u);
  const PreTokenizerSpec alone{"jais2-pattern", {jais2.patterns[1]}};
  expect_same_pieces(jais2, alone, {" ", "\t", "\n", "\r", "\u00a0", "\u3000", "a", "1", ".", " a", "\n "});
}

// superbpe's digit groups, cut in code, are the regex's.
TEST(PreTokenizer, SuperbpeDigitGroupsAreTheRegexs) {
  const PreTokenizerSpec reference{"superbpe-regex", {R"(\p{N}+)", R"((?=(?:\d{3})+(?!\d)))"}};
  expect_same_pieces(*find_pre_tokenizer("superbpe"), reference, {"1", "2", "x", "\u0661", " ", "\u00bd"});
}

// End to end through a byte-level vocab: "123" after a long run stays three tokens (it came out as one).
TEST(Tokenizer, TokenizesDigitsAfterALongRunWithTekken) {
  gguf::Metadata md;
  md.add("tokenizer.ggml.model", gguf::Value::string("gpt2"));
  md.add("tokenizer.ggml.pre", gguf::Value::string("tekken"));
  md.add("tokenizer.ggml.tokens",
         gguf::Value::string_array({"A", "Ġ", "h", "e", "l", "o", "1", "2", "3", "12", "123", "AA"}));
  md.add("tokenizer.ggml.merges", gguf::Value::string_array({"A A", "1 2", "12 3"}));
  auto t = Tokenizer::from_metadata(md, "tekken.gguf");
  ASSERT_TRUE(t) << t.error().message();
  const auto short_ids = (*t)->tokenize("AA 123", false, false);
  ASSERT_TRUE(short_ids) << short_ids.error().message();
  EXPECT_EQ(*short_ids, std::vector<TokenId>({11, 1, 6, 7, 8}));
  const auto long_ids = (*t)->tokenize(repeat("A", 500'000) + " 123", false, false);
  ASSERT_TRUE(long_ids) << long_ids.error().message();
  ASSERT_EQ(long_ids->size(), 250'000u + 4);
  EXPECT_EQ(std::vector<TokenId>(long_ids->end() - 4, long_ids->end()), std::vector<TokenId>({1, 6, 7, 8}));
}

}  // namespace
}  // namespace tandem::tokenizer
