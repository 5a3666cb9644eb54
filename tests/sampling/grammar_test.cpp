// GBNF parser (every construct, and an error with line and column for each malformed form), the
// matcher on whole strings and on prefixes (UTF-8 split anywhere, limits), and the token trie's
// allowed set against a token-by-token check.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <string>

#include "sampling/grammar.h"
#include "sampling/sampler.h"

namespace tandem::sampling {
namespace {

std::shared_ptr<const Grammar> parse_ok(const std::string& gbnf) {
  auto g = Grammar::parse(gbnf);
  EXPECT_TRUE(g.has_value()) << gbnf << "\n" << g.status().message();
  return g.has_value() ? *g : nullptr;
}

std::string parse_error(const std::string& gbnf) {
  auto g = Grammar::parse(gbnf);
  EXPECT_FALSE(g.has_value()) << "accepted: " << gbnf;
  return g.has_value() ? "" : g.error().message();
}

// The whole text is a sentence of the grammar.
bool matches(const std::shared_ptr<const Grammar>& g, std::string_view text) {
  GrammarMatcher m(g);
  return m.accept(text).is_ok() && m.is_complete();
}
// The text can be continued into a sentence (or is one).
bool is_prefix(const std::shared_ptr<const Grammar>& g, std::string_view text) {
  GrammarMatcher m(g);
  return m.accept(text).is_ok();
}

TEST(GrammarParser, AcceptsEveryConstruct) {
  const auto g = parse_ok(R"(# a comment
root ::= greeting (", " name)* "!"? tail{0,2} [0-9]{2} [^a-z\n]+ . more
greeting ::= "hello" | "hi" |
  "hey"   # a newline after '|' continues the rule
name ::= [A-Z] [a-z\-]*
tail ::= "\x41\u00e9\U0001F600\t\"\\\[\]"
more ::= ( "x"
  | "y" )+ "ü")");
  ASSERT_TRUE(g);
  EXPECT_TRUE(matches(g, "hello, Bob, Al-ice!12A.zxyxü"));
  EXPECT_TRUE(matches(g, "heyA\xc3\xa9\xf0\x9f\x98\x80\t\"\\[]99ABC\xe2\x82\xac\nyü"));
  EXPECT_FALSE(matches(g, "hello!12azxü"));   // [^a-z\n]+ needs one character that is not a-z
  EXPECT_FALSE(matches(g, "hello, bob!12A.x"));  // names start upper case
  EXPECT_TRUE(is_prefix(g, "hello, Bob"));
  EXPECT_FALSE(is_prefix(g, "howdy"));
}

TEST(GrammarParser, ErrorsNameLineAndColumn) {
  const std::pair<std::string, std::string> cases[] = {
      {"root ::= \"abc", "line 1, column 10: unterminated string literal"},
      {"root ::= [a-z", "line 1, column 10: unterminated character class"},
      {"root ::= (\"a\" | \"b\"", "line 1, column 20: expected ')' to close the group opened at column 10"},
      {"root ::= foo", "line 1, column 10: rule 'foo' is used but never defined"},
      {"foo ::= \"a\"", "there is no 'root' rule"},
      {"root ::= \"a\"\nroot ::= \"b\"", "line 2, column 1: rule 'root' is defined twice"},
      {"root ::= * \"a\"", "line 1, column 10: '*' has nothing before it to repeat"},
      {"root ::= \"\"+", "'+' has nothing before it to repeat"},
      {"root ::= \"a\"{3,2}", "line 1, column 13: repetition {3,2}: the maximum is below the minimum"},
      {"root ::= \"a\"{20000}", "repetition count above 10000"},
      {"root ::= \"a\"{2", "expected ',' or '}' in the repetition"},
      {"root ::= \"a\"{2,3", "expected '}' to close the repetition"},
      {"root ::= \"a\"{x}", "expected a number in the repetition"},
      {"root ::= \"\\q\"", "line 1, column 11: unknown escape '\\q'"},
      {"root ::= \"\\x4\"", "expected 2 hex digits after '\\x'"},
      {"root ::= \"\\U00110000\"", "code point U+110000 is beyond U+10FFFF"},
      {"root ::= [z-a]", "character range is backwards (U+007A-U+0061)"},
      {"root ::= <think>", "token matches (<...>, <[id]>, !<...>) are not supported"},
      {"root ::= \"a\" )", "line 1, column 14: unexpected ')'"},
      {"root \"a\"", "line 1, column 6: expected '::=' after the rule name"},
      {"::= \"a\"", "line 1, column 1: expected a rule name"},
      {"root ::= \"\xff\"", "invalid UTF-8 in the grammar"},
      {"root ::= \"a\nb\"", "a line break inside a literal or class"},
      {"root ::= a\na ::= \"é\" @", "line 2, column 11: unexpected '@'"},
  };
  for (const auto& [gbnf, want] : cases) {
    const std::string got = parse_error(gbnf);
    EXPECT_NE(got.find(want), std::string::npos) << gbnf << "\n got: " << got << "\nwant: " << want;
    EXPECT_EQ(got.rfind("grammar: ", 0), 0u) << got;
  }
}

TEST(GrammarParser, RefusesLeftRecursionNamingTheCycle) {
  EXPECT_NE(parse_error("root ::= root \"a\" | \"b\"").find("left recursion: root -> root"), std::string::npos);
  // Through a rule that can match nothing.
  EXPECT_NE(parse_error("root ::= a\na ::= b \"x\"\nb ::= \"\" | a").find("left recursion: a -> b -> a"),
            std::string::npos);
  // A repeated part that can match nothing would loop in place.
  EXPECT_NE(parse_error("root ::= (\"a\"?)*").find("left recursion"), std::string::npos);
  // Right recursion and recursion after a character are fine.
  const auto g = parse_ok("root ::= \"[\" root? \"]\"");
  std::string deep(500, '[');
  deep += std::string(500, ']');
  EXPECT_TRUE(matches(g, deep));
  EXPECT_FALSE(matches(g, deep + "]"));
}

TEST(GrammarParser, RefusesGrammarsThatExpandPastTheLimits) {
  std::string nested = "root ::= " + std::string(300, '(') + "\"a\"" + std::string(300, ')');
  EXPECT_NE(parse_error(nested).find("groups nested more than 256 deep"), std::string::npos);
  const std::string big = "root ::= \"" + std::string(200, 'a') + "\"{10000}";
  EXPECT_NE(parse_error(big).find("more than 1048576 elements"), std::string::npos);
}

TEST(GrammarMatcher, RepetitionCounts) {
  const auto g = parse_ok("root ::= \"a\"{2,4} \"b\"{3} \"c\"{2,} \"ab\"+ \"d\"{0,1}");
  EXPECT_TRUE(matches(g, "aabbbccab"));
  EXPECT_TRUE(matches(g, "aaaabbbcccccababd"));
  EXPECT_FALSE(matches(g, "abbbccab"));     // one a
  EXPECT_FALSE(matches(g, "aaaaabbbccab"));  // five a
  EXPECT_FALSE(matches(g, "aabbccab"));      // two b
  EXPECT_FALSE(matches(g, "aabbbcab"));      // one c
  EXPECT_FALSE(matches(g, "aabbbccaba"));    // "ab"+ repeats the whole literal
  EXPECT_TRUE(is_prefix(g, "aabbbccaba"));
  EXPECT_FALSE(matches(g, "aabbbccabdd"));
}

TEST(GrammarMatcher, ClassesRangesNegationAndDot) {
  const auto g = parse_ok("root ::= [a-cx] [^a-cé] . [\\u00e0-\\u00ff]");
  EXPECT_TRUE(matches(g, "xd\n\xc3\xa0"));
  EXPECT_TRUE(matches(g, "a\xe2\x82\xac\xf0\x9f\x98\x80\xc3\xbf"));  // € and 😀 are not excluded; ÿ is in range
  EXPECT_FALSE(matches(g, "db..\xc3\xa0"));
  EXPECT_FALSE(matches(g, "ab.\xc3\xa0"));
  EXPECT_FALSE(matches(g, "a\xc3\xa9.\xc3\xa0"));  // é is excluded
  EXPECT_FALSE(matches(g, "ad.\xc3\x9f"));         // ß is below the range
}

TEST(GrammarMatcher, FollowsCharactersSplitAcrossCalls) {
  const auto g = parse_ok("root ::= \"é€😀\" | \"x\"");
  const std::string text = "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
  GrammarMatcher m(g);
  for (size_t i = 0; i < text.size(); ++i) {
    ASSERT_TRUE(m.accept(text.substr(i, 1)).is_ok()) << i;
    EXPECT_EQ(m.is_complete(), i + 1 == text.size()) << i;  // never complete inside a character
  }
  // The first byte of a character no alternative can start is refused at once.
  GrammarMatcher n(g);
  EXPECT_FALSE(n.can_accept("\xc3\xa8"));   // è
  EXPECT_FALSE(n.can_accept("\xe2"));        // no 3-byte character can come first
  EXPECT_TRUE(n.can_accept("\xc3"));
}

TEST(GrammarMatcher, RejectsInvalidUtf8) {
  const auto g = parse_ok("root ::= .*");
  EXPECT_TRUE(matches(g, "ok \xc3\xa9 \xf4\x8f\xbf\xbf"));
  for (const char* bad : {"\x80", "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xed\xa0\x80", "\xf0\x80\x80\x80",
                          "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff", "\xc3\x41"})
    EXPECT_FALSE(is_prefix(g, bad)) << bad;
}

TEST(GrammarMatcher, ARejectedTextLeavesItDeadWithAMessage) {
  const auto g = parse_ok("root ::= \"yes\" | \"no\"");
  GrammarMatcher m(g);
  EXPECT_TRUE(m.can_accept("ye"));
  EXPECT_FALSE(m.can_accept("yo"));
  EXPECT_FALSE(m.is_dead());  // can_accept changes nothing
  const Status s = m.accept("yo");
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("\"yo\" does not continue the grammar (at byte 1)"), std::string::npos) << s.message();
  EXPECT_TRUE(m.is_dead());
  EXPECT_FALSE(m.accept("s").is_ok());
  m.reset();
  EXPECT_TRUE(m.accept("no").is_ok());
  EXPECT_TRUE(m.is_complete());
  EXPECT_FALSE(m.can_accept("o"));  // a complete root takes nothing more
}

TEST(GrammarMatcher, CompleteAndStillOpen) {
  const auto g = parse_ok("root ::= \"a\" \"b\"?");
  GrammarMatcher m(g);
  EXPECT_FALSE(m.is_complete());
  ASSERT_TRUE(m.accept("a").is_ok());
  EXPECT_TRUE(m.is_complete());
  EXPECT_TRUE(m.can_accept("b"));
  EXPECT_FALSE(parse_ok("root ::= \"a\" | \"\"") == nullptr);
  EXPECT_TRUE(GrammarMatcher(parse_ok("root ::= \"a\" | \"\"")).is_complete());  // the empty text is a sentence
}

TEST(GrammarMatcher, LongLoopsKeepTheirStacksShort) {
  const auto g = parse_ok("root ::= [a]* \"b\"");
  GrammarMatcher m(g);
  ASSERT_TRUE(m.accept(std::string(100000, 'a')).is_ok());
  EXPECT_LE(m.state().data.size(), 4u);  // the loop's tail call does not push a frame per character
  ASSERT_TRUE(m.accept("b").is_ok());
  EXPECT_TRUE(m.is_complete());
}

TEST(GrammarMatcher, AmbiguityPastTheLimitsIsAnError) {
  // Every 'a' doubles the distinct ways to close: 2^n parse stacks.
  const auto g = parse_ok("root ::= r\nr ::= \"a\" r \"b\" | \"a\" r \"c\" | \"\"");
  GrammarMatcher m(g);
  const Status s = m.accept(std::string(16, 'a'));
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("more than 1024 parse stacks"), std::string::npos) << s.message();
  EXPECT_TRUE(m.is_dead());
  // A chain of optionals deeper than the expansion limit.
  std::string chain = "root ::=";
  for (int i = 0; i < 5000; ++i) chain += " x?";
  chain += " \"z\"\nx ::= \"x\"";
  GrammarMatcher c(parse_ok(chain));
  const Status t = c.accept("z");
  ASSERT_FALSE(t.is_ok());
  EXPECT_NE(t.message().find("too ambiguous"), std::string::npos) << t.message();
  // Short enough chains are fine.
  std::string short_chain = "root ::=";
  for (int i = 0; i < 200; ++i) short_chain += " x?";
  short_chain += " \"z\"\nx ::= \"x\"";
  EXPECT_TRUE(matches(parse_ok(short_chain), "xxxz"));
}

// The trie walk must offer exactly the tokens a one-by-one check accepts, in every state.
TEST(GrammarVocab, AllowedTokensEqualTheOneByOneCheck) {
  std::mt19937 rng(7);
  const std::vector<std::string> alphabet = {"a", "b", "{", "}", "\"", ":", ",", " ", "1", "\xc3", "\xa9", "\xc3\xa9", "\xe2\x82\xac"};
  std::vector<std::string> pieces = {"", "", "a", "ab", "\"a\""};  // ids 0, 1: empty (0 is the end token)
  for (int i = 0; i < 600; ++i) {
    std::string p;
    const int len = 1 + int(rng() % 4);
    for (int k = 0; k < len; ++k) p += alphabet[rng() % alphabet.size()];
    pieces.push_back(p);
  }
  const auto vocab = GrammarVocab::from_pieces(pieces, {0});
  const auto g = parse_ok(R"(root ::= "{" ws (pair ("," ws pair)*)? "}"
pair ::= "\"" [a-bé€]* "\"" ws ":" ws [0-9]+ ws
ws ::= " "?)");
  GrammarMatcher m(g);
  std::vector<uint8_t> allowed;
  size_t max_allowed = 0;
  for (int step = 0; step < 300; ++step) {
    const size_t n_allowed = vocab->allowed_tokens(m, &allowed);
    size_t count = 0;
    std::vector<int32_t> ok_ids;
    for (int32_t id = 0; id < int32_t(pieces.size()); ++id) {
      ASSERT_EQ(allowed[size_t(id)] != 0, vocab->allows(m, id)) << "step " << step << " token '" << pieces[size_t(id)] << "'";
      if (allowed[size_t(id)]) ++count, ok_ids.push_back(id);
    }
    EXPECT_EQ(n_allowed, count);
    EXPECT_FALSE(allowed[1]);  // empty text: never
    EXPECT_EQ(allowed[0] != 0, m.is_complete());
    max_allowed = std::max(max_allowed, count);
    const int32_t pick = ok_ids.empty() ? 0 : ok_ids[rng() % ok_ids.size()];
    if (pick == 0) {  // the end: start again
      m.reset();
      continue;
    }
    ASSERT_TRUE(m.accept(pieces[size_t(pick)]).is_ok());
  }
  EXPECT_GT(max_allowed, 50u);   // some states (inside a key) allow a good share of the vocabulary
}

// ---- the sampler stage --------------------------------------------------------------------------

// id 0 ends generation (empty text, as control tokens print); 1 is an empty non-end token.
const std::vector<std::string> kPieces = {"", "", "y", "e", "s", "n", "o", "yes", "x", "maybe", "ye", "no!", "!"};

SamplerParams random_params(uint32_t seed, const std::string& grammar) {
  SamplerParams p;
  p.seed = seed;
  p.temp = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.grammar = grammar;
  return p;
}

// Samples until an end token (or 20 tokens); returns the text.
std::string generate(Sampler& s, const std::vector<float>& logits, bool* ended) {
  std::string text;
  *ended = false;
  for (int i = 0; i < 20; ++i) {
    const int32_t id = s.sample(logits);
    s.accept(id);
    if (id == 0) {
      *ended = true;
      break;
    }
    text += kPieces[size_t(id)];
  }
  return text;
}

TEST(GrammarSampler, EveryDrawFollowsTheGrammarAndEndsOnlyWhenComplete) {
  const auto vocab = GrammarVocab::from_pieces(kPieces, {0});
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::set<std::string> seen;
  for (uint32_t seed = 0; seed < 200; ++seed) {
    std::vector<float> logits(kPieces.size() + 3);  // rows may be longer than the vocabulary
    for (float& l : logits) l = d(rng);
    logits[0] = 4.0f;  // the model would like to stop at once
    logits[9] = 6.0f;  // or say "maybe"
    auto s = Sampler::create(random_params(seed, "root ::= (\"yes\" | \"no\") \"!\"?"), 0, vocab);
    ASSERT_TRUE(s.has_value()) << s.status().message();
    bool ended = false;
    const std::string text = generate(*s, logits, &ended);
    EXPECT_TRUE(ended) << text;
    EXPECT_TRUE(text == "yes" || text == "no" || text == "yes!" || text == "no!") << text;
    seen.insert(text);
  }
  EXPECT_EQ(seen.size(), 4u);  // random sampling reaches every sentence
}

TEST(GrammarSampler, GreedyPicksTheBestAllowedToken) {
  const auto vocab = GrammarVocab::from_pieces(kPieces, {0});
  SamplerParams p = random_params(1, "root ::= \"no\" | \"yes\"");
  p.temp = 0.0f;
  auto s = Sampler::create(p, 0, vocab);
  ASSERT_TRUE(s.has_value());
  std::vector<float> logits(kPieces.size(), 0.0f);
  logits[9] = 9.0f, logits[0] = 8.0f, logits[10] = 5.0f, logits[5] = 4.0f;  // maybe, end, "ye", "n"
  EXPECT_EQ(s->sample(logits), 10);  // "ye": the best token the grammar allows
  s->accept(10);
  EXPECT_EQ(s->sample(logits), 4);  // "s" is all that is left (all 0 logits; the lowest id among "s")
  s->accept(4);
  EXPECT_TRUE(s->grammar()->is_complete());
  EXPECT_EQ(s->sample(logits), 0);
}

TEST(GrammarSampler, PromptTokensSkipTheGrammarAndResetRestarts) {
  const auto vocab = GrammarVocab::from_pieces(kPieces, {0});
  auto s = Sampler::create(random_params(3, "root ::= \"no\""), 0, vocab);
  ASSERT_TRUE(s.has_value());
  s->accept(9, false);  // "maybe" in the prompt
  EXPECT_FALSE(s->grammar()->is_dead());
  s->accept(5);
  s->accept(6);
  EXPECT_TRUE(s->grammar()->is_complete());
  s->reset_grammar();
  EXPECT_FALSE(s->grammar()->is_complete());
  EXPECT_TRUE(s->grammar()->can_accept("no"));
}

TEST(GrammarSampler, ADeadEndEndsTheGeneration) {
  const auto vocab = GrammarVocab::from_pieces(kPieces, {0});
  // The vocabulary cannot spell "z": the only way out is to stop.
  auto s = Sampler::create(random_params(4, "root ::= \"y\" \"z\""), 0, vocab);
  ASSERT_TRUE(s.has_value());
  std::vector<float> logits(kPieces.size(), 1.0f);
  const int32_t first = s->sample(logits);
  EXPECT_EQ(first, 2);  // "y"
  s->accept(first);
  EXPECT_EQ(s->sample(logits), 0);
  // A forced token the grammar rejects kills it; the sampler then stops too.
  auto t = Sampler::create(random_params(4, "root ::= \"yes\""), 0, vocab);
  ASSERT_TRUE(t.has_value());
  t->accept(8);  // "x"
  EXPECT_TRUE(t->grammar()->is_dead());
  EXPECT_EQ(t->sample(logits), 0);
}

TEST(GrammarSampler, CreateReportsGrammarErrors) {
  const auto vocab = GrammarVocab::from_pieces(kPieces, {0});
  auto bad = Sampler::create(random_params(1, "root ::= (\"a\""), 0, vocab);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().message().rfind("sampler: grammar: line 1, column", 0), 0u) << bad.error().message();
  auto no_vocab = Sampler::create(random_params(1, "root ::= \"a\""));
  ASSERT_FALSE(no_vocab.has_value());
  EXPECT_NE(no_vocab.error().message().find("GrammarVocab"), std::string::npos);
  EXPECT_TRUE(Sampler::create(random_params(1, "")).has_value());  // no grammar: no vocabulary needed
}

}  // namespace
}  // namespace tandem::sampling
