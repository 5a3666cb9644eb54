// ThreadPool: generation counter + spin-then-sleep workers.
#include "core/thread_pool.h"

#include <immintrin.h>

#include <algorithm>

namespace tandem {

namespace {
constexpr int64_t kSpinsAtPoll50 = 4000;  // a few hundred us: covers the gap between ops of one forward pass
// Spinning threads yield this often: two SCHED_FIFO threads (--prio >= 1) sharing a CPU never preempt
// each other, so a spinning one must let the other run.
constexpr int64_t kSpinsPerYield = 1024;
constexpr uint64_t kClosed = uint64_t(1) << 31;
constexpr uint64_t kJoinedMask = kClosed - 1;

void pause_or_yield(int64_t spins) {
  if ((spins + 1) % kSpinsPerYield == 0) std::this_thread::yield();
  else _mm_pause();
}
}  // namespace

int64_t spin_iterations_for_poll(int poll) {
  poll = std::clamp(poll, 0, 100);
  if (poll <= 50) return kSpinsAtPoll50 * poll / 50;
  // 2^((poll - 50) / 5), interpolated between whole steps so every level spins longer than the last.
  const int steps = (poll - 50) / 5, rest = (poll - 50) % 5;
  const int64_t low = kSpinsAtPoll50 << steps;
  return low + low * rest / 5;
}

ThreadPool::ThreadPool(int n_threads, const ThreadPoolOptions& options)
    : n_threads_(n_threads < 1 ? 1 : n_threads),
      options_(options),
      spin_iterations_(spin_iterations_for_poll(options.poll)) {
  auto note = [](Status* first, Status s) {
    if (first->is_ok() && !s.is_ok()) *first = std::move(s);
  };
  auto cpus_of = [this](int i) {
    return options_.thread_cpus.empty() ? CpuSet{} : options_.thread_cpus[size_t(i) % options_.thread_cpus.size()];
  };
  // Set from here on each new thread's handle, so that failures are known when the constructor returns.
  for (int i = 1; i < n_threads_; ++i) {
    threads_.emplace_back([this, i] { worker(i); });
    note(&affinity_status_, set_thread_affinity(threads_.back().native_handle(), cpus_of(i)));
    note(&priority_status_, set_thread_priority(threads_.back().native_handle(), options_.priority));
  }
  note(&affinity_status_, set_thread_affinity(pthread_self(), cpus_of(0)));
  note(&priority_status_, set_thread_priority(pthread_self(), options_.priority));
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

void ThreadPool::run(FunctionRef<void(int, int)> fn) {
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
  for (int64_t spins = 0; done_.load(std::memory_order_acquire) < joined; ++spins) pause_or_yield(spins);
}

void ThreadPool::worker(int index) {
  uint32_t seen = 0;
  for (;;) {
    for (int64_t spins = 0; generation_.load(std::memory_order_acquire) == seen && spins < spin_iterations_; ++spins)
      pause_or_yield(spins);
    if (generation_.load(std::memory_order_acquire) == seen) {
      n_sleeps_.fetch_add(1, std::memory_order_relaxed);
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

void ThreadPool::parallel_for(int64_t n, int64_t grain, FunctionRef<void(int64_t, int64_t)> fn) {
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
  const CpuTopology t = CpuTopology::detect();
  return t.physical_cores(t.allowed);
}

}  // namespace tandem
