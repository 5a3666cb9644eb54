// The thread pool's runtime options: the --poll spin budget, pinning of workers and caller, and
// thread priority. Each test restores the calling thread's affinity and policy.
#include <gtest/gtest.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "core/thread_pool.h"

namespace tandem {
namespace {

// Restores the calling thread's CPUs and scheduling policy when a test ends.
struct CallerGuard {
  CpuSet cpus = thread_affinity(pthread_self());
  int policy = 0;
  sched_param param{};
  CallerGuard() { pthread_getschedparam(pthread_self(), &policy, &param); }
  ~CallerGuard() {
    EXPECT_TRUE(set_thread_affinity(pthread_self(), cpus).is_ok());
    pthread_setschedparam(pthread_self(), policy, &param);
  }
};

// Runs jobs until worker 1 has joined one, calling `on_worker` on it and `on_caller` on the caller.
template <typename W, typename C>
void run_on_both(ThreadPool& pool, W on_worker, C on_caller) {
  std::atomic<bool> worker_ran{false};
  for (int attempt = 0; attempt < 100 && !worker_ran; ++attempt)
    pool.run([&](int index, int) {
      if (index == 1) {
        on_worker();
        worker_ran = true;
        return;
      }
      on_caller();
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
      while (!worker_ran && std::chrono::steady_clock::now() < until) std::this_thread::yield();
    });
  ASSERT_TRUE(worker_ran) << "worker 1 never joined a job";
}

TEST(ThreadPoolPoll, SpinBudgetGrowsWithThePollLevel) {
  EXPECT_EQ(spin_iterations_for_poll(0), 0);
  EXPECT_EQ(spin_iterations_for_poll(50), 4000);  // the budget before --poll existed
  EXPECT_EQ(spin_iterations_for_poll(100), 4000 << 10);
  for (int p = 1; p <= 100; ++p) EXPECT_GT(spin_iterations_for_poll(p), spin_iterations_for_poll(p - 1)) << p;
  EXPECT_EQ(spin_iterations_for_poll(-3), 0);
  EXPECT_EQ(spin_iterations_for_poll(500), spin_iterations_for_poll(100));
  EXPECT_EQ(ThreadPool(1).options().poll, 50);
}

TEST(ThreadPoolPoll, PollZeroSleepsAfterEveryJobAndPoll100KeepsSpinning) {
  constexpr int kJobs = 40;
  // Jobs in which the worker takes part, 1 ms apart (a gap between decode steps). Returns how many
  // times the worker gave up spinning and slept.
  auto sleeps = [](int poll) {
    ThreadPool pool(2, {.thread_cpus = {}, .poll = poll});
    for (int j = 0; j < kJobs; ++j) {
      run_on_both(pool, [] {}, [] {});
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return pool.n_sleeps();
  };
  // poll 0: the worker sleeps as soon as each job ends (a worker descheduled past the gap may find
  // the next job already posted and skip one sleep: hence half, not all).
  EXPECT_GE(sleeps(0), uint64_t(kJobs / 2));
  // poll 100 spins millions of pauses, far longer than a 1 ms gap: it hardly ever sleeps.
  EXPECT_LE(sleeps(100), uint64_t(kJobs / 4));
}

TEST(ThreadPoolAffinity, PinsWorkersAndTheCallerToTheirCpus) {
  CallerGuard guard;
  const CpuSet allowed = thread_affinity(pthread_self());
  ASSERT_FALSE(allowed.empty());
  const int caller_cpu = allowed.front(), worker_cpu = allowed.back();  // the same CPU on a one-CPU process
  ThreadPool pool(2, {.thread_cpus = {{caller_cpu}, {worker_cpu}}});
  ASSERT_TRUE(pool.affinity_status().is_ok()) << pool.affinity_status().message();
  CpuSet seen_worker, seen_caller;
  int worker_ran_on = -1;
  run_on_both(
      pool,
      [&] {
        seen_worker = thread_affinity(pthread_self());
        worker_ran_on = sched_getcpu();
      },
      [&] { seen_caller = thread_affinity(pthread_self()); });
  EXPECT_EQ(seen_worker, CpuSet{worker_cpu});
  EXPECT_EQ(worker_ran_on, worker_cpu);
  EXPECT_EQ(seen_caller, CpuSet{caller_cpu});
}

TEST(ThreadPoolAffinity, NoCpusMeansNoPinning) {
  CallerGuard guard;
  const CpuSet allowed = thread_affinity(pthread_self());
  ThreadPool pool(2);
  CpuSet seen_worker;
  run_on_both(pool, [&] { seen_worker = thread_affinity(pthread_self()); }, [] {});
  EXPECT_EQ(seen_worker, allowed);
  EXPECT_EQ(thread_affinity(pthread_self()), allowed);
}

TEST(ThreadPoolPriority, LowPutsEveryThreadInSchedBatch) {
  CallerGuard guard;
  ThreadPool pool(2, {.thread_cpus = {}, .poll = 50, .priority = Priority::Low});  // allowed without privileges
  ASSERT_TRUE(pool.priority_status().is_ok()) << pool.priority_status().message();
  int worker_policy = -1, caller_policy = -1;
  sched_param param{};
  run_on_both(
      pool, [&] { pthread_getschedparam(pthread_self(), &worker_policy, &param); },
      [&] { pthread_getschedparam(pthread_self(), &caller_policy, &param); });
  EXPECT_EQ(worker_policy, SCHED_BATCH);
  EXPECT_EQ(caller_policy, SCHED_BATCH);
}

TEST(ThreadPoolPriority, NormalKeepsTheInheritedPolicy) {
  CallerGuard guard;
  ThreadPool pool(2);
  int worker_policy = -1;
  sched_param param{};
  run_on_both(pool, [&] { pthread_getschedparam(pthread_self(), &worker_policy, &param); }, [] {});
  EXPECT_EQ(worker_policy, guard.policy);
}

}  // namespace
}  // namespace tandem
