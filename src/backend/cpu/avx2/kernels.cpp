// AVX2 + FMA + F16C level: the shared 256-bit kernels with maddubs/madd dot products, 4-token tiles
// (16 ymm registers), from 16 tokens the panel kernels of panel_gemm.cpp, the panels repacked at load of
// packed_gemm.cpp, and on Zen the one-token Q4_K and Q6_K kernels of decode.cpp. Compiled with
// -mavx2 -mfma -mf16c only; nothing here may run on a lesser CPU before dispatch.cpp has checked cpu_features().
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "backend/cpu/kernel_table.h"
#include "quant/blocks.h"
#include "quant/iq1_grid.h"
#include "quant/iq_grids.h"

namespace tandem::cpu::avx2 {

#define TANDEM_X86_VNNI 0
constexpr int kMaxTokens = 4;
#include "backend/cpu/x86/gemm_x86.inc"
#undef TANDEM_X86_VNNI

void fill_kernels(CpuKernels& k) {
  fill_x86_kernels(k, Isa::Avx2);
  fill_packed(k);  // a token's bits are the same in any call: both tables take it
  if (k.batch_invariant) return;  // the panels and the Zen decode order their sums unlike the row kernels
  fill_panel_gemm(k);
  if (k.uarch == Uarch::Zen) fill_zen_decode(k);
}

}  // namespace tandem::cpu::avx2
