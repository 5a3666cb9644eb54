// CPU feature probe: CPUID bits together with the OS's consent (XCR0 via XGETBV, and for AMX the
// arch_prctl permission request), as ggml-cpu/arch/x86/cpu-feats.cpp does. Built with baseline flags.
#include <cstdint>

#include "backend/cpu/kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace tandem::cpu {
namespace {

#if defined(__x86_64__) || defined(__i386__)
uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return uint64_t(edx) << 32 | eax;
}

// Asks Linux for the AMX tile-data state (XFEATURE_XTILEDATA = 18); without it the first tile
// instruction faults. Returns whether the permission is (now) granted.
bool request_amx_permission() {
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr int kArchGetXcompPerm = 0x1022, kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) return false;
  unsigned long bitmask = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &bitmask) != 0) return false;
  return (bitmask >> kXfeatureXtiledata) & 1;
#else
  return false;
#endif
}

CpuFeatures probe() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
  const unsigned max_leaf = a;
  const bool amd = b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163;  // "AuthenticAMD"
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const unsigned base_family = (a >> 8) & 0xf;
  const unsigned family = base_family + (base_family == 0xf ? (a >> 20) & 0xff : 0);
  f.amd_zen = amd && family >= 0x17;
  const bool osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
  const bool fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = xgetbv0();
  const bool ymm_os = (xcr0 & 0x6) == 0x6;             // SSE and AVX state
  const bool zmm_os = (xcr0 & 0xe6) == 0xe6;           // plus opmask, ZMM_Hi256, Hi16_ZMM
  const bool tile_os = (xcr0 & 0x60000) == 0x60000;    // XTILECFG and XTILEDATA
  if (!ymm_os || max_leaf < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const unsigned b7 = b, c7 = c, d7 = d;
  __cpuid_count(7, 1, a, b, c, d);
  const unsigned a71 = a;
  f.fma = fma;
  f.f16c = f16c;
  f.avx2 = (b7 >> 5) & 1;
  if (zmm_os) {
    f.avx512f = (b7 >> 16) & 1;
    f.avx512dq = (b7 >> 17) & 1;
    f.avx512bw = (b7 >> 30) & 1;
    f.avx512vl = (b7 >> 31) & 1;
    f.avx512vnni = (c7 >> 11) & 1;
    f.avx512bf16 = (a71 >> 5) & 1;
  }
  if (tile_os) {
    f.amx_bf16 = (d7 >> 22) & 1;
    f.amx_tile = (d7 >> 24) & 1;
    f.amx_int8 = (d7 >> 25) & 1;
    if (f.amx_tile) f.amx_granted = request_amx_permission();
  }
  return f;
}
#else
CpuFeatures probe() { return {}; }
#endif

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = probe();
  return features;
}

}  // namespace tandem::cpu
