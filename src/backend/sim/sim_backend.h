// The sim device: a stand-in for a GPU, built on the CPU, so that placement, cross-device copies,
// asynchronous overlap and per-device memory accounting run in every test without one. It has what a
// GPU has that the CPU backend lacks:
// - its own memory: an arena with a budget (running out is an OutOfMemory error with the numbers);
// - a stream: ops and copies are queued and run in order on the device's own thread, after the call
//   returns, so a missing synchronize() or event shows up as wrong results;
// - a wall between memories: every pointer an op or copy receives is checked against the arena's live
//   allocations (a host pointer or another device's is an error naming the op and the argument,
//   returned by the next synchronize(), after which the device refuses further work as CUDA does);
// - a link: copies to and from the host take latency + bytes / bandwidth of wall time.
// The arithmetic is the CPU backend's (its kernels run on the device thread), so a model split between
// the CPU and sim devices computes bit-identical logits to the CPU alone.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"

namespace tandem::sim {

// A host link as a copy sees it. Default: PCIe 4.0 x16, pinned memory, as measured on such systems
// (about 25 of its 32 GB/s per direction; ~10 us per transfer).
struct LinkModel {
  double bandwidth_bytes_per_s = 25e9;
  double latency_s = 10e-6;
};

struct SimOptions {
  std::string name = "sim0";
  size_t budget_bytes = size_t(1) << 30;
  int n_threads = 1;  // threads of the device's CPU kernels
  LinkModel link;
};

// Byte counters of one sim device (for the start-up summary, bench and tests).
struct SimStats {
  size_t bytes_in_use = 0, peak_bytes = 0;
  uint64_t bytes_from_host = 0, bytes_to_host = 0, n_copies = 0, n_ops = 0;
  double copy_seconds = 0;  // the copies' own time on the device's thread (tandem probe's link bandwidth)
};

class SimBackend final : public Backend {
 public:
  // Reserves the budget as address space only (pages are committed when first written).
  static Result<std::unique_ptr<SimBackend>> create(const SimOptions& options);
  ~SimBackend() override;

  std::string name() const override { return options_.name; }
  size_t budget_bytes() const { return options_.budget_bytes; }
  SimStats stats() const;

  void set_batch_invariant(bool on) override;
  Result<void*> alloc(size_t bytes) override;
  void free(void* p) override;
  bool host_accessible() const override { return false; }
  void copy_from_host(void* dst, const void* src, size_t bytes) override;
  void copy_to_host(void* dst, const void* src, size_t bytes) override;
  Result<const void*> place_weight(const void* host, size_t bytes) override;
  // The device runs the CPU's kernels, in the CPU's layout too (a copy in host memory, outside the budget), so a
  // layer gives the same bits on either.
  Result<size_t> repack(const Weight& w) override { return cpu_->repack(w); }
  void release_repack(const Weight& w) override { cpu_->release_repack(w); }
  std::shared_ptr<Event> record() override;
  void wait(const std::shared_ptr<Event>& e) override;
  Status synchronize() override;

  void matmul(const Weight& w, const float* x, int64_t n_tokens, float* y, const Weight* bias) override;
  void matmul_id(const Weight& w, const float* x, bool x_per_slot, const int32_t* ids, int64_t n_tokens, int n_used,
                 float* y) override;
  void matmul_id_swiglu(const Weight& gate, const Weight* up, const float* x, const int32_t* ids, int64_t n_tokens,
                        int n_used, float* y) override;
  void get_rows(const Weight& table, std::span<const int32_t> ids, float* out) override;
  void rms_norm(const float* x, const Weight* weight, int64_t n_rows, int64_t n, float eps, float* y) override;
  void rope(float* x, int64_t n_tokens, int n_head, int head_dim, const int32_t* pos, const RopeParams& p) override;
  void attention(const AttentionArgs& a) override;
  void kv_store(const float* k, const float* v, int64_t n_tokens, int64_t row_k, int64_t row_v, const int32_t* cells,
                WeightType k_type, WeightType v_type, void* cache_k, void* cache_v) override;
  void swiglu(const float* gate, const float* up, int64_t n, float* out) override;
  void geglu(const float* gate, const float* up, int64_t n, float* out) override;
  void add(const float* a, const float* b, int64_t n, float* out) override;
  void copy_2d(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t n_rows,
               int64_t width) override;
  void weighted_sum(const float* x, const float* w, int64_t n_rows, int n_terms, int64_t n, float* out) override;
  void hadamard(float* x, int64_t n_rows, int64_t n, int block) override;
  void scale(float* x, int64_t n, float s) override;
  void softcap(float* x, int64_t n, float cap) override;

 private:
  struct Task {
    std::function<void()> fn;
    bool always = false;  // runs even after a failure (events)
  };
  struct Arg {
    const char* what;
    const void* p;
    size_t bytes;
  };

  SimBackend(const SimOptions& options, uint8_t* arena);
  // Queues `fn` if every argument lies inside one live allocation; otherwise records the error.
  void submit(const char* op, std::initializer_list<Arg> args, std::function<void()> fn);
  void fail(Status s);
  void run_queue();
  void drain();  // waits until everything queued has run
  // Whether [p, p + bytes) lies inside the live allocation that holds `base`. Caller holds mu_.
  bool inside(const void* base, const void* p, size_t bytes) const;
  // When a copy of `bytes` started now ends: latency + bytes / bandwidth.
  std::chrono::steady_clock::time_point link_done(size_t bytes) const;
  static void wait_link(std::chrono::steady_clock::time_point done);

  SimOptions options_;
  uint8_t* arena_;  // budget_bytes of address space
  std::unique_ptr<cpu::CpuBackend> cpu_;
  std::string link_lane_;  // the trace lane of its copies

  mutable std::mutex mu_;  // guards everything below
  std::map<size_t, size_t> free_;  // offset -> bytes, coalesced
  std::map<size_t, size_t> live_;  // offset -> bytes
  SimStats stats_;
  Status error_;   // the first failure; sticky
  bool failed_ = false;
  std::deque<Task> queue_;
  size_t n_pending_ = 0;  // queued or running
  bool stop_ = false;
  std::condition_variable work_cv_, idle_cv_;
  std::thread thread_;
};

}  // namespace tandem::sim
