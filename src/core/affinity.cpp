// CPU-set parsing, topology detection, priority and affinity calls, and the placement plan.
#include "core/affinity.h"

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>

#include "core/numa.h"

namespace tandem {
namespace {

constexpr size_t kMaxMaskDigits = 1024;  // 4096 CPUs: past any machine, short enough to reject junk

Result<int> parse_cpu_id(std::string_view text, std::string_view whole) {
  const bool digits = std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (text.empty() || text.size() > 6 || !digits)
    return invalid_argument("'%.*s' is not a CPU range (expected LO-HI, e.g. 0-3)", int(whole.size()), whole.data());
  return std::stoi(std::string(text));
}

bool contains(const CpuSet& set, int cpu) { return std::binary_search(set.begin(), set.end(), cpu); }


// CPUs of the mask `bits` (sched_getaffinity's layout), up to n_cpus.
CpuSet cpus_of(const cpu_set_t* bits, size_t bytes, int n_cpus) {
  CpuSet out;
  for (int c = 0; c < n_cpus; ++c)
    if (CPU_ISSET_S(size_t(c), bytes, bits)) out.push_back(c);
  return out;
}

int nice_of(Priority p) {
  switch (p) {
    case Priority::Low: return 5;
    case Priority::Normal: return 0;
    case Priority::Medium: return -5;
    case Priority::High: return -10;
    case Priority::Realtime: return -20;
  }
  return 0;
}

}  // namespace

Result<CpuSet> parse_cpu_mask(std::string_view hex) {
  const std::string_view whole = hex;
  if (hex.size() >= 2 && hex[0] == '0' && (hex[1] == 'x' || hex[1] == 'X')) hex.remove_prefix(2);
  if (hex.empty()) return invalid_argument("'%.*s' is not a hex CPU mask (e.g. 0xff)", int(whole.size()), whole.data());
  if (hex.size() > kMaxMaskDigits) return invalid_argument("mask of %zu hex digits is too long", hex.size());
  CpuSet cpus;
  for (size_t i = 0; i < hex.size(); ++i) {
    const char c = hex[hex.size() - 1 - i];  // the rightmost digit holds CPUs 0-3
    int v;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
    else
      return invalid_argument("'%.*s': '%c' is not a hex digit", int(whole.size()), whole.data(), c);
    for (int b = 0; b < 4; ++b)
      if (v >> b & 1) cpus.push_back(int(i) * 4 + b);
  }
  if (cpus.empty()) return invalid_argument("mask '%.*s' selects no CPU", int(whole.size()), whole.data());
  std::sort(cpus.begin(), cpus.end());
  return cpus;
}

Result<CpuSet> parse_cpu_range(std::string_view text, int n_cpus) {
  const size_t dash = text.find('-');
  int lo, hi;
  if (dash == std::string_view::npos) {
    TANDEM_ASSIGN(lo, parse_cpu_id(text, text));
    hi = lo;
  } else {
    const std::string_view a = text.substr(0, dash), b = text.substr(dash + 1);
    if (a.empty() && b.empty()) return invalid_argument("'-' is not a CPU range (expected LO-HI, e.g. 0-3)");
    lo = 0;
    hi = n_cpus - 1;
    if (!a.empty()) {
      TANDEM_ASSIGN(lo, parse_cpu_id(a, text));
    }
    if (!b.empty()) {
      TANDEM_ASSIGN(hi, parse_cpu_id(b, text));
    }
  }
  if (hi < lo) return invalid_argument("'%.*s': the range ends before it starts", int(text.size()), text.data());
  if (hi >= n_cpus)
    return invalid_argument("'%.*s': CPU %d does not exist (this machine has CPUs 0-%d)", int(text.size()), text.data(),
                            hi, n_cpus - 1);
  CpuSet cpus;
  for (int c = lo; c <= hi; ++c) cpus.push_back(c);
  return cpus;
}

std::string format_cpu_list(const CpuSet& cpus) {
  if (cpus.empty()) return "none";
  std::string out;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += j == i ? format("%d", cpus[i]) : format("%d-%d", cpus[i], cpus[j]);
    i = j + 1;
  }
  return out;
}

CpuSet cpu_set_union(const CpuSet& a, const CpuSet& b) {
  CpuSet out;
  std::set_union(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

CpuSet cpu_set_intersection(const CpuSet& a, const CpuSet& b) {
  CpuSet out;
  std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

CpuTopology CpuTopology::detect() {
  CpuTopology t;
  t.n_configured = std::max(1, int(sysconf(_SC_NPROCESSORS_CONF)));
  const int n_bits = std::max(t.n_configured, CPU_SETSIZE);
  cpu_set_t* mask = CPU_ALLOC(size_t(n_bits));
  const size_t bytes = CPU_ALLOC_SIZE(size_t(n_bits));
  CPU_ZERO_S(bytes, mask);
  if (sched_getaffinity(0, bytes, mask) == 0) t.allowed = cpus_of(mask, bytes, t.n_configured);
  CPU_FREE(mask);
  if (t.allowed.empty())
    for (int c = 0; c < t.n_configured; ++c) t.allowed.push_back(c);

  // Physical cores: distinct (physical id, core id) pairs of /proc/cpuinfo, numbered in order seen.
  t.core_of_cpu.assign(size_t(t.n_configured), -1);
  std::ifstream in("/proc/cpuinfo");
  std::map<std::pair<int, int>, int> core_ids;
  std::string line;
  int cpu = -1, phys = 0;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const int value = std::atoi(line.c_str() + colon + 1);
    if (line.rfind("processor", 0) == 0) cpu = value, phys = 0;
    else if (line.rfind("physical id", 0) == 0) phys = value;
    else if (line.rfind("core id", 0) == 0 && cpu >= 0 && cpu < t.n_configured)
      t.core_of_cpu[size_t(cpu)] = core_ids.emplace(std::pair(phys, value), int(core_ids.size())).first->second;
  }

  t.nodes = numa_node_cpus();
  if (t.nodes.empty()) {
    t.nodes.emplace_back();
    for (int c = 0; c < t.n_configured; ++c) t.nodes[0].push_back(c);
  }
  const int here = sched_getcpu();
  for (size_t n = 0; n < t.nodes.size(); ++n)
    if (contains(t.nodes[n], here)) t.start_node = int(n);
  return t;
}

int CpuTopology::physical_cores(const CpuSet& cpus) const {
  std::vector<int> cores;
  int unknown = 0;
  for (int c : cpus) {
    const int core = c < int(core_of_cpu.size()) ? core_of_cpu[size_t(c)] : -1;
    if (core < 0) ++unknown;
    else cores.push_back(core);
  }
  std::sort(cores.begin(), cores.end());
  const int n = int(std::unique(cores.begin(), cores.end()) - cores.begin()) + unknown;
  return std::max(1, n);
}

const char* priority_name(Priority p) {
  switch (p) {
    case Priority::Low: return "low";
    case Priority::Normal: return "normal";
    case Priority::Medium: return "medium";
    case Priority::High: return "high";
    case Priority::Realtime: return "realtime";
  }
  return "?";
}

Status set_process_priority(Priority p) {
  if (p == Priority::Normal) return Status::ok();
  if (setpriority(PRIO_PROCESS, 0, nice_of(p)) != 0)
    return unsupported("nice %d: %s", nice_of(p), std::strerror(errno));
  return Status::ok();
}

Status set_thread_priority(pthread_t thread, Priority p) {
  if (p == Priority::Normal) return Status::ok();  // keep the inherited policy, as ggml does
  sched_param param{};
  int policy = SCHED_FIFO;
  switch (p) {
    case Priority::Low: policy = SCHED_BATCH; param.sched_priority = 0; break;
    case Priority::Medium: param.sched_priority = 40; break;
    case Priority::High: param.sched_priority = 80; break;
    default: param.sched_priority = 90; break;
  }
  if (const int err = pthread_setschedparam(thread, policy, &param); err != 0)
    return unsupported("%s: %s", describe_thread_priority(p).c_str(), std::strerror(err));
  return Status::ok();
}

std::string describe_thread_priority(Priority p) {
  switch (p) {
    case Priority::Low: return "SCHED_BATCH";
    case Priority::Normal: return "inherited";
    case Priority::Medium: return "SCHED_FIFO 40";
    case Priority::High: return "SCHED_FIFO 80";
    case Priority::Realtime: return "SCHED_FIFO 90";
  }
  return "?";
}

std::string describe_priority(Priority p) {
  if (p == Priority::Normal) return "normal";
  return format("%s (nice %d, threads %s)", priority_name(p), nice_of(p), describe_thread_priority(p).c_str());
}

Status set_thread_affinity(pthread_t thread, const CpuSet& cpus) {
  if (cpus.empty()) return Status::ok();
  const size_t n_bits = size_t(std::max(cpus.back() + 1, CPU_SETSIZE));
  cpu_set_t* mask = CPU_ALLOC(n_bits);
  const size_t bytes = CPU_ALLOC_SIZE(n_bits);
  CPU_ZERO_S(bytes, mask);
  for (int c : cpus) CPU_SET_S(size_t(c), bytes, mask);
  const int err = pthread_setaffinity_np(thread, bytes, mask);
  CPU_FREE(mask);
  if (err != 0)
    return unsupported("pinning a thread to CPUs %s: %s", format_cpu_list(cpus).c_str(), std::strerror(err));
  return Status::ok();
}

CpuSet thread_affinity(pthread_t thread) {
  const int n = std::max(int(sysconf(_SC_NPROCESSORS_CONF)), CPU_SETSIZE);
  cpu_set_t* mask = CPU_ALLOC(size_t(n));
  const size_t bytes = CPU_ALLOC_SIZE(size_t(n));
  CPU_ZERO_S(bytes, mask);
  CpuSet out;
  if (pthread_getaffinity_np(thread, bytes, mask) == 0) out = cpus_of(mask, bytes, n);
  CPU_FREE(mask);
  return out;
}

Result<NumaMode> parse_numa_mode(std::string_view text) {
  if (text == "distribute") return NumaMode::Distribute;
  if (text == "isolate") return NumaMode::Isolate;
  if (text == "numactl") return NumaMode::Numactl;
  return invalid_argument("unknown mode '%.*s' (distribute, isolate or numactl)", int(text.size()), text.data());
}

const char* numa_mode_name(NumaMode m) {
  switch (m) {
    case NumaMode::None: return "none";
    case NumaMode::Distribute: return "distribute";
    case NumaMode::Isolate: return "isolate";
    case NumaMode::Numactl: return "numactl";
  }
  return "?";
}

Result<Placement> plan_placement(const PlacementRequest& r, const CpuTopology& topo) {
  for (int c : r.mask) {
    if (c >= topo.n_configured)
      return invalid_argument("--cpu-mask/--cpu-range: CPU %d does not exist (this machine has CPUs 0-%d)", c,
                              topo.n_configured - 1);
    if (!contains(topo.allowed, c))
      return invalid_argument("--cpu-mask/--cpu-range: CPU %d is outside the CPUs this process may use (%s, set by "
                              "taskset, numactl or a cgroup)", c, format_cpu_list(topo.allowed).c_str());
  }
  const CpuSet base = r.mask.empty() ? topo.allowed : r.mask;
  int n_nodes = 0;
  for (const CpuSet& node : topo.nodes) n_nodes += !node.empty();

  std::vector<CpuSet> groups;  // thread i runs on groups[i % groups.size()]
  if (r.numa == NumaMode::Distribute) {
    for (const CpuSet& node : topo.nodes)
      if (CpuSet s = cpu_set_intersection(node, base); !s.empty()) groups.push_back(std::move(s));
  } else if (r.numa == NumaMode::Isolate) {
    const CpuSet s = cpu_set_intersection(topo.nodes[size_t(topo.start_node)], base);
    if (s.empty())
      return invalid_argument("--numa isolate: node %d, where the process started, has none of the CPUs %s",
                              topo.start_node, format_cpu_list(base).c_str());
    groups.push_back(s);
  }
  if (groups.empty()) groups.push_back(base);

  Placement p;
  for (const CpuSet& g : groups) p.usable = cpu_set_union(p.usable, g);
  p.n_threads = r.n_threads > 0 ? r.n_threads : topo.physical_cores(p.usable);

  const bool numa_pins = r.numa != NumaMode::None && n_nodes > 1;
  const std::string bound =
      topo.restricted() ? format("; process bound to CPU%s %s (taskset, numactl or cgroup)",
                                 topo.allowed.size() == 1 ? "" : "s", format_cpu_list(topo.allowed).c_str())
                        : "";
  const std::string numa =
      r.numa == NumaMode::None || n_nodes > 1
          ? format("numa: %d node%s", n_nodes, n_nodes == 1 ? "" : "s")
          : format("numa: 1 node, so --numa %s changes nothing", numa_mode_name(r.numa));
  if (r.mask.empty() && !r.strict && !numa_pins) {
    p.description = format("threads not pinned%s; %s", bound.c_str(), numa.c_str());
    return p;
  }

  p.thread_cpus.resize(size_t(p.n_threads));
  std::vector<size_t> next(groups.size(), 0);
  // Workers 1..n-1 first, the calling thread (0) last, as ggml_threadpool_new_impl places them.
  for (int k = 1; k <= p.n_threads; ++k) {
    const int t = k % p.n_threads;
    const size_t g = size_t(t) % groups.size();
    if (r.strict) p.thread_cpus[size_t(t)] = {groups[g][next[g]++ % groups[g].size()]};
    else p.thread_cpus[size_t(t)] = groups[g];
  }
  if (p.n_threads > int(p.usable.size()))
    p.warnings.push_back(format("%d threads on %zu CPU%s (%s): threads will share CPUs", p.n_threads, p.usable.size(),
                                p.usable.size() == 1 ? "" : "s", format_cpu_list(p.usable).c_str()));
  std::string where;
  if (r.numa == NumaMode::Distribute && groups.size() > 1)
    where = format("spread over %zu nodes (thread i on node i %% %zu)", groups.size(), groups.size());
  else if (r.numa == NumaMode::Isolate && n_nodes > 1)
    where = format("on node %d", topo.start_node);
  p.description = format("threads pinned to CPU%s %s%s%s%s%s%s; %s", p.usable.size() == 1 ? "" : "s",
                         format_cpu_list(p.usable).c_str(), r.mask.empty() ? "" : " (--cpu-mask/--cpu-range)",
                         where.empty() ? "" : ", ", where.c_str(), r.strict ? ", one CPU each (--cpu-strict 1)" : "",
                         bound.c_str(), numa.c_str());
  return p;
}

}  // namespace tandem
