// CPU matmul kernels: y[t][r] = sum_k W[r][k] * x[t][k] for every weight type, chosen at run time per ISA.
// Activations are first quantized to the weight type's activation ("vec_dot") format, as in llama.cpp,
// so the inner loops are integer dot products. Threads, ops and buffers live elsewhere (backend/cpu/*).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/status.h"
#include "gguf/types.h"

namespace tandem::cpu {

enum class Isa { Generic, Avx2, Avx512, Amx };
constexpr int kNumIsas = 4;

// Kernel choices that differ between micro-architectures at the same ISA level (BENCHMARKS.md, "Zen 4"):
// Intel cores decode four weight rows side by side (one activation load serves four rows); AMD Zen cores
// lose half their read bandwidth on four streams and decode one row at a time with 512-bit kernels.
enum class Uarch { Intel, Zen };
constexpr int kNumUarchs = 2;

// What the CPU has AND the OS lets us use: AVX needs XCR0's YMM state, AVX-512 its opmask/ZMM state,
// AMX the tile state plus arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) granted to this process.
struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512vnni = false, avx512bf16 = false;
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;
  bool amx_granted = false;  // the kernel granted XTILEDATA (probed once, on first call)
  bool amd_zen = false;      // vendor AuthenticAMD, family 17h (Zen 1) or later
};
const CpuFeatures& cpu_features();  // thread-safe; probes once

// The activation format of weight type t: Q8_K for Q2_K..Q6_K, IQ4_XS and the lattice i-quants; Q8_0 for Q4_0 Q5_0 Q8_0
// IQ4_NL; Q8_1 for Q4_1 Q5_1; F16 for F16 (as llama.cpp); BF16 for BF16; F32 for F32.
// Returns t itself for types without kernels (see has_kernel).
WeightType activation_type(WeightType t);
// Bytes of one activation row of n elements for weight type t (n a multiple of block_size(t)).
size_t activation_row_bytes(WeightType t, int64_t n);
// Whether the tables below have a gemm for weight type t.
bool has_kernel(WeightType t);

// Quantizes n f32 activations (a multiple of the weight type's block size) into activation_row_bytes
// bytes at out. Q8_0 / Q8_K are bit-identical to src/quant's reference; Q8_1 to ggml's quantize_row_q8_1_ref.
using QuantizeActFn = void (*)(const float* x, void* out, int64_t n);

// y[t * y_stride + r] = dot(row r of w, activation row t) for r < n_rows, t < n_tokens.
// w: n_rows rows of n_in weights, w_stride bytes apart; x: n_tokens activation rows (already quantized
// with quantize_act of the same weight type), x_stride bytes apart; y_stride in floats.
// Single-threaded and pure (no state, no allocation): callers split rows across threads by passing
// w + r0 * w_stride and y + r0 with n_rows = r1 - r0. n_in must be a multiple of block_size(type).
// Blocks need only 2-byte alignment (what GGUF guarantees at 32-byte tensor offsets with odd block sizes).
using GemmFn = void (*)(int64_t n_in, const void* w, size_t w_stride, int64_t n_rows, const void* x,
                        size_t x_stride, int64_t n_tokens, float* y, size_t y_stride);

// Weights re-laid out once at load (CpuBackend::repack, issue 18: "repack where it pays"): whole 16-row panels
// in the level's prefill layout (x86/panel_x86.inc), so no call unpacks them again.
// Writes rows [0, n_rows) of w (n_in weights each, w_stride bytes apart) as ceil(n_rows / 16) panels at out
// (64-byte aligned, zero rows padding the last); out null: only returns the bytes that takes.
using PackFn = size_t (*)(int64_t n_in, const void* w, size_t w_stride, int64_t n_rows, uint8_t* out);
// y[t * y_stride + r] for r < n_rows of the panels at `panels` (the first row of a panel), as GemmFn. A token's
// outputs are the same bits whatever n_tokens is, so the batch-invariant tables share it.
using PackedGemmFn = void (*)(int64_t n_in, const uint8_t* panels, int64_t n_rows, const void* x, size_t x_stride,
                              int64_t n_tokens, float* y, size_t y_stride);

struct CpuKernels {
  Isa isa = Isa::Generic;
  Uarch uarch = Uarch::Intel;
  // Batch-invariant tables: gemm[t] gives token t's outputs the same bits whatever n_tokens is and
  // wherever t sits in the call (issue 11). The generic kernels do so anyway; these tables leave out the
  // kernels that sum in another order for some token counts: the four-row decode (Intel's choice, and
  // Zen's on short rows), the AVX2 and AVX-512 VNNI panels and AMX tiles (prefill from 16 tokens), the Zen
  // decode kernels' hand-off to the 256-bit ones at 9 tokens, and AVX2's one-token Q4_K and Q6_K decode on Zen.
  bool batch_invariant = false;
  QuantizeActFn quantize_act[kWeightTypeIdLimit] = {};  // indexed by weight type id; null: no kernel
  GemmFn gemm[kWeightTypeIdLimit] = {};
  Isa gemm_isa[kWeightTypeIdLimit] = {};  // the level that actually filled gemm[t] (lower on fallback)
  // gemm[t] unpacks 16-row weight panels once per call (AMX, AVX-512 VNNI and AVX2 panels): callers should hand it
  // many tokens and row ranges in multiples of 16.
  bool panel[kWeightTypeIdLimit] = {};
  // Types this level repacks at load (null: none; the same in both tables of a level and micro-architecture).
  PackFn pack[kWeightTypeIdLimit] = {};
  PackedGemmFn packed_gemm[kWeightTypeIdLimit] = {};
};

// Tables are built once, thread-safely, on first use; the reference stays valid for the process.
// The best level this CPU and OS supports, for host_uarch() (batch_invariant: its batch-invariant table).
const CpuKernels& kernels(bool batch_invariant = false);
const CpuKernels& kernels_for(Isa isa);  // a given level (at most best_isa()); entries fall back lower
// Either micro-architecture's choices at a supported level: both are correct on any CPU that has the
// level (tests check both; benchmarks compare them).
const CpuKernels& kernels_for(Isa isa, Uarch uarch, bool batch_invariant = false);
// Zen on AMD Zen CPUs, else Intel; TANDEM_CPU_UARCH=intel|zen overrides (read once).
Uarch host_uarch();
const char* uarch_name(Uarch uarch);  // "intel", "zen"
Isa best_isa();  // the best supported level, capped by limit_isa()
// Caps the level kernels() and the op tables use ("generic", "avx2", "avx512", "amx"); for --cpu-isa.
// Call before any kernel runs.
Status limit_isa(std::string_view name);
bool isa_supported(Isa isa);
const char* isa_name(Isa isa);  // "generic", "avx2", "avx512", "amx"

// One-shot convenience for tests and small callers: quantizes x ([n_tokens, n_in] f32, contiguous)
// into a scratch buffer and runs the gemm of `isa`. Allocates; not for hot paths.
void matmul_f32(Isa isa, WeightType type, int64_t n_in, const void* w, size_t w_stride, int64_t n_rows,
                const float* x, int64_t n_tokens, float* y, size_t y_stride);
void matmul_f32(Isa isa, Uarch uarch, WeightType type, int64_t n_in, const void* w, size_t w_stride,
                int64_t n_rows, const float* x, int64_t n_tokens, float* y, size_t y_stride,
                bool batch_invariant = false);

}  // namespace tandem::cpu
