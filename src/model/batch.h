// The engine's unit of work: tokens, each with its sequence and position, and whether its logits
// are wanted. Multi-sequence from the start so the server's parallel slots need no redesign.
#pragma once

#include <cstdint>
#include <vector>

namespace tandem {

struct Batch {
  std::vector<int32_t> tokens;
  std::vector<int32_t> pos;
  std::vector<int32_t> seq;
  std::vector<uint8_t> want_logits;

  int64_t size() const { return int64_t(tokens.size()); }
  void clear() {
    tokens.clear();
    pos.clear();
    seq.clear();
    want_logits.clear();
  }
  void add(int32_t token, int32_t position, int32_t sequence, bool logits) {
    tokens.push_back(token);
    pos.push_back(position);
    seq.push_back(sequence);
    want_logits.push_back(logits ? 1 : 0);
  }
};

}  // namespace tandem
