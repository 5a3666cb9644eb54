// NVML through dlopen (monitor/nvml.h). The few types and entry points used are declared here as
// nvml.h (NVIDIA's, CUDA toolkit) defines them, so no header or library is needed at build time.
#include "monitor/nvml.h"

#include <dlfcn.h>

namespace tandem::monitor {
namespace {

using nvmlReturn_t = int;  // NVML_SUCCESS = 0
using nvmlDevice_t = struct nvmlDevice_st*;
struct nvmlUtilization_t {
  unsigned int gpu, memory;  // percent
};
struct nvmlMemory_t {
  unsigned long long total, free, used;  // bytes
};
constexpr unsigned kNameBytes = 96;  // NVML_DEVICE_NAME_V2_BUFFER_SIZE

}  // namespace

struct Nvml::Api {
  void* lib = nullptr;
  nvmlReturn_t (*init)() = nullptr;
  nvmlReturn_t (*shutdown)() = nullptr;
  nvmlReturn_t (*count)(unsigned int*) = nullptr;
  nvmlReturn_t (*handle)(unsigned int, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*name)(nvmlDevice_t, char*, unsigned int) = nullptr;
  nvmlReturn_t (*utilization)(nvmlDevice_t, nvmlUtilization_t*) = nullptr;
  nvmlReturn_t (*memory)(nvmlDevice_t, nvmlMemory_t*) = nullptr;
};

std::unique_ptr<Nvml> Nvml::load(const char* path) {
  auto api = std::make_unique<Api>();
  api->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!api->lib) return nullptr;
  auto sym = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(api->lib, name));
    return fn != nullptr;
  };
  const bool ok = sym(api->init, "nvmlInit_v2") && sym(api->shutdown, "nvmlShutdown") &&
                  sym(api->count, "nvmlDeviceGetCount_v2") && sym(api->handle, "nvmlDeviceGetHandleByIndex_v2") &&
                  sym(api->name, "nvmlDeviceGetName") && sym(api->utilization, "nvmlDeviceGetUtilizationRates") &&
                  sym(api->memory, "nvmlDeviceGetMemoryInfo");
  if (!ok || api->init() != 0) {
    dlclose(api->lib);
    return nullptr;
  }
  return std::unique_ptr<Nvml>(new Nvml(std::move(api)));
}

Nvml::Nvml(std::unique_ptr<Api> api) : api_(std::move(api)) {}

Nvml::~Nvml() {
  api_->shutdown();
  dlclose(api_->lib);
}

std::vector<GpuSample> Nvml::sample() const {
  std::vector<GpuSample> out;
  unsigned int n = 0;
  if (api_->count(&n) != 0) return out;
  for (unsigned int i = 0; i < n; ++i) {
    nvmlDevice_t dev = nullptr;
    nvmlUtilization_t util{};
    nvmlMemory_t mem{};
    char name[kNameBytes] = {};
    if (api_->handle(i, &dev) != 0 || api_->utilization(dev, &util) != 0 || api_->memory(dev, &mem) != 0) continue;
    api_->name(dev, name, kNameBytes);
    out.push_back({int(i), name, util.gpu / 100.0, mem.used, mem.total});
  }
  return out;
}

}  // namespace tandem::monitor
