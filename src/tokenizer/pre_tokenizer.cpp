// The pre-tokenizer table (tokenizer.ggml.pre -> split patterns and flags) and its PCRE2 runner.
// Patterns are llama.cpp's (src/llama-vocab.cpp, llm_tokenizer_bpe), which come from each model's
// tokenizer.json; where llama.cpp's regex emulation gives them a different meaning than a Unicode
// regex engine would, the pattern here is adjusted to llama.cpp's meaning, and says so.
#include "tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cstring>

#include "tokenizer/unicode.h"

namespace tandem::tokenizer {
namespace {

// Shared pattern texts (llama.cpp dialect: \s, \p{..} are rewritten by to_pcre2_pattern).
constexpr const char* kGpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
constexpr const char* kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// CJK blocks of the DeepSeek patterns: [一-龥ࠀ-一가-퟿]. llama.cpp matches them on text where every
// non-ASCII whitespace code point was replaced by \v, so the whitespace inside U+0800..U+4E00 never
// matches; the range is written here without it.
constexpr const char* kDeepseekCjk =
    R"([\x{4e00}-\x{9fa5}\x{800}-\x{167f}\x{1681}-\x{1fff}\x{200b}-\x{2027}\x{202a}-\x{202e}\x{2030}-\x{205e}\x{2060}-\x{2fff}\x{3001}-\x{4e00}\x{ac00}-\x{d7ff}]+)";
constexpr const char* kGpt4o =
    R"([^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kStarcoder = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";
// jais-2 takes a whitespace run in chunks of 512, 256, ... (\s{512}(?!\S)|...), and before each chunk
// its \s*[\r\n]+ scans to the end of the run for a newline: quadratic, minutes for a few million
// spaces. This first pass cuts a run that holds no \r or \n into the chunks of 512 that jais-2's own
// pattern would take while more than 512 are left (checking the run for newlines once, at its start,
// then chaining with \G), so the second pass sees short runs only. Same pieces: pre_tokenizer_test.
#define TANDEM_WS_NO_NEWLINE R"([\t\x{0b}\f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}])"
constexpr const char* kJais2WhitespaceChunks =
    R"((?:\G(?<=)" TANDEM_WS_NO_NEWLINE R"()|(?<!)" TANDEM_WS_NO_NEWLINE R"()(?=)" TANDEM_WS_NO_NEWLINE
    R"(*+(?![\r\n]))))" TANDEM_WS_NO_NEWLINE "{512}(?=" TANDEM_WS_NO_NEWLINE ")";
#undef TANDEM_WS_NO_NEWLINE
// Split by split_digit_groups below, not by PCRE2.
constexpr const char* kDigitGroupsFromEnd = R"((?=(\d{3})+(?!\d)))";
constexpr const char* kBloom = R"( ?[^(\s|.,!?\x{2026}\x{3002}\x{ff0c}\x{3001}\x{964}\x{6d4}\x{60c})]+)";

struct NamedSpec {
  std::vector<const char*> names;
  PreTokenizerSpec spec;
};

PreTokenizerSpec spec(const char* family, std::vector<const char*> patterns, bool clean_spaces = true,
                      bool ignore_merges = false, bool add_bos = false, bool no_bos_id = false) {
  return PreTokenizerSpec{family, std::move(patterns), clean_spaces, ignore_merges, add_bos, no_bos_id};
}

// llama.cpp's GEMMA4 pre-type: no word splitting beyond newline runs (the merges run over whole lines).
PreTokenizerSpec spm_style_spec() {
  PreTokenizerSpec s = spec("gemma4", {R"([^\n]+|[\n]+)"});
  s.spm_style = true;
  return s;
}

const std::vector<NamedSpec>& table() {
  static const std::vector<NamedSpec> t = {
      {{"default"},
       spec("default", {R"([\p{P}\$\+<=>\^~\|]+)", kStarcoder, R"(\p{N}+)", "[0-9][0-9][0-9]"})},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"},
       spec("llama3", {kLlama3}, true, true, true)},
      {{"dbrx", "smaug-bpe"}, spec("llama3", {kLlama3})},
      {{"jais-2"},
       spec("jais2",
            {kJais2WhitespaceChunks,
             R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1})"})},
      {{"deepseek-llm"},
       spec("deepseek-llm",
            {R"([\r\n])",
             R"(\s?[A-Za-z\x{b5}\x{c0}-\x{d6}\x{d8}-\x{f6}\x{f8}-\x{1ba}\x{1bc}-\x{1bf}\x{1c4}-\x{293}\x{295}-\x{2af}\x{370}-\x{373}\x{376}\x{377}\x{37b}-\x{37d}\x{37f}\x{386}\x{388}-\x{38a}\x{38c}\x{38e}-\x{3a1}\x{3a3}-\x{3f5}\x{3f7}-\x{481}\x{48a}-\x{52f}\x{531}-\x{556}\x{10a0}-\x{10c5}\x{13a0}-\x{13f5}\x{13f8}-\x{13fd}\x{1c90}-\x{1cba}\x{1cbd}-\x{1cbf}\x{1d00}-\x{1d2b}\x{1d6b}-\x{1d77}\x{1d79}-\x{1d9a}\x{1e00}-\x{1f15}\x{1f18}-\x{1f1d}\x{1f20}-\x{1f45}\x{1f48}-\x{1f4d}\x{1f50}-\x{1f57}\x{1f59}\x{1f5b}\x{1f5d}\x{1f5f}-\x{1f7d}\x{1f80}-\x{1fb4}\x{1fb6}-\x{1fbc}\x{1fbe}\x{1fc2}-\x{1fc4}\x{1fc6}-\x{1fcc}\x{1fd0}-\x{1fd3}\x{1fd6}-\x{1fdb}\x{1fe0}-\x{1fec}\x{1ff2}-\x{1ff4}\x{1ff6}-\x{1ffc}\x{2102}\x{2107}\x{210a}-\x{2113}\x{2115}\x{2119}-\x{211d}\x{2124}\x{2126}\x{2128}\x{212a}-\x{212d}\x{212f}-\x{2134}\x{2139}\x{213c}-\x{213f}\x{2145}-\x{2149}\x{214e}\x{2183}\x{2184}\x{2c00}-\x{2c7b}\x{2c7e}-\x{2ce4}\x{2ceb}-\x{2cee}\x{2cf2}\x{2cf3}\x{a640}-\x{a66d}\x{a680}-\x{a69b}\x{a722}-\x{a76f}\x{a771}-\x{a787}\x{a78b}-\x{a78e}\x{ab70}-\x{abbf}\x{fb00}-\x{fb06}\x{fb13}-\x{fb17}\x{ff21}-\x{ff3a}\x{ff41}-\x{ff5a}\x{10400}-\x{1044f}\x{104b0}-\x{104d3}\x{104d8}-\x{104fb}\x{10c80}-\x{10cb2}\x{10cc0}-\x{10cf2}\x{118a0}-\x{118df}\x{1e900}-\x{1e943}]+)",
             // U+3000 (ideographic space) left out of the class: llama.cpp sees it as \v here.
             R"(\s?[!-/:-~\x{ff01}-\x{ff0f}\x{ff1a}-\x{ff5e}\x{2018}-\x{201f}\x{3001}-\x{3002}]+)", R"(\s+$)", kDeepseekCjk, R"(\p{N}+)"},
            false)},
      {{"deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"},
       spec("deepseek-v3",
            {R"(\p{N}{1,3})", R"([\x{4e00}-\x{9fa5}\x{3040}-\x{309f}\x{30a0}-\x{30ff}]+)",
             R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
            false)},
      {{"spark2_5"},
       spec("spark2_5",
            {R"(\p{N}{1,3})", R"([\x{4e00}-\x{9fa5}\x{3040}-\x{309f}\x{30a0}-\x{30ff}]+)",
             R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+|[\r\n]|\s+(?!\S)|\s+)",
             R"(\p{N})"},
            false)},
      {{"deepseek-coder"},
       spec("deepseek-coder", {R"([\r\n])", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kDeepseekCjk, R"(\p{N})"}, false)},
      {{"falcon"},
       spec("falcon", {R"([\p{P}\$\+<=>\^~\|`]+)", kStarcoder, "[0-9][0-9][0-9]"})},
      {{"starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2"},
       spec("starcoder", {R"(\p{N})", kStarcoder})},
      {{"command-r", "smollm"}, spec("starcoder", {R"(\p{N})", kStarcoder}, false)},
      {{"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
        "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe", "mpt", "olmo", "jais", "exaone4"},
       spec("gpt2", {kGpt2})},
      {{"trillion", "granite-docling"}, spec("gpt2", {kGpt2}, false)},
      {{"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open"}, spec("qwen2", {kQwen2}, false)},
      {{"stablelm2", "megrez"}, spec("qwen2", {kQwen2})},
      {{"qwen35"},
       spec("qwen35",
            {R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
            false)},
      {{"poro-chat"}, spec("bloom", {kBloom}, false)},
      {{"bloom", "gpt3-finnish"}, spec("bloom", {kBloom})},
      {{"viking"}, spec("viking", {kBloom, R"(\p{N})"}, false)},
      {{"chatglm-bpe"}, spec("chatglm4", {kLlama3}, true, false, false, true)},
      {{"glm4", "glm5"}, spec("chatglm4", {kLlama3}, true, true, false, true)},
      {{"tekken"},
       spec("tekken",
            {R"([^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
            false, true, true)},
      {{"chameleon"},
       spec("chameleon",
            {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", R"(([\t\n]|    |  ))", R"(\p{N})",
             R"([\p{P}!-/:-@\[-`{-~])", kStarcoder},
            false, false, true)},
      {{"gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"}, spec("gpt4o", {kGpt4o}, false)},
      {{"granite-embed-multi-97m"},
       spec("granite-embed-multi",
            {R"([^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))*((?=[\p{L}\p{M}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}\p{M}])([^a-z]))+((?=[\p{L}\p{M}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
            false, true)},
      {{"superbpe"}, spec("superbpe", {R"(\p{N}+)", kDigitGroupsFromEnd}, false)},
      {{"bailingmoe", "bailingmoe2", "llada-moe"},
       spec("bailingmoe",
            {R"('(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+)"},
            false)},
      {{"seed-coder"},
       spec("seed-coder",
            {R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+)"},
            false)},
      {{"ufakzeka"},
       spec("ufakzeka", {R"([^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}, false)},
      {{"grok-2"}, spec("qwen2", {kQwen2}, false)},
      {{"laguna"}, spec("laguna", {R"([^\n]+|[\n]+)", kQwen2}, false)},
      {{"minicpm5"},
       spec("minicpm5",
            {R"(\p{N}{1,3})",
             R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"},
            true, true)},
      {{"gemma4", "granite-embed-multi-311m"}, spm_style_spec()},
      {{"exaone-moe"},
       spec("exaone-moe",
            {R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+)"})},
  };
  return t;
}

// llama.cpp's whitespace set (unicode.h, is_whitespace) as the body of a character class.
constexpr const char* kWhitespaceClass =
    R"(\t\n\x{0b}\f\r \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000})";

// Code points llama.cpp's tables (Unicode 15.1) put in a category that Debian 12's PCRE2 10.42
// (Unicode 14) leaves unassigned: the Unicode 15.0/15.1 additions, checked code point by code point
// against llama.cpp's unicode_cpt_flags_from_cpt. Nothing goes the other way.
const char* unicode15_additions(char category) {
  switch (category) {
    case 'N': return R"(\x{11f50}-\x{11f59}\x{1d2c0}-\x{1d2d3}\x{1e4f0}-\x{1e4f9})";
    case 'L':
      return R"(\x{1123f}-\x{11240}\x{11f02}\x{11f04}-\x{11f10}\x{11f12}-\x{11f33}\x{1342f}\x{13441}-\x{13446})"
             R"(\x{1b132}\x{1b155}\x{1df25}-\x{1df2a}\x{1e030}-\x{1e06d}\x{1e4d0}-\x{1e4eb}\x{2b739})"
             R"(\x{2ebf0}-\x{2ee5d}\x{31350}-\x{323af})";
    case 'M':
      return R"(\x{cf3}\x{ece}\x{10efd}-\x{10eff}\x{11241}\x{11f00}-\x{11f01}\x{11f03}\x{11f34}-\x{11f3a})"
             R"(\x{11f3e}-\x{11f42}\x{13440}\x{13447}-\x{13455}\x{1e08f}\x{1e4ec}-\x{1e4ef})";
    case 'P': return R"(\x{11b00}-\x{11b09}\x{11f43}-\x{11f4f})";
    case 'S':
      return R"(\x{2ffc}-\x{2fff}\x{31ef}\x{1f6dc}\x{1f774}-\x{1f776}\x{1f77b}-\x{1f77f}\x{1f7d9}\x{1fa75}-\x{1fa77})"
             R"(\x{1fa87}-\x{1fa88}\x{1faad}-\x{1faaf}\x{1fabb}-\x{1fabd}\x{1fabf}\x{1face}-\x{1facf}\x{1fada}-\x{1fadb})"
             R"(\x{1fae8}\x{1faf7}-\x{1faf8})";
    default: return nullptr;
  }
}

}  // namespace

const PreTokenizerSpec* find_pre_tokenizer(std::string_view name) {
  for (const NamedSpec& entry : table())
    for (const char* n : entry.names)
      if (name == n) return &entry.spec;
  return nullptr;
}

const PreTokenizerSpec& default_pre_tokenizer() { return table()[0].spec; }

std::vector<std::string> known_pre_tokenizer_names() {
  std::vector<std::string> names;
  for (const NamedSpec& entry : table())
    for (const char* n : entry.names) names.emplace_back(n);
  return names;
}

std::string to_pcre2_pattern(std::string_view in) {
  std::string out;
  out.reserve(in.size() * 2);
  bool in_class = false;
  for (size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c != '\\' || i + 1 == in.size()) {
      if (c == '[' && !in_class) in_class = true;
      else if (c == ']' && in_class) in_class = false;
      out += c;
      continue;
    }
    const char e = in[i + 1];
    if (e == 's') {
      out += in_class ? std::string(kWhitespaceClass) : "[" + std::string(kWhitespaceClass) + "]";
      ++i;
    } else if (e == 'S' && !in_class) {
      out += "[^" + std::string(kWhitespaceClass) + "]";
      ++i;
    } else if (e == 'p' && i + 4 < in.size() && in[i + 2] == '{' && in[i + 4] == '}' &&
               unicode15_additions(in[i + 3])) {
      const std::string body = std::string(in.substr(i, 5)) + unicode15_additions(in[i + 3]);
      out += in_class ? body : "[" + body + "]";
      i += 4;
    } else {
      out += c;
      out += e;
      ++i;
    }
  }
  return out;
}

struct PreTokenizer::Compiled {
  pcre2_code* code = nullptr;  // nullptr: kDigitGroupsFromEnd, split by split_digit_groups
  ~Compiled() { pcre2_code_free(code); }
};

namespace {

// superbpe's second pattern cuts each run of ASCII digits into groups of three from its end. As a
// regex every position looks ahead to the end of the run: quadratic, minutes for 500,000 digits. The
// same cuts are made here in one pass, the way llama.cpp swaps its own code in for known patterns
// (src/unicode.cpp, unicode_regex_split_custom).
void split_digit_groups(std::string_view piece, std::vector<size_t>* out) {
  auto is_digit = [&](size_t i) { return piece[i] >= '0' && piece[i] <= '9'; };
  size_t emitted = 0;
  for (size_t i = 0; i < piece.size();) {
    if (!is_digit(i)) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < piece.size() && is_digit(end)) ++end;
    // The pattern matches (empty) where a positive multiple of three digits is left: end - 3, end - 6, ...
    for (size_t cut = i + (end - i) % 3; cut < end; cut += 3) {
      if (cut > emitted) out->push_back(cut - emitted);
      emitted = std::max(emitted, cut);
    }
    i = end;
  }
  if (emitted < piece.size()) out->push_back(piece.size() - emitted);
}

}  // namespace

PreTokenizer::~PreTokenizer() = default;

Result<std::unique_ptr<PreTokenizer>> PreTokenizer::create(const PreTokenizerSpec& spec, size_t max_jit_stack_bytes) {
  std::unique_ptr<PreTokenizer> p(new PreTokenizer());
  p->family_ = spec.family;
  p->max_jit_stack_bytes_ = max_jit_stack_bytes;
  for (const char* pattern : spec.patterns) {
    if (std::string_view(pattern) == kDigitGroupsFromEnd) {
      p->regexes_.push_back(std::make_unique<Compiled>());
      continue;
    }
    const std::string rewritten = to_pcre2_pattern(pattern);
    int error = 0;
    PCRE2_SIZE offset = 0;
    auto compiled = std::make_unique<Compiled>();
    // No PCRE2_UCP: \d, \w and \b stay ASCII, as in llama.cpp's std::regex. $ means the end only.
    compiled->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten.data()), rewritten.size(),
                                   PCRE2_UTF | PCRE2_DOLLAR_ENDONLY, &error, &offset, nullptr);
    if (!compiled->code) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return invalid_argument("pre-tokenizer '%s': pattern does not compile at offset %zu: %s", spec.family,
                              size_t(offset), reinterpret_cast<const char*>(message));
    }
    pcre2_jit_compile(compiled->code, PCRE2_JIT_COMPLETE);  // without JIT, pcre2_match interprets: slower, same result
    p->regexes_.push_back(std::move(compiled));
  }
  return p;
}

namespace {

// A pattern that repeats a group (tekken's ((?=[\p{L}])([^a-z]))*, exaone-moe's nested groups) needs JIT
// stack and match steps in proportion to its match: up to 67 bytes and 3 steps per byte of a run of
// letters (measured on runs of 1 and 5 million). A split starts on 16 MiB of stack (runs of ~250,000
// letters) and retries a match that runs out on 8 times as much, up to kJitStackPerByte per byte of the
// text or the caller's cap; the step limit is kMatchStepsPerByte per byte (PCRE2's default, 10 million,
// stops exaone-moe at about 4 million letters). Both are about 4x what the patterns here need.
constexpr size_t kJitStackStartBytes = size_t(16) << 20;
constexpr size_t kJitStackPerByte = 256;
constexpr size_t kMatchStepsPerByte = 16;

class MatchResources {
 public:
  MatchResources() : context_(pcre2_match_context_create(nullptr)) {}
  ~MatchResources() {
    pcre2_jit_stack_free(stack_);
    pcre2_match_context_free(context_);
  }
  size_t stack_bytes() const { return stack_bytes_; }
  pcre2_match_context* context() const { return context_; }
  // Replaces the JIT stack by one of `bytes`; false when that cannot be allocated.
  bool set_stack(size_t bytes) {
    pcre2_jit_stack* stack = pcre2_jit_stack_create(std::min<size_t>(bytes, 64 * 1024), bytes, nullptr);
    if (!stack) return false;
    pcre2_jit_stack_free(stack_);
    stack_ = stack;
    stack_bytes_ = bytes;
    pcre2_jit_stack_assign(context_, nullptr, stack_);
    return true;
  }

 private:
  pcre2_match_context* context_;
  pcre2_jit_stack* stack_ = nullptr;
  size_t stack_bytes_ = 0;
};

std::string pcre2_message(int rc) {
  PCRE2_UCHAR message[256];
  pcre2_get_error_message(rc, message, sizeof(message));
  return reinterpret_cast<const char*>(message);
}

}  // namespace

Result<std::vector<size_t>> PreTokenizer::split(std::string_view text) const {
  if (text.empty()) return std::vector<size_t>{};
  MatchResources resources;
  const size_t limit = max_jit_stack_bytes_ ? max_jit_stack_bytes_
                                            : std::max(kJitStackStartBytes, kJitStackPerByte * text.size());
  if (!resources.context() || !resources.set_stack(std::min(kJitStackStartBytes, limit)))
    return out_of_memory("pre-tokenizer '%s': cannot allocate PCRE2's match context", family_);
  pcre2_set_match_limit(resources.context(),
                        uint32_t(std::min<size_t>(UINT32_MAX, std::max<size_t>(10'000'000, kMatchStepsPerByte * text.size()))));
  std::vector<size_t> pieces{text.size()};
  std::vector<size_t> next;
  for (size_t r = 0; r < regexes_.size(); ++r) {
    pcre2_code* code = regexes_[r]->code;
    next.clear();
    next.reserve(pieces.size() * 2);
    if (!code) {
      size_t start = 0;
      for (const size_t length : pieces) split_digit_groups(text.substr(start, length), &next), start += length;
      pieces.swap(next);
      continue;
    }
    std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(
        pcre2_match_data_create_from_pattern(code, nullptr), pcre2_match_data_free);
    if (!md) return out_of_memory("pre-tokenizer '%s': cannot allocate PCRE2's match data", family_);
    size_t start = 0;
    for (const size_t length : pieces) {
      // Each piece is matched on its own, so ^, $, \b and lookarounds stop at its edges (as in llama.cpp).
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + start);
      size_t emitted = 0, pos = 0;
      uint32_t options = PCRE2_NO_UTF_CHECK;
      while (pos <= length) {
        const int rc = pcre2_match(code, subject, length, pos, options, md.get(), resources.context());
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && resources.stack_bytes() < limit) {
          if (!resources.set_stack(std::min(limit, resources.stack_bytes() * 8)))
            return out_of_memory("pre-tokenizer '%s': cannot allocate %zu MiB of match stack for a piece of %zu bytes",
                                 family_, std::min(limit, resources.stack_bytes() * 8) >> 20, length);
          continue;  // the same match again, with more stack
        }
        if (rc == PCRE2_ERROR_NOMATCH) {
          if (!(options & PCRE2_ANCHORED) || pos >= length) break;
          // The last match was empty and none non-empty starts there: move one character on.
          pos += std::min(utf8_len(uint8_t(subject[pos])), length - pos);
          options = PCRE2_NO_UTF_CHECK;
          continue;
        }
        // Anything else (stack or match limits, no memory) would leave the rest of the piece unsplit:
        // an error, never a silently different tokenization.
        if (rc < 0)
          return out_of_memory("pre-tokenizer '%s': pattern %zu failed at byte %zu of a %zu-byte piece: %s (PCRE2 %d)",
                               family_, r + 1, start + pos, length, pcre2_message(rc).c_str(), rc);
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
        const size_t match_begin = ov[0], match_end = ov[1];
        if (match_begin > emitted) next.push_back(match_begin - emitted);
        if (match_end > match_begin) next.push_back(match_end - match_begin);
        emitted = std::max(emitted, match_end);
        pos = match_end;
        // After an empty match, look for a non-empty one at the same place first (std::regex_iterator's rule).
        options = match_end == match_begin ? PCRE2_NO_UTF_CHECK | PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED
                                           : PCRE2_NO_UTF_CHECK;
      }
      if (emitted < length) next.push_back(length - emitted);
      start += length;
    }
    pieces.swap(next);
  }
  return pieces;
}

}  // namespace tandem::tokenizer
