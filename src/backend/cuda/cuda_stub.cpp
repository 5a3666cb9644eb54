// The CUDA backend's entry points in a build without it (TANDEM_CUDA off): no device, and why.
#include "backend/cuda/cuda_backend.h"

namespace tandem::cuda {

const Probe& probe() {
  static const Probe p{{}, "this build has no CUDA backend: configure with -DTANDEM_CUDA=ON where nvcc exists"};
  return p;
}

Result<std::unique_ptr<Backend>> create_backend(int index) { return unsupported("CUDA%d: %s", index, probe().reason.c_str()); }

LinkStats link_stats(const Backend&) { return {}; }

std::string describe_devices() { return "  CUDA: no device (" + probe().reason + ")\n"; }

}  // namespace tandem::cuda
