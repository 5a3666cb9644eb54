// A fixed pool of worker threads for data-parallel loops (one job at a time, fork-join).
// Workers spin briefly after a job and then sleep on a condition variable, so a decode step's
// back-to-back ops pay no wake-up latency while an idle server burns no CPU.
// Jobs are work-sharing: the caller runs its part and then closes the job; workers that had not yet
// joined skip it. So a worker the OS has descheduled (a busy machine) never stalls an op: jobs must
// hand out work dynamically (parallel_for does; run()'s callers use a shared counter).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tandem {

class ThreadPool {
 public:
  // n_threads counts the calling thread: ThreadPool(1) runs everything inline.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(thread_index, n_threads) on the caller (index 0) and on every worker that joins before the
  // caller's own call returns; returns when all of those are done. Each index runs at most once, and
  // some may not run at all: fn must take its work from a shared counter, not from its index.
  // Not reentrant: fn must not call run() again.
  void run(const std::function<void(int, int)>& fn);

  // Splits [0, n) into contiguous chunks of at least `grain` items (a few per thread), handed out
  // dynamically; every index is covered exactly once.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t begin, int64_t end)>& fn);

 private:
  void worker(int index);

  int n_threads_;
  std::vector<std::thread> threads_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint32_t> generation_{0};  // id of the latest job
  std::atomic<uint64_t> gate_{0};        // job id << 32 | closed bit | workers joined
  std::atomic<uint32_t> done_{0};        // joined workers finished
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable wake_;
};

// Physical cores of this machine (llama.cpp's default thread count), at least 1.
int physical_core_count();

}  // namespace tandem
