// Elementwise kernels: add, bias, the gated activations, scale, softcap, the experts' weighted sum,
// the Walsh-Hadamard rotation, f32 -> f16 and the grouped expert GEMM's row gather and scatter.
// Numerics follow the CPU backend's generic ops (src/backend/cpu/generic/ops.cpp, cpu_backend.cpp), so
// results agree within float rounding.
#include <cmath>

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.h"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 256;

#define TANDEM_FOR_EACH(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

__global__ void add_kernel(const float* a, const float* b, int64_t n, float* out) {
  TANDEM_FOR_EACH(i, n) out[i] = a[i] + b[i];
}

__global__ void add_bias_kernel(float* y, const float* bias, int64_t n_tokens, int64_t n) {
  TANDEM_FOR_EACH(i, n_tokens * n) y[i] += bias[i % n];
}

__global__ void swiglu_kernel(const float* gate, const float* up, int64_t n, float* out) {
  TANDEM_FOR_EACH(i, n) out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

// As the CPU's table: the gate rounded to f16, tanh-GELU of that in float, rounded to f16 again
// (ggml's GELU is a lookup in such a table); saturated outside (-10, 10).
__global__ void geglu_kernel(const float* gate, const float* up, int64_t n, float* out) {
  constexpr float kSqrt2OverPi = 0.79788456080286535587989211986876f, kCoefA = 0.044715f;
  TANDEM_FOR_EACH(i, n) {
    const float x = gate[i];
    float g;
    if (x <= -10.0f) {
      g = 0.0f;
    } else if (x >= 10.0f) {
      g = x;
    } else {
      const float h = __half2float(__float2half_rn(x));
      g = __half2float(__float2half_rn(0.5f * h * (1.0f + tanhf(kSqrt2OverPi * h * (1.0f + kCoefA * h * h)))));
    }
    out[i] = g * up[i];
  }
}

__global__ void scale_kernel(float* x, int64_t n, float factor) { TANDEM_FOR_EACH(i, n) x[i] *= factor; }

__global__ void softcap_kernel(float* x, int64_t n, float cap) { TANDEM_FOR_EACH(i, n) x[i] = cap * tanhf(x[i] / cap); }

// Summed in j order, as the CPU (ggml's mul then adds).
__global__ void weighted_sum_kernel(const float* x, const float* w, int64_t n_rows, int n_terms, int64_t n,
                                    float* out) {
  TANDEM_FOR_EACH(idx, n_rows * n) {
    const int64_t r = idx / n, i = idx % n;
    const float* xr = x + r * n_terms * n + i;
    const float* wr = w + r * n_terms;
    float o = xr[0] * wr[0];
    for (int j = 1; j < n_terms; ++j) o += xr[int64_t(j) * n] * wr[j];
    out[idx] = o;
  }
}

// One block of `block` values per thread block, in shared memory: log2(block) butterfly passes of
// block/2 pairs, then the 1/sqrt(block) of the orthonormal transform.
__global__ void hadamard_kernel(float* x, int block) {
  extern __shared__ float v[];
  float* base = x + int64_t(blockIdx.x) * block;
  for (int i = threadIdx.x; i < block; i += blockDim.x) v[i] = base[i];
  __syncthreads();
  for (int h = 1; h < block; h *= 2) {
    for (int p = threadIdx.x; p < block / 2; p += blockDim.x) {
      const int j = (p / h) * 2 * h + p % h;
      const float a = v[j], c = v[j + h];
      v[j] = a + c;
      v[j + h] = a - c;
    }
    __syncthreads();
  }
  const float norm = rsqrtf(float(block));
  for (int i = threadIdx.x; i < block; i += blockDim.x) base[i] = v[i] * norm;
}

__global__ void f32_to_f16_kernel(const float* x, int64_t n, __half* out) { TANDEM_FOR_EACH(i, n) out[i] = __float2half_rn(x[i]); }

__global__ void gather_f16_kernel(const float* x, int64_t x_group, int64_t n, const int32_t* order, int64_t n_rows,
                                  __half* out) {
  TANDEM_FOR_EACH(i, n_rows * n) out[i] = __float2half_rn(x[(order[i / n] / x_group) * n + i % n]);
}

__global__ void scatter_rows_kernel(const float* src, const int32_t* order, int64_t n_rows, int64_t n, float* y) {
  TANDEM_FOR_EACH(i, n_rows * n) y[order[i / n] * n + i % n] = src[i];
}

}  // namespace

void launch_add(cudaStream_t s, const float* a, const float* b, int64_t n, float* out) {
  add_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(a, b, n, out);
}
void launch_add_bias(cudaStream_t s, float* y, const float* bias, int64_t n_tokens, int64_t n) {
  add_bias_kernel<<<grid_for(n_tokens * n, kThreads), kThreads, 0, s>>>(y, bias, n_tokens, n);
}
void launch_swiglu(cudaStream_t s, const float* gate, const float* up, int64_t n, float* out) {
  swiglu_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(gate, up, n, out);
}
void launch_geglu(cudaStream_t s, const float* gate, const float* up, int64_t n, float* out) {
  geglu_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(gate, up, n, out);
}
void launch_scale(cudaStream_t s, float* x, int64_t n, float factor) {
  scale_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(x, n, factor);
}
void launch_softcap(cudaStream_t s, float* x, int64_t n, float cap) {
  softcap_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(x, n, cap);
}
void launch_weighted_sum(cudaStream_t s, const float* x, const float* w, int64_t n_rows, int n_terms, int64_t n,
                         float* out) {
  weighted_sum_kernel<<<grid_for(n_rows * n, kThreads), kThreads, 0, s>>>(x, w, n_rows, n_terms, n, out);
}
void launch_hadamard(cudaStream_t s, float* x, int64_t n_rows, int64_t n, int block) {
  const int64_t n_blocks = n_rows * (n / block);
  if (n_blocks == 0) return;
  const int threads = block / 2 < kThreads ? (block / 2 > kWarp ? block / 2 : kWarp) : kThreads;
  hadamard_kernel<<<unsigned(n_blocks), threads, size_t(block) * sizeof(float), s>>>(x, block);
}
void launch_f32_to_f16(cudaStream_t s, const float* x, int64_t n, void* out_f16) {
  f32_to_f16_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(x, n, static_cast<__half*>(out_f16));
}
void launch_gather_f16(cudaStream_t s, const float* x, int64_t x_group, int64_t n, const int32_t* order, int64_t n_rows,
                       void* out_f16) {
  gather_f16_kernel<<<grid_for(n_rows * n, kThreads), kThreads, 0, s>>>(x, x_group, n, order, n_rows,
                                                                        static_cast<__half*>(out_f16));
}
void launch_scatter_rows(cudaStream_t s, const float* src, const int32_t* order, int64_t n_rows, int64_t n, float* y) {
  scatter_rows_kernel<<<grid_for(n_rows * n, kThreads), kThreads, 0, s>>>(src, order, n_rows, n, y);
}

}  // namespace tandem::cuda
