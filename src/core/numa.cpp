// libnuma queries (numa.h, numaif.h); linked as -lnuma (CMakeLists.txt).
#include "core/numa.h"

#include <numa.h>
#include <numaif.h>

#include <cerrno>
#include <cstring>

namespace tandem {
namespace {

struct Policy {
  int mode = MPOL_DEFAULT;
  std::vector<int> nodes;
  int error = 0;  // errno of a refused get_mempolicy (a container's seccomp filter may refuse it)
};

Policy current_policy() {
  Policy p;
  if (numa_available() < 0) return p;
  const int max_node = numa_max_node();
  const unsigned long n_bits = 8 * sizeof(unsigned long);
  std::vector<unsigned long> mask(size_t(max_node) / n_bits + 1, 0);
  int mode = 0;
  // maxnode counts bits and must cover the kernel's node count; one word more than needed is safe.
  if (get_mempolicy(&mode, mask.data(), mask.size() * n_bits + 1, nullptr, 0) != 0) {
    p.error = errno;
    return p;
  }
  p.mode = mode & 0xff;  // drops MPOL_F_STATIC_NODES / MPOL_F_RELATIVE_NODES / MPOL_F_NUMA_BALANCING
  for (int n = 0; n <= max_node; ++n)
    if (mask[size_t(n) / n_bits] >> (size_t(n) % n_bits) & 1) p.nodes.push_back(n);
  return p;
}

}  // namespace

std::vector<CpuSet> numa_node_cpus() {
  std::vector<CpuSet> nodes;
  if (numa_available() < 0) return nodes;
  bitmask* cpus = numa_allocate_cpumask();
  const int max_node = numa_max_node();
  for (int n = 0; n <= max_node; ++n) {
    CpuSet set;
    if (numa_node_to_cpus(n, cpus) == 0)
      for (unsigned c = 0; c < cpus->size; ++c)
        if (numa_bitmask_isbitset(cpus, c)) set.push_back(int(c));
    nodes.push_back(std::move(set));
  }
  numa_bitmask_free(cpus);
  return nodes;
}

std::string describe_memory_policy() {
  const Policy p = current_policy();
  if (p.error != 0) return format("unknown (get_mempolicy: %s)", std::strerror(p.error));
  const std::string nodes = format("node%s %s", p.nodes.size() == 1 ? "" : "s", format_cpu_list(p.nodes).c_str());
  switch (p.mode) {
    case MPOL_DEFAULT: return "default";
    case MPOL_BIND: return "bind " + nodes;
    case MPOL_INTERLEAVE: return "interleave " + nodes;
    case MPOL_PREFERRED: return p.nodes.empty() ? "local" : "preferred " + nodes;
    case MPOL_LOCAL: return "local";
    case MPOL_PREFERRED_MANY: return "preferred " + nodes;
    default: return format("mode %d %s", p.mode, nodes.c_str());
  }
}

}  // namespace tandem
