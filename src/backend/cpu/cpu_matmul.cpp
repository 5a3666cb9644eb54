// cpu_matmul: activations quantized once per call (in parallel over tokens), then weight rows handed
// out in chunks from a shared counter so threads that finish early take more.
#include "backend/cpu/cpu_matmul.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include <sys/mman.h>

#include "backend/cpu/kernels.h"
#include "quant/quant.h"

namespace tandem::cpu {
namespace {

// A chunk's weights stay in L2 while every token tile of the batch passes over them.
constexpr size_t kChunkWeightBytes = 256u << 10;
// Calls of at most this many tokens read each weight once (decode.cpp's few-token kernels take 8 at a time):
// nothing to keep in L2, so a thread's chunk is one long sequential stream. At 256 KB the hardware
// prefetcher restarted four times as often: DeepSeek-V2-Lite 4L tg64 80-85 -> 88-92 t/s, synth 1B Q4_K_M
// 41-44 -> 43-46 (AMD EPYC Zen 4, 2 threads, chrt, A/B interleaved three times, others' builds running).
constexpr int64_t kOnePassTokens = 8;
constexpr size_t kOnePassChunkBytes = 1u << 20;
constexpr int64_t kMinChunkRows = 16;
constexpr int64_t kTokenBlock = 64;  // tokens per gemm call: bounds the activations a chunk streams
// Panel kernels (AMX, AVX-512 VNNI and AVX2 panels) unpack each 16-row weight panel once per call: fewer, larger
// calls unpack less.
constexpr int64_t kPanelTokenBlock = 512;
constexpr int64_t kPanelRows = 16;
constexpr int64_t kPanelChunkRows = 256;  // at least, where every thread still gets two chunks
// Packed chunks are whole groups of the panels a few-token tile takes at once (avx512/panel_gemm.cpp: four).
constexpr int64_t kPackedGroupRows = 4 * kPanelRows;

// Types without a kernel (none of the engine's formats today): dequantize a row, f32 dots.
// data: n_rows rows of n elements, w.row_stride bytes apart.
void matmul_dequantized(ThreadPool& pool, const Weight& w, const void* data, int64_t n_rows, const float* x,
                        int64_t n_tokens, float* y) {
  const int64_t n = w.row_length();
  pool.parallel_for(n_rows, kMinChunkRows, [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(n));
    for (int64_t r = begin; r < end; ++r) {
      quant::dequantize_row(w.type, static_cast<const uint8_t*>(data) + size_t(r) * w.row_stride, row.data(), n);
      for (int64_t t = 0; t < n_tokens; ++t) {
        double sum = 0;
        for (int64_t i = 0; i < n; ++i) sum += double(row[size_t(i)]) * x[t * n + i];
        y[t * n_rows + r] = float(sum);
      }
    }
  });
}

// x's n_tokens rows of n quantized for w's kernels into scratch (in parallel over tokens); returns the row bytes.
size_t quantize_tokens(ThreadPool& pool, const CpuKernels& k, WeightType type, int64_t n, const float* x,
                       int64_t n_tokens, std::vector<uint8_t>& scratch) {
  const size_t act_row = activation_row_bytes(type, n);
  if (scratch.size() < act_row * size_t(n_tokens)) scratch.resize(act_row * size_t(n_tokens));
  uint8_t* act = scratch.data();
  const QuantizeActFn quantize = k.quantize_act[uint32_t(type)];
  pool.parallel_for(n_tokens, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) quantize(x + t * n, act + size_t(t) * act_row, n);
  });
  return act_row;
}

// Rows per chunk of a matrix of n_rows rows of row_bytes: one long stream for few tokens, else what stays in L2
// while the token tiles pass; enough chunks for every thread to get several, so uneven progress evens out.
int64_t chunk_rows_for(int64_t n_rows, size_t row_bytes, int64_t n_tokens, int n_threads) {
  const size_t chunk_bytes = n_tokens <= kOnePassTokens ? kOnePassChunkBytes : kChunkWeightBytes;
  const int64_t rows = std::max<int64_t>(kMinChunkRows, int64_t(chunk_bytes / std::max<size_t>(row_bytes, 1)));
  return std::min(rows, std::max<int64_t>(kMinChunkRows, n_rows / (int64_t(n_threads) * 4)));
}

}  // namespace

void cpu_matmul(ThreadPool& pool, const Weight& w, const float* x, int64_t n_tokens, float* y,
                std::vector<uint8_t>& scratch, bool batch_invariant) {
  if (!has_kernel(w.type)) return matmul_dequantized(pool, w, w.data, w.n_rows(), x, n_tokens, y);
  const int64_t n = w.row_length(), n_rows = w.n_rows();
  const CpuKernels& k = kernels(batch_invariant);
  const size_t act_row = quantize_tokens(pool, k, w.type, n, x, n_tokens, scratch);
  const uint8_t* act = scratch.data();
  const GemmFn gemm = k.gemm[uint32_t(w.type)];
  const bool panel = k.panel[uint32_t(w.type)] && n_tokens > 1;
  const int64_t token_block = panel ? kPanelTokenBlock : kTokenBlock;
  const auto* base = static_cast<const uint8_t*>(w.data);
  int64_t chunk_rows = chunk_rows_for(n_rows, w.row_stride, n_tokens, pool.size());
  // A panel call lays out all its tokens' activations again before its first panel (panel_x86.inc): 4 MB
  // at 8192 inputs, a sixth of a 3-panel call's time (prefill512 bench); its panels need no chunk in L2.
  if (panel) chunk_rows = std::max(chunk_rows, std::min(kPanelChunkRows, n_rows / (int64_t(pool.size()) * 2)));
  if (panel) chunk_rows = (chunk_rows + kPanelRows - 1) / kPanelRows * kPanelRows;
  const int64_t n_chunks = (n_rows + chunk_rows - 1) / chunk_rows;
  std::atomic<int64_t> next{0};
  pool.run([&](int, int) {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < n_chunks;) {
      const int64_t r0 = c * chunk_rows, r1 = std::min(n_rows, r0 + chunk_rows);
      for (int64_t t0 = 0; t0 < n_tokens; t0 += token_block) {
        const int64_t nt = std::min(token_block, n_tokens - t0);
        gemm(n, base + size_t(r0) * w.row_stride, w.row_stride, r1 - r0, act + size_t(t0) * act_row, act_row, nt,
             y + t0 * n_rows + r0, size_t(n_rows));
      }
    }
  });
}

Result<PackedWeight> pack_weight(ThreadPool& pool, const Weight& w, PackFn pack, PackedGemmFn gemm) {
  const int64_t n = w.row_length(), n_expert = w.n_expert(), rows = w.expert_rows();
  PackedWeight p;
  p.gemm = gemm;
  p.type = w.type, p.shape = w.shape;
  p.panel_bytes = pack(n, nullptr, 0, kPanelRows, nullptr);
  p.expert_bytes = pack(n, nullptr, 0, rows, nullptr);
  p.bytes = p.expert_bytes * size_t(n_expert);
  // In 2 MiB pages where the kernel gives them (THP "madvise"): decode streams the copy once per token, and
  // with 4 KiB pages its TLB misses cost a fifth of Gemma 3's decode speed, where the file's mapping had
  // the page cache's large folios.
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t align = p.bytes >= kHuge ? kHuge : 64;
  p.data.reset(static_cast<uint8_t*>(std::aligned_alloc(align, (p.bytes + align - 1) / align * align)));
  if (p.data && align == kHuge) madvise(p.data.get(), (p.bytes + align - 1) / align * align, MADV_HUGEPAGE);
  if (!p.data) return out_of_memory("%s: no memory for its repacked copy (%zu bytes; --no-repack)", w.name.c_str(),
                                         p.bytes);
  const int64_t panels_per_expert = (rows + kPanelRows - 1) / kPanelRows;
  pool.parallel_for(n_expert * panels_per_expert, 1, [&](int64_t begin, int64_t end) {
    // Runs of panels within one expert.
    for (int64_t i = begin; i < end;) {
      const int64_t e = i / panels_per_expert, p0 = i % panels_per_expert;
      const int64_t p1 = std::min(panels_per_expert, p0 + (end - i));
      const int64_t r0 = p0 * kPanelRows, r1 = std::min(rows, p1 * kPanelRows);
      pack(n, static_cast<const uint8_t*>(w.expert_data(e)) + size_t(r0) * w.row_stride, w.row_stride, r1 - r0,
           p.data.get() + size_t(e) * p.expert_bytes + size_t(p0) * p.panel_bytes);
      i += p1 - p0;
    }
  });
  return p;
}

void cpu_matmul_packed(ThreadPool& pool, const Weight& w, const PackedWeight& packed, const float* x, int64_t n_tokens,
                       float* y, std::vector<uint8_t>& scratch) {
  const int64_t n = w.row_length(), n_rows = w.n_rows();
  const size_t act_row = quantize_tokens(pool, kernels(), w.type, n, x, n_tokens, scratch);
  const uint8_t* act = scratch.data();
  // Each call lays out its tokens' activations again (packed_gemm's first step) and keeps its weights in L2 a
  // group of panels at a time whatever its rows: the fewest chunks that still give every thread four.
  int64_t chunk_rows = std::max(kMinChunkRows, n_rows / (int64_t(pool.size()) * 4));
  chunk_rows = (chunk_rows + kPackedGroupRows - 1) / kPackedGroupRows * kPackedGroupRows;
  const int64_t n_chunks = (n_rows + chunk_rows - 1) / chunk_rows;
  std::atomic<int64_t> next{0};
  pool.run([&](int, int) {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < n_chunks;) {
      const int64_t r0 = c * chunk_rows, r1 = std::min(n_rows, r0 + chunk_rows);
      for (int64_t t0 = 0; t0 < n_tokens; t0 += kPanelTokenBlock) {
        const int64_t nt = std::min(kPanelTokenBlock, n_tokens - t0);
        packed.gemm(n, packed.panel(0, r0 / kPanelRows), r1 - r0,
                    act + size_t(t0) * act_row, act_row, nt, y + t0 * n_rows + r0, size_t(n_rows));
      }
    }
  });
}

namespace {

// Groups the (token, slot) pairs by expert: a counting sort, in token order within an expert. Fills
// s.offset and s.slot. With expert_data, pairs whose expert has a null pointer are left out: a caller
// running the experts in groups computes them in another call. An expert's rows are grouped alike
// either way, so its results have the same bits.
void group_by_expert(const int32_t* ids, int64_t n_slots, int64_t n_expert, const void* const* expert_data,
                     MatmulIdScratch& s) {
  auto included = [&](int32_t e) { return !expert_data || expert_data[e]; };
  s.offset.assign(size_t(n_expert + 1), 0);
  for (int64_t i = 0; i < n_slots; ++i) {
    TANDEM_CHECK(ids[i] >= 0 && ids[i] < n_expert);
    if (included(ids[i])) ++s.offset[size_t(ids[i]) + 1];
  }
  for (int64_t e = 0; e < n_expert; ++e) s.offset[size_t(e + 1)] += s.offset[size_t(e)];
  s.cursor.assign(s.offset.begin(), s.offset.end() - 1);
  s.slot.resize(size_t(s.offset.back()));
  for (int64_t i = 0; i < n_slots; ++i)
    if (included(ids[i])) s.slot[size_t(s.cursor[size_t(ids[i])]++)] = i;
}

// Work items: (expert, row chunk) over the experts in use, enough of them for every thread to get
// several. Chunks are whole 16-row panels so the panel kernels can serve any expert's group.
// chunk_bytes_per_row: weight bytes one row of a chunk reads in the file's layout; packed: the fewest chunks that
// balance the threads, in whole groups of the four panels a packed few-token tile takes at once (as
// cpu_matmul_packed). Returns the chunk's rows.
int64_t plan_items(int64_t n_expert, int64_t n_rows, size_t chunk_bytes_per_row, bool packed, int n_threads,
                   MatmulIdScratch& s) {
  int64_t n_active = 0, most_tokens = 0;
  for (int64_t e = 0; e < n_expert; ++e) {
    n_active += s.offset[size_t(e + 1)] > s.offset[size_t(e)];
    most_tokens = std::max(most_tokens, s.offset[size_t(e + 1)] - s.offset[size_t(e)]);
  }
  const int64_t balanced = n_rows * n_active / (int64_t(n_threads) * 4);  // rows that give every thread four items
  const size_t chunk_bytes = most_tokens <= kOnePassTokens ? kOnePassChunkBytes : kChunkWeightBytes;
  // Packed calls: as cpu_matmul_packed, the fewest chunks that balance the threads.
  int64_t chunk_rows = packed ? std::min(n_rows, balanced)
                              : std::min(int64_t(chunk_bytes / std::max<size_t>(chunk_bytes_per_row, 1)), balanced);
  chunk_rows = std::max(kMinChunkRows, chunk_rows);
  const int64_t granule = packed ? kPackedGroupRows : kPanelRows;
  chunk_rows = (chunk_rows + granule - 1) / granule * granule;
  s.items.clear();
  for (int64_t e = 0; e < n_expert; ++e)
    if (s.offset[size_t(e + 1)] > s.offset[size_t(e)])
      for (int64_t r0 = 0; r0 < n_rows; r0 += chunk_rows) s.items.push_back({e, r0});
  return chunk_rows;
}

// Quantizes the input of every grouped row (x_row(slot)) for w's kernels into act; returns its row bytes.
template <class XRow>
size_t quantize_grouped(ThreadPool& pool, const CpuKernels& k, WeightType type, int64_t n, const XRow& x_row,
                        const MatmulIdScratch& s, std::vector<uint8_t>& act) {
  const size_t act_row = activation_row_bytes(type, n);
  const int64_t n_slots = int64_t(s.slot.size());
  if (act.size() < act_row * size_t(n_slots)) act.resize(act_row * size_t(n_slots));
  uint8_t* out = act.data();
  const QuantizeActFn quantize = k.quantize_act[uint32_t(type)];
  // A token's input is quantized once per expert it chose: n_used small rows, next to the matmuls nothing.
  pool.parallel_for(n_slots, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) quantize(x_row(s.slot[size_t(r)]), out + size_t(r) * act_row, n);
  });
  return act_row;
}

// One expert's matrix for gemm_group: its rows in the file's layout, or its packed panels.
struct ExpertMatrix {
  const uint8_t* base = nullptr;  // row 0 (the file's layout)
  size_t row_stride = 0;
  const PackedWeight* packed = nullptr;  // else its panels, from panel `panel0`
  int64_t expert = 0, panel0 = 0;
};

ExpertMatrix expert_matrix(const Weight& w, const PackedWeight* packed, const void* const* expert_data, int64_t e,
                           int64_t row0 = 0) {
  if (packed) return {nullptr, 0, packed, e, row0 / kPanelRows};
  return {static_cast<const uint8_t*>(expert_data ? expert_data[e] : w.expert_data(e)) + size_t(row0) * w.row_stride,
          w.row_stride};
}

// Rows [r0, r1) of an expert's matrix times the expert's grouped rows [g0, g1) of act, into out ([grouped rows, ld],
// columns r0..r1). r0 is whole panels.
void gemm_group(const CpuKernels& k, WeightType type, int64_t n, const ExpertMatrix& m, int64_t r0, int64_t r1,
                const uint8_t* act, size_t act_row, int64_t g0, int64_t g1, float* out, int64_t ld) {
  const bool panel = m.packed || (k.panel[uint32_t(type)] && g1 - g0 > 1);
  const int64_t token_block = panel ? kPanelTokenBlock : kTokenBlock;
  for (int64_t t0 = g0; t0 < g1; t0 += token_block) {
    const int64_t nt = std::min(token_block, g1 - t0);
    if (m.packed)
      m.packed->gemm(n, m.packed->panel(m.expert, m.panel0 + r0 / kPanelRows), r1 - r0, act + size_t(t0) * act_row,
                     act_row, nt, out + t0 * ld + r0, size_t(ld));
    else
      k.gemm[uint32_t(type)](n, m.base + size_t(r0) * m.row_stride, m.row_stride, r1 - r0, act + size_t(t0) * act_row,
                             act_row, nt, out + t0 * ld + r0, size_t(ld));
  }
}

// Back from expert order to [n_tokens, n_used, n_rows].
void scatter_grouped(ThreadPool& pool, const MatmulIdScratch& s, const float* grouped, int64_t n_rows, float* y) {
  pool.parallel_for(int64_t(s.slot.size()), 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      std::memcpy(y + s.slot[size_t(r)] * n_rows, grouped + r * n_rows, size_t(n_rows) * sizeof(float));
  });
}

}  // namespace

void cpu_matmul_id(ThreadPool& pool, const Weight& w, const PackedWeight* packed, const void* const* expert_data,
                   const float* x, bool x_per_slot, const int32_t* ids, int64_t n_tokens, int n_used, float* y,
                   MatmulIdScratch& s, bool batch_invariant) {
  const int64_t n_expert = w.n_expert(), n = w.row_length(), n_rows = w.expert_rows();
  const int64_t n_slots = n_tokens * n_used;
  auto x_row = [&](int64_t slot) { return x + (x_per_slot ? slot : slot / n_used) * n; };
  group_by_expert(ids, n_slots, n_expert, expert_data, s);
  if (!has_kernel(w.type)) {
    for (int64_t i : s.slot)
      matmul_dequantized(pool, w, expert_matrix(w, nullptr, expert_data, ids[i]).base, n_rows, x_row(i), 1,
                         y + i * n_rows);
    return;
  }
  const CpuKernels& k = kernels(batch_invariant);
  const size_t act_row = quantize_grouped(pool, k, w.type, n, x_row, s, s.act);
  s.out.resize(s.slot.size() * size_t(n_rows));
  const int64_t chunk_rows = plan_items(n_expert, n_rows, w.row_stride, packed, pool.size(), s);
  std::atomic<int64_t> next{0};
  const int64_t n_items = int64_t(s.items.size());
  pool.run([&](int, int) {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < n_items;) {
      const auto [e, r0] = s.items[size_t(c)];
      gemm_group(k, w.type, n, expert_matrix(w, packed, expert_data, e), r0, std::min(n_rows, r0 + chunk_rows),
                 s.act.data(), act_row, s.offset[size_t(e)], s.offset[size_t(e + 1)], s.out.data(), n_rows);
    }
  });
  scatter_grouped(pool, s, s.out.data(), n_rows, y);
}

void cpu_matmul_id_swiglu(ThreadPool& pool, const Weight& gate, const PackedWeight* gate_packed,
                          const void* const* gate_data, const Weight* up, const PackedWeight* up_packed,
                          const void* const* up_data, const float* x, const int32_t* ids, int64_t n_tokens, int n_used,
                          float* y, SwigluFn swiglu, MatmulIdScratch& s, bool batch_invariant) {
  // Fused ffn_gate_up_exps: each expert's n_ff gate rows, then its n_ff up rows.
  const Weight& u = up ? *up : gate;
  const void* const* u_data = up ? up_data : gate_data;
  const int64_t n_expert = gate.n_expert(), n = gate.row_length();
  const int64_t ff = up ? gate.expert_rows() : gate.expert_rows() / 2, up_row0 = up ? 0 : ff;
  // The fused form's up rows start inside a panel unless n_ff is whole panels: then both halves read the file.
  if (!up) {
    if (ff % kPanelRows) gate_packed = nullptr;
    up_packed = gate_packed;
  }
  const int64_t n_slots = n_tokens * n_used;
  auto x_row = [&](int64_t slot) { return x + (slot / n_used) * n; };
  group_by_expert(ids, n_slots, n_expert, gate_data, s);
  s.out.resize(size_t(n_slots * ff));
  s.out_up.resize(size_t(n_slots * ff));
  float *g_out = s.out.data(), *u_out = s.out_up.data();  // grouped rows: [n_slots, ff]
  if (!has_kernel(gate.type) || !has_kernel(u.type)) {
    for (int64_t i : s.slot) {
      matmul_dequantized(pool, gate, expert_matrix(gate, nullptr, gate_data, ids[i]).base, ff, x_row(i), 1,
                         g_out + i * ff);
      matmul_dequantized(pool, u, expert_matrix(u, nullptr, u_data, ids[i], up_row0).base, ff, x_row(i), 1,
                         u_out + i * ff);
      swiglu(g_out + i * ff, u_out + i * ff, ff, y + i * ff);
    }
    return;
  }
  const CpuKernels& k = kernels(batch_invariant);
  const size_t act_row = quantize_grouped(pool, k, gate.type, n, x_row, s, s.act);
  // up reads the same activations unless its type wants another format (a mix that types them apart).
  const bool shared_act = k.quantize_act[uint32_t(u.type)] == k.quantize_act[uint32_t(gate.type)] &&
                          activation_row_bytes(u.type, n) == act_row;
  const size_t act_row_up = shared_act ? act_row : quantize_grouped(pool, k, u.type, n, x_row, s, s.act_up);
  const uint8_t* act_up = shared_act ? s.act.data() : s.act_up.data();
  const int64_t chunk_rows =
      plan_items(n_expert, ff, gate.row_stride + u.row_stride, gate_packed || up_packed, pool.size(), s);
  std::atomic<int64_t> next{0};
  const int64_t n_items = int64_t(s.items.size());
  pool.run([&](int, int) {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < n_items;) {
      const auto [e, r0] = s.items[size_t(c)];
      const int64_t r1 = std::min(ff, r0 + chunk_rows), g0 = s.offset[size_t(e)], g1 = s.offset[size_t(e + 1)];
      gemm_group(k, gate.type, n, expert_matrix(gate, gate_packed, gate_data, e), r0, r1, s.act.data(), act_row, g0,
                 g1, g_out, ff);
      gemm_group(k, u.type, n, expert_matrix(u, up_packed, u_data, e, up_row0), r0, r1, act_up, act_row_up, g0, g1,
                 u_out, ff);
      // While the chunk's outputs are in cache. The swiglu kernels give an element the same bits
      // wherever a call starts (their tails go through the vector code), so this equals one call over all.
      for (int64_t t = g0; t < g1; ++t) swiglu(g_out + t * ff + r0, u_out + t * ff + r0, r1 - r0, g_out + t * ff + r0);
    }
  });
  scatter_grouped(pool, s, g_out, ff, y);
}

}  // namespace tandem::cpu
