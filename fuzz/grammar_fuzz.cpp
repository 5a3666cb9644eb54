// libFuzzer target: a GBNF grammar or a JSON Schema from arbitrary bytes ('g' or 's', the source, a NUL,
// then a text), parsed or converted, then the text fed to the matcher in uneven pieces while a small
// token trie's allowed set is checked against the one-token check. Nothing may crash or hang; a schema's
// grammar must always parse (or be refused as left recursion), and text it accepts as complete must be
// valid JSON.
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "sampling/grammar.h"
#include "sampling/json_schema.h"

namespace {

using namespace tandem::sampling;

const std::shared_ptr<const GrammarVocab>& vocab() {
  static const auto v = GrammarVocab::from_pieces(
      {"", "{", "}", "\"", ":", ",", " ", "\n", "a", "ab", "\"a\"", "1", "-", ".", "e", "true", "null", "[", "]",
       "\xc3", "\xa9", "\xc3\xa9", "\xe2\x82\xac", "\\", "\\u00", "yes", "no", "x{", "}\n"},
      {0});
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  const size_t nul = input.find('\0');
  const std::string_view source = input.substr(0, nul);
  std::string_view text = nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);
  if (text.size() > 256) text = text.substr(0, 256);  // each character may cost a full expansion

  const bool schema = data[0] == 's';
  std::string gbnf(source);
  if (schema) {
    auto converted = json_schema_to_grammar(source);
    if (!converted) {
      // The converter's own output failing to parse is a bug, unless the schema refers to itself first.
      const std::string& m = converted.error().message();
      if (m.rfind("json schema: grammar:", 0) == 0 && m.find("left recursion") == std::string::npos)
        std::abort();
      return 0;
    }
    gbnf = *converted;
  }
  auto grammar = Grammar::parse(gbnf);
  if (!grammar) {
    if (schema) std::abort();
    return 0;
  }

  GrammarMatcher m(*grammar);
  std::vector<uint8_t> allowed;
  size_t pos = 0;
  for (size_t step = 0; pos < text.size() && step < 64; ++step) {
    vocab()->allowed_tokens(m, &allowed);
    for (size_t id = 0; id < vocab()->n_tokens(); ++id)
      if ((allowed[id] != 0) != vocab()->allows(m, int32_t(id))) std::abort();
    const size_t n = 1 + (static_cast<uint8_t>(text[pos]) % 5);  // uneven pieces split characters
    const std::string_view piece = text.substr(pos, n);
    const bool expected = m.can_accept(piece);
    if (m.accept(piece).is_ok() != expected) std::abort();
    if (!expected) return 0;
    pos += piece.size();
  }
  if (schema && pos == text.size() && m.is_complete()) {
    try {
      (void)nlohmann::json::parse(text);
    } catch (const nlohmann::json::out_of_range&) {
      // JSON allows numbers beyond a double's range (RFC 8259, section 6); nlohmann refuses them (406).
    } catch (const nlohmann::json::exception&) {
      std::abort();  // the schema's grammar accepted something that is not JSON
    }
  }
  return 0;
}
