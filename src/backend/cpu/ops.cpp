// Run-time choice of the op tables (ops.h): generic always, then each supported level overwrites the
// entries it implements. Built with baseline flags.
#include "backend/cpu/ops.h"

#include "core/status.h"

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

}  // namespace tandem::cpu
