// NVIDIA GPUs' utilization and memory through NVML, loaded with dlopen at run time: a build without the
// CUDA toolkit links nothing of it, and a machine without libnvidia-ml.so.1 (no driver) simply has no
// GPU figures.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tandem::monitor {

struct GpuSample {
  int index = 0;
  std::string name;
  double utilization = 0;  // [0, 1]: share of the last sample period a kernel was running (NVML's gpu rate)
  uint64_t memory_used_bytes = 0, memory_total_bytes = 0;
};

class Nvml {
 public:
  // Null when the library is absent, lacks a symbol, or nvmlInit fails (no driver, no device). path: the
  // driver's library by its soname (the loader's search), or a file (tests).
  static std::unique_ptr<Nvml> load(const char* path = "libnvidia-ml.so.1");
  ~Nvml();  // nvmlShutdown, dlclose
  // One sample per device; a device whose query fails is left out. Thread-safe (NVML is).
  std::vector<GpuSample> sample() const;

 private:
  struct Api;
  explicit Nvml(std::unique_ptr<Api> api);
  std::unique_ptr<Api> api_;
};

}  // namespace tandem::monitor
