// GET /metrics: the Prometheus text exposition format 0.0.4 (prometheus.io/docs/instrumenting/exposition_formats)
// of a MonitorSnapshot. Names follow the client libraries' conventions: tandem_ prefix, base units in the
// name (_bytes, _seconds, _ratio), _total on counters, a HELP and TYPE line per family. llama-server's
// llamacpp:* families (tools/server/server-task.cpp, to_metrics) are served beside them with its types.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "server/monitor.h"

namespace tandem::server {
namespace {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Exposition {
 public:
  void family(const std::string& name, const char* type, const std::string& help) {
    out_ += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  }
  void sample(const std::string& name, double value, const Labels& labels = {}) {
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      for (size_t i = 0; i < labels.size(); ++i) {
        if (i) out_ += ',';
        out_ += labels[i].first + "=\"" + escape(labels[i].second) + '"';
      }
      out_ += '}';
    }
    out_ += ' ' + number(value) + '\n';
  }
  // A family of one sample.
  void one(const std::string& name, const char* type, const std::string& help, double value) {
    family(name, type, help);
    sample(name, value);
  }
  // A family of one sample per item, its `field`, labelled by labels_of(item).
  template <class T, class F, class LabelsOf>
  void per_item(const std::string& name, const char* type, const std::string& help, const std::vector<T>& items,
                F T::*field, LabelsOf labels_of) {
    family(name, type, help);
    for (const T& item : items) sample(name, double(item.*field), labels_of(item));
  }
  void histogram(const std::string& name, const std::string& help, const Histogram& h) {
    family(name, "histogram", help);
    for (size_t i = 0; i < h.bounds.size(); ++i) sample(name + "_bucket", double(h.counts[i]), {{"le", number(h.bounds[i])}});
    sample(name + "_bucket", double(h.count), {{"le", "+Inf"}});
    sample(name + "_sum", h.sum);
    sample(name + "_count", double(h.count));
  }
  std::string take() { return std::move(out_); }

 private:
  // Label values escape backslash, double quote and line feed; nothing else (the format's rule).
  static std::string escape(const std::string& v) {
    std::string out;
    for (char c : v) {
      if (c == '\\') out += "\\\\";
      else if (c == '"') out += "\\\"";
      else if (c == '\n') out += "\\n";
      else out += c;
    }
    return out;
  }
  static std::string number(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    // The shortest text that reads back as the same double: byte counts stay exact (%.10g rounded
    // 24 GiB) and ratios stay short (0.4, not %.17g's 0.40000000000000002).
    char buf[32];
    const auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;
    return std::string(buf, end);
  }
  std::string out_;
};

}  // namespace

std::string prometheus_text(const MonitorSnapshot& s) {
  Exposition e;
  const SchedulerStats& st = s.sched;
  const double kv_ratio = s.kv_cells_capacity > 0 ? double(s.kv_cells_used()) / double(s.kv_cells_capacity) : 0;

  e.one("tandem_prompt_tokens_total", "counter", "Prompt tokens decoded (tokens reused from a slot's cache excluded)",
        double(st.n_prompt_tokens));
  e.one("tandem_prompt_tokens_cached_total", "counter", "Prompt tokens reused from a slot's KV cells",
        double(st.n_prompt_cached));
  e.one("tandem_generated_tokens_total", "counter", "Tokens generated (end-of-generation tokens excluded)",
        double(st.n_generated));
  e.one("tandem_prompt_tokens_per_second", "gauge", "Prompt tokens decoded per second over the last sample period",
        s.prompt_per_s);
  e.one("tandem_generated_tokens_per_second", "gauge", "Tokens generated per second over the last sample period",
        s.generated_per_s);
  e.one("tandem_forward_passes_total", "counter", "Forward passes of the model (one per micro-batch)",
        double(st.n_passes));
  e.one("tandem_prompt_seconds_total", "counter", "Wall time of scheduler steps that held prompt tokens",
        st.t_prompt_s);
  e.one("tandem_generation_seconds_total", "counter", "Wall time of scheduler steps that held generated tokens only",
        st.t_generate_s);
  e.family("tandem_requests_total", "counter", "Generations finished, by finish reason (one per choice of a request)");
  static const char* kReasons[] = {"stop", "length", "cancelled", "error"};
  for (int r = 0; r < 4; ++r) e.sample("tandem_requests_total", double(st.n_requests_finished[r]), {{"reason", kReasons[r]}});
  e.one("tandem_requests_rejected_total", "counter", "Requests refused with 503 because the queue was full",
        double(st.n_rejected));
  if (st.expert_cache) {
    e.one("tandem_expert_cache_hits_total", "counter", "Routed experts found in RAM when their layer ran (--expert-cache)",
          double(st.expert_hits));
    e.one("tandem_expert_cache_misses_total", "counter", "Routed experts their layer waited to read from disk",
          double(st.expert_misses));
    e.one("tandem_expert_disk_read_bytes_total", "counter", "Bytes the expert cache read from the model file(s)",
          double(st.expert_disk_read_bytes));
    e.one("tandem_expert_disk_read_seconds_total", "counter", "Wall time with at least one expert read in flight",
          st.expert_disk_read_s);
  }
  e.one("tandem_requests_processing", "gauge", "Slots generating or decoding a prompt", s.n_processing());
  e.one("tandem_requests_queued", "gauge", "Generations waiting for a free slot", double(s.n_queued));
  e.histogram("tandem_time_to_first_token_seconds", "Seconds from a generation's arrival to its first token", st.ttft_s);
  e.histogram("tandem_request_duration_seconds", "Seconds from a generation's arrival to its end", st.latency_s);

  e.per_item("tandem_slot_kv_cells", "gauge",
             "KV cache cells a slot holds (its prompt and reply, kept for prefix reuse)", s.slots, &SlotInfo::n_past,
             [](const SlotInfo& sl) { return Labels{{"slot", std::to_string(sl.id)}}; });
  e.one("tandem_kv_cells_used", "gauge", "KV cache cells held by all slots", double(s.kv_cells_used()));
  e.one("tandem_kv_cells_capacity", "gauge", "KV cache cells in all (-c)", double(s.kv_cells_capacity));
  e.one("tandem_kv_cache_usage_ratio", "gauge", "Share of the KV cache's cells in use", kv_ratio);

  const auto device = [](const DeviceFigures& d) { return Labels{{"device", d.name}}; };
  e.per_item("tandem_device_memory_used_bytes", "gauge",
             "Memory used per device (CPU: this process's resident set; sim devices: their arena)", s.devices,
             &DeviceFigures::memory_used_bytes, device);
  e.per_item("tandem_device_memory_free_bytes", "gauge",
             "Memory still free per device (CPU: the least of MemAvailable, the cgroup limit and ulimit -v)", s.devices,
             &DeviceFigures::memory_free_bytes, device);
  e.per_item("tandem_pass_weight_read_bytes", "gauge",
             "Weight bytes one forward pass reads per device (routed experts at n_expert_used/n_expert of theirs)",
             s.devices, &DeviceFigures::weight_bytes_per_pass, device);
  e.per_item("tandem_weight_read_bytes_total", "counter", "Weight bytes read per device since start-up", s.devices,
             &DeviceFigures::weight_read_bytes, device);
  e.per_item("tandem_weight_read_bytes_per_second", "gauge",
             "Weight bytes read per second while decoding (over the steps' own time in the last sample period)",
             s.devices, &DeviceFigures::read_bytes_per_s, device);
  e.family("tandem_memory_read_limit_bytes_per_second", "gauge",
           "Memory read bandwidth of the device: tandem probe's cached figure, or measured when monitoring began");
  for (const auto& d : s.devices)
    if (d.read_limit_bytes_per_s > 0)
      e.sample("tandem_memory_read_limit_bytes_per_second", d.read_limit_bytes_per_s,
               {{"device", d.name}, {"source", d.read_limit_source}});
  e.family("tandem_link_bytes_total", "counter", "Bytes copied over a device's host link, by direction");
  for (const auto& d : s.devices)
    if (d.has_link) {
      e.sample("tandem_link_bytes_total", double(d.link_to_device_bytes), {{"device", d.name}, {"direction", "to_device"}});
      e.sample("tandem_link_bytes_total", double(d.link_to_host_bytes), {{"device", d.name}, {"direction", "to_host"}});
    }

  if (s.cpu_known) {
    e.one("tandem_cpu_busy_ratio", "gauge", "Share of all CPUs' time neither idle nor waiting for I/O (/proc/stat)",
          s.cpu.busy);
    e.one("tandem_cpu_softirq_ratio", "gauge", "Share of all CPUs' time in softirq (/proc/stat)", s.cpu.softirq);
    e.one("tandem_cpu_iowait_ratio", "gauge", "Share of all CPUs' time idle waiting for I/O (/proc/stat)", s.cpu.iowait);
  }
  if (!s.gpus.empty()) {
    using monitor::GpuSample;
    const auto gpu = [](const GpuSample& g) { return Labels{{"gpu", std::to_string(g.index)}, {"name", g.name}}; };
    e.per_item("tandem_gpu_utilization_ratio", "gauge", "Share of the last NVML sample period a kernel ran on the GPU",
               s.gpus, &GpuSample::utilization, gpu);
    e.per_item("tandem_gpu_memory_used_bytes", "gauge", "GPU memory in use (NVML)", s.gpus,
               &GpuSample::memory_used_bytes, gpu);
    e.per_item("tandem_gpu_memory_total_bytes", "gauge", "GPU memory in all (NVML)", s.gpus,
               &GpuSample::memory_total_bytes, gpu);
  }

  // llama-server's names, its types and meanings as far as Tandem has them; its *_seconds_total are
  // per-slot sums there, the steps' wall time here.
  e.one("llamacpp:prompt_tokens_total", "counter", "Number of prompt tokens processed, excluding cached tokens",
        double(st.n_prompt_tokens));
  e.one("llamacpp:prompt_tokens_cached_total", "counter", "Number of prompt tokens reused from the cache",
        double(st.n_prompt_cached));
  e.one("llamacpp:prompt_seconds_total", "counter", "Total time spent processing prompts", st.t_prompt_s);
  e.one("llamacpp:tokens_predicted_total", "counter", "Number of generation tokens processed", double(st.n_generated));
  e.one("llamacpp:tokens_predicted_seconds_total", "counter", "Total time spent generating tokens", st.t_generate_s);
  e.one("llamacpp:n_decode_total", "counter", "Total number of llama_decode() calls", double(st.n_steps));
  e.one("llamacpp:n_tokens_max", "counter", "Largest observed sequence length (prompt + generation)",
        double(st.n_tokens_max));
  e.one("llamacpp:prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s", s.scrape_prompt_per_s);
  e.one("llamacpp:predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s",
        s.scrape_generated_per_s);
  e.one("llamacpp:requests_processing", "gauge", "Number of requests processing", s.n_processing());
  e.one("llamacpp:requests_deferred", "gauge", "Number of requests deferred", double(s.n_queued));
  e.one("llamacpp:n_busy_slots_per_decode", "gauge", "Average number of busy slots per llama_decode() call",
        double(st.n_busy_slot_steps) / std::max(double(st.n_steps), 1.0));
  // Older llama-servers' KV gauges, which dashboards built then still read.
  e.one("llamacpp:kv_cache_usage_ratio", "gauge", "KV-cache usage. 1 means 100 percent usage.", kv_ratio);
  e.one("llamacpp:kv_cache_tokens", "gauge", "KV-cache tokens.", double(s.kv_cells_used()));
  return e.take();
}

}  // namespace tandem::server
