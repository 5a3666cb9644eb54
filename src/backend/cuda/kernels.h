// Host-side launchers of the CUDA kernels, one group per .cu file; cuda_backend.cpp calls these and
// checks cudaGetLastError after each. Every pointer is device memory; every launch is queued on
// `stream` and returns at once. Shapes outermost first, as backend.h.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "backend/backend.h"
#include "gguf/types.h"

namespace tandem::cuda {

// Faults a kernel found in its device-memory inputs (an id outside a table, a cell outside the cache):
// the first one's code and value, written by the kernel into host-mapped memory, read after a sync.
enum class DeviceFault : int32_t { None = 0, RowId = 1, ExpertId = 2, CacheCell = 3 };
struct FaultWord {
  int32_t code;
  int32_t value;
};

// ---- elementwise.cu
void launch_add(cudaStream_t s, const float* a, const float* b, int64_t n, float* out);
// y[t, i] += bias[i] for t < n_tokens, i < n.
void launch_add_bias(cudaStream_t s, float* y, const float* bias, int64_t n_tokens, int64_t n);
void launch_swiglu(cudaStream_t s, const float* gate, const float* up, int64_t n, float* out);
void launch_geglu(cudaStream_t s, const float* gate, const float* up, int64_t n, float* out);
void launch_scale(cudaStream_t s, float* x, int64_t n, float factor);
void launch_softcap(cudaStream_t s, float* x, int64_t n, float cap);
void launch_weighted_sum(cudaStream_t s, const float* x, const float* w, int64_t n_rows, int n_terms, int64_t n,
                         float* out);
// block: a power of two, at most 2048.
void launch_hadamard(cudaStream_t s, float* x, int64_t n_rows, int64_t n, int block);
void launch_f32_to_f16(cudaStream_t s, const float* x, int64_t n, void* out_f16);
// The grouped expert GEMM's permutations (columns sorted by expert): out[j, :] = f16(x[order[j] / x_group, :])
// for j < n_rows, rows of n; and back, y[order[j], :] = src[j, :].
void launch_gather_f16(cudaStream_t s, const float* x, int64_t x_group, int64_t n, const int32_t* order, int64_t n_rows,
                       void* out_f16);
void launch_scatter_rows(cudaStream_t s, const float* src, const int32_t* order, int64_t n_rows, int64_t n, float* y);

// ---- norm_rope.cu
void launch_rms_norm(cudaStream_t s, const float* x, const float* w, int64_t n_rows, int64_t n, float eps, float* y);
void launch_rope(cudaStream_t s, float* x, int64_t n_tokens, int n_head, int head_dim, const int32_t* pos,
                 const RopeParams& p);

// ---- rows.cu (false: the type has no CUDA decoder yet)
bool has_decoder(WeightType t);
// out[i, :] = row ids[i] of the table (n_rows rows of n elements, row_stride bytes apart).
bool launch_get_rows(cudaStream_t s, WeightType t, const void* table, size_t row_stride, int64_t n_rows, int64_t n,
                     const int32_t* ids, int64_t n_ids, float* out, FaultWord* fault);
// Rows [0, n_rows) of a weight, dequantized to f16 [n_rows, n] (a prefill GEMM's tile).
bool launch_dequantize_f16(cudaStream_t s, WeightType t, const void* w, size_t row_stride, int64_t n_rows, int64_t n,
                           void* out_f16);

// ---- matmul.cu: matrix times n_cols vectors, a thread block per few rows (decode and expert slots).
// Column c multiplies x + (c / x_group) * n (x_group 1: a vector per column; n_used: a token's vector
// shared by its experts) by matrix ids[c] (ids null: matrix 0), matrices expert_stride bytes apart,
// and writes y + c * n_rows. Ids outside [0, n_expert) raise DeviceFault::ExpertId and give zeros.
struct MatVec {
  WeightType type = WeightType::F32;
  const void* w = nullptr;  // matrix 0's row 0
  size_t row_stride = 0, expert_stride = 0;
  int64_t n_rows = 0, n = 0;
  const int32_t* ids = nullptr;
  int64_t n_expert = 1;
  const float* x = nullptr;
  int64_t x_group = 1;
  int64_t n_cols = 0;
  float* y = nullptr;
};
bool has_matvec(WeightType t);
// q8_scratch: matvec_q8_bytes(n_cols, n) bytes for the int8 activations of the __dp4a kernels.
size_t matvec_q8_bytes(int64_t n_cols, int64_t n);
bool launch_matvec(cudaStream_t s, const MatVec& m, void* q8_scratch, FaultWord* fault);

// ---- attention.cu
bool attention_supported(WeightType k_type, WeightType v_type);
void launch_attention(cudaStream_t s, const AttentionArgs& a);
bool kv_store_supported(WeightType t);
void launch_kv_store(cudaStream_t s, const float* src, int64_t n_tokens, int64_t row, const int32_t* cells,
                     WeightType type, void* cache, int64_t n_cells, FaultWord* fault);

// ---- mla_attention.cu: absorbed MLA (one KV head whose V is part of its K rows), the heads of a block
// sharing each tile of the latent cache. Supported: that shape, dk <= 576, dv <= 512, an attention
// cache type; *v_off gets V's first element within the K row.
bool mla_attention_supported(const AttentionArgs& a, int* v_off);
// Device scratch the launch needs for its partial results (0: none).
size_t mla_attention_scratch_bytes(const AttentionArgs& a);
void launch_mla_attention(cudaStream_t s, const AttentionArgs& a, int v_off, void* scratch);

}  // namespace tandem::cuda
