// Internal to backend/cpu: the per-ISA fill functions behind kernels_for(), and the Q8_1 activation
// block (ggml's block_q8_1; not a GGUF weight type, so it lives here rather than in quant/blocks.h).
#pragma once

#include <cstdint>

#include "backend/cpu/kernels.h"

namespace tandem::cpu {

// Activations for Q4_1 / Q5_1: d = amax / 127, s = d * sum(qs), both IEEE half (ggml-common.h).
struct BlockQ8_1 {
  uint16_t d, s;
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8_1) == 36);

// Each overwrites the entries its level implements and leaves the others (filled by the level below).
namespace generic { void fill_kernels(CpuKernels& k); }  // generic/*.cpp: every type with a reference
namespace avx2 {
void fill_kernels(CpuKernels& k);     // avx2/kernels.cpp (k.uarch, k.batch_invariant choose decode)
void fill_panel_gemm(CpuKernels& k);  // avx2/panel_gemm.cpp: maddubs panel prefill over k's entries
void fill_zen_decode(CpuKernels& k);  // avx2/decode.cpp: Q4_K, Q6_K one-token decode over k's entries (Zen)
void fill_packed(CpuKernels& k);      // avx2/packed_gemm.cpp: pack / packed_gemm (repack at load)
}  // namespace avx2
namespace avx512 {
void fill_kernels(CpuKernels& k);     // avx512/kernels.cpp (likewise)
void fill_row_decode(CpuKernels& k);  // avx512/decode.cpp: single-row 512-bit decode (Zen: every type; Intel: Q5_0)
void fill_panel_gemm(CpuKernels& k);  // avx512/panel_gemm.cpp: VNNI panel prefill over k's entries
void fill_packed(CpuKernels& k);      // avx512/panel_gemm.cpp: pack / packed_gemm (repack at load)
}  // namespace avx512
namespace amx { void fill_kernels(CpuKernels& k); }      // amx/kernels.cpp (on top of avx512)

}  // namespace tandem::cpu
