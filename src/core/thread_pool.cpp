// ThreadPool: generation counter + spin-then-sleep workers.
#include "core/thread_pool.h"

#include <immintrin.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <string>

namespace tandem {

namespace {
constexpr int kSpinIterations = 4000;  // a few hundred us: covers the gap between ops of one forward pass
constexpr uint64_t kClosed = uint64_t(1) << 31;
constexpr uint64_t kJoinedMask = kClosed - 1;
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
  for (int i = 1; i < n_threads_; ++i) threads_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  {
    std::lock_guard lock(mu_);
    const uint32_t id = generation_.load(std::memory_order_relaxed) + 1;
    job_ = &fn;
    done_.store(0, std::memory_order_relaxed);
    gate_.store(uint64_t(id) << 32, std::memory_order_release);
    generation_.store(id, std::memory_order_release);
  }
  wake_.notify_all();
  fn(0, n_threads_);
  // Close the job: workers that have not joined by now skip it; wait only for those that did.
  const uint64_t joined = gate_.fetch_or(kClosed, std::memory_order_acq_rel) & kJoinedMask;
  while (done_.load(std::memory_order_acquire) < joined) _mm_pause();
}

void ThreadPool::worker(int index) {
  uint32_t seen = 0;
  for (;;) {
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen && spins < kSpinIterations) {
      _mm_pause();
      ++spins;
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [&] { return generation_.load() != seen; });
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_) return;
    // Join job `seen` unless it is closed (the caller finished it alone) or already replaced.
    uint64_t g = gate_.load(std::memory_order_acquire);
    bool joined = false;
    while ((g >> 32) == seen && !(g & kClosed)) {
      if (gate_.compare_exchange_weak(g, g + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        joined = true;
        break;
      }
    }
    if (!joined) continue;
    (*job_)(index, n_threads_);
    done_.fetch_add(1, std::memory_order_release);
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int64_t max_chunks = (n + grain - 1) / grain;
  if (n_threads_ == 1 || max_chunks == 1) {
    fn(0, n);
    return;
  }
  // A few chunks per thread, taken from a counter: whoever is running takes the next one.
  const int64_t chunks = std::min<int64_t>(max_chunks, int64_t(n_threads_) * 4);
  std::atomic<int64_t> next{0};
  run([&](int, int) {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
      const int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
      if (begin < end) fn(begin, end);
    }
  });
}

int physical_core_count() {
  // Count distinct (physical id, core id) pairs; fall back to the logical count.
  std::ifstream in("/proc/cpuinfo");
  std::set<std::pair<int, int>> cores;
  std::string line;
  int phys = 0;
  while (std::getline(in, line)) {
    if (line.rfind("physical id", 0) == 0) phys = std::stoi(line.substr(line.find(':') + 1));
    if (line.rfind("core id", 0) == 0) cores.insert({phys, std::stoi(line.substr(line.find(':') + 1))});
  }
  const int logical = int(std::thread::hardware_concurrency());
  if (cores.empty()) return logical > 0 ? logical : 1;
  return int(cores.size());
}

}  // namespace tandem
