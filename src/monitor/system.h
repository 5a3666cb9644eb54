// What the operating system says about the machine while Tandem serves: CPU time shares from /proc/stat
// (busy, softirq, iowait) and this process's resident memory. Linux; the monitor samples it once a second.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/status.h"

namespace tandem::monitor {

// The aggregate "cpu" line of /proc/stat, in clock ticks since boot (guest time is already inside user).
struct CpuTimes {
  uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0;
  uint64_t total() const { return user + nice + system + idle + iowait + irq + softirq + steal; }
};

// Shares of all CPUs' time between two readings, each in [0, 1]. busy: neither idle nor iowait.
struct CpuShares {
  double busy = 0, softirq = 0, iowait = 0;
};

// Parses the text of /proc/stat (its first "cpu " line); Corrupt when it is missing or short.
Result<CpuTimes> parse_proc_stat(std::string_view text);
Result<CpuTimes> read_cpu_times();
// Zeros when no tick passed between the readings.
CpuShares cpu_shares(const CpuTimes& before, const CpuTimes& after);

// Resident set size of this process in bytes (/proc/self/statm); 0 when unreadable.
uint64_t process_rss_bytes();

}  // namespace tandem::monitor
