// Matrix times a few vectors: decode's matmuls and the experts' slots. A warp per weight row, a thread
// block per 4 rows and one column. Q8_0, Q4_0, Q4_K and Q6_K take the integer path: the activations
// quantized to int8 blocks of 32 (scale and sum kept, as llama.cpp's q8_1) and dotted with __dp4a,
// which every target from sm_61 (P40) has; every other type with a decoder multiplies f32 elements
// through dequant.cuh. Prefill's many-token matmuls go to cuBLAS instead (cuda_backend.cpp).
#include "backend/cuda/dequant.cuh"
#include "backend/cuda/dot_q8.cuh"
#include "backend/cuda/kernels.h"

namespace tandem::cuda {
namespace {

constexpr int kRowsPerBlock = 4;  // warps per block

// A warp per block of 32: d = amax / 127, q = round(x / d) (llama.cpp's quantize_q8_1).
__global__ void quantize_q8_kernel(const float* x, int64_t n_blocks, BlockQ8x32* out) {
  const int64_t b = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (b >= n_blocks) return;
  const int lane = threadIdx.x % kWarp;
  const float v = x[b * 32 + lane];
  const float amax = warp_max(fabsf(v));
  const float d = amax / 127.0f;
  const int q = amax == 0.0f ? 0 : __float2int_rn(v / d);
  const int sum = warp_sum(q);
  out[b].qs[lane] = int8_t(q);
  if (lane == 0) {
    out[b].d = d;
    out[b].sum = sum;
  }
}

// Which matrix column c multiplies, or null (a fault raised) when its id is out of range.
__device__ __forceinline__ const uint8_t* matrix_of(const MatVec& m, int64_t c, FaultWord* fault) {
  int64_t e = 0;
  if (m.ids) {
    e = m.ids[c];
    if (e < 0 || e >= m.n_expert) {
      if (threadIdx.x == 0 && atomicCAS(&fault->code, 0, int32_t(DeviceFault::ExpertId)) == 0) fault->value = int32_t(e);
      return nullptr;
    }
  }
  return static_cast<const uint8_t*>(m.w) + size_t(e) * m.expert_stride;
}

// One warp per row and column: `partial(row, x_row, lane)` sums the lane's share of the row's dot
// product with column c's activations (x_row: that column's index into the activation rows).
template <typename Partial>
__device__ __forceinline__ void matvec_row(const MatVec& m, FaultWord* fault, Partial partial) {
  const int64_t c = blockIdx.y, r = int64_t(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  const uint8_t* w = matrix_of(m, c, fault);
  if (r >= m.n_rows) return;
  float sum = 0;
  if (w) sum = warp_sum(partial(w + size_t(r) * m.row_stride, c / m.x_group, lane));
  if (lane == 0) m.y[c * m.n_rows + r] = sum;  // 0 for a faulted expert id
}

template <typename Dot>
__global__ void matvec_q8_kernel(MatVec m, const BlockQ8x32* xq, FaultWord* fault) {
  matvec_row(m, fault, [&](const uint8_t* row, int64_t x_row, int lane) {
    const int64_t n_blocks = m.n / 32;
    const BlockQ8x32* x = xq + x_row * n_blocks;
    float sum = 0;
    for (int64_t k = lane; k < n_blocks; k += kWarp) sum += Dot{}(row, k, x[k]);
    return sum;
  });
}

template <typename E>
__global__ void matvec_f32_kernel(MatVec m, FaultWord* fault) {
  matvec_row(m, fault, [&](const uint8_t* row, int64_t x_row, int lane) {
    const float* x = m.x + x_row * m.n;
    float sum = 0;
    for (int64_t i = lane; i < m.n; i += kWarp) sum += E{}(row, i) * x[i];
    return sum;
  });
}

int64_t n_x_rows(const MatVec& m) { return (m.n_cols + m.x_group - 1) / m.x_group; }

}  // namespace

bool has_matvec(WeightType t) { return has_decoder(t); }

size_t matvec_q8_bytes(int64_t n_cols, int64_t n) { return size_t(n_cols) * size_t(n / 32) * sizeof(BlockQ8x32); }

bool launch_matvec(cudaStream_t s, const MatVec& m, void* q8_scratch, FaultWord* fault) {
  if (m.n_cols > kMaxGridBlocks) return false;  // callers split larger batches (gridDim.y)
  const dim3 grid(n_blocks(m.n_rows, kRowsPerBlock), unsigned(m.n_cols));
  if (m.n_rows == 0 || m.n_cols == 0) return has_matvec(m.type);
  auto* xq = static_cast<BlockQ8x32*>(q8_scratch);
  const bool q8 = with_q8_dot(m.type, [&](auto dot) {
    const int64_t n_blocks_x = n_x_rows(m) * (m.n / 32);
    quantize_q8_kernel<<<n_blocks(n_blocks_x, 8), 8 * kWarp, 0, s>>>(m.x, n_blocks_x, xq);
    matvec_q8_kernel<decltype(dot)><<<grid, kRowsPerBlock * kWarp, 0, s>>>(m, xq, fault);
  });
  if (q8) return true;
  return with_elem(m.type, [&](auto e) { matvec_f32_kernel<decltype(e)><<<grid, kRowsPerBlock * kWarp, 0, s>>>(m, fault); });
}

}  // namespace tandem::cuda
