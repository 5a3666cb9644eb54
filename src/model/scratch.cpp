#include "model/scratch.h"

#include <cstring>

namespace tandem::model {

void ForwardScratch::begin_pass(const Batch& batch, const std::vector<int32_t>& cells, const KvCache& kv) {
  const size_t n = size_t(batch.size());
  moe_route_.guess_layer = -1;  // a guess from a pass that stopped early is not this pass's
  out_rows_.clear();
  for (size_t t = 0; t < n; ++t)
    if (batch.want_logits[t]) out_rows_.push_back(int32_t(t));
  host_ints_.clear();
  host_ints_.reserve(4 * n + out_rows_.size());
  host_ints_.insert(host_ints_.end(), batch.tokens.begin(), batch.tokens.end());
  host_ints_.insert(host_ints_.end(), batch.pos.begin(), batch.pos.end());
  host_ints_.insert(host_ints_.end(), batch.seq.begin(), batch.seq.end());
  host_ints_.insert(host_ints_.end(), cells.begin(), cells.end());
  host_ints_.insert(host_ints_.end(), out_rows_.begin(), out_rows_.end());
  const int32_t* base = host_ints_.data();
  // The cache's cell tables are read in place on the host (they do not change during a pass).
  n_cells_ = kv.active_cells();
  host_in_ = {base, base + n, base + 2 * n, base + 3 * n, base + 4 * n, kv.cell_pos(), kv.cell_seq()};
  for (PerDevice& d : devices_) d.uploaded = false;
}

ForwardScratch::PerDevice& ForwardScratch::device(Backend& b) {
  for (PerDevice& d : devices_)
    if (d.backend == &b) return d;
  devices_.emplace_back();
  devices_.back().backend = &b;
  return devices_.back();
}

Result<float*> ForwardScratch::get(Backend& b, Slot slot, int64_t n) {
  DeviceBuffer& buf = device(b).slots[slot];
  const size_t bytes = size_t(n) * sizeof(float);
  if (buf.size_bytes() < bytes || buf.empty()) {
    buf.reset();  // first, so the old and new buffers never both count against the device
    TANDEM_ASSIGN(buf, DeviceBuffer::create(b, std::max<size_t>(bytes, sizeof(float))));
  }
  return buf.f32();
}

Result<int32_t*> ForwardScratch::get_i32(Backend& b, Slot slot, int64_t n) {
  static_assert(sizeof(int32_t) == sizeof(float));
  TANDEM_ASSIGN(float* p, get(b, slot, n));
  return reinterpret_cast<int32_t*>(p);
}

Result<DeviceInputs> ForwardScratch::inputs(Backend& b) {
  if (b.host_accessible()) return host_in_;
  PerDevice& d = device(b);
  if (d.uploaded) return d.in;
  const size_t n_batch = host_ints_.size(), n_ints = n_batch + 2 * size_t(n_cells_);
  if (d.ints.size_bytes() < n_ints * sizeof(int32_t) || d.ints.empty()) {
    d.ints.reset();
    TANDEM_ASSIGN(d.ints, DeviceBuffer::create(b, std::max<size_t>(n_ints, 1) * sizeof(int32_t)));
  }
  auto* dev = static_cast<int32_t*>(d.ints.data());
  b.copy_from_host(dev, host_ints_.data(), n_batch * sizeof(int32_t));
  b.copy_from_host(dev + n_batch, host_in_.cell_pos, size_t(n_cells_) * sizeof(int32_t));
  b.copy_from_host(dev + n_batch + n_cells_, host_in_.cell_seq, size_t(n_cells_) * sizeof(int32_t));
  auto rebase = [&](const int32_t* p) { return dev + (p - host_ints_.data()); };
  d.in = {rebase(host_in_.tokens), rebase(host_in_.pos), rebase(host_in_.seq), rebase(host_in_.cells),
          rebase(host_in_.out_rows), dev + n_batch, dev + n_batch + n_cells_};
  d.uploaded = true;
  return d.in;
}

Result<float*> ForwardScratch::move(Backend& from, float* src, Backend& to, Slot slot, int64_t n) {
  if (&from == &to) return src;
  TANDEM_ASSIGN(float* dst, get(to, slot, n));
  const size_t bytes = size_t(n) * sizeof(float);
  if (!from.host_accessible() && !to.host_accessible() && staging_.size() < bytes) {
    TANDEM_TRY(synchronize());  // no queued copy may still use the old staging bytes
    staging_.resize(bytes);
  }
  copy_between(from, src, to, dst, bytes, staging_.data());
  return dst;
}

Status ForwardScratch::synchronize() {
  Status first;
  for (PerDevice& d : devices_) {
    Status s = d.backend->synchronize();
    if (first.is_ok() && !s.is_ok()) first = std::move(s);
  }
  return first;
}

}  // namespace tandem::model
