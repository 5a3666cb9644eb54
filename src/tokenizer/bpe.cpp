// BPE merges of one pre-tokenized word, as llama.cpp runs them
// (src/llama-vocab.cpp, llm_tokenizer_bpe_session): lowest merge rank first, leftmost on ties.
#include <queue>
#include <string>

#include "tokenizer/merges.h"
#include "tokenizer/symbols.h"

namespace tandem::tokenizer {
namespace {

struct Bigram {
  int left, right;
  int32_t rank;
  uint32_t left_size, right_size;  // at queueing time: a later mismatch means the pair is stale
  bool stale(const Symbol& l, const Symbol& r) const { return l.size != left_size || r.size != right_size; }
};

// Lowest rank first; on equal ranks the leftmost pair.
struct BigramOrder {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

std::string hex_byte_token(uint8_t byte) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  return {'<', '0', 'x', kHex[byte >> 4], kHex[byte & 15], '>'};
}

}  // namespace

void bpe_tokenize_word(const Vocab& vocab, std::string_view word, std::vector<TokenId>* out) {
  if (word.empty()) return;
  // llama.cpp takes such words whole: with ignore_merges any word, in Gemma 4 a run of newlines (its PR 21343).
  if (vocab.ignore_merges || (vocab.spm_style && word.find_first_not_of('\n') == std::string_view::npos)) {
    if (const TokenId id = vocab.find(word); id != kNoToken) {
      out->push_back(id);
      return;
    }
  }
  std::vector<Symbol> symbols = utf8_symbols(word);
  std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue;
  std::string key;  // "left right", the form of a merge line
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = symbols[size_t(left)];
    const Symbol& r = symbols[size_t(right)];
    key.assign(word.substr(l.begin, l.size));
    key += ' ';
    key.append(word.substr(r.begin, r.size));
    const auto it = vocab.merge_ranks.find(std::string_view(key));
    if (it == vocab.merge_ranks.end()) return;
    queue.push({left, right, it->second, l.size, r.size});
  };
  merge_symbols(symbols, queue, try_add);

  for (int i = 0; i != -1; i = symbols[size_t(i)].next) {
    const Symbol& s = symbols[size_t(i)];
    const std::string_view piece = word.substr(s.begin, s.size);
    if (const TokenId id = vocab.find(piece); id != kNoToken) {
      out->push_back(id);
      continue;
    }
    for (const char& c : piece) {
      // Byte-level words hold GPT-2-mapped characters, one per byte; raw UTF-8 ones use <0xXX> tokens.
      const TokenId byte = vocab.spm_style ? vocab.find(hex_byte_token(uint8_t(c))) : vocab.find(std::string_view(&c, 1));
      if (byte != kNoToken) out->push_back(byte);
    }
  }
}

}  // namespace tandem::tokenizer
