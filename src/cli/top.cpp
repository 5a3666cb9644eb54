// tandem top: the /monitor page's figures in a terminal, for servers without a browser. Polls
// GET /monitor/stats and redraws the screen with ANSI escape codes (no curses: one screenful of lines);
// --once prints a single snapshot without them, for scripts.
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "server/http_client.h"

namespace tandem::cli {
namespace {

using json = nlohmann::json;

double num(const json& j, double fallback = 0) { return j.is_number() ? j.get<double>() : fallback; }

std::string percent(const json& ratio) {
  return ratio.is_number() ? std::to_string(int(std::lround(ratio.get<double>() * 100))) + "%" : "n/a";
}

std::string gb_per_s(double bytes_per_s) { return format("%.1f GB/s", bytes_per_s / 1e9); }

std::string size(double bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) bytes /= 1024, ++u;
  return format(u ? "%.1f %s" : "%.0f %s", bytes, kUnits[u]);
}

// [#######|...] : the share filled, '|' where the line is (when inside the bar).
std::string bar(const json& ratio, double line) {
  constexpr int kWidth = 20;
  const int filled = ratio.is_number() ? int(std::lround(std::clamp(ratio.get<double>(), 0.0, 1.0) * kWidth)) : 0;
  const int mark = line > 0 ? int(std::lround(line * kWidth)) : -1;
  std::string out = "[";
  for (int i = 0; i < kWidth; ++i) out += i == mark ? '|' : i < filled ? '#' : '.';
  return out + "]";
}

// One screenful from a /monitor/stats answer.
std::string render(const json& s, const std::string& url) {
  const json& lines = s["lines"];
  std::string out;
  auto line = [&out](const std::string& label, const std::string& text) {
    out += format("%-12s %s\n", label.c_str(), text.c_str());
  };
  char clock[16];
  const std::time_t now = std::time(nullptr);
  std::strftime(clock, sizeof clock, "%H:%M:%S", std::localtime(&now));
  out += format("tandem top  %s  %s  %s\n\n", url.c_str(), s.value("model", "").c_str(), clock);
  line("tokens/s", format("%.1f generated, %.0f prompt", num(s["tokens_per_s"]), num(s["prompt_tokens_per_s"])));
  const json& bw = s["bandwidth"];
  line("bandwidth", bw["limit_bytes_per_s"].is_number()
                        ? format("%s %s of %s (%s; line %s)", bar(bw["ratio"], num(lines["bandwidth"])).c_str(),
                                 gb_per_s(num(bw["bytes_per_s"])).c_str(), gb_per_s(num(bw["limit_bytes_per_s"])).c_str(),
                                 percent(bw["ratio"]).c_str(), percent(lines["bandwidth"]).c_str())
                        : gb_per_s(num(bw["bytes_per_s"])) + " (limit being measured)");
  if (!s["gpu"].is_array() || s["gpu"].empty()) {
    line("GPU", "no GPU");
  } else {
    for (const auto& g : s["gpu"])
      line(format("GPU%d", int(num(g["index"]))),
           format("%s %s busy, %s of %s  %s", bar(g["utilization"], num(lines["gpu"])).c_str(),
                  percent(g["utilization"]).c_str(), size(num(g["memory_used_bytes"])).c_str(),
                  size(num(g["memory_total_bytes"])).c_str(), g.value("name", "").c_str()));
  }
  const json& cpu = s["cpu"];
  line("CPU", cpu.is_object() ? format("%s busy %s, softirq %s (line %s), iowait %s",
                                       bar(cpu["busy"], 0).c_str(), percent(cpu["busy"]).c_str(),
                                       percent(cpu["softirq"]).c_str(), percent(lines["softirq"]).c_str(),
                                       percent(cpu["iowait"]).c_str())
                              : "waiting for the first /proc/stat sample");
  const json& rq = s["requests"];
  line("requests", format("%d processing, %d queued, %d rejected, %d finished", int(num(rq["processing"])),
                          int(num(rq["queued"])), int(num(rq["rejected_total"])), int(num(rq["finished_total"]))));
  const json& kv = s["kv"];
  std::string per_slot;
  for (const auto& sl : kv["slots"]) per_slot += format(" %d", int(num(sl["cells"])));
  line("KV cache", format("%s %d of %d cells (%s); per slot:%s", bar(kv["ratio"], num(lines["kv"])).c_str(),
                          int(num(kv["used"])), int(num(kv["capacity"])), percent(kv["ratio"]).c_str(),
                          per_slot.c_str()));
  const json& ex = s["experts"];
  line("experts", ex.is_object() ? format("hit rate %s (line %s; %s since start), disk %s",
                                          percent(ex["hit_rate"]).c_str(), percent(lines["experts"]).c_str(),
                                          percent(ex["hit_rate_total"]).c_str(),
                                          gb_per_s(num(ex["disk_read_bytes_per_s"])).c_str())
                                 : "all in RAM (no --expert-cache)");
  for (const auto& d : s["devices"]) {
    std::string text = format("memory %s used, %s free; weights %s per pass, read %s", size(num(d["memory_used_bytes"])).c_str(),
                              size(num(d["memory_free_bytes"])).c_str(), size(num(d["weight_bytes_per_pass"])).c_str(),
                              gb_per_s(num(d["read_bytes_per_s"])).c_str());
    if (d.contains("link"))
      text += format("; link %s in, %s out", size(num(d["link"]["to_device_bytes"])).c_str(),
                     size(num(d["link"]["to_host_bytes"])).c_str());
    line("dev " + d.value("name", "?"), text);
  }
  out += "\n";
  if (s["hints"].empty()) out += "ok: every figure is within its line\n";
  for (const auto& h : s["hints"]) out += "! " + h.get<std::string>() + "\n";
  return out;
}

Result<json> fetch_stats(const std::string& url, const std::string& api_key) {
  TANDEM_ASSIGN(std::string body, server::http_get(url, "/monitor/stats", api_key, 10));
  auto j = json::parse(body, nullptr, false);
  if (!j.is_object() || !j.contains("kv") || !j.contains("lines"))
    return corrupt("%s/monitor/stats did not answer with tandem's figures (is it a tandem server?)", url.c_str());
  return j;
}

Result<std::string> fetch(const std::string& url, const std::string& api_key) {
  TANDEM_ASSIGN(json j, fetch_stats(url, api_key));
  return render(j, url);
}

}  // namespace

int top_main(int argc, char** argv) {
  std::string url = "http://127.0.0.1:8080", api_key;
  int64_t interval_ms = 1000;
  bool once = false;
  ArgParser args("top", "tandem top [--url http://HOST:PORT] [--interval MS] [--once] [--api-key K]",
                 "The live figures of a running tandem serve in the terminal, refreshed: tokens/s, weight-read\n"
                 "bandwidth against the machine's measured limit, GPU and CPU load, softirq, queue, KV cache use,\n"
                 "devices and the hints of /monitor. Reads GET /monitor/stats. Ctrl-C ends it.");
  args.string("--url", "URL", "the server (default http://127.0.0.1:8080)", &url);
  args.integer("--interval", "MS", "milliseconds between refreshes (default 1000)", &interval_ms, 100, 3600000);
  args.flag("--once", "print one snapshot (no screen control codes) and exit", &once);
  args.string("--api-key", "KEY", "the server's API key, when it wants one", &api_key);
  if (auto done = parse_command_line(args, argc, argv)) return *done;
  if (once) {
    auto stats = fetch_stats(url, api_key);
    // The server samples rates, CPU shares and the bandwidth limit from its first reader on: a
    // server nobody watched yet has none, so wait for its first period (a second, plus the bandwidth
    // measurement; longer on a loaded machine, so up to 10 s).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (stats && num((*stats)["period_s"]) == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      stats = fetch_stats(url, api_key);
    }
    if (!stats) return fail(stats.error());
    std::fputs(render(*stats, url).c_str(), stdout);
    return 0;
  }
  // A first failure is an error (a wrong URL should not leave a blank screen); later ones are shown
  // on the screen while top keeps trying, as a server restart passes.
  auto first = fetch(url, api_key);
  if (!first) return fail(first.error());
  for (Result<std::string> screen = std::move(first);; screen = fetch(url, api_key)) {
    // Home, the screen, then clear what is left of the last one (no flicker from a full clear). Lines
    // are cut at the terminal's width: a wrapped line would push the screen down at every refresh.
    const std::string text = screen ? *screen : "error: " + screen.error().message() + "\n";
    winsize ws{};
    const size_t columns = ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : SIZE_MAX;
    std::string frame = "\x1b[H";
    for (size_t start = 0; start < text.size();) {
      const size_t end = text.find('\n', start);
      frame += text.substr(start, std::min(end - start, columns)) + "\x1b[K\n";
      start = end + 1;
    }
    frame += "\x1b[J";
    std::fputs(frame.c_str(), stdout);
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
  }
}

}  // namespace tandem::cli
