// Host-RAM copies of slots' KV cells (vLLM's --swap-space): a slot about to hand its cells to a
// different prompt copies them here first, and a later prompt that shares more with a stored entry
// than with any slot's cells gets those cells back instead of decoding them again. The copies are the
// cache's rows byte for byte, moved with Backend::copy_to_host / copy_from_host, so a cache in device
// memory takes the same path. Not thread-safe: the scheduler thread owns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <vector>

#include "kv/kv_cache.h"

namespace tandem {

class KvSwap {
 public:
  explicit KvSwap(size_t capacity_bytes) : capacity_bytes_(capacity_bytes) {}

  // Copies the cells of `seq` at positions [0, tokens.size()) (tokens: what they hold) into a new
  // entry, the most recent; entries whose tokens are a prefix of these go (this one covers them), and
  // the least recently used ones go while the store is over capacity. An entry larger than the whole
  // capacity is not kept. The cells stay in the cache.
  void save(const KvCache& kv, int32_t seq, const std::vector<int32_t>& tokens);
  // The entry sharing the longest prefix with `prompt`: its length, and the entry via *entry (null
  // when none shares a token).
  struct Entry;
  size_t best(const std::vector<int32_t>& prompt, const Entry** entry) const;
  // Places cells for positions [0, n_tokens) of `seq` (which must hold none) and copies the entry's
  // rows into them; the entry becomes the most recent. Fails, changing nothing, when the cache has
  // no room.
  Status restore(KvCache& kv, const Entry* entry, int32_t seq, size_t n_tokens);

  size_t bytes_used() const { return bytes_used_; }
  size_t n_entries() const { return entries_.size(); }

  struct Entry {
    std::vector<int32_t> tokens;
    std::vector<uint8_t> rows;  // per layer: K rows of every token, then V rows (a latent layer: K only)
  };

 private:
  size_t capacity_bytes_;
  size_t bytes_used_ = 0;
  std::list<Entry> entries_;  // least recently used first
};

}  // namespace tandem
