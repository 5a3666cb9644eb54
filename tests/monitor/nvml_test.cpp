// NVML through dlopen (monitor/nvml.h) against a fake libnvidia-ml.so.1 (tests/monitor/fake_nvml.c):
// the symbols found, the structs read, a failing device left out; a missing library is no error.
#include "monitor/nvml.h"

#include <gtest/gtest.h>

namespace tandem::monitor {
namespace {

TEST(Nvml, AbsentLibraryMeansNoGpuFigures) {
  EXPECT_EQ(Nvml::load("/nonexistent/libnvidia-ml.so.1"), nullptr);
}

TEST(Nvml, ReadsUtilizationAndMemoryAndSkipsAFailingDevice) {
  auto nvml = Nvml::load(TANDEM_BINARY_DIR "/fake-nvml/libnvidia-ml.so.1");
  ASSERT_NE(nvml, nullptr);
  const auto gpus = nvml->sample();
  ASSERT_EQ(gpus.size(), 1u);  // GPU 1 fails its utilization query
  EXPECT_EQ(gpus[0].index, 0);
  EXPECT_EQ(gpus[0].name, "Fake GPU 0");
  EXPECT_DOUBLE_EQ(gpus[0].utilization, 0.40);
  EXPECT_EQ(gpus[0].memory_used_bytes, 6ull << 30);
  EXPECT_EQ(gpus[0].memory_total_bytes, 24ull << 30);
}

}  // namespace
}  // namespace tandem::monitor
