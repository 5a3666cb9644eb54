// JSON Schema -> GBNF (grammar.h), for `response_format` json_schema / json_object and `-j`: the
// output is held to the schema by the sampler, as llama.cpp's common/json-schema-to-grammar.cpp does
// (its rule shapes: bounded whitespace, at most 16 digits per number part).
//
// Supported: type (one or a list) object/array/string/number/integer/boolean/null; properties,
// required, additionalProperties (false, true or a schema; absent means false when properties are
// given, as llama.cpp: faster and fewer invented keys); items, minItems, maxItems; minLength,
// maxLength; pattern (regex.h; not together with a length); minimum, maximum, exclusiveMinimum, exclusiveMaximum on integers (which have at most 16
// digits here, as in llama.cpp's rules); enum, const; anyOf; oneOf (as anyOf: branches that overlap
// are not excluded from each other); allOf with one schema; $ref to "#", "#/$defs/..", "#/definitions/.." or any local JSON pointer
// (recursion allowed). Annotations are ignored: title, description, default, examples, $schema, $id,
// $comment, deprecated, readOnly, writeOnly, format (an annotation in JSON Schema 2019-09 and later).
// Anything else (bounds on non-integers, multipleOf, uniqueItems: true, prefixItems, not, if, ...)
// is an error naming the keyword and where it is, never a grammar that accepts less or more silently.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "core/status.h"

namespace tandem::sampling {

// Errors read "json schema: #/properties/age: unsupported keyword 'minimum'". The text overload also
// reports JSON syntax errors, and keeps the schema's property order (the nlohmann::json one sorts keys).
Result<std::string> json_schema_to_grammar(std::string_view schema_text);
Result<std::string> json_schema_to_grammar(const nlohmann::json& schema);
Result<std::string> json_schema_to_grammar(const nlohmann::ordered_json& schema);

// The rules of `schema` with its top rule named `rule` and no `root`, for grammars that hold JSON inside
// other text (tool calls, chat/tool_calls.h). Every other rule is a shared primitive (space, string,
// value, ...: the same line in every conversion) or is named "<rule>-...", so the rules of several
// schemas join into one grammar once repeated lines are dropped.
Result<std::string> json_schema_rules(const nlohmann::ordered_json& schema, const std::string& rule);

// A GBNF string literal that matches exactly the UTF-8 text `s`.
std::string gbnf_literal(std::string_view s);

// Any JSON object: OpenAI's response_format {"type": "json_object"}.
std::string json_object_grammar();

// The GBNF a server request asks for (SamplerParams::grammar), from the fields llama-server reads
// (tools/server/server-common.cpp there): "grammar" (GBNF text), "json_schema" (a schema), or
// "response_format" {"type": "text" | "json_object" [, "schema": S] | "json_schema", "json_schema":
// {"schema": S, ...}}; an empty or absent schema under response_format means any object. "" when the
// request asks for none. More than one of them, a wrong type or a bad schema is an InvalidArgument
// naming the field (llama-server lets "grammar" win over response_format; here that is an error).
Result<std::string> grammar_for_request(const nlohmann::ordered_json& request);

}  // namespace tandem::sampling
