// A fixed pool of worker threads for data-parallel loops (one job at a time, fork-join).
// Workers spin briefly after a job and then sleep on a condition variable, so a decode step's
// back-to-back ops pay no wake-up latency while an idle server burns no CPU; how long they spin is
// llama.cpp's --poll level. Threads can be pinned to CPUs and given a priority (core/affinity.h).
// Jobs are work-sharing: the caller runs its part and then closes the job; workers that had not yet
// joined skip it. So a worker the OS has descheduled (a busy machine) never stalls an op: jobs must
// hand out work dynamically (parallel_for does; run()'s callers use a shared counter).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "core/affinity.h"
#include "core/function_ref.h"

namespace tandem {

struct ThreadPoolOptions {
  // CPUs of each thread, index 0 being the thread that constructs the pool and calls run(); empty:
  // no pinning. Otherwise one entry per thread.
  std::vector<CpuSet> thread_cpus;
  int poll = 50;  // llama.cpp's --poll, 0..100: 0 sleeps as soon as a job ends, 100 spins longest
  Priority priority = Priority::Normal;  // scheduling class of every pool thread (set_thread_priority)
};

// Pause iterations an idle worker spins before it sleeps, for a --poll level (clamped to 0..100).
// 50 gives 4,000 (a few hundred us: the gaps between the ops of one forward pass); above 50 it doubles
// every 5 levels up to ~4 million at 100 (a good part of a second: the gap between decode steps too,
// like llama.cpp's --poll 100); below 50 it falls linearly to 0.
int64_t spin_iterations_for_poll(int poll);

class ThreadPool {
 public:
  // n_threads counts the calling thread: ThreadPool(1) runs everything inline. Pinning and priority
  // apply to the workers and to the constructing thread too (it runs index 0), as ggml's threadpool
  // does; failures leave that thread as it was and are reported by priority_status() and affinity_status().
  explicit ThreadPool(int n_threads, const ThreadPoolOptions& options = {});
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  const ThreadPoolOptions& options() const { return options_; }
  // The first priority change and the first pinning the OS refused (ok when none was).
  const Status& priority_status() const { return priority_status_; }
  const Status& affinity_status() const { return affinity_status_; }
  // Times a worker went to sleep on the condition variable (statistics for tests, relaxed).
  uint64_t n_sleeps() const { return n_sleeps_.load(std::memory_order_relaxed); }

  // Calls fn(thread_index, n_threads) on the caller (index 0) and on every worker that joins before the
  // caller's own call returns; returns when all of those are done. Each index runs at most once, and
  // some may not run at all: fn must take its work from a shared counter, not from its index.
  // Not reentrant: fn must not call run() again. Allocates nothing (FunctionRef), so an op costs no
  // heap traffic per call.
  void run(FunctionRef<void(int, int)> fn);

  // Splits [0, n) into contiguous chunks of at least `grain` items (a few per thread), handed out
  // dynamically; every index is covered exactly once.
  void parallel_for(int64_t n, int64_t grain, FunctionRef<void(int64_t begin, int64_t end)> fn);

 private:
  void worker(int index);

  int n_threads_;
  ThreadPoolOptions options_;
  int64_t spin_iterations_;
  Status priority_status_, affinity_status_;
  std::vector<std::thread> threads_;
  const FunctionRef<void(int, int)>* job_ = nullptr;
  std::atomic<uint32_t> generation_{0};  // id of the latest job
  std::atomic<uint64_t> gate_{0};        // job id << 32 | closed bit | workers joined
  std::atomic<uint32_t> done_{0};        // joined workers finished
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> n_sleeps_{0};
  std::mutex mu_;
  std::condition_variable wake_;
};

// Physical cores among the CPUs this process may run on (llama.cpp's default thread count counts
// the whole machine; under taskset or numactl --cpunodebind this counts only the allowed CPUs), >= 1.
int physical_core_count();

}  // namespace tandem
