// AVX-512 level (F BW DQ VL VNNI BF16): the shared 256-bit kernels with VNNI dot products
// (dpbusd / dpwssd) and 8-token tiles (32 registers), plus 512-bit float kernels (BF16 via dpbf16).
// Compiled with the AVX-512 flags; reached only after dispatch.cpp has checked cpu_features().
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "backend/cpu/kernel_table.h"
#include "quant/blocks.h"

namespace tandem::cpu::avx512 {

#define TANDEM_X86_VNNI 1
constexpr int kMaxTokens = 8;
#include "backend/cpu/x86/gemm_x86.inc"
#undef TANDEM_X86_VNNI

void fill_kernels(CpuKernels& k) { fill_x86_kernels(k, Isa::Avx512); }

}  // namespace tandem::cpu::avx512
