// The linked symbols both merge algorithms work on (spm.cpp, bpe.cpp) and their merge loop; each
// algorithm brings its own pair ranking. Internal to src/tokenizer.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer/unicode.h"

namespace tandem::tokenizer {

struct Symbol {
  int prev, next;        // neighbours in the list, -1 at its ends
  uint32_t begin, size;  // bytes of the text; size 0 once merged into the left neighbour
};

// One symbol per UTF-8 character of `text` (a character cut short by the text's end: its bytes).
inline std::vector<Symbol> utf8_symbols(std::string_view text) {
  std::vector<Symbol> symbols;
  symbols.reserve(text.size());
  for (size_t offset = 0; offset < text.size();) {
    const uint32_t len = uint32_t(std::min(utf8_len(uint8_t(text[offset])), text.size() - offset));
    const int index = int(symbols.size());
    symbols.push_back({index - 1, offset + len == text.size() ? -1 : index + 1, uint32_t(offset), len});
    offset += len;
  }
  return symbols;
}

// Queues every adjacent pair with add(left, right), then merges the best queued pair while any is left:
// its right symbol joins its left one, and the merged symbol's new pairs are queued. A pair whose
// symbols changed since it was queued (Bigram::stale, or either merged away) is skipped.
template <class Queue, class Add>
void merge_symbols(std::vector<Symbol>& symbols, Queue& queue, Add add) {
  for (int i = 1; i < int(symbols.size()); ++i) add(i - 1, i);
  while (!queue.empty()) {
    const auto b = queue.top();
    queue.pop();
    Symbol& l = symbols[size_t(b.left)];
    Symbol& r = symbols[size_t(b.right)];
    if (l.size == 0 || r.size == 0 || b.stale(l, r)) continue;
    l.size += r.size;
    r.size = 0;
    l.next = r.next;
    if (r.next >= 0) symbols[size_t(r.next)].prev = b.left;
    add(l.prev, b.left);
    add(b.left, l.next);
  }
}

}  // namespace tandem::tokenizer
