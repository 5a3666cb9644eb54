// How much memory this process may still take: the tightest of the machine's MemAvailable, the memory
// limit of its cgroup (v2 or v1, ancestors included), its address-space limit (ulimit -v) and the
// environment's TANDEM_MEMORY_LIMIT (bytes). Linux.
#pragma once

#include <cstdint>
#include <string>

namespace tandem {

struct MemoryBudget {
  uint64_t bytes = UINT64_MAX;  // UINT64_MAX: nothing could be read
  std::string source;           // what set it: "MemAvailable in /proc/meminfo", "cgroup memory.max ...", ...
};

// Reads /proc and /sys each call (a few small files).
MemoryBudget available_memory();

}  // namespace tandem
