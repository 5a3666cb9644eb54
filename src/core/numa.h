// NUMA facts through libnuma: the nodes and their CPUs, and the memory policy the process was started
// under (numactl --membind, --interleave, --preferred). Read only: Tandem never changes either, so
// every allocation follows whatever policy the user chose.
#pragma once

#include <string>
#include <vector>

#include "core/affinity.h"

namespace tandem {

// CPUs of each NUMA node (index = node id; a node without CPUs has an empty set). Empty when the kernel
// or libnuma reports no NUMA support.
std::vector<CpuSet> numa_node_cpus();

// The calling thread's memory policy (get_mempolicy), in words: "default", "bind node 0",
// "interleave nodes 0-1", "preferred node 1", "local"; "unknown (...)" when the call is refused.
std::string describe_memory_policy();

}  // namespace tandem
