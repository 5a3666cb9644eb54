// Whole rows dequantized: get_rows (token embeddings, f32 out) and a weight's rows to f16, the tiles
// the prefill GEMM reads (cuda_backend.cpp). A thread per element through dequant.cuh's decoders.
#include "backend/cuda/dequant.cuh"
#include "backend/cuda/kernels.h"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 256;

template <typename E>
__global__ void get_rows_kernel(const uint8_t* table, size_t row_stride, int64_t n_rows, int64_t n,
                                const int32_t* ids, float* out, FaultWord* fault) {
  const int32_t id = ids[blockIdx.y];
  float* o = out + int64_t(blockIdx.y) * n;
  if (id < 0 || id >= n_rows) {  // zeros, and the fault for synchronize() to report
    if (threadIdx.x == 0 && blockIdx.x == 0 && atomicCAS(&fault->code, 0, int32_t(DeviceFault::RowId)) == 0)
      fault->value = id;
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
      o[i] = 0.0f;
    return;
  }
  const uint8_t* row = table + size_t(id) * row_stride;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    o[i] = E{}(row, i);
}

template <typename E>
__global__ void dequantize_f16_kernel(const uint8_t* w, size_t row_stride, int64_t n, __half* out) {
  const uint8_t* row = w + size_t(blockIdx.y) * row_stride;
  __half* o = out + int64_t(blockIdx.y) * n;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    o[i] = __float2half_rn(E{}(row, i));
}

// Blocks along a row: enough to cover it, at most 64 (the rows give the rest of the parallelism).
unsigned row_blocks(int64_t n) { return std::min(n_blocks(n, kThreads), 64u); }

}  // namespace

bool has_decoder(WeightType t) {
  return with_elem(t, [](auto) {});
}

bool launch_get_rows(cudaStream_t s, WeightType t, const void* table, size_t row_stride, int64_t n_rows, int64_t n,
                     const int32_t* ids, int64_t n_ids, float* out, FaultWord* fault) {
  if (n_ids == 0) return has_decoder(t);
  return with_elem(t, [&](auto e) {
    for (int64_t i0 = 0; i0 < n_ids; i0 += kMaxGridBlocks) {  // gridDim.y is at most 65535
      const int64_t m = std::min<int64_t>(kMaxGridBlocks, n_ids - i0);
      get_rows_kernel<decltype(e)><<<dim3(row_blocks(n), unsigned(m)), kThreads, 0, s>>>(
          static_cast<const uint8_t*>(table), row_stride, n_rows, n, ids + i0, out + i0 * n, fault);
    }
  });
}

bool launch_dequantize_f16(cudaStream_t s, WeightType t, const void* w, size_t row_stride, int64_t n_rows, int64_t n,
                           void* out_f16) {
  return with_elem(t, [&](auto e) {
    for (int64_t r0 = 0; r0 < n_rows; r0 += kMaxGridBlocks) {
      const int64_t m = std::min<int64_t>(kMaxGridBlocks, n_rows - r0);
      dequantize_f16_kernel<decltype(e)><<<dim3(row_blocks(n), unsigned(m)), kThreads, 0, s>>>(
          static_cast<const uint8_t*>(w) + size_t(r0) * row_stride, row_stride, n, static_cast<__half*>(out_f16) + r0 * n);
    }
  });
}

}  // namespace tandem::cuda
