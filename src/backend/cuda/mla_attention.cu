// Absorbed MLA attention (DeepSeek-V2/V3 as deepseek2.cpp runs it): every query head against the one
// latent head, V the latent part of each cached K row. The plain kernel (attention.cu) reads a cell's
// row once per query head, 128 times for V3; here a thread block decodes a tile of cells to f32 in
// shared memory once, and its 16 warps, one query head each, all use it.
//
// Batch invariance (backend.h: attention is invariant): the cells are cut into chunks of kChunkCells by
// index, each chunk runs a fresh online softmax and the chunks are merged left to right with the same
// roundings (merge(), no FMA contraction). A decode step with few blocks runs each chunk in a block of
// its own and merges them in a second kernel; a larger batch runs the chunks in turn in one block. Both
// give the same bits, so a token's result does not depend on what shares its batch.
#include <algorithm>

#include "backend/cuda/dequant.cuh"
#include "backend/cuda/kernels.h"

namespace tandem::cuda {
namespace {

constexpr int kHeadsPerBlock = 16;  // a warp per query head
constexpr int kThreads = kHeadsPerBlock * kWarp;
constexpr int kTileCells = 16;      // 16 rows of 576 f32: 36 KiB of the 48 every target has
constexpr int64_t kChunkCells = 128;
constexpr int kMaxDk = 576, kMaxDv = 512;  // V3's rope key + latent; its latent
constexpr int kDkPerLane = kMaxDk / kWarp, kDvPerLane = kMaxDv / kWarp;
// Chunks run in blocks of their own while the launch has fewer blocks than this (enough to fill an
// H200's 132 SMs; unmeasured) and their partial results fit in kMaxPartialBytes.
constexpr int64_t kSplitBelowBlocks = 128;
constexpr size_t kMaxPartialBytes = size_t(64) << 20;

struct MlaKernelArgs {
  const float* q;   // [n_tokens, n_head, dk]
  float* out;       // [n_tokens, n_head, dv]
  float* partial;   // split: [n_tokens, n_head, n_chunks, 2 + dv] (m, l, unnormalized output)
  int n_head, dk, dv, v_off;  // V is elements [v_off, v_off + dv) of the K row
  float scale, softcap;
  int sliding_window;
  const int32_t* token_pos;
  const int32_t* token_seq;
  const uint8_t* k;
  size_t k_row_bytes;
  int64_t n_cells, n_chunks;
  const int32_t* cell_pos;
  const int32_t* cell_seq;
  bool split;  // blockIdx.y is the chunk; otherwise one block runs them all
};

// Folds the softmax state (m2, l2) of the next chunk into (m, l); o = o * a + o2 * b for the outputs.
// Explicit roundings: the in-block merge and merge_kernel must give the same bits.
__device__ __forceinline__ void merge(float& m, float& l, float m2, float l2, float& a, float& b) {
  const float mx = fmaxf(m, m2);  // m2 is finite (callers skip empty chunks); m may be -inf: a = 0
  a = expf(m - mx);
  b = expf(m2 - mx);
  l = __fadd_rn(__fmul_rn(l, a), __fmul_rn(l2, b));
  m = mx;
}
__device__ __forceinline__ float mix(float o, float a, float o2, float b) {
  return __fadd_rn(__fmul_rn(o, a), __fmul_rn(o2, b));
}

template <typename KE>
__global__ void __launch_bounds__(kThreads) mla_kernel(MlaKernelArgs a, KE k_elem) {
  __shared__ float tile[kTileCells][kMaxDk];
  __shared__ bool visible[kTileCells];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int h = blockIdx.x * kHeadsPerBlock + warp;
  const bool active = h < a.n_head;  // the last block's spare warps still load tiles
  const int64_t t = blockIdx.z;
  const int32_t p = a.token_pos[t], seq = a.token_seq[t];

  float q[kDkPerLane];
#pragma unroll
  for (int j = 0; j < kDkPerLane; ++j) {
    const int i = lane + j * kWarp;
    q[j] = active && i < a.dk ? a.q[(t * a.n_head + h) * a.dk + i] : 0.0f;
  }
  float m = -INFINITY, l = 0, o[kDvPerLane];
#pragma unroll
  for (int j = 0; j < kDvPerLane; ++j) o[j] = 0;

  const int64_t ch_begin = a.split ? blockIdx.y : 0, ch_end = a.split ? blockIdx.y + 1 : a.n_chunks;
  for (int64_t ch = ch_begin; ch < ch_end; ++ch) {
    float mc = -INFINITY, lc = 0, oc[kDvPerLane];
#pragma unroll
    for (int j = 0; j < kDvPerLane; ++j) oc[j] = 0;
    const int64_t c_end = std::min(a.n_cells, (ch + 1) * kChunkCells);
    for (int64_t c0 = ch * kChunkCells; c0 < c_end; c0 += kTileCells) {
      __syncthreads();  // the previous tile's readers are done
      bool vis = false;
      if (threadIdx.x < kTileCells) {
        const int64_t c = c0 + threadIdx.x;
        if (c < c_end) {
          const int32_t cp = a.cell_pos[c];
          vis = cp >= 0 && a.cell_seq[c] == seq && cp <= p && (a.sliding_window <= 0 || p - cp < a.sliding_window);
        }
        visible[threadIdx.x] = vis;
      }
      if (!__syncthreads_or(vis)) continue;  // the same answer in every thread
      for (int idx = threadIdx.x; idx < kTileCells * a.dk; idx += kThreads) {
        const int r = idx / a.dk, i = idx % a.dk;
        tile[r][i] = visible[r] ? k_elem(a.k + size_t(c0 + r) * a.k_row_bytes, i) : 0.0f;
      }
      __syncthreads();
      if (!active) continue;
      float s[kTileCells];
      float mt = -INFINITY;
#pragma unroll
      for (int r = 0; r < kTileCells; ++r) {
        float dot = 0;
#pragma unroll
        for (int j = 0; j < kDkPerLane; ++j)
          if (lane + j * kWarp < a.dk) dot += q[j] * tile[r][lane + j * kWarp];
        float x = warp_sum(dot) * a.scale;
        if (a.softcap > 0) x = a.softcap * tanhf(x / a.softcap);
        s[r] = visible[r] ? x : -INFINITY;
        mt = fmaxf(mt, s[r]);
      }
      const float m_new = fmaxf(mc, mt), corr = expf(mc - m_new);
      float sum = 0;
#pragma unroll
      for (int r = 0; r < kTileCells; ++r) {
        s[r] = visible[r] ? expf(s[r] - m_new) : 0.0f;
        sum += s[r];
      }
      lc = lc * corr + sum;
      mc = m_new;
#pragma unroll
      for (int j = 0; j < kDvPerLane; ++j) {
        const int i = lane + j * kWarp;
        if (i >= a.dv) continue;
        float acc = oc[j] * corr;
#pragma unroll
        for (int r = 0; r < kTileCells; ++r) acc += s[r] * tile[r][a.v_off + i];
        oc[j] = acc;
      }
    }
    if (!active || mc == -INFINITY) continue;  // nothing visible in the chunk
    float wa, wb;
    merge(m, l, mc, lc, wa, wb);
#pragma unroll
    for (int j = 0; j < kDvPerLane; ++j) o[j] = mix(o[j], wa, oc[j], wb);
  }
  if (!active) return;
  if (a.split) {
    float* part = a.partial + ((t * a.n_head + h) * a.n_chunks + blockIdx.y) * (2 + a.dv);
    if (lane == 0) {
      part[0] = m;
      part[1] = l;
    }
#pragma unroll
    for (int j = 0; j < kDvPerLane; ++j)
      if (lane + j * kWarp < a.dv) part[2 + lane + j * kWarp] = o[j];
    return;
  }
  float* out = a.out + (t * a.n_head + h) * a.dv;
#pragma unroll
  for (int j = 0; j < kDvPerLane; ++j)
    if (lane + j * kWarp < a.dv) out[lane + j * kWarp] = l > 0 ? o[j] / l : 0.0f;  // nothing visible: zeros
}

// The split chunks of (token blockIdx.y, head blockIdx.x) merged left to right, as one block would.
__global__ void merge_kernel(MlaKernelArgs a) {
  const int64_t t = blockIdx.y;
  const int h = blockIdx.x;
  const float* part = a.partial + (t * a.n_head + h) * a.n_chunks * (2 + a.dv);
  float* out = a.out + (t * a.n_head + h) * a.dv;
  for (int i = threadIdx.x; i < a.dv; i += blockDim.x) {
    float m = -INFINITY, l = 0, o = 0;
    for (int64_t ch = 0; ch < a.n_chunks; ++ch) {
      const float* pc = part + ch * (2 + a.dv);
      if (pc[0] == -INFINITY) continue;
      float wa, wb;
      merge(m, l, pc[0], pc[1], wa, wb);
      o = mix(o, wa, pc[2 + i], wb);
    }
    out[i] = l > 0 ? o / l : 0.0f;
  }
}

bool split_launch(const AttentionArgs& a, int64_t n_chunks) {
  const int64_t blocks = a.n_tokens * ((a.n_head + kHeadsPerBlock - 1) / kHeadsPerBlock);
  return n_chunks > 1 && blocks < kSplitBelowBlocks &&
         size_t(a.n_tokens * a.n_head * n_chunks) * size_t(2 + a.head_dim_v) * 4 <= kMaxPartialBytes;
}

}  // namespace

bool mla_attention_supported(const AttentionArgs& a, int* v_off) {
  if (a.n_head_kv != 1 || a.k_type != a.v_type || a.head_dim_k > kMaxDk || a.head_dim_v > kMaxDv) return false;
  const int64_t k_stride = a.k_stride ? a.k_stride : a.head_dim_k, v_stride = a.v_stride ? a.v_stride : a.head_dim_v;
  if (k_stride != a.head_dim_k || v_stride != k_stride) return false;  // V inside K's rows, one head per row
  const auto* k = static_cast<const uint8_t*>(a.k);
  const auto* v = static_cast<const uint8_t*>(a.v);
  if (v < k || size_t(v - k) % block_bytes(a.k_type) != 0) return false;
  const int64_t off = int64_t(size_t(v - k) / block_bytes(a.k_type)) * block_size(a.k_type);
  if (off + a.head_dim_v > a.head_dim_k) return false;
  *v_off = int(off);
  return attention_supported(a.k_type, a.v_type);
}

size_t mla_attention_scratch_bytes(const AttentionArgs& a) {
  const int64_t n_chunks = (a.n_cells + kChunkCells - 1) / kChunkCells;
  return split_launch(a, n_chunks) ? size_t(a.n_tokens * a.n_head * n_chunks) * size_t(2 + a.head_dim_v) * 4 : 0;
}

void launch_mla_attention(cudaStream_t s, const AttentionArgs& a, int v_off, void* scratch) {
  if (a.n_tokens == 0 || a.n_head == 0) return;
  MlaKernelArgs k{};
  k.q = a.q;
  k.out = a.out;
  k.partial = static_cast<float*>(scratch);
  k.n_head = a.n_head;
  k.dk = a.head_dim_k;
  k.dv = a.head_dim_v;
  k.v_off = v_off;
  k.scale = a.scale;
  k.softcap = a.softcap;
  k.sliding_window = a.sliding_window;
  k.token_pos = a.token_pos;
  k.token_seq = a.token_seq;
  k.k = static_cast<const uint8_t*>(a.k);
  k.k_row_bytes = row_bytes(a.k_type, a.head_dim_k);
  k.n_cells = a.n_cells;
  k.n_chunks = std::max<int64_t>(1, (a.n_cells + kChunkCells - 1) / kChunkCells);
  k.cell_pos = a.cell_pos;
  k.cell_seq = a.cell_seq;
  k.split = split_launch(a, k.n_chunks);
  const unsigned head_blocks = n_blocks(a.n_head, kHeadsPerBlock);
  // gridDim.z holds the tokens: a larger batch (never split, so no partials) goes in pieces.
  for (int64_t t0 = 0; t0 < a.n_tokens; t0 += kMaxGridBlocks) {
    MlaKernelArgs piece = k;
    const int64_t n = std::min(kMaxGridBlocks, a.n_tokens - t0);
    piece.q = a.q + t0 * a.n_head * a.head_dim_k;
    piece.out = a.out + t0 * a.n_head * a.head_dim_v;
    piece.token_pos = a.token_pos + t0;
    piece.token_seq = a.token_seq + t0;
    const dim3 grid(head_blocks, unsigned(k.split ? k.n_chunks : 1), unsigned(n));
    if (a.k_type == WeightType::F16) mla_kernel<<<grid, kThreads, 0, s>>>(piece, Elem<WeightType::F16>{});
    else mla_kernel<<<grid, kThreads, 0, s>>>(piece, AnyElem{a.k_type});
    if (k.split) merge_kernel<<<dim3(unsigned(a.n_head), unsigned(n)), 128, 0, s>>>(piece);
  }
}

}  // namespace tandem::cuda
