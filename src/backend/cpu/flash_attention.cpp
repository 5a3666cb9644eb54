// Flash attention on the CPU. The batch's tokens are cut into blocks (consecutive tokens of one
// sequence); a task is one block against one KV head: its query rows (block tokens x the heads of the
// group) stream over the cells the block can see in tiles, each tile's K and V converted once to f32
// (quantized caches are read directly, a head at a time) and shared by all rows, through the online
// softmax of CpuOps::flash_tile. No score row longer than a tile exists.
//
// Batch invariance (issue 11): a row's result must not depend on the block, the batch or the threads.
// So the cells are taken in position order and cut by position, never by how many there are: tile k
// holds positions [64k, 64k + 64), chunk c positions [256c, 256c + 256). Each chunk starts a fresh
// online softmax and the chunks are merged left to right (merge_into). When blocks x KV heads leave
// threads idle (decoding) the chunks of a task run on different threads and are merged afterwards;
// otherwise one thread runs them in turn. Both give the same bits. Cells other tokens of the block see
// but this row does not add exact zeros.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "backend/cpu/cpu_backend.h"

namespace tandem::cpu {
namespace {

constexpr int64_t kBlockTokens = 32;
constexpr int kTileCells = 64;
constexpr int32_t kChunkCells = 4 * kTileCells;
// Chunks run on their own threads only while their partial results fit in this many floats.
constexpr size_t kMaxPartialFloats = size_t(16) << 20;

bool sees(const AttentionArgs& a, int64_t t, int32_t cell) {
  const int32_t cp = a.cell_pos[cell], p = a.token_pos[t];
  if (cp < 0 || cp > p || a.cell_seq[cell] != a.token_seq[t]) return false;
  return a.sliding_window <= 0 || p - cp < a.sliding_window;
}

// Folds the online-softmax state (m2, l2, o2) of the next chunk into (m, l, o) of the chunks before it.
// Compiled with baseline flags (no FMA contraction): every caller gets the same roundings.
void merge_into(float& m, float& l, float* o, float m2, float l2, const float* o2, int dv) {
  if (m2 == -INFINITY) return;  // nothing visible in the chunk
  if (m == -INFINITY) {
    m = m2;
    l = l2;
    std::memcpy(o, o2, size_t(dv) * 4);
    return;
  }
  const float mx = std::max(m, m2);
  const float a = std::exp(m - mx), b = std::exp(m2 - mx);
  l = l * a + l2 * b;
  for (int i = 0; i < dv; ++i) o[i] = o[i] * a + o2[i] * b;
  m = mx;
}

}  // namespace

void CpuBackend::flash_attention(const AttentionArgs& a) {
  const int group = a.n_head / a.n_head_kv;
  const int dk = a.head_dim_k, dv = a.head_dim_v;

  // Blocks of consecutive tokens of one sequence, and the cells each block sees.
  int64_t n_blocks = 0;
  for (int64_t t = 0; t < a.n_tokens; ++n_blocks) {
    if (flash_blocks_.size() <= size_t(n_blocks)) flash_blocks_.resize(size_t(n_blocks) + 1);
    FlashBlock& b = flash_blocks_[size_t(n_blocks)];
    b.t0 = t;
    b.n = 1;
    while (t + b.n < a.n_tokens && b.n < kBlockTokens && a.token_seq[t + b.n] == a.token_seq[t]) ++b.n;
    t += b.n;
  }
  pool_.parallel_for(n_blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bi = begin; bi < end; ++bi) {
      FlashBlock& b = flash_blocks_[size_t(bi)];
      b.cells.clear();
      const int32_t seq = a.token_seq[b.t0];
      int32_t pmin = a.token_pos[b.t0], pmax = pmin;
      for (int64_t t = b.t0; t < b.t0 + b.n; ++t) {
        pmin = std::min(pmin, a.token_pos[t]);
        pmax = std::max(pmax, a.token_pos[t]);
      }
      for (int32_t c = 0; c < int32_t(a.n_cells); ++c) {
        const int32_t cp = a.cell_pos[c];
        if (cp < 0 || cp > pmax || a.cell_seq[c] != seq) continue;
        if (a.sliding_window > 0 && int64_t(pmin) - cp >= a.sliding_window) {
          bool any = false;  // positions need not be contiguous: ask each token
          for (int64_t t = b.t0; t < b.t0 + b.n && !any; ++t) any = sees(a, t, c);
          if (!any) continue;
        }
        b.cells.push_back(c);
      }
      order_by_position(b.cells.data(), int64_t(b.cells.size()), a.cell_pos);
      b.chunks.clear();
      for (size_t i = 0; i < b.cells.size(); ++i)
        if (i == 0 || a.cell_pos[b.cells[i]] / kChunkCells != a.cell_pos[b.cells[i - 1]] / kChunkCells)
          b.chunks.push_back(int64_t(i));
      b.chunks.push_back(int64_t(b.cells.size()));
    }
  });

  // Tasks: (block, KV head), or (block, KV head, chunk) when that many are needed to busy the threads.
  const int nt = pool_.size();
  const int64_t n_pairs = n_blocks * a.n_head_kv;
  int64_t max_chunks = 0, max_block = 0;
  for (int64_t bi = 0; bi < n_blocks; ++bi) {
    max_chunks = std::max(max_chunks, int64_t(flash_blocks_[size_t(bi)].chunks.size()) - 1);
    max_block = std::max(max_block, flash_blocks_[size_t(bi)].n);
  }
  const int64_t max_rows = kBlockTokens * group;
  const size_t partial_floats = size_t(max_block * group) * size_t(dv + 2);
  const bool split = n_pairs < 2 * nt && max_chunks > 1 &&
                     size_t(n_pairs * max_chunks) * partial_floats <= kMaxPartialFloats;
  const int64_t n_split = split ? max_chunks : 1;
  const int64_t n_tasks = n_pairs * n_split;
  if (split && flash_partials_.size() < size_t(n_tasks) * partial_floats)
    flash_partials_.resize(size_t(n_tasks) * partial_floats);

  const size_t scratch_floats = size_t(max_rows) * (size_t(dk) + kTileCells + 2 * size_t(dv) + 4) +
                                size_t(kTileCells) * size_t(dk + dv) + size_t(kBlockTokens) * kTileCells + 64;
  if (attn_scratch_.size() < size_t(nt)) attn_scratch_.resize(size_t(nt));
  for (auto& s : attn_scratch_)
    if (s.size() < scratch_floats) s.resize(scratch_floats);

  const size_t k_row_bytes = row_bytes(a.k_type, a.k_stride ? a.k_stride : int64_t(a.n_head_kv) * dk);
  const size_t v_row_bytes = row_bytes(a.v_type, a.v_stride ? a.v_stride : int64_t(a.n_head_kv) * dv);
  const size_t k_head_bytes = row_bytes(a.k_type, dk), v_head_bytes = row_bytes(a.v_type, dv);
  const auto gather = ops_.kv_gather_f32;
  const auto tile_fn = ops_.flash_tile;

  std::atomic<int64_t> next{0};
  auto body = [&](int thread, int) {
    float* base = attn_scratch_[size_t(thread)].data();
    for (int64_t task; (task = next.fetch_add(1, std::memory_order_relaxed)) < n_tasks;) {
      const int64_t pair = task / n_split;
      const FlashBlock& b = flash_blocks_[size_t(pair / a.n_head_kv)];
      const int g = int(pair % a.n_head_kv);
      const int n_rows = int(b.n) * group;
      const int64_t n_chunks = int64_t(b.chunks.size()) - 1;
      // The chunks [k_begin, k_end) this task runs: all of them, or the one of its split.
      const int64_t k_begin = split ? std::min(task % n_split, n_chunks) : 0;
      const int64_t k_end = split ? std::min(k_begin + 1, n_chunks) : n_chunks;

      float* q = base;                                    // n_rows x dk
      float* s = q + size_t(max_rows) * dk;               // n_rows x kTileCells
      float* m = s + size_t(max_rows) * kTileCells;       // n_rows: the chunks so far
      float* l = m + max_rows;                            // n_rows
      float* o = l + max_rows;                            // n_rows x dv
      float* m2 = o + size_t(max_rows) * dv;              // n_rows: the chunk being run (after the first)
      float* l2 = m2 + max_rows;                          // n_rows
      float* o2 = l2 + max_rows;                          // n_rows x dv
      float* kt = o2 + size_t(max_rows) * dv;             // kTileCells x dk
      float* vt = kt + size_t(kTileCells) * dk;           // kTileCells x dv
      float* bias = vt + size_t(kTileCells) * dv;         // block tokens x kTileCells
      for (int64_t tl = 0; tl < b.n; ++tl)
        for (int h = 0; h < group; ++h)
          round_like_activation(ops_, a.k_type, a.q + ((b.t0 + tl) * a.n_head + int64_t(g) * group + h) * dk,
                  q + (tl * group + h) * dk, dk);
      std::fill(m, m + n_rows, -INFINITY);
      std::fill(l, l + n_rows, 0.0f);
      std::fill(o, o + size_t(n_rows) * dv, 0.0f);

      FlashTile ft;
      ft.q = q;
      ft.k = kt;
      ft.v = vt;
      ft.bias = bias;
      ft.n_rows = n_rows;
      ft.rows_per_bias = group;
      ft.dk = dk;
      ft.dv = dv;
      ft.scale = a.scale;
      ft.softcap = a.softcap;
      ft.s = s;
      for (int64_t k = k_begin; k < k_end; ++k) {
        // The first chunk runs in (m, l, o) itself, the later ones in (m2, l2, o2), merged after.
        ft.m = k == k_begin ? m : m2;
        ft.l = k == k_begin ? l : l2;
        ft.o = k == k_begin ? o : o2;
        if (k != k_begin) {
          std::fill(m2, m2 + n_rows, -INFINITY);
          std::fill(l2, l2 + n_rows, 0.0f);
          std::fill(o2, o2 + size_t(n_rows) * dv, 0.0f);
        }
        const int64_t c_end = b.chunks[size_t(k) + 1];
        for (int64_t j0 = b.chunks[size_t(k)], j1; j0 < c_end; j0 = j1) {
          const int32_t tile = a.cell_pos[b.cells[size_t(j0)]] / kTileCells;
          for (j1 = j0 + 1; j1 < c_end && j1 - j0 < kTileCells && a.cell_pos[b.cells[size_t(j1)]] / kTileCells == tile;)
            ++j1;
          const int nc = int(j1 - j0);
          const int32_t* cells = b.cells.data() + j0;
          bool any = false;
          for (int64_t tl = 0; tl < b.n; ++tl)
            for (int c = 0; c < nc; ++c) {
              const bool vis = sees(a, b.t0 + tl, cells[c]);
              bias[tl * nc + c] = vis ? 0.0f : -INFINITY;
              any |= vis;
            }
          if (!any) continue;
          gather(a.k_type, static_cast<const uint8_t*>(a.k) + size_t(g) * k_head_bytes, k_row_bytes, cells, nc, dk, kt);
          gather(a.v_type, static_cast<const uint8_t*>(a.v) + size_t(g) * v_head_bytes, v_row_bytes, cells, nc, dv, vt);
          ft.n_cells = nc;
          tile_fn(ft);
        }
        if (k != k_begin)
          for (int r = 0; r < n_rows; ++r) merge_into(m[r], l[r], o + size_t(r) * dv, m2[r], l2[r], o2 + size_t(r) * dv, dv);
      }

      if (!split) {
        for (int r = 0; r < n_rows; ++r) {
          const int64_t tl = r / group, h = r % group;
          float* out = a.out + ((b.t0 + tl) * a.n_head + int64_t(g) * group + h) * dv;
          const float inv = l[r] > 0 ? 1.0f / l[r] : 0.0f;
          for (int i = 0; i < dv; ++i) out[i] = o[size_t(r) * dv + i] * inv;
        }
      } else {
        float* part = flash_partials_.data() + size_t(task) * partial_floats;
        for (int r = 0; r < n_rows; ++r) {
          float* pr = part + size_t(r) * (dv + 2);
          pr[0] = m[r];
          pr[1] = l[r];
          std::memcpy(pr + 2, o + size_t(r) * dv, size_t(dv) * 4);
        }
      }
    }
  };
  if (n_tasks == 1 || nt == 1) body(0, 1);
  else pool_.run(body);
  if (!split) return;

  // Merge each task's chunks left to right, as one thread running them in turn would have.
  pool_.parallel_for(n_pairs, 1, [&](int64_t begin, int64_t end) {
    for (int64_t pair = begin; pair < end; ++pair) {
      const FlashBlock& b = flash_blocks_[size_t(pair / a.n_head_kv)];
      const int g = int(pair % a.n_head_kv);
      const int64_t n_chunks = int64_t(b.chunks.size()) - 1;
      for (int r = 0; r < int(b.n) * group; ++r) {
        const int64_t tl = r / group, h = r % group;
        float* out = a.out + ((b.t0 + tl) * a.n_head + int64_t(g) * group + h) * dv;
        float m = -INFINITY, l = 0;
        std::fill(out, out + dv, 0.0f);
        for (int64_t k = 0; k < n_chunks; ++k) {
          const float* pr = flash_partials_.data() + size_t(pair * n_split + k) * partial_floats + size_t(r) * (dv + 2);
          merge_into(m, l, out, pr[0], pr[1], pr + 2, dv);
        }
        const float inv = l > 0 ? 1.0f / l : 0.0f;
        for (int i = 0; i < dv; ++i) out[i] *= inv;
      }
    }
  });
}

}  // namespace tandem::cpu
