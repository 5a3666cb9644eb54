// SentencePiece-style (score-based) merges for vocabularies of type "llama", as llama.cpp runs them
// (src/llama-vocab.cpp, llm_tokenizer_spm_session): one priority queue over the whole fragment.
#include <queue>

#include "tokenizer/merges.h"
#include "tokenizer/unicode.h"

namespace tandem::tokenizer {
namespace {

struct Symbol {
  int prev, next;
  uint32_t begin, size;  // bytes of the fragment; size 0 once merged into its left neighbour
};

struct Bigram {
  int left, right;
  float score;
  uint32_t size;  // bytes of left + right when queued: a later mismatch means the pair is stale
};

// Highest score first; on equal scores the leftmost pair.
struct BigramOrder {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

}  // namespace

void spm_tokenize(const Vocab& vocab, std::string_view text, std::vector<TokenId>* out) {
  std::vector<Symbol> symbols;
  symbols.reserve(text.size());
  for (size_t offset = 0; offset < text.size();) {
    const uint32_t len = uint32_t(std::min(utf8_len(uint8_t(text[offset])), text.size() - offset));
    const int index = int(symbols.size());
    symbols.push_back({index - 1, offset + len == text.size() ? -1 : index + 1, uint32_t(offset), len});
    offset += len;
  }
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
  for (int i = 1; i < int(symbols.size()); ++i) try_add(i - 1, i);

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& l = symbols[size_t(b.left)];
    Symbol& r = symbols[size_t(b.right)];
    if (l.size == 0 || r.size == 0 || l.size + r.size != b.size) continue;
    l.size += r.size;
    r.size = 0;
    l.next = r.next;
    if (r.next >= 0) symbols[size_t(r.next)].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }

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
