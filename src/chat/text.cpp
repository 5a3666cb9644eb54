// Unicode case for the template engine's string methods: code points through towupper_l/towlower_l
// of C.UTF-8 (glibc ships it built in), ASCII rules where the locale is missing.
#include "chat/text.h"

#include <clocale>
#include <cwctype>
#include <locale.h>

#include "chat/value.h"
#include "tokenizer/unicode.h"

namespace tandem::chat {
namespace {

locale_t utf8_locale() {
  static const locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(nullptr));
  return loc;
}

uint32_t to_upper(uint32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
  return utf8_locale() ? static_cast<uint32_t>(towupper_l(static_cast<wint_t>(c), utf8_locale())) : c;
}
uint32_t to_lower(uint32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  return utf8_locale() ? static_cast<uint32_t>(towlower_l(static_cast<wint_t>(c), utf8_locale())) : c;
}
bool is_upper(uint32_t c) {
  if (c < 0x80) return c >= 'A' && c <= 'Z';
  return utf8_locale() && iswupper_l(static_cast<wint_t>(c), utf8_locale());
}
bool is_lower(uint32_t c) {
  if (c < 0x80) return c >= 'a' && c <= 'z';
  return utf8_locale() && iswlower_l(static_cast<wint_t>(c), utf8_locale());
}
bool is_cased(uint32_t c) { return is_upper(c) || is_lower(c) || to_upper(c) != to_lower(c); }

void append_upper(uint32_t c, std::string& out) {
  if (c == 0xdf) {  // Python's full mapping: ß -> SS
    out += "SS";
    return;
  }
  tokenizer::append_utf8(to_upper(c), &out);
}

}  // namespace

std::string py_upper(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (uint32_t c : tokenizer::decode_utf8_lenient(s)) append_upper(c, out);
  return out;
}

std::string py_lower(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (uint32_t c : tokenizer::decode_utf8_lenient(s)) tokenizer::append_utf8(to_lower(c), &out);
  return out;
}

std::string py_title(std::string_view s) {
  std::string out;
  bool prev_cased = false;
  for (uint32_t c : tokenizer::decode_utf8_lenient(s)) {
    if (prev_cased) tokenizer::append_utf8(to_lower(c), &out);
    else append_upper(c, out);
    prev_cased = is_cased(c);
  }
  return out;
}

std::string py_capitalize(std::string_view s) {
  std::string out;
  bool first = true;
  for (uint32_t c : tokenizer::decode_utf8_lenient(s)) {
    if (first) append_upper(c, out);
    else tokenizer::append_utf8(to_lower(c), &out);
    first = false;
  }
  return out;
}

std::string jinja_title(std::string_view s) {
  std::string out;
  bool start = true;
  for (uint32_t c : tokenizer::decode_utf8_lenient(s)) {
    const bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || tokenizer::is_whitespace(c);
    if (sep) tokenizer::append_utf8(c, &out);
    else if (start) append_upper(c, out);
    else tokenizer::append_utf8(to_lower(c), &out);
    start = sep;
  }
  return out;
}

bool py_islower(std::string_view s) {
  bool cased = false;
  for (uint32_t c : tokenizer::decode_utf8_lenient(s)) {
    if (is_upper(c)) return false;
    cased |= is_lower(c);
  }
  return cased;
}

bool py_isupper(std::string_view s) {
  bool cased = false;
  for (uint32_t c : tokenizer::decode_utf8_lenient(s)) {
    if (is_lower(c)) return false;
    cased |= is_upper(c);
  }
  return cased;
}

int64_t word_count(std::string_view s) {
  int64_t n = 0;
  bool in_word = false;
  for (uint32_t c : tokenizer::decode_utf8_lenient(s)) {
    const bool word = c == '_' || (c < 0x80 ? (std::isalnum(static_cast<int>(c)) != 0)
                                            : (utf8_locale() && iswalnum_l(static_cast<wint_t>(c), utf8_locale())));
    if (word && !in_word) ++n;
    in_word = word;
  }
  return n;
}

uint32_t code_point(std::string_view ch) {
  const auto* p = reinterpret_cast<const unsigned char*>(ch.data());
  switch (ch.size()) {
    case 2: return ((p[0] & 0x1f) << 6) | (p[1] & 0x3f);
    case 3: return ((p[0] & 0x0f) << 12) | ((p[1] & 0x3f) << 6) | (p[2] & 0x3f);
    case 4: return ((p[0] & 0x07) << 18) | ((p[1] & 0x3f) << 12) | ((p[2] & 0x3f) << 6) | (p[3] & 0x3f);
    default: return p[0];
  }
}

}  // namespace tandem::chat
