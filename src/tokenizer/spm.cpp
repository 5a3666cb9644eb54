// SentencePiece-style (score-based) merges for vocabularies of type "llama", as llama.cpp runs them
// (src/llama-vocab.cpp, llm_tokenizer_spm_session): one priority queue over the whole fragment.
#include <queue>

#include "tokenizer/merges.h"
#include "tokenizer/symbols.h"

namespace tandem::tokenizer {
namespace {

struct Bigram {
  int left, right;
  float score;
  uint32_t size;  // bytes of left + right when queued: a later mismatch means the pair is stale
  bool stale(const Symbol& l, const Symbol& r) const { return l.size + r.size != size; }
};

// Highest score first; on equal scores the leftmost pair.
struct BigramOrder {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

}  // namespace

void spm_tokenize(const Vocab& vocab, std::string_view text, std::vector<TokenId>* out) {
  std::vector<Symbol> symbols = utf8_symbols(text);
  if (symbols.empty()) return;

  std::vector<Bigram> storage;
  storage.reserve(symbols.size());
  std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue(BigramOrder{}, std::move(storage));
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = symbols[size_t(left)];
    const Symbol& r = symbols[size_t(right)];
    const TokenId id = vocab.find(text.substr(l.begin, l.size + r.size));
    if (id == kNoToken) return;
    queue.push({left, right, vocab.scores[size_t(id)], l.size + r.size});
  };
  merge_symbols(symbols, queue, try_add);

  for (int i = 0; i != -1; i = symbols[size_t(i)].next) {
    const Symbol& s = symbols[size_t(i)];
    const std::string_view piece = text.substr(s.begin, s.size);
    if (const TokenId id = vocab.find(piece); id != kNoToken) {
      out->push_back(id);
      continue;
    }
    for (const char c : piece) {
      // A vocabulary without the byte's token makes llama.cpp throw; the unknown token is the
      // closest thing that keeps going.
      const TokenId byte = vocab.spm_byte_token(uint8_t(c));
      if (byte != kNoToken) out->push_back(byte);
      else if (vocab.special.unk != kNoToken) out->push_back(vocab.special.unk);
    }
  }
}

}  // namespace tandem::tokenizer
