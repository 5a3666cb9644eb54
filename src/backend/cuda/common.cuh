// Device-side helpers every kernel file shares: half/bfloat conversions of raw bits, warp and block
// sums, and the grid sizes of a launch. Kernel files include this; host code includes kernels.h only.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <bit>
#include <cstdint>

// Host and device: the decoders and dot products also run on the CPU, where tests check their
// arithmetic against src/quant without a GPU (tests/backend/cuda/cuda_host_test.cu).
#define TANDEM_HD __host__ __device__ __forceinline__

namespace tandem::cuda {

constexpr int kWarp = 32;

TANDEM_HD float half_bits_to_f32(uint16_t h) {
  __half_raw raw;
  raw.x = h;
  return __half2float(__half(raw));
}
TANDEM_HD float bf16_bits_to_f32(uint16_t b) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(uint32_t(b) << 16);
#else
  return std::bit_cast<float>(uint32_t(b) << 16);
#endif
}
// Round to nearest even, as quant::f32_to_bf16 (NaN kept quiet).
__device__ __forceinline__ uint16_t f32_to_bf16_bits(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The sum over a block of at most 1024 threads (a multiple of 32); every thread gets it. `shared`
// holds 32 values; the call synchronizes the block.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* shared) {
  v = warp_sum(v);
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, n_warps = blockDim.x / kWarp;
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < n_warps ? shared[lane] : T(0);
  return warp_sum(v);
}

inline unsigned n_blocks(int64_t n, int per_block) { return unsigned((n + per_block - 1) / per_block); }

// Grid-stride loops cap the grid here: enough blocks to fill any of our GPUs several times over.
constexpr int64_t kMaxGridBlocks = 65535;
inline unsigned grid_for(int64_t n, int per_block) {
  const int64_t b = (n + per_block - 1) / per_block;
  return unsigned(b < kMaxGridBlocks ? (b > 0 ? b : 1) : kMaxGridBlocks);
}

}  // namespace tandem::cuda
