// Flash attention on the CPU. The batch's tokens are cut into blocks (consecutive tokens of one
// sequence); a task is one block against one KV head: its query rows (block tokens x the heads of the
// group) stream over the cells the block can see in tiles of kTileCells, each tile's K and V converted
// once to f32 (quantized caches are read directly, a head at a time) and shared by all rows, through
// the online softmax of CpuOps::flash_tile. No score row longer than a tile exists. When blocks x KV
// heads leave threads idle (decoding), each task's cells are split into chunks whose partial results
// (max, sum, output) are merged at the end, so one token's attention uses every thread.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "backend/cpu/cpu_backend.h"

namespace tandem::cpu {
namespace {

constexpr int64_t kBlockTokens = 32;
constexpr int kTileCells = 64;

bool sees(const AttentionArgs& a, int64_t t, int32_t cell) {
  const int32_t cp = a.cell_pos[cell], p = a.token_pos[t];
  if (cp < 0 || cp > p || a.cell_seq[cell] != a.token_seq[t]) return false;
  return a.sliding_window <= 0 || p - cp < a.sliding_window;
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
    }
  });

  // Tasks: (block, KV head, chunk of the block's cells).
  const int nt = pool_.size();
  const int64_t n_pairs = n_blocks * a.n_head_kv;
  int64_t max_cells = 0;
  for (int64_t bi = 0; bi < n_blocks; ++bi) max_cells = std::max<int64_t>(max_cells, int64_t(flash_blocks_[size_t(bi)].cells.size()));
  int64_t n_split = 1;
  if (n_pairs < 2 * nt) n_split = std::clamp<int64_t>((2 * nt + n_pairs - 1) / n_pairs, 1, std::max<int64_t>(1, max_cells / (2 * kTileCells)));
  const int64_t chunk = n_split == 1 ? std::max<int64_t>(max_cells, 1) : (max_cells + n_split - 1) / n_split;
  const int64_t n_tasks = n_pairs * n_split;
  const int64_t max_rows = kBlockTokens * group;
  const size_t partial_floats = size_t(max_rows) * size_t(dv + 2);
  if (n_split > 1 && flash_partials_.size() < size_t(n_tasks) * partial_floats)
    flash_partials_.resize(size_t(n_tasks) * partial_floats);

  const size_t scratch_floats = size_t(max_rows) * (size_t(dk) + kTileCells + size_t(dv) + 2) +
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
      const int64_t pair = task / n_split, split = task % n_split;
      const FlashBlock& b = flash_blocks_[size_t(pair / a.n_head_kv)];
      const int g = int(pair % a.n_head_kv);
      const int n_rows = int(b.n) * group;
      const int64_t c_begin = std::min<int64_t>(int64_t(b.cells.size()), split * chunk);
      const int64_t c_end = std::min<int64_t>(int64_t(b.cells.size()), c_begin + chunk);

      float* q = base;                                    // n_rows x dk
      float* s = q + size_t(max_rows) * dk;               // n_rows x kTileCells
      float* m = s + size_t(max_rows) * kTileCells;       // n_rows
      float* l = m + max_rows;                            // n_rows
      float* o = l + max_rows;                            // n_rows x dv
      float* kt = o + size_t(max_rows) * dv;              // kTileCells x dk
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
      ft.m = m;
      ft.l = l;
      ft.o = o;
      ft.s = s;
      for (int64_t j0 = c_begin; j0 < c_end; j0 += kTileCells) {
        const int nc = int(std::min<int64_t>(kTileCells, c_end - j0));
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

      if (n_split == 1) {
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
  if (n_split == 1) return;

  // Merge the chunks: rescale each partial to the common maximum.
  pool_.parallel_for(n_pairs, 1, [&](int64_t begin, int64_t end) {
    for (int64_t pair = begin; pair < end; ++pair) {
      const FlashBlock& b = flash_blocks_[size_t(pair / a.n_head_kv)];
      const int g = int(pair % a.n_head_kv);
      for (int r = 0; r < int(b.n) * group; ++r) {
        const int64_t tl = r / group, h = r % group;
        float* out = a.out + ((b.t0 + tl) * a.n_head + int64_t(g) * group + h) * dv;
        float mx = -INFINITY;
        for (int64_t sp = 0; sp < n_split; ++sp)
          mx = std::max(mx, flash_partials_[size_t(pair * n_split + sp) * partial_floats + size_t(r) * (dv + 2)]);
        std::fill(out, out + dv, 0.0f);
        float sum = 0;
        if (mx == -INFINITY) continue;
        for (int64_t sp = 0; sp < n_split; ++sp) {
          const float* pr = flash_partials_.data() + size_t(pair * n_split + sp) * partial_floats + size_t(r) * (dv + 2);
          if (pr[0] == -INFINITY) continue;
          const float w = std::exp(pr[0] - mx);
          sum += pr[1] * w;
          for (int i = 0; i < dv; ++i) out[i] += pr[2 + i] * w;
        }
        const float inv = sum > 0 ? 1.0f / sum : 0.0f;
        for (int i = 0; i < dv; ++i) out[i] *= inv;
      }
    }
  });
}

}  // namespace tandem::cpu
