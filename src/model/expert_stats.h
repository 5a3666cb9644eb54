// Router statistics: how many times each layer's router chose each expert (per-layer expert hit counts),
// for tandem bench --expert-stats and, later, expert placement and the SSD tier. The table is sized once
// (reset), so counting during a pass allocates nothing.
#pragma once

#include <cstdint>
#include <vector>

namespace tandem::model {

struct ExpertStats {
  int64_t n_layer = 0, n_expert = 0;
  std::vector<uint64_t> tokens;  // [n_layer]: tokens routed through each layer's experts
  std::vector<uint64_t> hits;    // [n_layer, n_expert]: times each expert was among a token's chosen

  void reset(int64_t layers, int64_t experts) {
    n_layer = layers;
    n_expert = experts;
    tokens.assign(size_t(layers), 0);
    hits.assign(size_t(layers * experts), 0);
  }
  // ids: [n_tokens, n_used], each in [0, n_expert) (moe_route's output).
  void add(int64_t layer, const int32_t* ids, int64_t n_tokens, int64_t n_used) {
    if (layer < 0 || layer >= n_layer) return;
    tokens[size_t(layer)] += uint64_t(n_tokens);
    uint64_t* row = hits.data() + layer * n_expert;
    for (int64_t i = 0; i < n_tokens * n_used; ++i) ++row[ids[i]];
  }
};

}  // namespace tandem::model
