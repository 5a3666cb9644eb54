// Python's Unicode-aware string case and word functions (str.upper, .lower, .title, .capitalize,
// .islower, .isupper, jinja2's wordcount), on UTF-8. Case mapping comes from the C library's
// C.UTF-8 locale (simple mappings, plus Python's ß -> SS); without that locale, ASCII only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tandem::chat {

std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);
std::string py_title(std::string_view s);       // str.title(): cased runs start upper-case
std::string py_capitalize(std::string_view s);  // first character upper, the rest lower
// jinja2's title filter: each run between [-\s({[<] starts upper-case and continues lower-case.
std::string jinja_title(std::string_view s);
bool py_islower(std::string_view s);
bool py_isupper(std::string_view s);
// The code point of one UTF-8 character (ch as the lexer or a split into characters cut it).
uint32_t code_point(std::string_view ch);
// jinja2's wordcount: runs of word characters (letters, digits, underscore), as Python's \w+.
int64_t word_count(std::string_view s);

}  // namespace tandem::chat
