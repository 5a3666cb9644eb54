// Run-time choice of the op tables (ops.h): generic always, then each supported level overwrites the
// entries it implements. Built with baseline flags.
#include "backend/cpu/ops.h"

#include <algorithm>
#include <cstring>

#include "core/status.h"
#include "quant/quant.h"

namespace tandem::cpu {
namespace {

CpuOps build(Isa isa) {
  CpuOps o;
  generic::fill_ops(o);
  generic::fill_flash_ops(o);
#if defined(__x86_64__)
  if (isa >= Isa::Avx2) avx2::fill_ops(o);
  if (isa >= Isa::Avx512) {
    avx512::fill_ops(o);
    avx512::fill_flash_ops(o);
  }
#endif
  o.isa = isa;
  return o;
}

}  // namespace

const CpuOps& ops_for(Isa isa) {
  TANDEM_CHECK(isa_supported(isa));
  static const CpuOps tables[kNumIsas] = {
      build(Isa::Generic),
      isa_supported(Isa::Avx2) ? build(Isa::Avx2) : CpuOps{},
      isa_supported(Isa::Avx512) ? build(Isa::Avx512) : CpuOps{},
      isa_supported(Isa::Amx) ? build(Isa::Amx) : CpuOps{},
  };
  return tables[int(isa)];
}

const CpuOps& ops() { return ops_for(best_isa()); }

void round_like_activation(const CpuOps& ops, WeightType k_type, const float* q, float* out, int64_t dk) {
  for (int64_t i0 = 0; i0 < dk; i0 += 512) {
    const int64_t n = std::min<int64_t>(512, dk - i0);
    alignas(64) uint8_t tmp[1024];  // 512 halves, or 16 Q8_0 blocks
    switch (k_type) {
      case WeightType::F32:
        std::memcpy(out + i0, q + i0, size_t(n) * 4);
        break;
      case WeightType::F16:
        ops.f32_to_f16(q + i0, reinterpret_cast<uint16_t*>(tmp), n);
        ops.kv_to_f32(WeightType::F16, tmp, out + i0, n);
        break;
      case WeightType::BF16:
        quant::quantize_row(WeightType::BF16, q + i0, tmp, n);
        ops.kv_to_f32(WeightType::BF16, tmp, out + i0, n);
        break;
      default:
        quant::quantize_row(WeightType::Q8_0, q + i0, tmp, n);
        ops.kv_to_f32(WeightType::Q8_0, tmp, out + i0, n);
        break;
    }
  }
}

}  // namespace tandem::cpu
