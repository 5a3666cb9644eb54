// The CPU matmul driver: quantizes activations once, then splits weight rows across threads.
#pragma once

#include <cstdlib>
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/kernels.h"
#include "core/thread_pool.h"

namespace tandem::cpu {

// y[t, r] = sum_k W[r, k] x[t, k]; x: [n_tokens, row_length], y: [n_tokens, n_rows].
// `scratch` holds the quantized activations between calls (grown as needed). batch_invariant: the
// kernels whose result for a token does not depend on n_tokens (kernels.h), at some prefill speed.
void cpu_matmul(ThreadPool& pool, const Weight& w, const float* x, int64_t n_tokens, float* y,
                std::vector<uint8_t>& scratch, bool batch_invariant);

// A matrix re-laid out once by its level's pack kernel (kernels.h; CpuBackend::repack): whole 16-row panels.
// Expert weights ([n_expert, expert_rows, row_length]) are packed one expert at a time, each expert's panels
// expert_bytes apart, so a row range of one expert is a run of whole panels as in a 2-D matrix.
struct PackedWeight {
  struct Free { void operator()(uint8_t* p) const { std::free(p); } };
  std::unique_ptr<uint8_t, Free> data;  // 64-byte aligned
  size_t bytes = 0;
  size_t panel_bytes = 0;  // one panel of 16 rows
  size_t expert_bytes = 0;  // one expert's panels (all of them for a 2-D matrix)
  PackedGemmFn gemm = nullptr;
  WeightType type = WeightType::F32;
  std::vector<int64_t> shape;  // the weight's
  // Whether this is w's copy (a view of some of w's rows shares its data pointer, not its shape).
  bool packs(const Weight& w) const { return w.type == type && w.shape == shape; }
  // Panel p (rows 16p..16p+15) of expert e (0 for a 2-D matrix).
  const uint8_t* panel(int64_t e, int64_t p) const { return data.get() + size_t(e) * expert_bytes + size_t(p) * panel_bytes; }
};

// Packs w with `pack` (over the pool's threads), expert by expert for expert weights; fails when the memory
// cannot be had.
Result<PackedWeight> pack_weight(ThreadPool& pool, const Weight& w, PackFn pack, PackedGemmFn gemm);
// cpu_matmul over w's packed panels: the same y for any n_tokens (batch-invariant by construction).
void cpu_matmul_packed(ThreadPool& pool, const Weight& w, const PackedWeight& packed, const float* x, int64_t n_tokens,
                       float* y, std::vector<uint8_t>& scratch);

// Buffers of cpu_matmul_id, kept between calls (grown as needed).
struct MatmulIdScratch {
  std::vector<int64_t> offset;  // [n_expert + 1]: expert e's grouped rows are [offset[e], offset[e + 1])
  std::vector<int64_t> cursor;  // [n_expert]
  std::vector<int64_t> slot;    // [n_tokens * n_used]: the (t * n_used + j) of each grouped row
  std::vector<uint8_t> act;     // quantized activations, grouped by expert
  std::vector<uint8_t> act_up;  // the same for up, when its type quantizes activations otherwise
  std::vector<float> out;       // results, grouped by expert
  std::vector<float> out_up;    // up's results, grouped by expert (matmul_id_swiglu)
  struct Item { int64_t expert, r0; };
  std::vector<Item> items;      // (expert, row chunk) work items
};

// Backend::matmul_id: the (token, slot) pairs routed to one expert are grouped and multiplied together
// by the gemm kernels on that expert's slice of w (in place, never copied), or on its panels in `packed`
// (w's packed copy, or null); threads take (expert, row chunk) items from a shared counter. expert_data:
// null (each expert's slice of w.data), or one pointer per expert (Backend::matmul_id_ptrs; packed null),
// a null one leaving that expert's rows of y as they were.
void cpu_matmul_id(ThreadPool& pool, const Weight& w, const PackedWeight* packed, const void* const* expert_data,
                   const float* x, bool x_per_slot, const int32_t* ids, int64_t n_tokens, int n_used, float* y,
                   MatmulIdScratch& scratch, bool batch_invariant);

using SwigluFn = void (*)(const float* gate, const float* up, int64_t n, float* out);

// Backend::matmul_id_swiglu: one grouping and one quantization of x for gate and up, both matrices'
// rows of a chunk computed by the same work item and SwiGLU applied to them there. Allocates nothing
// once `scratch` has grown. gate_data, up_data: as cpu_matmul_id's expert_data (both null or both given;
// up_data unused in the fused form); gate_packed, up_packed: as its `packed` (up_packed unused in the fused
// form, whose up rows are gate_packed's from the panel at n_ff when n_ff is whole panels, else unpacked).
void cpu_matmul_id_swiglu(ThreadPool& pool, const Weight& gate, const PackedWeight* gate_packed,
                          const void* const* gate_data, const Weight* up, const PackedWeight* up_packed,
                          const void* const* up_data, const float* x, const int32_t* ids, int64_t n_tokens, int n_used,
                          float* y, SwigluFn swiglu, MatmulIdScratch& scratch, bool batch_invariant);

}  // namespace tandem::cpu
