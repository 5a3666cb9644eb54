// Tokenizer: special-token partitioning, dispatch to SPM or BPE, token pieces and detokenization,
// following llama.cpp's llama_vocab::impl (src/llama-vocab.cpp: tokenize, tokenizer_st_partition,
// token_to_piece, detokenize).
#include "tokenizer/tokenizer.h"

#include <cctype>
#include <unordered_map>

#include "gguf/gguf_file.h"
#include "tokenizer/merges.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/unicode.h"

namespace tandem::tokenizer {

struct Tokenizer::Fragment {
  bool is_token;
  TokenId id;          // when is_token
  size_t begin, size;  // bytes of the input, when text
};

// A byte trie over the special-token texts. Scanning an input once tells which special tokens occur
// in it; only those take part in the (quadratic-looking) partition below. The result is the same as
// trying every special token, since a text that is not in the input cannot be in any part of it.
struct Tokenizer::SpecialTrie {
  std::unordered_map<uint64_t, int32_t> edges;  // (node << 8 | byte) -> child node
  std::vector<std::vector<uint32_t>> ends;      // node -> indices into vocab.special_tokens ending there
  SpecialTrie() : ends(1) {}

  void insert(std::string_view text, uint32_t index) {
    int32_t node = 0;
    for (const char c : text) {
      const uint64_t key = uint64_t(node) << 8 | uint8_t(c);
      auto it = edges.find(key);
      if (it == edges.end()) {
        it = edges.emplace(key, int32_t(ends.size())).first;
        ends.emplace_back();
      }
      node = it->second;
    }
    ends[size_t(node)].push_back(index);
  }

  std::vector<bool> occurring(std::string_view text, size_t n_special) const {
    std::vector<bool> seen(n_special, false);
    for (size_t i = 0; i < text.size(); ++i) {
      int32_t node = 0;
      for (size_t j = i; j < text.size(); ++j) {
        const auto it = edges.find(uint64_t(node) << 8 | uint8_t(text[j]));
        if (it == edges.end()) break;
        node = it->second;
        for (const uint32_t index : ends[size_t(node)]) seen[index] = true;
      }
    }
    return seen;
  }
};

Tokenizer::~Tokenizer() = default;

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_metadata(const gguf::Metadata& metadata, const std::string& source) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  TANDEM_ASSIGN(t->vocab_, load_vocab(metadata, source));
  const Vocab& v = t->vocab_;
  if (v.type == VocabType::Bpe) {
    const PreTokenizerSpec* spec = find_pre_tokenizer(v.pre_name);
    if (!spec) spec = &default_pre_tokenizer();
    t->pre_family_ = spec->family;
    TANDEM_ASSIGN(t->pre_, PreTokenizer::create(*spec));
  } else {
    t->pre_family_ = "spm";
  }
  t->special_trie_ = std::make_unique<SpecialTrie>();
  for (size_t i = 0; i < v.special_tokens.size(); ++i)
    t->special_trie_->insert(v.texts[size_t(v.special_tokens[i])], uint32_t(i));

  // Pieces, computed once (llama.cpp keeps the same cache).
  t->pieces_.resize(v.n_tokens());
  for (size_t id = 0; id < v.n_tokens(); ++id) {
    const std::string& text = v.texts[id];
    const uint32_t attr = v.attrs[id];
    std::string& piece = t->pieces_[id];
    if (attr & (kAttrUnknown | kAttrControl | kAttrUserDefined)) {
      piece = text;
    } else if (attr & kAttrNormal) {
      if (v.type == VocabType::Spm || v.spm_style) {
        for (size_t i = 0; i < text.size(); ++i) {
          if (text.compare(i, 3, "\xE2\x96\x81") == 0) {
            piece += ' ';
            i += 2;
          } else {
            piece += text[i];
          }
        }
      } else {
        // Byte-level: each code point stands for one byte. One outside the map is written out the
        // way llama.cpp does (llama_decode_text), visible rather than dropped.
        std::string utf8;
        for (const uint32_t cp : decode_utf8_lenient(text)) {
          uint8_t byte;
          if (unicode_to_byte(cp, &byte)) {
            piece += char(byte);
            continue;
          }
          utf8.clear();
          append_utf8(cp, &utf8);
          piece += "[UNK_BYTE_0x";
          for (const char c : utf8) piece += format("%02x", uint8_t(c));
          piece += text + "]";
        }
      }
    } else if ((attr & kAttrByte) && text.size() >= 5) {
      piece = char(std::strtol(text.substr(3, 2).c_str(), nullptr, 16));
    }
  }
  return t;
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::open(const std::string& path) {
  TANDEM_ASSIGN(auto file, gguf::GgufFile::open(path));
  return from_metadata(file->metadata(), path);
}

std::vector<Tokenizer::Fragment> Tokenizer::partition(std::string_view text, bool parse_special) const {
  std::vector<Fragment> fragments;
  if (text.empty()) return fragments;
  fragments.push_back({false, kNoToken, 0, text.size()});
  const std::vector<TokenId>& specials = vocab_.special_tokens;
  if (specials.empty()) return fragments;
  const std::vector<bool> present = special_trie_->occurring(text, specials.size());

  std::vector<Fragment> next;
  for (size_t s = 0; s < specials.size(); ++s) {
    if (!present[s]) continue;
    const TokenId id = specials[s];
    const uint32_t attr = vocab_.attrs[size_t(id)];
    // Without parse_special, control and unknown texts stay text; user-defined ones are still matched.
    if (!parse_special && (attr & (kAttrControl | kAttrUnknown))) continue;
    const std::string& special = vocab_.texts[size_t(id)];
    next.clear();
    for (const Fragment& f : fragments) {
      if (f.is_token) {
        next.push_back(f);
        continue;
      }
      size_t base = f.begin, length = f.size;
      for (;;) {
        const size_t match = text.substr(0, base + length).find(special, base);
        if (match == std::string_view::npos) {
          if (length > 0) next.push_back({false, kNoToken, base, length});
          break;
        }
        size_t left = match - base;
        if (attr & kAttrLstrip)
          while (left > 0 && std::isspace(uint8_t(text[base + left - 1]))) --left;
        if (left > 0) next.push_back({false, kNoToken, base, left});
        next.push_back({true, id, 0, 0});
        const size_t end = match + special.size();
        if (end >= base + length) break;
        size_t right = base + length - end, right_begin = end;
        if (attr & kAttrRstrip)
          while (right > 0 && std::isspace(uint8_t(text[right_begin]))) ++right_begin, --right;
        base = right_begin;
        length = right;
      }
    }
    fragments.swap(next);
  }
  return fragments;
}

using WordCache = std::unordered_map<std::string, std::vector<TokenId>, StringHash, std::equal_to<>>;

Status Tokenizer::tokenize_bpe_text(std::string_view text, std::vector<TokenId>* out, void* cache_ptr) const {
  WordCache& cache = *static_cast<WordCache*>(cache_ptr);
  // llama.cpp decodes leniently and re-encodes before splitting (invalid bytes become U+FFFD). PCRE2
  // needs valid UTF-8, so surrogates (which llama.cpp keeps) are matched as U+E000, a code point of
  // the same category group and encoded length; the words are cut from the real re-encoding.
  std::string encoded, matched;
  encoded.reserve(text.size());
  bool has_surrogate = false;
  for (const uint32_t cp : decode_utf8_lenient(text)) {
    append_utf8(cp, &encoded);
    has_surrogate |= cp >= 0xD800 && cp <= 0xDFFF;
  }
  if (has_surrogate) {
    for (const uint32_t cp : decode_utf8_lenient(encoded)) append_utf8(cp >= 0xD800 && cp <= 0xDFFF ? 0xE000 : cp, &matched);
  }
  TANDEM_ASSIGN(const std::vector<size_t> words, pre_->split(has_surrogate ? matched : encoded));
  std::string word;
  size_t begin = 0;
  for (const size_t length : words) {
    if (vocab_.spm_style) {
      word.assign(encoded, begin, length);
    } else {
      word.clear();
      for (size_t i = begin; i < begin + length; ++i) word += byte_to_unicode(uint8_t(encoded[i]));
    }
    begin += length;
    auto it = cache.find(std::string_view(word));
    if (it == cache.end()) {
      std::vector<TokenId> ids;
      bpe_tokenize_word(vocab_, word, &ids);
      it = cache.emplace(word, std::move(ids)).first;
    }
    out->insert(out->end(), it->second.begin(), it->second.end());
  }
  return Status();
}

Result<std::vector<TokenId>> Tokenizer::tokenize(std::string_view text, bool add_special, bool parse_special) const {
  std::vector<TokenId> out;
  const std::vector<Fragment> fragments = partition(text, parse_special);
  const Vocab& v = vocab_;
  // llama.cpp asserts that a vocabulary asking for BOS/EOS has one; without it we add nothing.
  if (add_special && v.add_bos && v.special.bos != kNoToken) out.push_back(v.special.bos);
  if (v.type == VocabType::Spm) {
    bool prev_special = true;  // the first text fragment gets the prefix space too
    std::string piece;
    for (const Fragment& f : fragments) {
      if (f.is_token) {
        out.push_back(f.id);
        prev_special = true;
        continue;
      }
      piece.clear();
      if (v.add_space_prefix && prev_special) piece = "\xE2\x96\x81";
      for (const char c : text.substr(f.begin, f.size)) {
        if (c == ' ') piece += "\xE2\x96\x81";
        else piece += c;
      }
      spm_tokenize(v, piece, &out);
      prev_special = false;
    }
  } else {
    WordCache cache;
    std::string escaped;
    for (const Fragment& f : fragments) {
      if (f.is_token) {
        out.push_back(f.id);
        continue;
      }
      const std::string_view fragment = text.substr(f.begin, f.size);
      if (!v.spm_style) {
        TANDEM_TRY(tokenize_bpe_text(fragment, &out, &cache));
        continue;
      }
      escaped.clear();
      for (const char c : fragment) {
        if (c == ' ') escaped += "\xE2\x96\x81";
        else escaped += c;
      }
      TANDEM_TRY(tokenize_bpe_text(escaped, &out, &cache));
    }
  }
  if (add_special && v.add_eos && v.special.eos != kNoToken) out.push_back(v.special.eos);
  return out;
}

std::string Tokenizer::token_to_piece(TokenId id, bool special) const {
  if (id < 0 || size_t(id) >= pieces_.size()) return {};
  if (!special && (vocab_.attrs[size_t(id)] & (kAttrUnknown | kAttrControl))) return {};
  return pieces_[size_t(id)];
}

std::string Tokenizer::detokenize(std::span<const TokenId> ids, bool remove_special, bool unparse_special) const {
  const Vocab& v = vocab_;
  bool remove_space = v.add_space_prefix;
  if (remove_special && v.add_bos && !ids.empty() && ids.front() == v.special.bos) {
    remove_space = false;  // llama.cpp keeps the space after a removed BOS
    ids = ids.subspan(1);
  }
  if (remove_special && v.add_eos && !ids.empty() && ids.back() == v.special.eos) ids = ids.first(ids.size() - 1);

  std::string text;
  for (const TokenId id : ids) {
    std::string piece = token_to_piece(id, unparse_special);
    if (remove_space && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    remove_space = false;
    text += piece;
  }
  if (!v.clean_spaces || text.empty()) return text;

  // llama.cpp's three clean-up passes (clean_up_tokenization_spaces), each over the previous result.
  // " ?", " !", " .", " ," lose the space.
  std::string a(1, text[0]);
  for (size_t i = 1; i < text.size(); ++i) {
    const char x = text[i];
    if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) a.pop_back();
    a += x;
  }
  // " ' " loses both spaces.
  std::string b(1, a[0]);
  bool skipped = false;  // the space after a lone apostrophe was dropped: it no longer counts as before
  for (size_t i = 1; i < a.size(); ++i) {
    const char x = a[i];
    const bool prev_space = a[i - 1] == ' ' && !skipped;
    skipped = false;
    if (x == '\'' && i + 1 < a.size() && prev_space && a[i + 1] == ' ') {
      b.pop_back();
      b += x;
      ++i;
      skipped = true;
      continue;
    }
    b += x;
  }
  // " 's", " 'm", " 're", " 've" lose the space (" 't", " 'd", " 'll" keep it).
  std::string c(1, b[0]);
  for (size_t i = 1; i < b.size(); ++i) {
    const char x = b[i];
    if (b[i - 1] == ' ' && x == '\'' && i + 1 < b.size()) {
      const char x1 = b[i + 1];
      if (x1 == 's' || x1 == 'm') c.pop_back();
      else if (i + 2 < b.size() && ((x1 == 'r' && b[i + 2] == 'e') || (x1 == 'v' && b[i + 2] == 'e'))) c.pop_back();
    }
    c += x;
  }
  return c;
}

std::string StreamDecoder::push(TokenId id) {
  std::string piece = tokenizer_.token_to_piece(id, special_);
  if (strip_space_ && !piece.empty()) {
    if (piece[0] == ' ') piece.erase(0, 1);
    strip_space_ = false;
  }
  pending_ += piece;
  const size_t complete = complete_utf8_prefix(pending_);
  std::string out = sanitize_utf8(std::string_view(pending_).substr(0, complete));
  pending_.erase(0, complete);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = sanitize_utf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace tandem::tokenizer
