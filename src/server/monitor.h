// The figures behind GET /metrics, GET /monitor/stats and tandem top: the scheduler's counters, KV use,
// per-device memory and weight-read bandwidth against the measured limit, CPU shares from /proc/stat,
// NVIDIA GPUs through NVML (when present), plus the plain-words hints shown when a figure crosses its
// line. A thread samples once a second for the rates; counters are read fresh at each snapshot.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "engine/scheduler.h"
#include "monitor/nvml.h"
#include "monitor/system.h"

namespace tandem::server {

// The lines the monitor draws and the hints test against (issue 16, from the seed's rules of thumb).
inline constexpr double kBandwidthLine = 0.75;  // of the measured RAM read bandwidth: memory-bound
inline constexpr double kGpuLine = 0.80;        // GPU utilization below this while generating: starved
inline constexpr double kSoftirqLine = 0.10;    // of all CPU time
inline constexpr double kIowaitLine = 0.10;
inline constexpr double kKvLine = 0.90;         // of the KV cache's cells
// Of the routed experts' uses (--expert-cache): below it decode mostly waits on disk reads.
inline constexpr double kExpertLine = 0.50;

struct DeviceFigures {
  std::string name;  // "CPU", "SIM0", ... as the placement plan names them
  uint64_t memory_used_bytes = 0, memory_free_bytes = 0;  // CPU: this process's RSS and what it may still take
  // Weight bytes one forward pass reads on this device: placement/predict.h's bytes per decoded token
  // (routed experts at n_expert_used / n_expert of their bytes).
  uint64_t weight_bytes_per_pass = 0;
  uint64_t weight_read_bytes = 0;       // since start-up: weight_bytes_per_pass x forward passes
  double read_bytes_per_s = 0;          // over the last sample period
  double read_limit_bytes_per_s = 0;    // 0: unknown (the CPU's only, once sampling has begun)
  std::string read_limit_source;        // "probe" (tandem probe's cached figure) or "measured" (at start)
  bool host_memory = false;             // its memory is the host's RAM (sim devices): its reads count there
  bool has_link = false;                // sim devices: copies over their modelled host link
  uint64_t link_to_device_bytes = 0, link_to_host_bytes = 0;
};

struct MonitorSnapshot {
  double t_unix_s = 0, period_s = 0;  // period_s: the window of the rates (0 before the first one)
  std::string model;
  SchedulerStats sched;
  std::vector<SlotInfo> slots;
  size_t n_queued = 0;
  int64_t n_ctx_slot = 0, kv_cells_capacity = 0;
  double generated_per_s = 0, prompt_per_s = 0;
  // --expert-cache over the last sample period: hits / uses (-1: no expert was used), disk bytes read / s.
  double expert_hit_rate = -1, expert_disk_read_bytes_per_s = 0;
  // llama-server's llamacpp:*_tokens_seconds: tokens over the steps' time since the previous /metrics
  // scrape (0 when none ran); filled by Monitor::scrape() only.
  double scrape_prompt_per_s = 0, scrape_generated_per_s = 0;
  std::vector<DeviceFigures> devices;  // devices[0] the CPU
  bool cpu_known = false;
  monitor::CpuShares cpu;
  bool nvml = false;                   // libnvidia-ml.so.1 loaded; gpus may still be empty
  std::vector<monitor::GpuSample> gpus;

  int64_t kv_cells_used() const;
  // Weight bytes per second read from host RAM: the CPU's and those of devices living in it.
  double host_read_bytes_per_s() const;
  int32_t n_processing() const;
};

class Monitor {
 public:
  // engine and scheduler must outlive the monitor. The sampling thread first takes the RAM read
  // bandwidth (tandem probe's cached figure, else measured: a tenth of a second), then samples every
  // period_s.
  Monitor(Engine& engine, const Scheduler& scheduler, std::string model_name, double period_s = 1.0);
  ~Monitor();
  // Counters as of now; rates, CPU and GPU figures from the last sample period. The first call starts
  // the sampling thread.
  MonitorSnapshot snapshot();
  // snapshot() plus the rates since the previous scrape (GET /metrics).
  MonitorSnapshot scrape();

 private:
  void loop();
  MonitorSnapshot counters() const;  // everything but the sampled figures

  Engine& engine_;
  const Scheduler& scheduler_;
  std::string model_name_;
  double period_s_;
  std::vector<uint64_t> weight_bytes_per_pass_;  // per DeviceFigures entry
  std::unique_ptr<monitor::Nvml> nvml_;

  mutable std::mutex mu_;  // guards the sampled figures and stop_
  std::condition_variable cv_;
  std::once_flag started_;
  bool stop_ = false;
  double sampled_period_s_ = 0, generated_per_s_ = 0, prompt_per_s_ = 0, ram_limit_bytes_per_s_ = 0;
  double expert_hit_rate_ = -1, expert_disk_read_bytes_per_s_ = 0;
  std::string ram_limit_source_;
  std::vector<double> read_bytes_per_s_;
  bool cpu_known_ = false;
  monitor::CpuShares cpu_;
  std::vector<monitor::GpuSample> gpus_;
  SchedulerStats last_scrape_;  // guarded by mu_
  std::thread thread_;
};

// Plain-words hints for the figures past their lines ("decode is memory-bound at 93% of RAM bandwidth").
std::vector<std::string> monitor_hints(const MonitorSnapshot& s);
// GET /monitor/stats: the snapshot as JSON (what the /monitor page and tandem top draw).
nlohmann::json monitor_json(const MonitorSnapshot& s);
// GET /metrics: the Prometheus text exposition format (version 0.0.4), tandem_* names with their units,
// plus llama-server's llamacpp:* names for the figures it has.
std::string prometheus_text(const MonitorSnapshot& s);

}  // namespace tandem::server
