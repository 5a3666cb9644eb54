// UTF-8 helpers shared by the tokenizers (see unicode.h): lenient decoding matching llama.cpp,
// GPT-2's byte map, and the strict checks the streaming detokenizer needs.
#include "tokenizer/unicode.h"

#include <array>

namespace tandem::tokenizer {
namespace {

bool is_continuation(uint8_t b) { return (b & 0xC0) == 0x80; }

// Strict UTF-8 (RFC 3629): length of the valid sequence at text[i], 0 if invalid, or -1 if the bytes
// there are a valid but unfinished start of a sequence that the end of `text` cuts off.
int strict_sequence(std::string_view text, size_t i) {
  const uint8_t b0 = uint8_t(text[i]);
  if (b0 < 0x80) return 1;
  int need;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) need = 2;
  else if (b0 == 0xE0) need = 3, lo = 0xA0;
  else if (b0 >= 0xE1 && b0 <= 0xEF) need = 3, hi = b0 == 0xED ? 0x9F : 0xBF;
  else if (b0 == 0xF0) need = 4, lo = 0x90;
  else if (b0 >= 0xF1 && b0 <= 0xF3) need = 4;
  else if (b0 == 0xF4) need = 4, hi = 0x8F;
  else return 0;
  for (int k = 1; k < need; ++k) {
    if (i + k >= text.size()) return -1;
    const uint8_t b = uint8_t(text[i + k]);
    if (k == 1 ? (b < lo || b > hi) : !is_continuation(b)) return 0;
  }
  return need;
}

struct ByteMap {
  std::array<std::string, 256> to_unicode;
  std::array<int16_t, 324> from_unicode;  // code points 0..323 cover the whole map
  ByteMap() {
    from_unicode.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      // Printable Latin-1 bytes stand for themselves; the others take 256, 257, ... in byte order.
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? uint32_t(b) : uint32_t(256 + n++);
      append_utf8(cp, &to_unicode[b]);
      from_unicode[cp] = int16_t(b);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

}  // namespace

std::vector<uint32_t> decode_utf8_lenient(std::string_view text) {
  std::vector<uint32_t> cps;
  cps.reserve(text.size());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const uint8_t b0 = uint8_t(text[i]);
    if (b0 < 0x80) {
      cps.push_back(b0);
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if (b0 >= 0xC0 && b0 < 0xE0) len = 2, cp = b0 & 0x1F;
    else if (b0 >= 0xE0 && b0 < 0xF0) len = 3, cp = b0 & 0x0F;
    else if (b0 >= 0xF0 && b0 < 0xF8) len = 4, cp = b0 & 0x07;
    bool ok = len != 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      const uint8_t b = uint8_t(text[i + k]);
      ok = is_continuation(b);
      cp = (cp << 6) | (b & 0x3F);
    }
    if (!ok || cp > 0x10FFFF) {
      cps.push_back(0xFFFD);
      ++i;
      continue;
    }
    cps.push_back(cp);
    i += len;
  }
  return cps;
}

void append_utf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(char(cp));
  } else if (cp < 0x800) {
    out->push_back(char(0xC0 | (cp >> 6)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(char(0xE0 | (cp >> 12)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(char(0xF0 | (cp >> 18)));
    out->push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  }
}

bool is_whitespace(uint32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

const std::string& byte_to_unicode(uint8_t byte) { return byte_map().to_unicode[byte]; }

bool unicode_to_byte(uint32_t cp, uint8_t* byte) {
  if (cp >= byte_map().from_unicode.size() || byte_map().from_unicode[cp] < 0) return false;
  *byte = uint8_t(byte_map().from_unicode[cp]);
  return true;
}

size_t complete_utf8_prefix(std::string_view bytes) {
  // Only a sequence starting in the last three bytes can still be waiting for more.
  const size_t from = bytes.size() > 3 ? bytes.size() - 3 : 0;
  for (size_t i = from; i < bytes.size(); ++i)
    if (!is_continuation(uint8_t(bytes[i])) && strict_sequence(bytes, i) == -1) return i;
  return bytes.size();
}

std::string sanitize_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    const int len = strict_sequence(bytes, i);
    if (len > 0) {
      out.append(bytes.substr(i, size_t(len)));
      i += size_t(len);
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

}  // namespace tandem::tokenizer
