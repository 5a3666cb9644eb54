// Attention over a layer's KV cache, and the cache's stores. One kernel serves decode and prefill:
// a thread block per (token, query head), its warps streaming their share of the cells through an
// online softmax (flash-decoding), then merged; no score row is ever materialized, so any context
// length fits. Every masked cell rule of the CPU backend holds (empty cell, other sequence, future
// position, sliding window). It runs on CUDA cores only: prefill does not use tensor cores yet.
#include "backend/cuda/dequant.cuh"
#include "backend/cuda/kernels.h"
#include "kv/kv_types.h"

namespace tandem::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxHeadDim = 576;  // DeepSeek's MLA rows (512 latent + 64 rope); Gemma 3's 256 below it
constexpr int kMaxPerLane = kMaxHeadDim / kWarp;

struct AttnKernelArgs {
  const float* q;
  float* out;
  int n_head, group, dk, dv;
  float scale, softcap;
  int sliding_window;
  const int32_t* token_pos;
  const int32_t* token_seq;
  const uint8_t* k;
  const uint8_t* v;
  size_t k_row_bytes, v_row_bytes, k_head_bytes, v_head_bytes;  // bytes per cell; per KV head within one
  int64_t n_cells;
  const int32_t* cell_pos;
  const int32_t* cell_seq;
};

template <typename KE, typename VE>
__global__ void attention_kernel(AttnKernelArgs a, KE k_elem, VE v_elem) {
  __shared__ float q_s[kMaxHeadDim];
  __shared__ float m_s[kWarps], l_s[kWarps];
  __shared__ float acc_s[kWarps][kMaxHeadDim];
  const int h = blockIdx.x, g = h / a.group;
  const int64_t t = blockIdx.y;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const float* q = a.q + (t * a.n_head + h) * a.dk;
  for (int i = threadIdx.x; i < a.dk; i += blockDim.x) q_s[i] = q[i];
  __syncthreads();

  const int32_t p = a.token_pos[t], seq = a.token_seq[t];
  float m = -INFINITY, l = 0;
  float acc[kMaxPerLane];
#pragma unroll
  for (int j = 0; j < kMaxPerLane; ++j) acc[j] = 0;
  for (int64_t c = warp; c < a.n_cells; c += kWarps) {
    const int32_t cp = a.cell_pos[c];
    if (cp < 0 || a.cell_seq[c] != seq || cp > p) continue;
    if (a.sliding_window > 0 && p - cp >= a.sliding_window) continue;
    const uint8_t* krow = a.k + size_t(c) * a.k_row_bytes + size_t(g) * a.k_head_bytes;
    float dot = 0;
    for (int i = lane; i < a.dk; i += kWarp) dot += q_s[i] * k_elem(krow, i);
    float s = warp_sum(dot) * a.scale;
    if (a.softcap > 0) s = a.softcap * tanhf(s / a.softcap);
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new), w = expf(s - m_new);
    l = l * corr + w;
    m = m_new;
    const uint8_t* vrow = a.v + size_t(c) * a.v_row_bytes + size_t(g) * a.v_head_bytes;
#pragma unroll
    for (int j = 0; j < kMaxPerLane; ++j) {
      const int i = lane + j * kWarp;
      if (i < a.dv) acc[j] = acc[j] * corr + w * v_elem(vrow, i);
    }
  }
  if (lane == 0) {
    m_s[warp] = m;
    l_s[warp] = l;
  }
#pragma unroll
  for (int j = 0; j < kMaxPerLane; ++j) {
    const int i = lane + j * kWarp;
    if (i < a.dv) acc_s[warp][i] = acc[j];
  }
  __syncthreads();
  float m_all = -INFINITY;
  for (int w = 0; w < kWarps; ++w) m_all = fmaxf(m_all, m_s[w]);
  float l_all = 0;
  for (int w = 0; w < kWarps; ++w) l_all += m_s[w] == -INFINITY ? 0.0f : l_s[w] * expf(m_s[w] - m_all);
  float* out = a.out + (t * a.n_head + h) * a.dv;
  for (int i = threadIdx.x; i < a.dv; i += blockDim.x) {
    float o = 0;
    for (int w = 0; w < kWarps; ++w)
      if (m_s[w] != -INFINITY) o += acc_s[w][i] * expf(m_s[w] - m_all);
    out[i] = l_all > 0 ? o / l_all : 0.0f;  // no visible cell: zeros, as the CPU
  }
}

// ---- the cache's stores: a thread per element (F32, F16, BF16), a warp per block of 32 (Q8_0, Q4_0)

__device__ bool cell_ok(int32_t cell, int64_t n_cells, FaultWord* fault) {
  if (cell >= 0 && cell < n_cells) return true;
  if (atomicCAS(&fault->code, 0, int32_t(DeviceFault::CacheCell)) == 0) fault->value = cell;
  return false;
}

template <WeightType T>
__global__ void store_plain_kernel(const float* src, int64_t n_tokens, int64_t row, const int32_t* cells,
                                   uint8_t* cache, int64_t n_cells, FaultWord* fault) {
  const int64_t t = blockIdx.y;
  const int32_t cell = cells[t];
  if (!cell_ok(cell, n_cells, fault)) return;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < row; i += int64_t(gridDim.x) * blockDim.x) {
    const float x = src[t * row + i];
    if constexpr (T == WeightType::F32) reinterpret_cast<float*>(cache)[cell * row + i] = x;
    else if constexpr (T == WeightType::F16) reinterpret_cast<__half*>(cache)[cell * row + i] = __float2half_rn(x);
    else reinterpret_cast<uint16_t*>(cache)[cell * row + i] = f32_to_bf16_bits(x);
  }
}

// llama.cpp's reference quantizers (quantize_row_q8_0_ref, quantize_row_q4_0_ref). The CPU backend's
// 4-bit cache searches its scale (quant::quantize_row_kv), so Q4_0 blocks may differ from the CPU's.
template <WeightType T>
__global__ void store_block_kernel(const float* src, int64_t n_tokens, int64_t row, const int32_t* cells,
                                   uint8_t* cache, int64_t n_cells, FaultWord* fault) {
  const int64_t t = blockIdx.y, b = int64_t(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  const int64_t n_blocks = row / 32;
  if (b >= n_blocks) return;
  const int32_t cell = cells[t];
  if (!cell_ok(cell, n_cells, fault)) return;
  const float x = src[t * row + b * 32 + lane];
  if constexpr (T == WeightType::Q8_0) {
    auto& blk = reinterpret_cast<quant::BlockQ8_0*>(cache)[cell * n_blocks + b];
    const float amax = warp_max(fabsf(x));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    blk.qs[lane] = int8_t(roundf(x * id));
    if (lane == 0) blk.d = __half_as_ushort(__float2half_rn(d));
  } else {
    auto& blk = reinterpret_cast<quant::BlockQ4_0*>(cache)[cell * n_blocks + b];
    // The value of largest magnitude, with its sign (the lowest lane among equals, as the reference's scan).
    const float amax = warp_max(fabsf(x));
    const unsigned first = __ffs(__ballot_sync(0xffffffffu, fabsf(x) == amax)) - 1;
    const float mx = __shfl_sync(0xffffffffu, x, int(first));
    const float d = mx / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    const int q = min(15, int(x * id + 8.5f));
    const int other = __shfl_xor_sync(0xffffffffu, q, 16);  // lane j pairs with j + 16 in one byte
    if (lane < 16) blk.qs[lane] = uint8_t(q | other << 4);
    if (lane == 0) blk.d = __half_as_ushort(__float2half_rn(d));
  }
}

}  // namespace

bool attention_supported(WeightType k_type, WeightType v_type) {
  return is_kv_cache_type(k_type) && is_kv_cache_type(v_type);
}

void launch_attention(cudaStream_t s, const AttentionArgs& a) {
  if (a.n_tokens == 0 || a.n_head == 0) return;
  AttnKernelArgs k{};
  k.q = a.q;
  k.out = a.out;
  k.n_head = a.n_head;
  k.group = a.n_head / a.n_head_kv;
  k.dk = a.head_dim_k;
  k.dv = a.head_dim_v;
  k.scale = a.scale;
  k.softcap = a.softcap;
  k.sliding_window = a.sliding_window;
  k.token_pos = a.token_pos;
  k.token_seq = a.token_seq;
  k.k = static_cast<const uint8_t*>(a.k);
  k.v = static_cast<const uint8_t*>(a.v);
  k.k_row_bytes = row_bytes(a.k_type, a.k_stride ? a.k_stride : int64_t(a.n_head_kv) * a.head_dim_k);
  k.v_row_bytes = row_bytes(a.v_type, a.v_stride ? a.v_stride : int64_t(a.n_head_kv) * a.head_dim_v);
  k.k_head_bytes = row_bytes(a.k_type, a.head_dim_k);
  k.v_head_bytes = row_bytes(a.v_type, a.head_dim_v);
  k.n_cells = a.n_cells;
  k.cell_pos = a.cell_pos;
  k.cell_seq = a.cell_seq;
  const dim3 grid(unsigned(a.n_head), unsigned(a.n_tokens));
  if (a.k_type == WeightType::F16 && a.v_type == WeightType::F16)
    attention_kernel<<<grid, kWarps * kWarp, 0, s>>>(k, Elem<WeightType::F16>{}, Elem<WeightType::F16>{});
  else
    attention_kernel<<<grid, kWarps * kWarp, 0, s>>>(k, AnyElem{a.k_type}, AnyElem{a.v_type});
}

bool kv_store_supported(WeightType t) {
  return t == WeightType::F32 || t == WeightType::F16 || t == WeightType::BF16 || t == WeightType::Q8_0 ||
         t == WeightType::Q4_0;
}

void launch_kv_store(cudaStream_t s, const float* src, int64_t n_tokens, int64_t row, const int32_t* cells,
                     WeightType type, void* cache, int64_t n_cells, FaultWord* fault) {
  if (n_tokens == 0 || row == 0) return;
  auto* c = static_cast<uint8_t*>(cache);
  const unsigned plain_blocks = std::min(n_blocks(row, 256), 64u);
  const unsigned quant_blocks = n_blocks(row / 32, 8);
  const dim3 plain(plain_blocks, unsigned(n_tokens)), quant(quant_blocks, unsigned(n_tokens));
  switch (type) {
    case WeightType::F32: store_plain_kernel<WeightType::F32><<<plain, 256, 0, s>>>(src, n_tokens, row, cells, c, n_cells, fault); break;
    case WeightType::F16: store_plain_kernel<WeightType::F16><<<plain, 256, 0, s>>>(src, n_tokens, row, cells, c, n_cells, fault); break;
    case WeightType::BF16: store_plain_kernel<WeightType::BF16><<<plain, 256, 0, s>>>(src, n_tokens, row, cells, c, n_cells, fault); break;
    case WeightType::Q8_0: store_block_kernel<WeightType::Q8_0><<<quant, 8 * kWarp, 0, s>>>(src, n_tokens, row, cells, c, n_cells, fault); break;
    case WeightType::Q4_0: store_block_kernel<WeightType::Q4_0><<<quant, 8 * kWarp, 0, s>>>(src, n_tokens, row, cells, c, n_cells, fault); break;
    default: break;  // kv_store_supported() refused it on the host
  }
}

}  // namespace tandem::cuda
