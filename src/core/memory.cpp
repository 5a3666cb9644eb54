// available_memory: /proc/meminfo, /proc/self/cgroup with /sys/fs/cgroup, getrlimit(RLIMIT_AS).
#include "core/memory.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <optional>

#include "core/status.h"

namespace tandem {
namespace {

// The first number in a file; nullopt for a missing file or "max" (cgroup v2's "no limit").
std::optional<uint64_t> read_number(const std::string& path) {
  std::ifstream in(path);
  std::string word;
  if (!(in >> word) || word.empty() || word[0] < '0' || word[0] > '9') return std::nullopt;
  return std::stoull(word);
}

void take(MemoryBudget* b, uint64_t bytes, std::string source) {
  if (bytes < b->bytes) *b = {bytes, std::move(source)};
}

void read_meminfo(MemoryBudget* b) {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib) {
    std::getline(in, unit);
    if (key == "MemAvailable:") return take(b, kib * 1024, "MemAvailable in /proc/meminfo");
  }
}

// cgroup v2: "0::/some/path" in /proc/self/cgroup; every level from there up to the root may limit.
// cgroup v1: the memory controller's line "N:memory:/path" (or the mount's root files).
void read_cgroup(MemoryBudget* b) {
  std::ifstream in("/proc/self/cgroup");
  for (std::string line; std::getline(in, line);) {
    const size_t c1 = line.find(':'), c2 = line.find(':', c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos) continue;
    const std::string controllers = line.substr(c1 + 1, c2 - c1 - 1);
    std::string path = line.substr(c2 + 1);
    const bool v2 = controllers.empty();
    if (!v2 && controllers.find("memory") == std::string::npos) continue;
    const std::string root = v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory";
    const char* limit_file = v2 ? "/memory.max" : "/memory.limit_in_bytes";
    const char* usage_file = v2 ? "/memory.current" : "/memory.usage_in_bytes";
    for (;;) {
      const std::string dir = root + (path == "/" ? "" : path);
      const auto limit = read_number(dir + limit_file);
      if (limit && *limit < (uint64_t(1) << 60)) {  // v1 writes a huge number for "no limit"
        const uint64_t used = read_number(dir + usage_file).value_or(0);
        take(b, used < *limit ? *limit - used : 0,
             format("the cgroup memory limit: %s%s %s, %s in use", dir.c_str(), limit_file,
                    std::to_string(*limit).c_str(), std::to_string(used).c_str()));
      }
      if (path.empty() || path == "/") break;
      const size_t slash = path.find_last_of('/');
      path = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
    }
  }
}

void read_address_space_limit(MemoryBudget* b) {
  rlimit r{};
  if (getrlimit(RLIMIT_AS, &r) != 0 || r.rlim_cur == RLIM_INFINITY) return;
  std::ifstream statm("/proc/self/statm");
  uint64_t pages = 0;
  statm >> pages;
  const uint64_t used = pages * uint64_t(sysconf(_SC_PAGESIZE));
  take(b, used < r.rlim_cur ? r.rlim_cur - used : 0,
       format("the address-space limit: ulimit -v %llu KiB", (unsigned long long)(r.rlim_cur / 1024)));
}

}  // namespace

MemoryBudget available_memory() {
  MemoryBudget b;
  // A cap of one's own: tests of memory decisions, or leaving the rest of the machine to others.
  if (const char* cap = std::getenv("TANDEM_MEMORY_LIMIT")) {
    char* end = nullptr;
    const uint64_t bytes = std::strtoull(cap, &end, 10);
    if (*cap && *end == '\0') take(&b, bytes, format("TANDEM_MEMORY_LIMIT=%s", cap));
  }
  read_meminfo(&b);
  read_cgroup(&b);
  read_address_space_limit(&b);
  return b;
}

}  // namespace tandem
