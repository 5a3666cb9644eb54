// KvCache allocation and cell bookkeeping.
#include "kv/kv_cache.h"

namespace tandem {

int kv_rotation_block(WeightType type, int64_t head_dim, bool is_v) {
  const bool quantized = type != WeightType::F32 && type != WeightType::F16 && type != WeightType::BF16;
  if (!quantized || head_dim % 64 != 0) return 0;
  if (is_v) return 64;
  int block = 64;
  while (head_dim % (2 * block) == 0) block *= 2;
  return block;
}

Result<KvCache> KvCache::create(const std::vector<Backend*>& backends, int64_t n_cells,
                                const std::vector<int64_t>& row_k, const std::vector<int64_t>& row_v,
                                WeightType type_k, WeightType type_v) {
  KvCache kv;
  kv.type_k_ = type_k;
  kv.type_v_ = type_v;
  for (size_t i = 0; i < backends.size(); ++i) {
    if (row_k[i] % block_size(type_k) || row_v[i] % block_size(type_v))
      return invalid_argument("KV cache type %s/%s needs rows that are multiples of %u/%u elements; layer %zu has %lld/%lld",
                              type_name(type_k).data(), type_name(type_v).data(), block_size(type_k),
                              block_size(type_v), i, (long long)row_k[i], (long long)row_v[i]);
    Layer l;
    l.row_k = row_k[i];
    l.row_v = row_v[i];
    l.backend = backends[i];
    TANDEM_ASSIGN(l.k, backends[i]->alloc(row_bytes(type_k, row_k[i]) * size_t(n_cells)));
    if (row_v[i] > 0) {
      TANDEM_ASSIGN(l.v, backends[i]->alloc(row_bytes(type_v, row_v[i]) * size_t(n_cells)));
    }
    kv.layers_.push_back(l);
  }
  kv.cell_pos_.assign(size_t(n_cells), -1);
  kv.cell_seq_.assign(size_t(n_cells), -1);
  return kv;
}

Status KvCache::check_room(int64_t n_tokens) const {
  if (n_used_ + n_tokens > n_cells())
    return invalid_argument("the context is full: %lld of %lld cells used and %lld more needed (raise -c)",
                            (long long)n_used_, (long long)n_cells(), (long long)n_tokens);
  return Status::ok();
}

Status KvCache::place(const Batch& batch, std::vector<int32_t>* cells) {
  TANDEM_TRY(check_room(batch.size()));
  cells->resize(size_t(batch.size()));
  int64_t c = 0;
  for (int64_t t = 0; t < batch.size(); ++t) {
    while (cell_pos_[size_t(c)] >= 0) ++c;
    cell_pos_[size_t(c)] = batch.pos[size_t(t)];
    cell_seq_[size_t(c)] = batch.seq[size_t(t)];
    (*cells)[size_t(t)] = int32_t(c);
  }
  n_used_ += batch.size();
  update_active();
  return Status::ok();
}

void KvCache::remove(int32_t seq, int32_t p0, int32_t p1) {
  for (size_t c = 0; c < cell_pos_.size(); ++c) {
    if (cell_seq_[c] != seq || cell_pos_[c] < p0 || (p1 >= 0 && cell_pos_[c] >= p1)) continue;
    cell_pos_[c] = cell_seq_[c] = -1;
    --n_used_;
  }
  update_active();
}

void KvCache::clear() {
  std::fill(cell_pos_.begin(), cell_pos_.end(), -1);
  std::fill(cell_seq_.begin(), cell_seq_.end(), -1);
  n_used_ = active_ = 0;
}

void KvCache::update_active() {
  active_ = n_cells();
  while (active_ > 0 && cell_pos_[size_t(active_ - 1)] < 0) --active_;
}

size_t KvCache::bytes_per_token() const {
  size_t n = 0;
  for (const Layer& l : layers_) n += row_bytes(type_k_, l.row_k) + row_bytes(type_v_, l.row_v);
  return n;
}

}  // namespace tandem
