// CPU sets, thread placement and scheduling priority: the OS-facing half of llama.cpp's --cpu-mask,
// --cpu-range, --cpu-strict, --prio and --numa (Linux). NUMA facts (nodes, memory policy) live in
// numa.h; the thread pool that uses these is thread_pool.h.
#pragma once

#include <pthread.h>

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace tandem {

using CpuSet = std::vector<int>;  // CPU ids, ascending, no repeats

// llama.cpp's --cpu-mask (common/common.cpp parse_cpu_mask): hex digits, optional 0x, the rightmost
// digit is CPUs 0-3. Errors name the bad character; a mask selecting no CPU is an error.
Result<CpuSet> parse_cpu_mask(std::string_view hex);
// llama.cpp's --cpu-range: "lo-hi", both inclusive; "lo-" runs to the last CPU, "-hi" starts at 0
// (n_cpus: the CPUs that exist). Errors for hi < lo and for CPUs past n_cpus - 1.
Result<CpuSet> parse_cpu_range(std::string_view text, int n_cpus);
// "0-3,8,10-11"; "none" for an empty set.
std::string format_cpu_list(const CpuSet& cpus);
CpuSet cpu_set_union(const CpuSet& a, const CpuSet& b);
CpuSet cpu_set_intersection(const CpuSet& a, const CpuSet& b);

// What the OS says about this machine's CPUs and this process's place on them.
struct CpuTopology {
  int n_configured = 0;          // CPUs that exist: ids 0..n_configured-1
  CpuSet allowed;                // this process's affinity (taskset, numactl --cpunodebind, cgroup cpusets)
  std::vector<int> core_of_cpu;  // per CPU id: its physical core (unique over packages); -1: unknown
  std::vector<CpuSet> nodes;     // CPUs of each NUMA node (index = node id); one node on a non-NUMA machine
  int start_node = 0;            // node of the CPU this thread ran on at detect()

  // Reads /proc/cpuinfo, sched_getaffinity and libnuma; never fails (falls back to one node, all CPUs).
  static CpuTopology detect();
  bool restricted() const { return int(allowed.size()) < n_configured; }
  // Physical cores among `cpus` (hyper-threads of one core count once), at least 1.
  int physical_cores(const CpuSet& cpus) const;
};

// llama.cpp's priority levels (ggml.h ggml_sched_priority), as --prio takes them.
enum class Priority { Low = -1, Normal = 0, Medium = 1, High = 2, Realtime = 3 };
const char* priority_name(Priority p);
// Process niceness, as llama.cpp's set_process_priority (common/common.cpp): 5, 0, -5, -10, -20.
// On Linux it changes the calling thread and the threads it creates afterwards: call it first.
Status set_process_priority(Priority p);
// A thread's scheduling class, as llama.cpp's ggml_thread_apply_priority (ggml-cpu.c): low SCHED_BATCH;
// medium, high, realtime SCHED_FIFO at 40, 80, 90; normal keeps what the thread inherited.
Status set_thread_priority(pthread_t thread, Priority p);
std::string describe_thread_priority(Priority p);  // "SCHED_FIFO 80"
std::string describe_priority(Priority p);         // "high (nice -10, threads SCHED_FIFO 80)"
// Pins a thread to `cpus` (pthread_setaffinity_np). Empty `cpus`: nothing to do.
Status set_thread_affinity(pthread_t thread, const CpuSet& cpus);
CpuSet thread_affinity(pthread_t thread);

enum class NumaMode { None, Distribute, Isolate, Numactl };
Result<NumaMode> parse_numa_mode(std::string_view text);
const char* numa_mode_name(NumaMode m);

// What the user asked for (run/bench flags).
struct PlacementRequest {
  int n_threads = 0;     // 0: the physical cores of the CPUs the threads may use
  CpuSet mask;           // --cpu-mask | --cpu-range; empty: none given
  bool strict = false;   // --cpu-strict 1: one CPU per thread, round-robin over the set
  NumaMode numa = NumaMode::None;
};

// Where the pool's threads run. thread_cpus[i] is thread i's set (0: the calling thread); all empty:
// the threads are not pinned and run wherever the process may.
struct Placement {
  int n_threads = 1;
  std::vector<CpuSet> thread_cpus;
  CpuSet usable;             // every CPU some thread may run on
  std::string description;   // for the start-up summary: "CPUs 0-3 (--cpu-mask), one thread per CPU"
  std::vector<std::string> warnings;
};

// Checks the request against the machine (a CPU that does not exist or lies outside the process's
// allowed set is an error naming it) and decides each thread's CPUs. Never widens the allowed set.
// --cpu-strict follows ggml_threadpool_new_impl: workers 1..n-1 take the set's CPUs in order, the
// calling thread the next one. --numa follows ggml's set_numa_thread_affinity: distribute puts thread
// i on node i % nodes, isolate keeps every thread on start_node, numactl on the allowed set; on one
// node they change nothing.
Result<Placement> plan_placement(const PlacementRequest& request, const CpuTopology& topology);

}  // namespace tandem
