// What the scheduler counts for monitoring (/metrics, /monitor, tandem top): token and request counters
// since start-up and the latency histograms. Plain values: the scheduler fills them on its thread and
// hands out copies; rates are the reader's business (differences between two copies).
#pragma once

#include <cstdint>
#include <vector>

namespace tandem {

// A Prometheus-style histogram: counts[i] observations <= bounds[i] (cumulative), plus +Inf = count.
struct Histogram {
  std::vector<double> bounds;  // ascending upper bounds
  std::vector<uint64_t> counts;
  double sum = 0;
  uint64_t count = 0;

  explicit Histogram(std::vector<double> b = {}) : bounds(std::move(b)), counts(bounds.size(), 0) {}
  void observe(double v) {
    for (size_t i = 0; i < bounds.size(); ++i)
      if (v <= bounds[i]) ++counts[i];
    sum += v;
    ++count;
  }
};

struct SchedulerStats {
  uint64_t n_prompt_tokens = 0;   // prompt tokens decoded (cached ones excluded)
  uint64_t n_prompt_cached = 0;   // prompt tokens reused from a slot's cells
  uint64_t n_generated = 0;       // tokens sampled and reported (end-of-generation tokens excluded)
  uint64_t n_steps = 0;           // scheduler steps (Context::decode calls, llama.cpp's n_decode)
  uint64_t n_passes = 0;          // forward passes: a step of more than -ub tokens runs several
  uint64_t n_busy_slot_steps = 0; // sum over steps of the slots busy in it
  uint64_t n_tokens_max = 0;      // the longest sequence seen in a slot (prompt + generated)
  double t_prompt_s = 0;          // wall time of steps that held prompt tokens
  double t_generate_s = 0;        // wall time of steps that held generated tokens only
  uint64_t n_requests_finished[4] = {};  // by FinishReason: stop, length, cancelled, error
  uint64_t n_rejected = 0;        // submit() refused: the queue was full
  // --expert-cache (expert/expert_cache.h), as of the last step: uses that found the expert in RAM, uses
  // that waited for its read (misses and late prefetches), bytes read and the time reads were in flight.
  bool expert_cache = false;
  uint64_t expert_hits = 0, expert_misses = 0, expert_disk_read_bytes = 0;
  double expert_disk_read_s = 0;
  // Seconds from submit() to the first generated token, and to the end of the task.
  Histogram ttft_s{{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}};
  Histogram latency_s{{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}};
};

}  // namespace tandem
