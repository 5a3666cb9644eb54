// Router statistics: how many times each layer's router chose each expert (per-layer expert hit counts),
// for tandem bench --expert-stats and, later, expert placement and the SSD tier. The table is sized once
// (reset), so counting during a pass allocates nothing.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace tandem::model {

struct ExpertStats {
  int64_t n_layer = 0, n_expert = 0;
  std::vector<uint64_t> tokens;  // [n_layer]: tokens routed through each layer's experts
  std::vector<uint64_t> hits;    // [n_layer, n_expert]: times each expert was among a token's chosen
  // record_trace (tandem run --expert-trace): the choices in order too, token by token as decoding would
  // ask for them (a prompt's batch is unrolled: token t's layers, then token t+1's), each token's experts
  // of a layer ascending, as keys layer * n_expert + expert: the access stream a cache policy sees.
  bool record_trace = false;
  std::vector<int32_t> trace;

  void reset(int64_t layers, int64_t experts) {
    n_layer = layers;
    n_expert = experts;
    tokens.assign(size_t(layers), 0);
    hits.assign(size_t(layers * experts), 0);
    trace.clear();
    pass_.clear();
  }
  // ids: [n_tokens, n_used], each in [0, n_expert) (moe_route's output).
  void add(int64_t layer, const int32_t* ids, int64_t n_tokens, int64_t n_used) {
    if (layer < 0 || layer >= n_layer) return;
    tokens[size_t(layer)] += uint64_t(n_tokens);
    uint64_t* row = hits.data() + layer * n_expert;
    for (int64_t i = 0; i < n_tokens * n_used; ++i) ++row[ids[i]];
    if (!record_trace) return;
    if (!pass_.empty() && (layer <= pass_.back().layer || n_tokens != pass_.back().n_tokens)) flush_trace();
    pass_.push_back({layer, n_tokens, n_used, std::vector<int32_t>(ids, ids + n_tokens * n_used)});
  }
  // Appends the pass in progress to `trace` (add() does at the next pass; call once more at the end).
  void flush_trace() {
    if (pass_.empty()) return;
    for (int64_t t = 0; t < pass_.front().n_tokens; ++t)
      for (const Call& c : pass_) {
        const size_t begin = trace.size();
        for (int64_t j = 0; j < c.n_used; ++j)
          trace.push_back(int32_t(c.layer * n_expert + c.ids[size_t(t * c.n_used + j)]));
        std::sort(trace.begin() + std::ptrdiff_t(begin), trace.end());
      }
    pass_.clear();
  }

 private:
  struct Call {  // one MoE layer's choices in the pass in progress
    int64_t layer, n_tokens, n_used;
    std::vector<int32_t> ids;
  };
  std::vector<Call> pass_;
};

}  // namespace tandem::model
