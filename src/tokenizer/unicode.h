// UTF-8 helpers the tokenizers share: llama.cpp's lenient decoder, the GPT-2 byte<->unicode map,
// and the whitespace set. Character categories are PCRE2's business (pre_tokenizer.cpp), not ours.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::tokenizer {

// Length of the UTF-8 sequence a byte starts, judged by its high nibble only (1 for a stray
// continuation byte). llama.cpp (src/unicode.cpp, unicode_len_utf8) splits SPM/BPE symbols this way,
// so invalid input forms the same symbols here.
inline size_t utf8_len(uint8_t lead) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[lead >> 4];
}

// Decodes text the way llama.cpp's unicode_cpts_from_utf8 does: overlong forms and surrogates are
// accepted as decoded; a byte that starts no complete sequence becomes U+FFFD and decoding resumes at
// the next byte. Values above U+10FFFF (lead bytes F5..F7) also become U+FFFD (llama.cpp throws there).
std::vector<uint32_t> decode_utf8_lenient(std::string_view text);

// Appends the UTF-8 encoding of `cp` (<= 0x10FFFF; surrogates are encoded like any other value).
void append_utf8(uint32_t cp, std::string* out);

// Whitespace as llama.cpp's tables define it (Unicode White_Space): \t \n \v \f \r, space, U+0085,
// U+00A0, U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000.
bool is_whitespace(uint32_t cp);

// GPT-2's bytes_to_unicode(): each byte maps to one printable code point, as UTF-8.
const std::string& byte_to_unicode(uint8_t byte);
// Inverse of byte_to_unicode; returns false for a code point outside the 256 of the map.
bool unicode_to_byte(uint32_t cp, uint8_t* byte);

// Length of the longest prefix of `bytes` that ends on a complete UTF-8 sequence or an invalid byte:
// the tail after it is the start of a valid sequence still missing bytes (at most 3 bytes).
size_t complete_utf8_prefix(std::string_view bytes);
// Copies `bytes` with every byte that is not part of a valid UTF-8 sequence replaced by U+FFFD.
std::string sanitize_utf8(std::string_view bytes);

}  // namespace tandem::tokenizer
