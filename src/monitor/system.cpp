// /proc/stat and /proc/self/statm readers (monitor/system.h).
#include "monitor/system.h"

#include <unistd.h>

#include <charconv>
#include <fstream>
#include <sstream>
#include <string>

namespace tandem::monitor {
namespace {

std::string read_text(const char* path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

Result<CpuTimes> parse_proc_stat(std::string_view text) {
  // proc(5): "cpu  user nice system idle iowait irq softirq steal guest guest_nice"; kernels before
  // 2.6.11 stop after irq/softirq, so steal is optional.
  if (text.substr(0, 4) != "cpu ") return corrupt("/proc/stat: the first line is not the aggregate 'cpu' line");
  const std::string_view line = text.substr(0, text.find('\n'));
  uint64_t v[8] = {};
  size_t n = 0, pos = 4;
  while (n < 8) {
    while (pos < line.size() && line[pos] == ' ') ++pos;
    if (pos >= line.size()) break;
    auto [end, ec] = std::from_chars(line.data() + pos, line.data() + line.size(), v[n]);
    if (ec != std::errc()) return corrupt("/proc/stat: field %zu of the 'cpu' line is not a number", n + 1);
    pos = size_t(end - line.data());
    ++n;
  }
  if (n < 7) return corrupt("/proc/stat: the 'cpu' line has %zu fields (at least 7 expected)", n);
  return CpuTimes{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
}

Result<CpuTimes> read_cpu_times() {
  const std::string text = read_text("/proc/stat");
  if (text.empty()) return io_error("cannot read /proc/stat");
  return parse_proc_stat(text);
}

CpuShares cpu_shares(const CpuTimes& a, const CpuTimes& b) {
  // Counters only grow; a smaller reading (another machine's numbers in a test) gives zeros, not wraps.
  if (b.total() <= a.total()) return {};
  const double total = double(b.total() - a.total());
  auto share = [&](uint64_t x, uint64_t y) { return y > x ? double(y - x) / total : 0.0; };
  const double idle = share(a.idle, b.idle) + share(a.iowait, b.iowait);
  return {idle < 1 ? 1 - idle : 0.0, share(a.softirq, b.softirq), share(a.iowait, b.iowait)};
}

uint64_t process_rss_bytes() {
  std::ifstream in("/proc/self/statm");
  uint64_t size_pages = 0, resident_pages = 0;
  if (!(in >> size_pages >> resident_pages)) return 0;
  return resident_pages * uint64_t(sysconf(_SC_PAGESIZE));
}

}  // namespace tandem::monitor
