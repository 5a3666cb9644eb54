// KvSwap: saving and restoring a sequence's KV rows through host memory (engine/kv_swap.h).
#include "engine/kv_swap.h"

#include <algorithm>

namespace tandem {
namespace {

// The cell holding each position [0, n) of seq; -1 where none does.
std::vector<int32_t> cells_of(const KvCache& kv, int32_t seq, size_t n) {
  std::vector<int32_t> cells(n, -1);
  for (int64_t c = 0; c < kv.n_cells(); ++c) {
    const int32_t pos = kv.cell_pos()[c];
    if (kv.cell_seq()[c] == seq && pos >= 0 && size_t(pos) < n) cells[size_t(pos)] = int32_t(c);
  }
  return cells;
}

// Calls fn(base, row_bytes) for the K and V arrays of every layer, in the order entries store them.
template <typename Fn>
void for_each_array(const KvCache& kv, Fn fn) {
  for (size_t l = 0; l < kv.n_layers(); ++l) {
    const KvCache::Layer& layer = kv.layer(l);
    fn(layer, static_cast<uint8_t*>(layer.k), row_bytes(kv.type_k(), layer.row_k));
    if (layer.v) fn(layer, static_cast<uint8_t*>(layer.v), row_bytes(kv.type_v(), layer.row_v));
  }
}

// Calls fn(first, count) for each run of consecutive cell numbers in `cells`, so a device cache copies
// a run in one transfer rather than a row at a time (first-fit placement keeps runs long).
template <typename Fn>
void for_each_run(const std::vector<int32_t>& cells, size_t n, Fn fn) {
  for (size_t i = 0; i < n;) {
    size_t end = i + 1;
    while (end < n && cells[end] == cells[end - 1] + 1) ++end;
    fn(i, end - i);
    i = end;
  }
}

bool is_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  return a.size() <= b.size() && std::equal(a.begin(), a.end(), b.begin());
}

}  // namespace

void KvSwap::save(const KvCache& kv, int32_t seq, const std::vector<int32_t>& tokens) {
  const size_t bytes = tokens.size() * kv.bytes_per_token();
  if (tokens.empty() || bytes > capacity_bytes_) return;
  const std::vector<int32_t> cells = cells_of(kv, seq, tokens.size());
  if (std::find(cells.begin(), cells.end(), -1) != cells.end()) return;  // a gap: nothing whole to keep
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (!is_prefix(it->tokens, tokens)) {
      ++it;
      continue;
    }
    bytes_used_ -= it->rows.size();
    it = entries_.erase(it);
  }
  while (!entries_.empty() && bytes_used_ + bytes > capacity_bytes_) {
    bytes_used_ -= entries_.front().rows.size();
    entries_.pop_front();
  }
  Entry e{tokens, std::vector<uint8_t>(bytes)};
  uint8_t* out = e.rows.data();
  for_each_array(kv, [&](const KvCache::Layer& layer, uint8_t* base, size_t row) {
    for_each_run(cells, cells.size(), [&](size_t i, size_t n) {
      layer.backend->copy_to_host(out + i * row, base + size_t(cells[i]) * row, n * row);
    });
    out += cells.size() * row;
  });
  bytes_used_ += bytes;
  entries_.push_back(std::move(e));
}

size_t KvSwap::best(const std::vector<int32_t>& prompt, const Entry** entry) const {
  size_t best_n = 0;
  *entry = nullptr;
  for (const Entry& e : entries_) {
    size_t n = 0;
    while (n < e.tokens.size() && n < prompt.size() && e.tokens[n] == prompt[n]) ++n;
    if (n > best_n) best_n = n, *entry = &e;
  }
  return best_n;
}

Status KvSwap::restore(KvCache& kv, const Entry* entry, int32_t seq, size_t n_tokens) {
  TANDEM_CHECK(entry && n_tokens <= entry->tokens.size());
  Batch b;
  for (size_t i = 0; i < n_tokens; ++i) b.add(entry->tokens[i], int32_t(i), seq, false);
  std::vector<int32_t> cells;
  TANDEM_TRY(kv.place(b, &cells));
  const uint8_t* in = entry->rows.data();
  const size_t n_stored = entry->tokens.size();
  for_each_array(kv, [&](const KvCache::Layer& layer, uint8_t* base, size_t row) {
    for_each_run(cells, n_tokens, [&](size_t i, size_t n) {
      layer.backend->copy_from_host(base + size_t(cells[i]) * row, in + i * row, n * row);
    });
    in += n_stored * row;
  });
  for (auto it = entries_.begin(); it != entries_.end(); ++it)
    if (&*it == entry) {
      entries_.splice(entries_.end(), entries_, it);
      break;
    }
  return Status::ok();
}

}  // namespace tandem
