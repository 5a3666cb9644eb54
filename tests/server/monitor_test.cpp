// The monitor's hints and Prometheus text (server/monitor.h) on snapshots built by hand: each hint
// appears exactly when its figure crosses its line, and label values are escaped as the format says.
#include "server/monitor.h"

#include <gtest/gtest.h>

namespace tandem::server {
namespace {

MonitorSnapshot quiet() {
  MonitorSnapshot s;
  s.model = "m";
  s.slots = {SlotInfo{0, false, 10, 5, 5}, SlotInfo{1, false, 0, 0, 0}};
  s.kv_cells_capacity = 100;
  DeviceFigures cpu;
  cpu.name = "CPU";
  cpu.read_limit_bytes_per_s = 100e9;
  cpu.read_bytes_per_s = 50e9;
  s.devices.push_back(cpu);
  s.cpu_known = true;
  s.cpu = {0.5, 0.01, 0.0};
  s.generated_per_s = 20;
  return s;
}

bool has(const std::vector<std::string>& hints, const std::string& text) {
  for (const auto& h : hints)
    if (h.find(text) != std::string::npos) return true;
  return false;
}

TEST(MonitorHints, NoneWhileEveryFigureIsWithinItsLine) { EXPECT_TRUE(monitor_hints(quiet()).empty()); }

TEST(MonitorHints, EachFigurePastItsLineGetsItsHint) {
  MonitorSnapshot s = quiet();
  s.devices[0].read_bytes_per_s = 93e9;
  EXPECT_TRUE(has(monitor_hints(s), "decode is memory-bound at 93% of RAM bandwidth"));
  s.devices[0].read_bytes_per_s = 74e9;  // under the 75% line
  EXPECT_TRUE(monitor_hints(s).empty());
  s.devices[0].read_bytes_per_s = 300e9;  // past what RAM can give: caches, or a limit measured under load
  EXPECT_TRUE(has(monitor_hints(s), "weights are read at 300% of the RAM bandwidth measured"));
  EXPECT_FALSE(has(monitor_hints(s), "memory-bound"));

  s = quiet();
  s.sched.expert_cache = true;
  s.expert_hit_rate = 0.3;
  s.expert_disk_read_bytes_per_s = 1.5e9;
  EXPECT_TRUE(has(monitor_hints(s), "routed experts: 30% found in RAM, the rest read from disk at 1.50 GB/s"));
  s.expert_hit_rate = 0.6;  // above the 50% line
  EXPECT_TRUE(monitor_hints(s).empty());

  s = quiet();
  s.nvml = true;
  s.gpus = {monitor::GpuSample{0, "g", 0.6, 0, 0}};
  EXPECT_TRUE(has(monitor_hints(s), "GPU 0 idle 40%"));
  s.generated_per_s = 0;  // an idle server's idle GPU is no news
  EXPECT_TRUE(monitor_hints(s).empty());

  s = quiet();
  s.cpu.softirq = 0.14;
  EXPECT_TRUE(has(monitor_hints(s), "softirq takes 14% of the CPU"));
  s = quiet();
  s.cpu.iowait = 0.2;
  EXPECT_TRUE(has(monitor_hints(s), "wait for the disk 20%"));
  s = quiet();
  s.n_queued = 3;
  EXPECT_TRUE(has(monitor_hints(s), "3 requests waiting for a slot: all 2 slots are busy"));
  s = quiet();
  s.n_ctx_slot = 50;
  s.slots[1].n_past = 48;  // an idle slot keeping its prompt: a full cache is normal
  EXPECT_TRUE(monitor_hints(s).empty());
  s.slots[1].busy = true;
  EXPECT_TRUE(has(monitor_hints(s), "busy slots 96% full"));

  // A device living in host RAM (a sim device) reads from the same bandwidth as the CPU.
  s = quiet();
  DeviceFigures sim;
  sim.name = "SIM0";
  sim.host_memory = true;
  sim.read_bytes_per_s = 30e9;
  s.devices.push_back(sim);
  EXPECT_TRUE(has(monitor_hints(s), "decode is memory-bound at 80% of RAM bandwidth"));
  s.devices[1].host_memory = false;  // a GPU's own memory does not
  EXPECT_TRUE(monitor_hints(s).empty());
}

TEST(PrometheusText, EscapesLabelValuesAndOmitsUnknownFigures) {
  MonitorSnapshot s = quiet();
  s.cpu_known = false;
  DeviceFigures odd;
  odd.name = "a\"b\\c\nd";
  s.devices.push_back(odd);
  const std::string text = prometheus_text(s);
  EXPECT_NE(text.find("tandem_device_memory_used_bytes{device=\"a\\\"b\\\\c\\nd\"} 0\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("tandem_cpu_busy_ratio"), std::string::npos);  // no sample yet: no figure, not a 0
  EXPECT_EQ(text.find("tandem_gpu_"), std::string::npos);
  EXPECT_NE(text.find("tandem_kv_cache_usage_ratio 0.1\n"), std::string::npos);
  EXPECT_NE(text.find("tandem_slot_kv_cells{slot=\"0\"} 10\n"), std::string::npos);
}

}  // namespace
}  // namespace tandem::server
