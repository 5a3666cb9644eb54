// JSON Schema -> GBNF: for every supported keyword, texts the grammar must accept and texts it must
// reject; for every unsupported one, an error naming it and where it is.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "sampling/grammar.h"
#include "sampling/json_schema.h"

namespace tandem::sampling {
namespace {

struct Case {
  const char* schema;
  std::vector<std::string> accept, reject;
};

bool matches(const std::shared_ptr<const Grammar>& g, const std::string& text) {
  GrammarMatcher m(g);
  return m.accept(text).is_ok() && m.is_complete();
}

void check(const Case& c) {
  auto gbnf = json_schema_to_grammar(std::string_view(c.schema));
  ASSERT_TRUE(gbnf.has_value()) << c.schema << "\n" << gbnf.error().message();
  auto g = Grammar::parse(*gbnf);
  ASSERT_TRUE(g.has_value()) << *gbnf << "\n" << g.error().message();
  for (const std::string& t : c.accept) EXPECT_TRUE(matches(*g, t)) << c.schema << "\nmust accept: " << t << "\n" << *gbnf;
  for (const std::string& t : c.reject) EXPECT_FALSE(matches(*g, t)) << c.schema << "\nmust reject: " << t << "\n" << *gbnf;
}

TEST(JsonSchema, Primitives) {
  check({R"({"type": "string"})",
         {R"("abc")", R"("")", R"("a\"b\\c\/\n\u00e9\uD7FF\uE000")", "\"\xc3\xa9\xf0\x9f\x98\x80\""},
         {"abc", R"("a)", "\"a\x01\"", R"("\ud800")", R"("\uDC00")", R"("\x41")", "\"a\x7f\""}});
  check({R"({"type": "number"})",
         {"0", "1", "-0.5", "1e10", "3.14E-2", "1234567890123456", "1.0e+5"},
         {"01", ".5", "1.", "+1", "NaN", "-", "1e", "0x1", "12345678901234567"}});  // 16 digits at most
  check({R"({"type": "integer"})", {"0", "-12", "7 "}, {"1.0", "1e3", "-", "00"}});
  check({R"({"type": "boolean"})", {"true", "false"}, {"True", "1", "null"}});
  check({R"({"type": "null"})", {"null"}, {"nul", "None", "false"}});
  check({R"({"type": ["string", "null"]})", {R"("a")", "null"}, {"1", "[]"}});
}

TEST(JsonSchema, WhitespaceIsBounded) {
  const std::string indent20 = "\n" + std::string(20, ' ');
  check({R"({"type": "array", "items": {"type": "integer"}})",
         {"[1,2]", "[ 1, 2 ]", "[" + indent20 + "1]", "[1]\n"},
         {"[  1]", "[" + indent20 + " 1]", "[1 , 2]x", " [1]"}});
}

TEST(JsonSchema, PropertiesRequiredAndNoAdditionalProperties) {
  const char* schema = R"({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                           "required": ["name"], "additionalProperties": false})";
  check({schema,
         {R"({"name": "x"})", R"({"name":"x","age":3})", R"({ "name" : "x" , "age" : 3 })"},
         {R"({"age": 3})", R"({"name": "x", "extra": 1})", R"({})", R"({"name": 1})", R"({"name": "x",})"}});
  // additionalProperties absent with properties given: none, as llama.cpp.
  check({R"({"properties": {"a": {"type": "integer"}}, "required": ["a"]})", {R"({"a": 1})"}, {R"({"a": 1, "b": 2})"}});
  // A required name that has no schema takes any value.
  check({R"({"type": "object", "required": ["x"]})", {R"({"x": [1, {"y": null}]})"}, {"{}", R"({"y": 1})"}});
}

TEST(JsonSchema, OptionalPropertiesKeepCommasRight) {
  check({R"({"properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}}})",
         {"{}", R"({"a": 1})", R"({"b": 2})", R"({"c": 3})", R"({"a": 1, "c": 3})", R"({"a": 1, "b": 2, "c": 3})"},
         {R"({, "b": 2})", R"({"a": 1,})", R"({"b": 2, "a": 1})", R"({"a": 1 "b": 2})", R"({"a": 1, "a": 1})"}});
}

TEST(JsonSchema, AdditionalProperties) {
  check({R"({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
             "additionalProperties": true})",
         {R"({"name": "x"})", R"({"name": "x", "other": [1], "nam": 2, "names": 3, "": 4})"},
         {R"({"name": "x", "name": 1})",       // a declared key once more
          R"({"name": "x", "na\u006de": 1})",  // the same key spelled with an escape
          R"({"other": 1})"}});
  check({R"({"type": "object", "additionalProperties": {"type": "integer"}})",
         {"{}", R"({"a": 1, "b": 2})"},
         {R"({"a": "x"})", R"({"a": 1,})"}});
  check({R"({"type": "object"})", {"{}", R"({"a": {"b": [true, null, "x", 1.5]}})"}, {"[]", "1", R"({"a"})"}});
}

TEST(JsonSchema, EnumAndConst) {
  check({R"({"enum": ["red", 1, null, {"a": [1]}, "é\"q"]})",
         {R"("red")", "1", "null", R"({"a":[1]})", R"("é\"q")"},
         {R"("blue")", "2", R"({"a": [1]})", R"("Red")"}});
  check({R"({"type": "string", "enum": ["a", 1]})", {R"("a")"}, {"1"}});
  check({R"({"const": "x"})", {R"("x")"}, {R"("y")", "x"}});
  check({R"({"const": {"k": [1, 2.5]}})", {R"({"k":[1,2.5]})"}, {R"({"k":[1,2]})"}});
}

TEST(JsonSchema, AnyOfOneOfAllOf) {
  check({R"({"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]})",
         {"5", R"("ab")"},
         {R"("abc")", "true"}});
  check({R"({"oneOf": [{"type": "boolean"}, {"type": "null"}]})", {"true", "null"}, {"0"}});
  check({R"({"allOf": [{"type": "integer"}]})", {"1"}, {R"("1")"}});
}

TEST(JsonSchema, ItemsAndTheirCount) {
  check({R"({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3})",
         {"[1,2]", "[1, 2, 3]"},
         {"[1]", "[1,2,3,4]", R"([1,"a"])", "[]"}});
  check({R"({"type": "array", "maxItems": 0})", {"[]"}, {"[1]"}});
  check({R"({"type": "array", "items": {"type": "integer"}, "maxItems": 2})", {"[]", "[1]", "[1,2]"}, {"[1,2,3]"}});
  check({R"({"type": "array", "minItems": 1})", {R"([1, "a", null])"}, {"[]"}});
  check({R"({"type": "array"})", {"[]", R"([1, [2], {"a": 3}])"}, {"[1,]"}});
}

TEST(JsonSchema, StringLength) {
  check({R"({"type": "string", "minLength": 2, "maxLength": 3})",
         {R"("ab")", R"("abc")", R"("a\n")", "\"\xc3\xa9\xf0\x9f\x98\x80\""},
         {R"("a")", R"("abcd")", R"("")"}});
  check({R"({"minLength": 1})", {R"("a")"}, {R"("")"}});
}

// Every integer near the bounds, against the bounds themselves.
TEST(JsonSchema, IntegerBounds) {
  struct Range {
    const char* schema;
    int64_t lo, hi;
  };
  const Range ranges[] = {
      {R"({"type": "integer", "minimum": -25, "maximum": 1234})", -25, 1234},
      {R"({"type": "integer", "exclusiveMinimum": 0})", 1, INT64_MAX},
      {R"({"type": "integer", "maximum": -3})", INT64_MIN, -3},
      {R"({"type": "integer", "minimum": 7, "exclusiveMaximum": 100})", 7, 99},
      {R"({"type": "integer", "minimum": 1.5, "maximum": 999.9})", 2, 999},
      {R"({"type": "integer", "minimum": 0, "exclusiveMinimum": 5, "maximum": 2000, "exclusiveMaximum": 1000})", 6, 999},
      {R"({"type": "integer", "minimum": 100, "maximum": 100})", 100, 100},
      {R"({"type": "integer", "minimum": -1099, "maximum": -1000})", -1099, -1000},
  };
  for (const Range& r : ranges) {
    auto gbnf = json_schema_to_grammar(std::string_view(r.schema));
    ASSERT_TRUE(gbnf.has_value()) << r.schema << "\n" << gbnf.error().message();
    auto g = Grammar::parse(*gbnf);
    ASSERT_TRUE(g.has_value()) << *gbnf;
    for (int64_t i = -3000; i <= 3000; ++i)
      ASSERT_EQ(matches(*g, std::to_string(i)), i >= r.lo && i <= r.hi) << r.schema << " at " << i << "\n" << *gbnf;
    EXPECT_FALSE(matches(*g, "-0"));
    EXPECT_FALSE(matches(*g, "007"));
    EXPECT_EQ(matches(*g, "9999999999999999"), r.hi == INT64_MAX);  // 16 digits: the most an integer has here
    EXPECT_FALSE(matches(*g, "10000000000000000"));
  }
  check({R"({"type": ["integer", "null"], "minimum": 1})", {"1", "null"}, {"0", "1.5"}});
  const std::pair<const char*, const char*> bad[] = {
      {R"({"type": "number", "minimum": 0})", "supported on integers only"},
      {R"({"minimum": 0})", "need \"type\": \"integer\""},
      {R"({"type": "integer", "minimum": 5, "maximum": 4})", "no integer of at most 16 digits"},
      {R"({"type": "integer", "minimum": 1e17})", "no integer of at most 16 digits"},
      {R"({"type": "integer", "exclusiveMinimum": true})", "'exclusiveMinimum' must be a number"},
  };
  for (const auto& [schema, want] : bad) {
    auto r = json_schema_to_grammar(std::string_view(schema));
    ASSERT_FALSE(r.has_value()) << schema;
    EXPECT_NE(r.error().message().find(want), std::string::npos) << r.error().message();
  }
}

TEST(JsonSchema, References) {
  check({R"({"$defs": {"node": {"type": "object",
                                  "properties": {"v": {"type": "integer"},
                                                 "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}},
                                  "required": ["v", "next"]}},
             "$ref": "#/$defs/node"})",
         {R"({"v": 1, "next": {"v": 2, "next": null}})", R"({"v": 1, "next": null})"},
         {R"({"v": 1, "next": {"v": 2}})", "null"}});
  check({R"({"definitions": {"a": {"type": "integer"}}, "type": "array", "items": {"$ref": "#/definitions/a"}})",
         {"[1, 2]"},
         {R"(["x"])"}});
  check({R"({"$defs": {"a/b": {"const": 1}, "c": {"$ref": "#/$defs/a~1b"}}, "$ref": "#/$defs/c"})", {"1"}, {"2"}});
  // The root itself, under an object.
  check({R"({"type": "object", "properties": {"child": {"$ref": "#"}}})", {"{}", R"({"child": {"child": {}}})"},
         {R"({"child": 1})"}});
}

TEST(JsonSchema, EmptyAndTrueSchemasTakeAnyValue) {
  for (const char* any : {"{}", "true", R"({"title": "x", "description": "y", "format": "date-time"})"})
    check({any, {R"({"a": [1, {"b": null}]})", R"("x")", "true", "-1.5e3"}, {"", "x", "{"}});
}

TEST(JsonSchema, JsonObjectGrammar) {
  auto g = Grammar::parse(json_object_grammar());
  ASSERT_TRUE(g.has_value()) << g.error().message();
  EXPECT_TRUE(matches(*g, R"({})"));
  EXPECT_TRUE(matches(*g, R"({"a": [1, "b"], "c": {"d": null}})"));
  EXPECT_FALSE(matches(*g, "[]"));
  EXPECT_FALSE(matches(*g, "1"));
}

TEST(JsonSchema, UnsupportedKeywordsAreErrorsNamingThem) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"properties": {"x": {"type": "string", "patternProperties": {}}}})",
       "json schema: #/properties/x: unsupported keyword 'patternProperties'"},
      {R"({"type": "integer", "multipleOf": 2})", "json schema: #: unsupported keyword 'multipleOf'"},
      {R"({"type": "array", "uniqueItems": true})", "unsupported keyword 'uniqueItems' (only false)"},
      {R"({"prefixItems": [{"type": "integer"}]})", "unsupported keyword 'prefixItems'"},
      {R"({"not": {"type": "null"}})", "unsupported keyword 'not'"},
      {R"({"if": {}, "then": {}})", "unsupported keyword 'if'"},
      {R"({"type": "array", "items": [{"type": "integer"}]})", "'items' as an array (a tuple) is not supported"},
      {R"({"$ref": "http://example.com/s.json"})", "only references inside the schema"},
      {R"({"$ref": "#/$defs/missing"})", "$ref '#/$defs/missing' points at nothing"},
      {R"({"$ref": "#"})", "left recursion"},
      {"false", "the schema 'false' matches nothing"},
      {R"({"type": "string", "maxLength": 20000})", "'maxLength' = 20000 is above 10000"},
      {R"({"type": "string", "minLength": -1})", "'minLength' must be a non-negative integer"},
      {R"({"type": "string", "minLength": 3, "maxLength": 2})", "maxLength 2 is below minLength 3"},
      {R"({"anyOf": [{"type": "integer"}], "type": "integer"})", "'anyOf' beside 'type' is not supported"},
      {R"({"allOf": [{"type": "integer"}, {"minimum": 1}]})", "'allOf' is supported with exactly one schema"},
      {R"({"type": "float"})", "unknown type 'float'"},
      {R"({"type": "string", "enum": [1, 2]})", "no value of 'enum' has the schema's type"},
      {R"([1, 2])", "a schema must be an object or a boolean"},
      {R"({"type": "object")", "json schema: not valid JSON"},
  };
  for (const auto& [schema, want] : cases) {
    auto r = json_schema_to_grammar(std::string_view(schema));
    ASSERT_FALSE(r.has_value()) << schema << "\n" << *r;
    EXPECT_NE(r.error().message().find(want), std::string::npos) << schema << "\n got: " << r.error().message();
  }
}

TEST(JsonSchema, KeepsThePropertyOrderOfTheText) {
  auto gbnf = json_schema_to_grammar(std::string_view(
      R"({"properties": {"zeta": {"type": "integer"}, "alpha": {"type": "integer"}}, "required": ["zeta", "alpha"]})"));
  ASSERT_TRUE(gbnf.has_value());
  auto g = Grammar::parse(*gbnf);
  ASSERT_TRUE(g.has_value());
  EXPECT_TRUE(matches(*g, R"({"zeta": 1, "alpha": 2})"));
  EXPECT_FALSE(matches(*g, R"({"alpha": 2, "zeta": 1})"));
}

// The request fields llama-server reads, each to its grammar.
TEST(JsonSchema, GrammarForRequest) {
  using nlohmann::json;
  auto grammar_of = [](const json& request) {
    auto g = grammar_for_request(request);
    EXPECT_TRUE(g.has_value()) << request.dump() << "\n" << g.error().message();
    return g.has_value() ? *g : std::string("<error>");
  };
  auto accepts = [&](const json& request, const std::string& text) {
    auto g = Grammar::parse(grammar_of(request));
    return g.has_value() && matches(*g, text);
  };
  EXPECT_EQ(grammar_of(json::object()), "");
  EXPECT_EQ(grammar_of({{"response_format", {{"type", "text"}}}}), "");
  EXPECT_EQ(grammar_of({{"grammar", "root ::= \"a\""}}), "root ::= \"a\"");
  EXPECT_TRUE(accepts({{"json_schema", {{"type", "integer"}}}}, "12"));
  EXPECT_TRUE(accepts({{"json_schema", json::object()}}, "[1]"));  // the native field: {} is any value
  const json object = {{"response_format", {{"type", "json_object"}}}};
  EXPECT_TRUE(accepts(object, R"({"a": 1})"));
  EXPECT_FALSE(accepts(object, "[1]"));
  EXPECT_TRUE(accepts({{"response_format", {{"type", "json_object"}, {"schema", {{"type", "array"}}}}}}, "[1]"));
  const json strict = {{"response_format",
                        {{"type", "json_schema"},
                         {"json_schema", {{"name", "thing"}, {"strict", true},
                                          {"schema", {{"type", "object"},
                                                      {"properties", {{"a", {{"type", "integer"}}}}},
                                                      {"required", {"a"}},
                                                      {"additionalProperties", false}}}}}}}};
  EXPECT_TRUE(accepts(strict, R"({"a": 1})"));
  EXPECT_FALSE(accepts(strict, R"({"a": "x"})"));
  EXPECT_FALSE(accepts({{"response_format", {{"type", "json_schema"}, {"json_schema", {{"name", "x"}}}}}}, "[]"));

  const std::pair<json, const char*> bad[] = {
      {{{"response_format", {{"type", "xml"}}}}, "response_format type must be"},
      {{{"response_format", "json"}}, "response_format must be an object"},
      {{{"grammar", "root ::= \"a\""}, {"json_schema", json::object()}}, "give one of grammar, json_schema"},
      {{{"grammar", "root ::= \"a\""}, {"response_format", {{"type", "json_object"}}}}, "give one of"},
      {{{"grammar", 5}}, "grammar must be a string"},
      {{{"json_schema", {{"type", "string"}, {"format", "x"}, {"not", {}}}}}, "json_schema: json schema: #: unsupported keyword 'not'"},
      {{{"response_format", {{"type", "json_schema"}, {"json_schema", 3}}}}, "response_format.json_schema must be an object"},
  };
  for (const auto& [request, want] : bad) {
    auto g = grammar_for_request(request);
    ASSERT_FALSE(g.has_value()) << request.dump();
    EXPECT_NE(g.error().message().find(want), std::string::npos) << g.error().message();
  }
}

}  // namespace
}  // namespace tandem::sampling
