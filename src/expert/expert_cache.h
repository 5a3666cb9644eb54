// A RAM cache of routed experts over their GGUF file(s): one slot per expert, filled on demand by large
// aligned reads (O_DIRECT through io_uring, several in flight), evicted by an EvictionPolicy without
// moving any other expert. moe_ffn (model/forward.cpp) runs the experts of a model loaded with
// --expert-cache from it; docs/expert-tier.md describes both.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "expert/layout.h"
#include "expert/policy.h"

namespace tandem::expert {

struct ExpertCacheOptions {
  uint64_t budget_bytes = 0;  // RAM for slots; at least one slot's worth
  PolicyKind policy = PolicyKind::LfuDecay;
  double half_life = 0;       // LfuDecay, in accesses; 0: 4 x the number of slots
  unsigned queue_depth = 64;  // reads in flight at most
  bool io_uring = true;       // false (or a kernel refusing io_uring): synchronous preads, one at a time
  bool direct = true;         // O_DIRECT; false, or a file system refusing it: buffered + posix_fadvise
  bool mlock = false;         // lock the slots in RAM (--mlock); a refusal is a warning()
  // The files to read, one per part of layout.paths(); empty: those paths. (Tests point them at a damaged copy.)
  std::vector<std::string> paths;
};

struct ExpertCacheStats {
  uint64_t hits = 0;      // acquire found the expert ready (resident, or its prefetch had finished)
  uint64_t late = 0;      // acquire found its prefetch still reading and waited
  uint64_t misses = 0;    // acquire had to start the read, or request() had for it
  uint64_t evictions = 0;
  uint64_t prefetch_dropped = 0;  // prefetches skipped: every slot pinned or reading
  uint64_t bytes_read = 0;        // from the files, alignment padding included
  uint64_t read_us = 0;  // wall time with at least one read in flight (until its completion was reaped)
  uint64_t wait_us = 0;  // time acquire spent blocked on reads
  // The next layer's experts guessed from the current hidden state (moe_ffn's prefetch): over the layers
  // that had a guess, experts guessed, guessed and then routed to, and routed to.
  uint64_t guessed = 0, guessed_routed = 0, routed = 0;
  double guess_hit_rate() const { return routed ? double(guessed_routed) / double(routed) : 0; }
  double hit_rate() const { return hits + late + misses ? double(hits) / double(hits + late + misses) : 0; }
  // The counts since `before` (an earlier copy): one run's share.
  ExpertCacheStats since(const ExpertCacheStats& before) const {
    ExpertCacheStats d = *this;
    d.hits -= before.hits, d.late -= before.late, d.misses -= before.misses, d.evictions -= before.evictions;
    d.prefetch_dropped -= before.prefetch_dropped, d.bytes_read -= before.bytes_read, d.read_us -= before.read_us;
    d.wait_us -= before.wait_us, d.guessed -= before.guessed, d.guessed_routed -= before.guessed_routed;
    d.routed -= before.routed;
    return d;
  }
  double bandwidth_gbs() const { return read_us ? double(bytes_read) / double(read_us) / 1e3 : 0; }
};

// One resident expert: its slice of each of the layer's expert tensors, in MoeLayer::tensors order. Valid
// until release() of the expert.
struct ExpertView {
  std::vector<std::span<const uint8_t>> slices;
};

// Bytes of one slot: the largest expert of any layer, each slice padded for its aligned read.
uint64_t expert_slot_bytes(const ExpertLayout& layout);

// Single-threaded: the thread that runs the MoE layers calls every method. Owns its file descriptors,
// the io_uring ring and the slot memory.
class ExpertCache {
 public:
  // `layout` must outlive the cache.
  static Result<std::unique_ptr<ExpertCache>> open(const ExpertLayout& layout, const ExpertCacheOptions& options);
  ~ExpertCache();
  ExpertCache(const ExpertCache&) = delete;
  ExpertCache& operator=(const ExpertCache&) = delete;

  // Starts reading those of `experts` that are not resident (a hint: dropped when no slot is free) and
  // returns without waiting.
  Status prefetch(int layer, std::span<const int32_t> experts);
  // The same for experts the layer's router has chosen and will acquire next: a read started here is
  // that acquire's miss (late or not), where a prefetch's finished read is a hit.
  Status request(int layer, std::span<const int32_t> experts);
  // The expert, read if needed; waits only for its own reads (and, when every slot is pinned or reading,
  // for one read to end). Pins it until release(); a read error or a truncated file is an IoError naming
  // the file, layer and expert; every slot pinned is OutOfMemory.
  Result<ExpertView> acquire(int layer, int32_t expert);
  void release(int layer, int32_t expert);
  // Reaps finished reads without blocking; returns how many reads are still in flight.
  Result<int> poll();

  const ExpertCacheStats& stats() const { return stats_; }
  // Counts one next-layer guess (ExpertCacheStats::guessed and the two after it).
  void record_guess(uint64_t guessed, uint64_t guessed_routed, uint64_t routed) {
    stats_.guessed += guessed;
    stats_.guessed_routed += guessed_routed;
    stats_.routed += routed;
  }
  const ExpertLayout& layout() const { return *layout_; }
  uint64_t slot_bytes() const { return slot_bytes_; }
  int n_slots() const { return int(slots_.size()); }
  bool is_resident(int layer, int32_t expert) const;
  bool direct() const { return direct_; }
  const std::string& warning() const { return warning_; }  // why reads are buffered, when they are

 private:
  struct Slot {
    int key = -1;     // the expert it holds or is reading; -1: free
    int pending = 0;  // its reads in flight
    int pins = 0;
    bool requested = false;  // filled by request(): its first acquire is a miss
    Status error;     // the first failed read of the current fill
  };
  // One aligned read of one slice of a slot's expert.
  struct Read {
    int slot = -1;
    int tensor = 0;          // index into the layer's MoeLayer::tensors
    uint8_t* buf = nullptr;  // 4 KiB aligned, in the slot
    uint64_t offset = 0;     // aligned file offset
    uint64_t length = 0;     // aligned length asked for
    uint64_t need = 0;       // bytes from `offset` that hold the slice (the file may end before `length`)
    uint64_t done = 0;
    uint64_t skip = 0;       // the slice starts at buf + skip
  };
  ExpertCache() = default;
  Result<int> key_of(int layer, int32_t expert) const;
  int take_slot();  // a free slot, or the policy's victim among those not pinned or reading; -1: none
  Status start_reads(int slot, int key);
  Status start(int layer, std::span<const int32_t> experts, bool requested);
  Status submit_read(int read_index);
  Status complete(int read_index, int64_t res);  // res: bytes read, or -errno
  int fd_of(const Read& r) const;
  Status reap(bool wait);  // one completion (waiting for it if `wait`), or none if !wait and none ready
  Status wait_for(int slot);

  const ExpertLayout* layout_ = nullptr;
  std::vector<int> layer_base_;  // per MoE layer, its first key
  std::vector<int> key_layer_;   // key -> index into layout_->layers()
  std::vector<std::string> paths_;  // options.paths (empty: the layout's)
  std::vector<int> fds_;
  bool direct_ = true;
  std::string warning_;
  io_uring ring_{};
  bool ring_ready_ = false;
  unsigned queue_depth_ = 0;
  int in_flight_ = 0;
  uint64_t busy_since_us_ = 0;
  std::unique_ptr<EvictionPolicy> policy_;
  std::vector<Slot> slots_;
  std::vector<Read> reads_;          // n_slots x max tensors per layer
  size_t reads_per_slot_ = 0;
  std::vector<int> slot_of_key_;     // -1: not resident
  uint8_t* memory_ = nullptr;        // all slots, 4 KiB aligned
  bool locked_ = false;
  uint64_t slot_bytes_ = 0;
  ExpertCacheStats stats_;
};

}  // namespace tandem::expert
