// Run-time choice of the kernel tables: generic always, then each level the CPU and OS support
// overwrites the entries it implements (kernel_table.h). Built with baseline flags.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <vector>

#include "backend/cpu/kernel_table.h"
#include "core/status.h"
#include "quant/blocks.h"

namespace tandem::cpu {
namespace {

CpuKernels build(Isa isa, Uarch uarch, bool batch_invariant) {
  CpuKernels k;
  k.uarch = uarch;
  k.batch_invariant = batch_invariant;
  generic::fill_kernels(k);
#if defined(__x86_64__)
  if (isa >= Isa::Avx2) avx2::fill_kernels(k);
  if (isa >= Isa::Avx512) avx512::fill_kernels(k);
  // AMX tiles sum per block where the AVX-512 kernels of few tokens sum per lane: not both in one table.
  if (isa >= Isa::Amx && !batch_invariant) amx::fill_kernels(k);
  // A repacked copy takes every call (CpuBackend::matmul), prefill too, where the tiles read the file's layout (as
  // measured on AMX machines; the panels' repacking was measured only where AMX is absent): none at this level,
  // in either table (kernels.h: both tables of a level pack alike).
  if (isa >= Isa::Amx) {
    std::fill(std::begin(k.pack), std::end(k.pack), nullptr);
    std::fill(std::begin(k.packed_gemm), std::end(k.packed_gemm), nullptr);
  }
#endif
  k.isa = isa;
  return k;
}

}  // namespace

bool isa_supported(Isa isa) {
#if !defined(__x86_64__)
  if (isa != Isa::Generic) return false;
#endif
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::Generic: return true;
    case Isa::Avx2: return f.avx2 && f.fma && f.f16c;
    case Isa::Avx512:
      return isa_supported(Isa::Avx2) && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl && f.avx512vnni &&
             f.avx512bf16;
    case Isa::Amx: {
      // TANDEM_NO_AMX=1 forces AVX-512 (to compare, or where tile state upsets a debugger or VM).
      const char* off = std::getenv("TANDEM_NO_AMX");
      return isa_supported(Isa::Avx512) && f.amx_tile && f.amx_int8 && f.amx_granted &&
             !(off && *off && std::strcmp(off, "0") != 0);
    }
  }
  return false;
}

namespace {
std::atomic<int> isa_limit{int(Isa::Amx)};  // --cpu-isa
}

Isa best_isa() {
  static const Isa best = [] {
    Isa b = Isa::Generic;
    for (Isa i : {Isa::Avx2, Isa::Avx512, Isa::Amx})
      if (isa_supported(i)) b = i;
    return b;
  }();
  return Isa(std::min(int(best), isa_limit.load(std::memory_order_relaxed)));
}

Status limit_isa(std::string_view name) {
  for (Isa i : {Isa::Generic, Isa::Avx2, Isa::Avx512, Isa::Amx}) {
    if (name != isa_name(i)) continue;
    if (!isa_supported(i))
      return unsupported("--cpu-isa %s: this CPU or OS does not support it (best here: %s)", isa_name(i),
                         isa_name(best_isa()));
    isa_limit.store(int(i));
    return Status::ok();
  }
  return invalid_argument("--cpu-isa '%.*s': expected generic, avx2, avx512 or amx", int(name.size()), name.data());
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Generic: return "generic";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Amx: return "amx";
  }
  return "?";
}

Uarch host_uarch() {
  static const Uarch uarch = [] {
    const char* v = std::getenv("TANDEM_CPU_UARCH");
    if (v && std::strcmp(v, "zen") == 0) return Uarch::Zen;
    if (v && std::strcmp(v, "intel") == 0) return Uarch::Intel;
    return cpu_features().amd_zen ? Uarch::Zen : Uarch::Intel;
  }();
  return uarch;
}

const char* uarch_name(Uarch uarch) { return uarch == Uarch::Zen ? "zen" : "intel"; }

const CpuKernels& kernels_for(Isa isa, Uarch uarch, bool batch_invariant) {
  TANDEM_CHECK(isa_supported(isa));
  auto level = [](Isa i, Uarch u, bool inv) { return isa_supported(i) ? build(i, u, inv) : CpuKernels{}; };
  // AMX exists only on Intel: its level has Intel's choices whatever uarch asks (and is built once,
  // since amx/kernels.cpp records the level below it in one table).
  static const CpuKernels tables[2][kNumUarchs][kNumIsas] = {
      {{level(Isa::Generic, Uarch::Intel, false), level(Isa::Avx2, Uarch::Intel, false),
        level(Isa::Avx512, Uarch::Intel, false), level(Isa::Amx, Uarch::Intel, false)},
       {level(Isa::Generic, Uarch::Zen, false), level(Isa::Avx2, Uarch::Zen, false),
        level(Isa::Avx512, Uarch::Zen, false), {}}},
      {{level(Isa::Generic, Uarch::Intel, true), level(Isa::Avx2, Uarch::Intel, true),
        level(Isa::Avx512, Uarch::Intel, true), level(Isa::Amx, Uarch::Intel, true)},
       {level(Isa::Generic, Uarch::Zen, true), level(Isa::Avx2, Uarch::Zen, true),
        level(Isa::Avx512, Uarch::Zen, true), {}}},
  };
  return tables[batch_invariant][isa == Isa::Amx ? int(Uarch::Intel) : int(uarch)][int(isa)];
}

const CpuKernels& kernels_for(Isa isa) { return kernels_for(isa, host_uarch()); }

const CpuKernels& kernels(bool batch_invariant) { return kernels_for(best_isa(), host_uarch(), batch_invariant); }

WeightType activation_type(WeightType t) {
  using WT = WeightType;
  switch (t) {
    case WT::Q2_K: case WT::Q3_K: case WT::Q4_K: case WT::Q5_K: case WT::Q6_K: case WT::IQ4_XS: return WT::Q8_K;
    case WT::IQ2_XXS: case WT::IQ2_XS: case WT::IQ2_S: case WT::IQ3_XXS: case WT::IQ3_S: case WT::IQ1_S:
    case WT::IQ1_M: return WT::Q8_K;
    case WT::Q4_0: case WT::Q5_0: case WT::Q8_0: case WT::IQ4_NL: return WT::Q8_0;
    case WT::Q4_1: case WT::Q5_1: return WT::Q8_1;
    default: return t;
  }
}

bool has_kernel(WeightType t) { return uint32_t(t) < kWeightTypeIdLimit && kernels_for(Isa::Generic).gemm[uint32_t(t)]; }

size_t activation_row_bytes(WeightType t, int64_t n) {
  const WeightType a = activation_type(t);
  // Q8_1 as ggml lays it out today (two halves, 36 bytes); gguf/types.h keeps the older 40-byte size.
  if (a == WeightType::Q8_1) return size_t(n / 32) * sizeof(BlockQ8_1);
  return row_bytes(a, n);
}

void matmul_f32(Isa isa, WeightType type, int64_t n_in, const void* w, size_t w_stride, int64_t n_rows,
                const float* x, int64_t n_tokens, float* y, size_t y_stride) {
  matmul_f32(isa, host_uarch(), type, n_in, w, w_stride, n_rows, x, n_tokens, y, y_stride);
}

void matmul_f32(Isa isa, Uarch uarch, WeightType type, int64_t n_in, const void* w, size_t w_stride,
                int64_t n_rows, const float* x, int64_t n_tokens, float* y, size_t y_stride, bool batch_invariant) {
  const CpuKernels& k = kernels_for(isa, uarch, batch_invariant);
  const uint32_t id = uint32_t(type);
  TANDEM_CHECK(id < kWeightTypeIdLimit && k.gemm[id] && n_in % block_size(type) == 0);
  const size_t act_bytes = activation_row_bytes(type, n_in);
  std::vector<uint8_t> act(act_bytes * size_t(n_tokens) + 64);
  for (int64_t t = 0; t < n_tokens; ++t) k.quantize_act[id](x + t * n_in, act.data() + t * act_bytes, n_in);
  k.gemm[id](n_in, w, w_stride, n_rows, act.data(), act_bytes, n_tokens, y, y_stride);
}

}  // namespace tandem::cpu
