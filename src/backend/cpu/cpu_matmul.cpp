// cpu_matmul: activations quantized once per call (in parallel over tokens), then weight rows handed
// out in chunks from a shared counter so threads that finish early take more.
#include "backend/cpu/cpu_matmul.h"

#include <atomic>

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
void matmul_dequantized(ThreadPool& pool, const Weight& w, const float* x, int64_t n_tokens, float* y) {
  const int64_t n = w.row_length(), n_rows = w.n_rows();
  pool.parallel_for(n_rows, kMinChunkRows, [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(n));
    for (int64_t r = begin; r < end; ++r) {
      quant::dequantize_row(w.type, static_cast<const uint8_t*>(w.data) + size_t(r) * w.row_stride, row.data(), n);
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
                std::vector<uint8_t>& scratch) {
  if (!has_kernel(w.type)) return matmul_dequantized(pool, w, x, n_tokens, y);
  const int64_t n = w.row_length(), n_rows = w.n_rows();
  const CpuKernels& k = kernels();
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

}  // namespace tandem::cpu
