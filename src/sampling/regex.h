// JSON Schema's "pattern" (an ECMA-262 regular expression) -> GBNF for the text between a JSON string's
// quotes: the regex constrains the decoded characters, the grammar spells each one as JSON writes it
// (`"` as \", `\` as \\, a control character as its escape). Used by json_schema.cpp.
//
// Supported: literals, escapes (\d \D \w \W \s \S \t \n \r \f \v \0 \xHH \uHHHH and escaped
// punctuation), `.`, [classes] with ranges, negation and the class escapes, groups ( ) and (?: ) and
// (?<name> ), `|`, `*` `+` `?` `{m}` `{m,}` `{m,n}` (lazy forms too: the same strings). Without `^` the
// match may start anywhere, without `$` end anywhere, as JSON Schema means it. Refused with a message:
// back-references, lookaround, \b \B, `^`/`$` inside, repetition counts above Grammar::kMaxRepetitions.
// Negated classes and `.` never produce a control character (those need escapes the class cannot list):
// the grammar then accepts a subset of what the regex does, never more.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace tandem::sampling {

// A GBNF expression (no rule definitions; it uses nothing but literals and classes) for the content
// of a JSON string matching `pattern`. Errors read "pattern '<p>': column C: ...".
Result<std::string> regex_to_gbnf(std::string_view pattern);

}  // namespace tandem::sampling
