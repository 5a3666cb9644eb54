// The CUDA backend's public face: which NVIDIA GPUs this process can use, and a Backend on one of them.
// Nothing here includes CUDA headers, so the engine and the tests compile the same with or without the
// backend; a build without it (TANDEM_CUDA off) links cuda_stub.cpp, which finds no device and says why.
// Status (issue 17): compiled, never yet executed on a GPU; docs/cuda.md lists what is unverified.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace tandem::cuda {

struct DeviceInfo {
  int index = 0;        // CUDA's device ordinal; the backend's name is "CUDA<index>", as llama.cpp's
  std::string name;     // "NVIDIA H200", from cudaGetDeviceProperties
  int cc_major = 0, cc_minor = 0;  // compute capability (sm_61 is 6, 1)
  size_t free_bytes = 0, total_bytes = 0;  // cudaMemGetInfo at probe time
};

// The GPUs found. Never fails: without a usable GPU `devices` is empty and `reason` says why (no
// driver, no device, a toolkit/driver version mismatch, no CUDA in this build). Cheap after the first
// call's driver start-up (about 0.1-1 s, CUDA's context creation).
struct Probe {
  std::vector<DeviceInfo> devices;
  std::string reason;
};
const Probe& probe();

// A Backend on device `index` (of probe().devices): one stream, its own cuBLAS handle, pinned staging
// for host copies. Errors: no such device, the cuBLAS library missing (it is loaded at run time, so a
// machine without the toolkit still runs everything else).
Result<std::unique_ptr<Backend>> create_backend(int index);

// Bytes a CUDA backend has copied between the host and the device since its creation (bench's bytes
// per token); zeros for any other backend.
struct LinkStats {
  uint64_t bytes_from_host = 0, bytes_to_host = 0;
};
LinkStats link_stats(const Backend& b);

// --list-devices lines: "  CUDA0: NVIDIA H200 (sm_90, 139.8 GiB, 139.2 GiB free)" per device, or
// "  CUDA: no device (<reason>)".
std::string describe_devices();

}  // namespace tandem::cuda
