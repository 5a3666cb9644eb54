// The monitor's sampling thread, its snapshot and hints (server/monitor.h); the Prometheus text is in
// metrics.cpp.
#include "server/monitor.h"

#include <chrono>
#include <cmath>
#include <cstdio>

#include "core/memory.h"
#include "placement/predict.h"
#include "placement/probe.h"

namespace tandem::server {
namespace {

using json = nlohmann::json;

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
double unix_s() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

std::string percent(double ratio) { return std::to_string(int(std::lround(ratio * 100))) + "%"; }

}  // namespace

int64_t MonitorSnapshot::kv_cells_used() const {
  int64_t n = 0;
  for (const auto& s : slots) n += s.n_past;
  return n;
}

int32_t MonitorSnapshot::n_processing() const {
  int32_t n = 0;
  for (const auto& s : slots) n += s.busy;
  return n;
}

Monitor::Monitor(Engine& engine, const Scheduler& scheduler, std::string model_name, double period_s)
    : engine_(engine), scheduler_(scheduler), model_name_(std::move(model_name)), period_s_(period_s) {
  // Bytes per pass per device: the planner's decode prediction at depth 0 (weights only). Its device
  // order is the plan's; ours is the CPU, then the sim devices.
  std::vector<std::string> names = {"CPU"};
  for (const auto& sim : engine_.sims) names.push_back(sim->name());
  weight_bytes_per_pass_.assign(names.size(), 0);
  const auto& plan = engine_.plan;
  if (!plan.devices.empty()) {
    const auto& hp = engine_.model->hparams();
    placement::Speeds speeds;
    placement::DeviceSpeed unit;
    unit.bytes_per_s = 1.0;  // the seconds are not used, only the bytes
    speeds.devices.assign(plan.devices.size(), unit);
    const std::vector<size_t> no_kv(plan.layer_device.size(), 0);
    const auto p = placement::predict_decode(plan, engine_.model->tensor_infos(), model_shape(hp), no_kv, 0, speeds);
    for (size_t d = 0; d < plan.devices.size(); ++d)
      for (size_t i = 0; i < names.size(); ++i)
        if (plan.devices[d].name == names[i]) weight_bytes_per_pass_[i] = p.read_bytes[d];
  }
  read_bytes_per_s_.assign(names.size(), 0);
  nvml_ = monitor::Nvml::load();
}

Monitor::~Monitor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

MonitorSnapshot Monitor::counters() const {
  MonitorSnapshot s;
  s.t_unix_s = unix_s();
  s.model = model_name_;
  s.sched = scheduler_.stats();
  s.slots = scheduler_.slots();
  s.n_queued = scheduler_.n_queued();
  s.n_ctx_slot = scheduler_.options().n_ctx_slot;
  s.kv_cells_capacity = engine_.context->kv().n_cells();
  DeviceFigures cpu;
  cpu.name = "CPU";
  cpu.memory_used_bytes = monitor::process_rss_bytes();
  const MemoryBudget budget = available_memory();
  cpu.memory_free_bytes = budget.bytes == UINT64_MAX ? 0 : budget.bytes;
  s.devices.push_back(cpu);
  for (const auto& sim : engine_.sims) {
    const sim::SimStats st = sim->stats();
    DeviceFigures d;
    d.name = sim->name();
    d.memory_used_bytes = st.bytes_in_use;
    d.memory_free_bytes = sim->budget_bytes() - std::min(sim->budget_bytes(), st.bytes_in_use);
    d.host_memory = true;
    d.has_link = true;
    d.link_to_device_bytes = st.bytes_from_host;
    d.link_to_host_bytes = st.bytes_to_host;
    s.devices.push_back(d);
  }
  for (size_t i = 0; i < s.devices.size(); ++i) {
    s.devices[i].weight_bytes_per_pass = weight_bytes_per_pass_[i];
    s.devices[i].weight_read_bytes = weight_bytes_per_pass_[i] * s.sched.n_passes;
  }
  return s;
}

MonitorSnapshot Monitor::snapshot() {
  // The thread starts with the first reader: a server nobody monitors pays nothing, not even the
  // bandwidth measurement.
  std::call_once(started_, [this] { thread_ = std::thread([this] { loop(); }); });
  MonitorSnapshot s = counters();
  std::lock_guard<std::mutex> lock(mu_);
  s.period_s = sampled_period_s_;
  s.generated_per_s = generated_per_s_;
  s.prompt_per_s = prompt_per_s_;
  s.expert_hit_rate = expert_hit_rate_;
  s.expert_disk_read_bytes_per_s = expert_disk_read_bytes_per_s_;
  for (size_t i = 0; i < s.devices.size(); ++i) s.devices[i].read_bytes_per_s = read_bytes_per_s_[i];
  s.devices[0].read_limit_bytes_per_s = ram_limit_bytes_per_s_;
  s.devices[0].read_limit_source = ram_limit_source_;
  s.cpu_known = cpu_known_;
  s.cpu = cpu_;
  s.nvml = nvml_ != nullptr;
  s.gpus = gpus_;
  return s;
}

MonitorSnapshot Monitor::scrape() {
  MonitorSnapshot s = snapshot();
  std::lock_guard<std::mutex> lock(mu_);
  const SchedulerStats& prev = last_scrape_;
  auto rate = [](uint64_t n, double t) { return t > 0 ? double(n) / t : 0.0; };
  s.scrape_prompt_per_s = rate(s.sched.n_prompt_tokens - prev.n_prompt_tokens, s.sched.t_prompt_s - prev.t_prompt_s);
  s.scrape_generated_per_s = rate(s.sched.n_generated - prev.n_generated, s.sched.t_generate_s - prev.t_generate_s);
  last_scrape_ = s.sched;
  return s;
}

void Monitor::loop() {
  // The limit: tandem probe's figure when its cache is of this machine, else measured now with the
  // engine's threads (what decode can use), as --fit does (placement/probe.h).
  std::string source = "probe";
  double ram = 0;
  if (auto probe = placement::load_probe(placement::probe_cache_path()); probe && *probe) {
    ram = (*probe)->read_bytes_per_s();
  } else {
    source = "measured";
    ram = placement::this_cpu_speed(engine_.threads).bytes_per_s;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ram_limit_bytes_per_s_ = ram;
    ram_limit_source_ = source;
  }
  SchedulerStats prev = scheduler_.stats();
  double t_prev = now_s();
  auto cpu_prev = monitor::read_cpu_times();
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (cv_.wait_for(lock, std::chrono::duration<double>(period_s_), [&] { return stop_; })) return;
    }
    const SchedulerStats cur = scheduler_.stats();
    const double t = now_s(), dt = t - t_prev;
    auto cpu_cur = monitor::read_cpu_times();
    std::vector<monitor::GpuSample> gpus;
    if (nvml_) gpus = nvml_->sample();
    // Bandwidth while decoding: bytes over the steps' own wall time, so idle time does not dilute it.
    const double t_busy = (cur.t_prompt_s + cur.t_generate_s) - (prev.t_prompt_s + prev.t_generate_s);
    const double passes = double(cur.n_passes - prev.n_passes);
    std::lock_guard<std::mutex> lock(mu_);
    sampled_period_s_ = dt;
    generated_per_s_ = double(cur.n_generated - prev.n_generated) / dt;
    prompt_per_s_ = double(cur.n_prompt_tokens - prev.n_prompt_tokens) / dt;
    const double expert_hits = double(cur.expert_hits - prev.expert_hits);
    const double expert_uses = expert_hits + double(cur.expert_misses - prev.expert_misses);
    expert_hit_rate_ = expert_uses > 0 ? expert_hits / expert_uses : -1;
    expert_disk_read_bytes_per_s_ = double(cur.expert_disk_read_bytes - prev.expert_disk_read_bytes) / dt;
    for (size_t i = 0; i < read_bytes_per_s_.size(); ++i)
      read_bytes_per_s_[i] = t_busy > 0 ? double(weight_bytes_per_pass_[i]) * passes / t_busy : 0;
    cpu_known_ = cpu_prev && cpu_cur;
    if (cpu_known_) cpu_ = monitor::cpu_shares(*cpu_prev, *cpu_cur);
    gpus_ = std::move(gpus);
    prev = cur;
    t_prev = t;
    cpu_prev = cpu_cur;
  }
}

double MonitorSnapshot::host_read_bytes_per_s() const {
  double sum = 0;
  for (size_t i = 0; i < devices.size(); ++i)
    if (i == 0 || devices[i].host_memory) sum += devices[i].read_bytes_per_s;
  return sum;
}

std::vector<std::string> monitor_hints(const MonitorSnapshot& s) {
  std::vector<std::string> out;
  const bool generating = s.generated_per_s > 0;
  const DeviceFigures& cpu = s.devices[0];
  const double ram_read = s.host_read_bytes_per_s();
  if (cpu.read_limit_bytes_per_s > 0 && ram_read > 1.2 * cpu.read_limit_bytes_per_s)
    out.push_back("weights are read at " + percent(ram_read / cpu.read_limit_bytes_per_s) +
                  " of the RAM bandwidth measured: they fit in the CPU's caches (a small model), or the limit was "
                  "measured while the machine was busy (`tandem probe` measures it again)");
  else if (cpu.read_limit_bytes_per_s > 0 && ram_read >= kBandwidthLine * cpu.read_limit_bytes_per_s)
    out.push_back("decode is memory-bound at " + percent(ram_read / cpu.read_limit_bytes_per_s) +
                  " of RAM bandwidth: fewer bytes per token (a smaller quantization, more layers on a GPU) is "
                  "what speeds it up");
  for (const auto& g : s.gpus)
    if (generating && g.utilization < kGpuLine)
      out.push_back("GPU " + std::to_string(g.index) + " idle " + percent(1 - g.utilization) +
                    ": waiting for the CPU's layers or experts, or for the host link");
  if (s.cpu_known && s.cpu.softirq >= kSoftirqLine)
    out.push_back("softirq takes " + percent(s.cpu.softirq) +
                  " of the CPU: interrupt work (network, NVMe) competes with decoding");
  if (s.cpu_known && s.cpu.iowait >= kIowaitLine)
    out.push_back("the CPUs wait for the disk " + percent(s.cpu.iowait) +
                  " of the time: weights are paged in from disk (more free RAM, or --mlock)");
  if (s.n_queued > 0)
    out.push_back(std::to_string(s.n_queued) + " request" + (s.n_queued == 1 ? "" : "s") +
                  " waiting for a slot: all " + std::to_string(s.slots.size()) + " slots are busy (raise -np)");
  if (s.sched.expert_cache && s.expert_hit_rate >= 0 && s.expert_hit_rate < kExpertLine)
    out.push_back("routed experts: " + percent(s.expert_hit_rate) + " found in RAM, the rest read from disk at " +
                  format("%.2f GB/s", s.expert_disk_read_bytes_per_s / 1e9) +
                  ": decode waits on the disk; a larger --expert-cache keeps more of them");
  // Idle slots keep their prompts' cells for reuse (a full cache is normal then): the busy ones count.
  int64_t busy_cells = 0, busy_capacity = 0;
  for (const auto& sl : s.slots)
    if (sl.busy) busy_cells += sl.n_past, busy_capacity += s.n_ctx_slot;
  if (busy_capacity > 0 && double(busy_cells) >= kKvLine * double(busy_capacity))
    out.push_back("busy slots " + percent(double(busy_cells) / double(busy_capacity)) +
                  " full: a reply that fills its slot ends with finish_reason length (raise -c, or --context-shift)");
  return out;
}

json monitor_json(const MonitorSnapshot& s) {
  auto ratio = [](double x, double of) { return of > 0 ? json(x / of) : json(nullptr); };
  json slots = json::array();
  for (const auto& sl : s.slots) slots.push_back({{"id", sl.id}, {"busy", sl.busy}, {"cells", sl.n_past}});
  json devices = json::array();
  for (const auto& d : s.devices) {
    json j = {{"name", d.name}, {"memory_used_bytes", d.memory_used_bytes}, {"memory_free_bytes", d.memory_free_bytes},
              {"weight_bytes_per_pass", d.weight_bytes_per_pass}, {"read_bytes_per_s", d.read_bytes_per_s},
              {"read_limit_bytes_per_s", d.read_limit_bytes_per_s > 0 ? json(d.read_limit_bytes_per_s) : json(nullptr)},
              {"read_ratio", ratio(d.read_bytes_per_s, d.read_limit_bytes_per_s)},
              {"read_limit_source", d.read_limit_bytes_per_s > 0 ? json(d.read_limit_source) : json(nullptr)}};
    if (d.has_link) j["link"] = {{"to_device_bytes", d.link_to_device_bytes}, {"to_host_bytes", d.link_to_host_bytes}};
    devices.push_back(std::move(j));
  }
  json gpus = nullptr;  // null: no NVML (no NVIDIA driver); [] : NVML but no device answered
  if (s.nvml) {
    gpus = json::array();
    for (const auto& g : s.gpus)
      gpus.push_back({{"index", g.index}, {"name", g.name}, {"utilization", g.utilization},
                      {"memory_used_bytes", g.memory_used_bytes}, {"memory_total_bytes", g.memory_total_bytes}});
  }
  json experts = nullptr;  // null: no --expert-cache (every expert is resident)
  if (s.sched.expert_cache) {
    const double uses = double(s.sched.expert_hits + s.sched.expert_misses);
    experts = {{"hit_rate", s.expert_hit_rate >= 0 ? json(s.expert_hit_rate) : json(nullptr)},
               {"hit_rate_total", uses > 0 ? json(double(s.sched.expert_hits) / uses) : json(nullptr)},
               {"hits_total", s.sched.expert_hits}, {"misses_total", s.sched.expert_misses},
               {"disk_read_bytes_total", s.sched.expert_disk_read_bytes},
               {"disk_read_bytes_per_s", s.expert_disk_read_bytes_per_s}};
  }
  const DeviceFigures& cpu = s.devices[0];
  uint64_t n_finished = 0;
  for (uint64_t n : s.sched.n_requests_finished) n_finished += n;
  return {{"time", s.t_unix_s},
          {"period_s", s.period_s},
          {"model", s.model},
          {"tokens_per_s", s.generated_per_s},
          {"prompt_tokens_per_s", s.prompt_per_s},
          {"generated_tokens_total", s.sched.n_generated},
          {"prompt_tokens_total", s.sched.n_prompt_tokens},
          {"requests", {{"processing", s.n_processing()}, {"queued", s.n_queued}, {"finished_total", n_finished},
                        {"rejected_total", s.sched.n_rejected}}},
          {"kv", {{"used", s.kv_cells_used()}, {"capacity", s.kv_cells_capacity},
                  {"ratio", ratio(double(s.kv_cells_used()), double(s.kv_cells_capacity))},
                  {"n_ctx_slot", s.n_ctx_slot}, {"slots", slots}}},
          {"bandwidth", {{"device", "host RAM"}, {"bytes_per_s", s.host_read_bytes_per_s()},
                         {"limit_bytes_per_s", cpu.read_limit_bytes_per_s > 0 ? json(cpu.read_limit_bytes_per_s)
                                                                               : json(nullptr)},
                         {"ratio", ratio(s.host_read_bytes_per_s(), cpu.read_limit_bytes_per_s)}}},
          {"devices", devices},
          {"cpu", s.cpu_known ? json{{"busy", s.cpu.busy}, {"softirq", s.cpu.softirq}, {"iowait", s.cpu.iowait}}
                              : json(nullptr)},
          {"gpu", gpus},
          {"experts", experts},
          {"lines", {{"bandwidth", kBandwidthLine}, {"gpu", kGpuLine}, {"softirq", kSoftirqLine},
                     {"iowait", kIowaitLine}, {"kv", kKvLine}, {"experts", kExpertLine}}},
          {"hints", monitor_hints(s)}};
}

}  // namespace tandem::server
