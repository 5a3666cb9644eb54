/* A stand-in for NVIDIA's libnvidia-ml.so.1 with the entry points monitor/nvml.cpp opens, so the GPU
   path (dlopen, the structs, the metrics and hints) runs on machines without a GPU. Two devices: GPU 0
   answers (40% busy, 6 of 24 GiB used); GPU 1 fails its utilization query, as a device that fell off
   the bus does, and must be left out. Signatures and struct layouts as NVIDIA's nvml.h declares them. */
#include <stdint.h>
#include <stdio.h>

typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct nvmlDevice_st* nvmlDevice_t;

enum { NVML_SUCCESS = 0, NVML_ERROR_INVALID_ARGUMENT = 2, NVML_ERROR_GPU_IS_LOST = 15 };

int nvmlInit_v2(void) { return NVML_SUCCESS; }
int nvmlShutdown(void) { return NVML_SUCCESS; }
int nvmlDeviceGetCount_v2(unsigned int* n) {
  *n = 2;
  return NVML_SUCCESS;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, nvmlDevice_t* d) {
  if (i >= 2) return NVML_ERROR_INVALID_ARGUMENT;
  *d = (nvmlDevice_t)(uintptr_t)(i + 1);
  return NVML_SUCCESS;
}
int nvmlDeviceGetName(nvmlDevice_t d, char* name, unsigned int length) {
  snprintf(name, length, "Fake GPU %d", (int)(uintptr_t)d - 1);
  return NVML_SUCCESS;
}
int nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t* u) {
  if ((uintptr_t)d != 1) return NVML_ERROR_GPU_IS_LOST;
  u->gpu = 40;
  u->memory = 15;
  return NVML_SUCCESS;
}
int nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t* m) {
  m->total = 24ull << 30;
  m->used = 6ull << 30;
  m->free = m->total - m->used;
  return NVML_SUCCESS;
}
