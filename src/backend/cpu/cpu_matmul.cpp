// cpu_matmul: activations quantized once per call (in parallel over tokens), then weight rows handed
// out in chunks from a shared counter so threads that finish early take more.
#include "backend/cpu/cpu_matmul.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "backend/cpu/kernels.h"
#include "quant/quant.h"

namespace tandem::cpu {
namespace {

// A chunk's weights stay in L2 while every token tile of the batch passes over them.
constexpr size_t kChunkWeightBytes = 256u << 10;
constexpr int64_t kMinChunkRows = 16;
constexpr int64_t kTokenBlock = 64;  // tokens per gemm call: bounds the activations a chunk streams
// Panel kernels (AMX, AVX-512 VNNI panels) unpack each 16-row weight panel once per call: fewer, larger
// calls unpack less.
constexpr int64_t kPanelTokenBlock = 512;
constexpr int64_t kPanelRows = 16;

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

}  // namespace

void cpu_matmul(ThreadPool& pool, const Weight& w, const float* x, int64_t n_tokens, float* y,
                std::vector<uint8_t>& scratch, bool batch_invariant) {
  if (!has_kernel(w.type)) return matmul_dequantized(pool, w, w.data, w.n_rows(), x, n_tokens, y);
  const int64_t n = w.row_length(), n_rows = w.n_rows();
  const CpuKernels& k = kernels(batch_invariant);
  const size_t act_row = activation_row_bytes(w.type, n);
  if (scratch.size() < act_row * size_t(n_tokens)) scratch.resize(act_row * size_t(n_tokens));
  uint8_t* act = scratch.data();
  const QuantizeActFn quantize = k.quantize_act[uint32_t(w.type)];
  pool.parallel_for(n_tokens, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) quantize(x + t * n, act + size_t(t) * act_row, n);
  });

  const GemmFn gemm = k.gemm[uint32_t(w.type)];
  const bool panel = k.panel[uint32_t(w.type)] && n_tokens > 1;
  const int64_t token_block = panel ? kPanelTokenBlock : kTokenBlock;
  const auto* base = static_cast<const uint8_t*>(w.data);
  int64_t chunk_rows = std::max<int64_t>(kMinChunkRows, int64_t(kChunkWeightBytes / std::max<size_t>(w.row_stride, 1)));
  // Enough chunks for every thread to get several, so uneven progress evens out.
  chunk_rows = std::min(chunk_rows, std::max<int64_t>(kMinChunkRows, n_rows / (int64_t(pool.size()) * 4)));
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

void cpu_matmul_id(ThreadPool& pool, const Weight& w, const float* x, bool x_per_slot, const int32_t* ids,
                   int64_t n_tokens, int n_used, float* y, MatmulIdScratch& s, bool batch_invariant) {
  const int64_t n_expert = w.n_expert(), n = w.row_length(), n_rows = w.expert_rows();
  const int64_t n_slots = n_tokens * n_used;
  auto x_row = [&](int64_t slot) { return x + (x_per_slot ? slot : slot / n_used) * n; };

  // Group the (token, slot) pairs by expert: a counting sort, in token order within an expert.
  s.offset.assign(size_t(n_expert + 1), 0);
  for (int64_t i = 0; i < n_slots; ++i) {
    TANDEM_CHECK(ids[i] >= 0 && ids[i] < n_expert);
    ++s.offset[size_t(ids[i]) + 1];
  }
  for (int64_t e = 0; e < n_expert; ++e) s.offset[size_t(e + 1)] += s.offset[size_t(e)];
  s.cursor.assign(s.offset.begin(), s.offset.end() - 1);
  s.slot.resize(size_t(n_slots));
  for (int64_t i = 0; i < n_slots; ++i) s.slot[size_t(s.cursor[size_t(ids[i])]++)] = i;

  if (!has_kernel(w.type)) {
    for (int64_t i = 0; i < n_slots; ++i)
      matmul_dequantized(pool, w, w.expert_data(ids[i]), n_rows, x_row(i), 1, y + i * n_rows);
    return;
  }
  const CpuKernels& k = kernels(batch_invariant);
  const size_t act_row = activation_row_bytes(w.type, n);
  if (s.act.size() < act_row * size_t(n_slots)) s.act.resize(act_row * size_t(n_slots));
  s.out.resize(size_t(n_slots * n_rows));
  uint8_t* act = s.act.data();
  // A token's input is quantized once per expert it chose: n_used small rows, next to the matmuls nothing.
  const QuantizeActFn quantize = k.quantize_act[uint32_t(w.type)];
  pool.parallel_for(n_slots, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) quantize(x_row(s.slot[size_t(r)]), act + size_t(r) * act_row, n);
  });

  // Work items: (expert, row chunk) over the experts in use, enough of them for every thread to get
  // several. Chunks are whole 16-row panels so the panel kernels can serve any expert's group.
  int64_t n_active = 0;
  for (int64_t e = 0; e < n_expert; ++e) n_active += s.offset[size_t(e + 1)] > s.offset[size_t(e)];
  int64_t chunk_rows = std::max<int64_t>(kMinChunkRows, int64_t(kChunkWeightBytes / std::max<size_t>(w.row_stride, 1)));
  chunk_rows = std::min(chunk_rows,
                        std::max<int64_t>(kMinChunkRows, n_rows * n_active / (int64_t(pool.size()) * 4)));
  chunk_rows = (chunk_rows + kPanelRows - 1) / kPanelRows * kPanelRows;
  s.items.clear();
  for (int64_t e = 0; e < n_expert; ++e)
    if (s.offset[size_t(e + 1)] > s.offset[size_t(e)])
      for (int64_t r0 = 0; r0 < n_rows; r0 += chunk_rows) s.items.push_back({e, r0});

  const GemmFn gemm = k.gemm[uint32_t(w.type)];
  const bool has_panel = k.panel[uint32_t(w.type)];
  std::atomic<int64_t> next{0};
  const int64_t n_items = int64_t(s.items.size());
  pool.run([&](int, int) {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < n_items;) {
      const auto [e, r0] = s.items[size_t(c)];
      const int64_t r1 = std::min(n_rows, r0 + chunk_rows);
      const int64_t g0 = s.offset[size_t(e)], g1 = s.offset[size_t(e + 1)];
      const int64_t token_block = has_panel && g1 - g0 > 1 ? kPanelTokenBlock : kTokenBlock;
      const auto* base = static_cast<const uint8_t*>(w.expert_data(e)) + size_t(r0) * w.row_stride;
      for (int64_t t0 = g0; t0 < g1; t0 += token_block) {
        const int64_t nt = std::min(token_block, g1 - t0);
        gemm(n, base, w.row_stride, r1 - r0, act + size_t(t0) * act_row, act_row, nt, s.out.data() + t0 * n_rows + r0,
             size_t(n_rows));
      }
    }
  });
  // Back from expert order to [n_tokens, n_used, n_rows].
  pool.parallel_for(n_slots, 16, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      std::memcpy(y + s.slot[size_t(r)] * n_rows, s.out.data() + r * n_rows, size_t(n_rows) * sizeof(float));
  });
}

}  // namespace tandem::cpu
