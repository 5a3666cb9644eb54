// JSON Schema "pattern" -> GBNF against an independent reference, std::regex (ECMAScript grammar):
// every string up to three characters over a small alphabet (quotes, backslashes and control
// characters included), plus random longer ones, is accepted by the grammar (spelled as JSON spells
// it) exactly when std::regex_search finds the pattern in it. Unsupported constructs are errors.
#include <gtest/gtest.h>

#include <random>
#include <regex>
#include <string>

#include <nlohmann/json.hpp>

#include "sampling/grammar.h"
#include "sampling/json_schema.h"
#include "sampling/regex.h"

namespace tandem::sampling {
namespace {

const std::string kAlphabet = "abcxzAB12 \"\\\n\t-@.mo";

bool grammar_accepts(const std::shared_ptr<const Grammar>& g, const std::string& s) {
  GrammarMatcher m(g);
  const std::string json = nlohmann::json(s).dump();  // the string as JSON writes it, quotes included
  return m.accept(json).is_ok() && m.is_complete();
}

TEST(Regex, AgreesWithStdRegexOnEveryShortString) {
  const char* patterns[] = {
      "^[A-Z][a-z]+ \\d{2,3}$", "^(ab|a)*c?$", "^a.c$", "b+", "^[^a-c\"]{1,3}$", "^\\w+@\\w+\\.mo$",
      "^(?:x|\"|\\\\)+$", "^\\s*\\S$", "^[a\\-z]$", "^.{0,2}$", "^a{2}b{1,}c{0,1}$", "^(a|b)??c$", "x$",
      "^[\\t\\n]+$", "^(a|bc)+?$", "^\\x41\\u0042?$", "^[\\d\\s]*$", "^\\D\\W$", "^a{0}b$", "^[^]$",
      "^(|a)b$", "12", "^$",
  };
  std::mt19937 rng(11);
  for (const char* pattern : patterns) {
    auto gbnf = json_schema_to_grammar(nlohmann::json{{"type", "string"}, {"pattern", pattern}});
    ASSERT_TRUE(gbnf.has_value()) << pattern << ": " << gbnf.error().message();
    auto g = Grammar::parse(*gbnf);
    ASSERT_TRUE(g.has_value()) << *gbnf;
    const std::regex re(pattern, std::regex::ECMAScript);
    std::vector<std::string> texts = {""};  // every string of up to 3 characters, built length by length
    for (size_t begin = 0, len = 1; len <= 3; ++len) {
      const size_t end = texts.size();
      for (size_t i = begin; i < end; ++i)
        for (const char c : kAlphabet) texts.push_back(texts[i] + c);
      begin = end;
    }
    for (const char* longer : {"Ab 12", "Abc 123", "Ab 1234", "ab@ab.mo", "a@b.mo", "aab", "abcc"}) texts.push_back(longer);
    for (int i = 0; i < 2000; ++i) {
      std::string s;
      for (int n = int(rng() % 12); n > 0; --n) s += kAlphabet[rng() % kAlphabet.size()];
      texts.push_back(s);
    }
    size_t n_match = 0;
    for (const std::string& s : texts) {
      const bool want = std::regex_search(s, re);
      n_match += want;
      ASSERT_EQ(grammar_accepts(*g, s), want) << "pattern " << pattern << " on " << nlohmann::json(s).dump() << "\n"
                                              << *gbnf;
    }
    EXPECT_GT(n_match, 0u) << pattern;  // every pattern above matches something in the set
  }
}

TEST(Regex, NonAsciiCharactersAndTheirClasses) {
  auto gbnf = json_schema_to_grammar(nlohmann::json{{"type", "string"}, {"pattern", "^[à-ÿ€]+ü$"}});
  ASSERT_TRUE(gbnf.has_value()) << gbnf.error().message();
  auto g = Grammar::parse(*gbnf);
  ASSERT_TRUE(g.has_value());
  EXPECT_TRUE(grammar_accepts(*g, "é€ü"));
  EXPECT_FALSE(grammar_accepts(*g, "Éü"));
  EXPECT_FALSE(grammar_accepts(*g, "éu"));
  // A class escape next to '-' makes no range (ECMA-262 Annex B; std::regex refuses these).
  auto annex_b = json_schema_to_grammar(nlohmann::json{{"pattern", "^[\\d-z][a-\\s]$"}});
  ASSERT_TRUE(annex_b.has_value()) << annex_b.error().message();
  auto b = Grammar::parse(*annex_b);
  ASSERT_TRUE(b.has_value());
  for (const char* yes : {"5a", "--", "z ", "0\t"}) EXPECT_TRUE(grammar_accepts(*b, yes)) << yes;
  for (const char* no : {"ab", "y-", "5b"}) EXPECT_FALSE(grammar_accepts(*b, no)) << no;
  // A '{' that starts no quantifier is a literal (Annex B again).
  auto brace = json_schema_to_grammar(nlohmann::json{{"pattern", "^{a}$"}});
  ASSERT_TRUE(brace.has_value());
  auto br = Grammar::parse(*brace);
  ASSERT_TRUE(br.has_value());
  EXPECT_TRUE(grammar_accepts(*br, "{a}"));
  EXPECT_FALSE(grammar_accepts(*br, "a"));
  // Named groups are groups (std::regex does not know them).
  auto named = json_schema_to_grammar(nlohmann::json{{"pattern", "^(?<word>ab)+$"}});
  ASSERT_TRUE(named.has_value());
  auto n = Grammar::parse(*named);
  ASSERT_TRUE(n.has_value());
  EXPECT_TRUE(grammar_accepts(*n, "abab"));
  EXPECT_FALSE(grammar_accepts(*n, "aba"));
}

TEST(Regex, UnsupportedConstructsAreErrors) {
  const std::pair<const char*, const char*> cases[] = {
      {"(?=a)b", "column 2: lookahead and lookbehind are not supported"},
      {"(a)\\1", "back-references are not supported"},
      {"\\bfoo", "word boundaries"},
      {"a**", "nothing to repeat"},
      {"*a", "column 1: nothing to repeat"},
      {"{2}", "nothing to repeat"},
      {"[z-a]", "range out of order"},
      {"(a", "missing ')'"},
      {"a)", "unmatched ')'"},
      {"[abc", "missing ']'"},
      {"\\p{L}", "not supported"},
      {"a{3,2}", "n below m"},
      {"^a^", "'^' and '$' are supported only at the start and the end"},
      {"a{20000}", "repetition count above 10000"},
      {"[]", "a class that matches no character"},
      {"a\\", "'\\' at the end"},
  };
  for (const auto& [pattern, want] : cases) {
    auto r = regex_to_gbnf(pattern);
    ASSERT_FALSE(r.has_value()) << pattern << " -> " << *r;
    EXPECT_NE(r.error().message().find(want), std::string::npos) << pattern << ": " << r.error().message();
    EXPECT_EQ(r.error().message().rfind(std::string("pattern '") + pattern + "'", 0), 0u) << r.error().message();
  }
  auto in_schema = json_schema_to_grammar(std::string_view(R"js({"properties": {"id": {"type": "string", "pattern": "(?!x)"}}})js"));
  ASSERT_FALSE(in_schema.has_value());
  EXPECT_NE(in_schema.error().message().find("json schema: #/properties/id: pattern '(?!x)'"), std::string::npos)
      << in_schema.error().message();
  auto with_length = json_schema_to_grammar(std::string_view(R"({"type": "string", "pattern": "a", "maxLength": 3})"));
  ASSERT_FALSE(with_length.has_value());
  EXPECT_NE(with_length.error().message().find("'pattern' beside 'minLength' or 'maxLength'"), std::string::npos);
}

}  // namespace
}  // namespace tandem::sampling
