// The expert cache: slots, io_uring reads (pread where the kernel refuses io_uring) and eviction.
#include "expert/expert_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>

namespace tandem::expert {

namespace {

constexpr uint64_t kAlign = 4096;  // O_DIRECT needs offset, length and buffer aligned to the logical block

uint64_t round_up(uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; }
// A slice's region in a slot: its aligned read may start up to kAlign - 1 bytes before it.
uint64_t region_bytes(uint64_t expert_bytes) { return round_up(expert_bytes) + kAlign; }

uint64_t now_us() {
  return uint64_t(std::chrono::duration_cast<std::chrono::microseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count());
}

}  // namespace

uint64_t expert_slot_bytes(const ExpertLayout& layout) {
  uint64_t slot_bytes = 0;
  for (const auto& l : layout.layers()) {
    uint64_t b = 0;
    for (const auto& t : l.tensors) b += region_bytes(t.expert_bytes);
    slot_bytes = std::max(slot_bytes, b);
  }
  return slot_bytes;
}

Result<std::unique_ptr<ExpertCache>> ExpertCache::open(const ExpertLayout& layout, const ExpertCacheOptions& o) {
  std::unique_ptr<ExpertCache> c(new ExpertCache());
  c->layout_ = &layout;
  const auto& layers = layout.layers();
  if (layers.empty()) return invalid_argument("expert cache: the model has no routed-expert tensors");
  const uint64_t slot_bytes = expert_slot_bytes(layout);
  for (size_t i = 0; i < layers.size(); ++i) {
    c->layer_base_.push_back(int(c->key_layer_.size()));
    c->key_layer_.insert(c->key_layer_.end(), size_t(layers[i].n_expert), int(i));
    c->reads_per_slot_ = std::max(c->reads_per_slot_, layers[i].tensors.size());
  }
  const uint64_t n_slots = std::min<uint64_t>(o.budget_bytes / slot_bytes, c->key_layer_.size());
  if (n_slots == 0)
    return invalid_argument("a budget of %llu bytes holds no expert (one slot takes %llu)",
                            (unsigned long long)o.budget_bytes, (unsigned long long)slot_bytes);
  c->memory_ = static_cast<uint8_t*>(std::aligned_alloc(kAlign, n_slots * slot_bytes));
  if (!c->memory_)
    return out_of_memory("expert cache: cannot allocate %llu bytes", (unsigned long long)(n_slots * slot_bytes));
  if (o.mlock) {
    if (mlock(c->memory_, n_slots * slot_bytes) == 0) c->locked_ = true;
    else c->warning_ = "--mlock could not lock the expert cache's " + std::to_string(n_slots * slot_bytes) +
                       " bytes (" + std::strerror(errno) + "; raise RLIMIT_MEMLOCK with 'ulimit -l'); continuing unlocked";
  }
  c->slots_.resize(n_slots);
  c->slot_of_key_.assign(c->key_layer_.size(), -1);
  c->reads_.resize(n_slots * c->reads_per_slot_);
  c->slot_bytes_ = slot_bytes;
  c->policy_ = std::make_unique<EvictionPolicy>(o.policy, int(c->key_layer_.size()),
                                                o.half_life > 0 ? o.half_life : 4.0 * double(n_slots));

  c->paths_ = o.paths;
  const std::vector<std::string>& paths = o.paths.empty() ? layout.paths() : o.paths;
  if (paths.size() != layout.paths().size())
    return invalid_argument("expert cache: %zu paths for a model of %zu parts", paths.size(), layout.paths().size());
  // One mode for all parts (they lie in one folder): O_DIRECT unless the first part's file system refuses
  // it, at open or (some do) at the first read.
  c->direct_ = o.direct;
  if (c->direct_) {
    const int fd = ::open(paths[0].c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (fd < 0 && errno != EINVAL) return io_error("%s: cannot open: %s", paths[0].c_str(), std::strerror(errno));
    if (fd < 0 || (pread(fd, c->memory_, kAlign, 0) < 0 && errno == EINVAL)) {
      c->direct_ = false;
      c->warning_ += std::string(c->warning_.empty() ? "" : "; ") + paths[0] +
                     ": the file system refuses O_DIRECT; expert reads are buffered (posix_fadvise RANDOM)";
    }
    if (fd >= 0) ::close(fd);
  }
  for (const auto& path : paths) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (c->direct_ ? O_DIRECT : 0));
    if (fd < 0) return io_error("%s: cannot open: %s", path.c_str(), std::strerror(errno));
    // RANDOM: this cache reads whole experts itself; kernel read-ahead would only fetch neighbours' bytes.
    if (!c->direct_) posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    c->fds_.push_back(fd);
  }

  c->queue_depth_ = std::max(1u, o.queue_depth);
  const int rc = o.io_uring ? io_uring_queue_init(c->queue_depth_, &c->ring_, 0) : -ENOSYS;
  if (rc == 0) {
    c->ring_ready_ = true;
  } else {  // e.g. a container's seccomp profile: reads still work, one at a time
    c->warning_ += std::string(c->warning_.empty() ? "" : "; ") + "io_uring unavailable (" + std::strerror(-rc) +
                   "): expert reads are synchronous preads";
  }
  return c;
}

ExpertCache::~ExpertCache() {
  if (ring_ready_) {
    while (in_flight_ > 0 && reap(true).is_ok()) {
    }
    io_uring_queue_exit(&ring_);
  }
  for (int fd : fds_) ::close(fd);
  if (locked_) munlock(memory_, slots_.size() * slot_bytes_);
  std::free(memory_);
}

Result<int> ExpertCache::key_of(int layer, int32_t expert) const {
  const auto& layers = layout_->layers();
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i].layer == layer) {
      if (expert < 0 || expert >= layers[i].n_expert)
        return invalid_argument("expert cache: layer %d has %d experts, not expert %d", layer, layers[i].n_expert,
                                expert);
      return layer_base_[i] + expert;
    }
  return invalid_argument("expert cache: layer %d has no routed experts", layer);
}

bool ExpertCache::is_resident(int layer, int32_t expert) const {
  auto key = key_of(layer, expert);
  return key && slot_of_key_[size_t(*key)] >= 0 && slots_[size_t(slot_of_key_[size_t(*key)])].pending == 0;
}

int ExpertCache::take_slot() {
  int victim = -1;
  for (int s = 0; s < int(slots_.size()); ++s) {
    const Slot& slot = slots_[size_t(s)];
    if (slot.key < 0 && slot.pending == 0) return s;
    if (slot.pins > 0 || slot.pending > 0) continue;
    if (victim < 0 || policy_->evict_before(slot.key, slots_[size_t(victim)].key)) victim = s;
  }
  if (victim >= 0) {
    ++stats_.evictions;
    slot_of_key_[size_t(slots_[size_t(victim)].key)] = -1;
    slots_[size_t(victim)].key = -1;
  }
  return victim;
}

Status ExpertCache::start_reads(int s, int key) {
  Slot& slot = slots_[size_t(s)];
  slot.key = key;
  slot.error = Status();
  slot_of_key_[size_t(key)] = s;
  const MoeLayer& l = layout_->layers()[size_t(key_layer_[size_t(key)])];
  const uint64_t e = uint64_t(key - layer_base_[size_t(key_layer_[size_t(key)])]);
  uint8_t* region = memory_ + size_t(s) * slot_bytes_;  // the slices' regions follow in layer tensor order
  for (size_t t = 0; t < l.tensors.size(); ++t) {
    const ExpertTensor& et = l.tensors[t];
    Read& r = reads_[size_t(s) * reads_per_slot_ + t];
    const uint64_t begin = et.file_offset + e * et.expert_bytes;
    r.slot = s;
    r.tensor = int(t);
    r.buf = region;
    r.offset = begin / kAlign * kAlign;
    r.skip = begin - r.offset;
    r.need = r.skip + et.expert_bytes;
    r.length = round_up(r.need);
    r.done = 0;
    region += region_bytes(et.expert_bytes);
    ++slot.pending;
  }
  for (size_t t = 0; t < l.tensors.size(); ++t) TANDEM_TRY(submit_read(int(size_t(s) * reads_per_slot_ + t)));
  if (ring_ready_ && io_uring_submit(&ring_) < 0) return io_error("expert cache: io_uring_submit failed");
  return Status();
}

int ExpertCache::fd_of(const Read& r) const {
  const MoeLayer& l = layout_->layers()[size_t(key_layer_[size_t(slots_[size_t(r.slot)].key)])];
  return fds_[l.tensors[size_t(r.tensor)].part];
}

Status ExpertCache::submit_read(int i) {
  Read& r = reads_[size_t(i)];
  if (!ring_ready_) {  // synchronous: complete it here
    if (in_flight_++ == 0) busy_since_us_ = now_us();
    const ssize_t n = pread(fd_of(r), r.buf + r.done, r.length - r.done, off_t(r.offset + r.done));
    return complete(i, n < 0 ? -errno : int64_t(n));
  }
  while (in_flight_ >= int(queue_depth_)) TANDEM_TRY(reap(true));
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (!sqe) {  // the queue holds unsubmitted entries: hand them to the kernel
    if (io_uring_submit(&ring_) < 0) return io_error("expert cache: io_uring_submit failed");
    sqe = io_uring_get_sqe(&ring_);
    if (!sqe) return io_error("expert cache: io_uring submission queue full");
  }
  io_uring_prep_read(sqe, fd_of(r), r.buf + r.done, unsigned(r.length - r.done), r.offset + r.done);
  io_uring_sqe_set_data64(sqe, uint64_t(i));
  if (in_flight_++ == 0) busy_since_us_ = now_us();
  return Status();
}

Status ExpertCache::complete(int i, int64_t res) {
  Read& r = reads_[size_t(i)];
  Slot& slot = slots_[size_t(r.slot)];
  if (--in_flight_ == 0) stats_.read_us += now_us() - busy_since_us_;
  if (res > 0) {
    r.done += uint64_t(res);
    stats_.bytes_read += uint64_t(res);
  }
  // A read may return less than asked only at the end of the file (or, rarely, when interrupted): go on
  // from there; O_DIRECT can only go on from an aligned point, so an unaligned end is the file's end.
  if (res > 0 && r.done < r.need && (!direct_ || r.done % kAlign == 0)) return submit_read(i);
  if (r.done < r.need && slot.error.is_ok()) {
    const int l_index = key_layer_[size_t(slot.key)];
    const MoeLayer& l = layout_->layers()[size_t(l_index)];
    const ExpertTensor& t = l.tensors[size_t(r.tensor)];
    const char* path = (paths_.empty() ? layout_->paths() : paths_)[t.part].c_str();
    const int e = slot.key - layer_base_[size_t(l_index)];
    slot.error = res < 0 ? io_error("%s: layer %d expert %d (%s): read of %llu bytes at offset %llu failed: %s", path,
                                    l.layer, e, t.name.c_str(), (unsigned long long)(r.length - r.done),
                                    (unsigned long long)(r.offset + r.done), std::strerror(int(-res)))
                         : io_error("%s: layer %d expert %d (%s): the file ends at byte %llu, the expert at %llu "
                                    "(truncated?)", path, l.layer, e, t.name.c_str(),
                                    (unsigned long long)(r.offset + r.done), (unsigned long long)(r.offset + r.need));
  }
  --slot.pending;
  return Status();
}

Status ExpertCache::reap(bool wait) {
  // Entries prepared but not yet submitted (a batch being built, a continued short read) must reach the
  // kernel first, or waiting for their completion would never end.
  if (io_uring_sq_ready(&ring_) > 0 && io_uring_submit(&ring_) < 0) return io_error("expert cache: io_uring_submit failed");
  io_uring_cqe* cqe = nullptr;
  const int rc = wait ? io_uring_wait_cqe(&ring_, &cqe) : io_uring_peek_cqe(&ring_, &cqe);
  if (rc == -EAGAIN || (rc == 0 && !cqe)) return Status();
  if (rc < 0) return io_error("expert cache: waiting for a read: %s", std::strerror(-rc));
  const int i = int(io_uring_cqe_get_data64(cqe));
  const int64_t res = cqe->res;
  io_uring_cqe_seen(&ring_, cqe);
  return complete(i, res);
}

Result<int> ExpertCache::poll() {
  if (ring_ready_) {
    for (int before = -1; in_flight_ > 0 && before != in_flight_;) {
      before = in_flight_;
      TANDEM_TRY(reap(false));
    }
  }
  return in_flight_;
}

Status ExpertCache::prefetch(int layer, std::span<const int32_t> experts) { return start(layer, experts, false); }
Status ExpertCache::request(int layer, std::span<const int32_t> experts) { return start(layer, experts, true); }

Status ExpertCache::start(int layer, std::span<const int32_t> experts, bool requested) {
  for (int32_t e : experts) {
    TANDEM_ASSIGN(const int key, key_of(layer, e));
    if (slot_of_key_[size_t(key)] >= 0) continue;
    const int s = take_slot();
    if (s < 0) {
      ++stats_.prefetch_dropped;
      continue;
    }
    TANDEM_TRY(start_reads(s, key));
    slots_[size_t(s)].requested = requested;
  }
  return Status();
}

Result<ExpertView> ExpertCache::acquire(int layer, int32_t expert) {
  TANDEM_ASSIGN(const int key, key_of(layer, expert));
  policy_->on_access(key);
  int s = slot_of_key_[size_t(key)];
  if (s >= 0 && slots_[size_t(s)].pending > 0) TANDEM_TRY(poll());  // finished reads not yet reaped
  if (s < 0) {
    ++stats_.misses;
    // Slots still reading (prefetches) free up as their reads end: wait for one rather than fail.
    while ((s = take_slot()) < 0 && in_flight_ > 0) {
      const uint64_t t0 = now_us();
      TANDEM_TRY(reap(true));
      stats_.wait_us += now_us() - t0;
    }
    if (s < 0)
      return out_of_memory("expert cache: all %zu slots are pinned or reading; layer %d expert %d has no room",
                           slots_.size(), layer, expert);
    TANDEM_TRY(start_reads(s, key));
  } else if (slots_[size_t(s)].requested) {
    ++stats_.misses;
  } else if (slots_[size_t(s)].pending > 0) {
    ++stats_.late;
  } else {
    ++stats_.hits;
  }
  slots_[size_t(s)].requested = false;
  Slot& slot = slots_[size_t(s)];
  if (slot.pending > 0) {
    const uint64_t t0 = now_us();
    while (slot.pending > 0) TANDEM_TRY(reap(true));
    stats_.wait_us += now_us() - t0;
  }
  if (!slot.error.is_ok()) {  // forget the expert: a later acquire tries again
    Status err = slot.error;
    slot_of_key_[size_t(key)] = -1;
    slot.key = -1;
    return err;
  }
  ++slot.pins;
  ExpertView v;
  const MoeLayer& l = layout_->layers()[size_t(key_layer_[size_t(key)])];
  for (size_t t = 0; t < l.tensors.size(); ++t) {
    const Read& r = reads_[size_t(s) * reads_per_slot_ + t];
    v.slices.push_back({r.buf + r.skip, l.tensors[t].expert_bytes});
  }
  return v;
}

void ExpertCache::release(int layer, int32_t expert) {
  auto key = key_of(layer, expert);
  TANDEM_CHECK(key && slot_of_key_[size_t(*key)] >= 0 && slots_[size_t(slot_of_key_[size_t(*key)])].pins > 0);
  --slots_[size_t(slot_of_key_[size_t(*key)])].pins;
}

}  // namespace tandem::expert
