// The KV cache: per layer, K and V rows of every cell in a chosen type (f16 by default), on the
// layer's device; per cell, the sequence and position it holds. Cells are handed out first-fit,
// so sequences can come and go (server slots) without compaction.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "model/batch.h"

namespace tandem {

// Before a quantized cache stores them, Q and K are rotated by an orthonormal Walsh-Hadamard matrix
// (and V too, the attention output rotated back), as llama.cpp does: outliers spread over a block, so
// 4- and 8-bit blocks lose less. Exact arithmetic would give the same attention (the matrix is
// orthonormal and its own inverse). The block size: for K the largest power of two dividing the head
// dimension, for V 64; 0 (no rotation) for unquantized types or head dimensions not a multiple of 64.
int kv_rotation_block(WeightType type, int64_t head_dim, bool is_v);

class KvCache {
 public:
  struct Layer {
    void* k = nullptr;
    void* v = nullptr;             // null in a latent layer (row_v 0): MLA reads V out of the K rows
    int64_t row_k = 0, row_v = 0;  // elements per cell (n_head_kv * head_dim)
    Backend* backend = nullptr;    // holds k and v (copy_to_host / copy_from_host reach them)
  };

  // Allocates n_cells cells for each layer on `backends[layer]`; a layer with row_v 0 is latent (K only).
  static Result<KvCache> create(const std::vector<Backend*>& backends, int64_t n_cells,
                                const std::vector<int64_t>& row_k, const std::vector<int64_t>& row_v,
                                WeightType type_k, WeightType type_v);

  // The one "context is full" check: ok when n_tokens more cells are free, else an error naming the
  // cells used, the total and what was asked (callers check before they change anything).
  Status check_room(int64_t n_tokens) const;
  // Picks a free cell for every token of the batch (marking it used). Fails, changing nothing,
  // when the batch needs more cells than are free.
  Status place(const Batch& batch, std::vector<int32_t>* cells);
  // Frees the cells of `seq` with positions in [p0, p1) (p1 < 0: to the end).
  void remove(int32_t seq, int32_t p0 = 0, int32_t p1 = -1);
  void clear();

  int64_t n_cells() const { return int64_t(cell_pos_.size()); }
  int64_t n_used() const { return n_used_; }
  // One past the highest used cell: attention scans only [0, active_cells()).
  int64_t active_cells() const { return active_; }
  const int32_t* cell_pos() const { return cell_pos_.data(); }
  const int32_t* cell_seq() const { return cell_seq_.data(); }
  const Layer& layer(size_t i) const { return layers_[i]; }
  size_t n_layers() const { return layers_.size(); }
  WeightType type_k() const { return type_k_; }
  WeightType type_v() const { return type_v_; }
  // Bytes one token occupies across all layers (K + V).
  size_t bytes_per_token() const;
  size_t total_bytes() const { return bytes_per_token() * size_t(n_cells()); }

 private:
  void update_active();

  std::vector<Layer> layers_;
  std::vector<int32_t> cell_pos_, cell_seq_;
  WeightType type_k_ = WeightType::F16, type_v_ = WeightType::F16;
  int64_t n_used_ = 0, active_ = 0;
};

}  // namespace tandem
