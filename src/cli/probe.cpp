// tandem probe: measures this machine once (memory bandwidth, matmul kernels, a model's disk, sim
// device links) and caches the figures where tandem plan and --fit find them; --show prints the cache.
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "cli/args.h"
#include "cli/commands.h"
#include "placement/probe.h"

namespace tandem::cli {
namespace {

// The disk is measured last: its file is checked first, so that a wrong path fails at once, naming the
// flag that gave it, not after the rest of the probe.
Status check_disk_file(const char* flag, const std::string& path, bool is_model) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return io_error("%s %s: cannot open (%s)", flag, path.c_str(), std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return invalid_argument("%s %s: not a regular file", flag, path.c_str());
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return io_error("%s %s: cannot open (%s)", flag, path.c_str(), std::strerror(errno));
  char magic[4] = {};
  const size_t n = std::fread(magic, 1, sizeof magic, f);
  std::fclose(f);
  if (is_model && (n != sizeof magic || std::memcmp(magic, "GGUF", 4) != 0))
    return invalid_argument("%s %s: not a GGUF file", flag, path.c_str());
  if (st.st_size < (off_t(4) << 20))
    return invalid_argument("%s %s: %lld bytes; at least 4 MiB are needed to time reads", flag, path.c_str(),
                            (long long)st.st_size);
  return Status::ok();
}

}  // namespace

int probe_main(int argc, char** argv) {
  bool show = false, quick = false, json = false;
  std::string disk, model, out_path;
  placement::ProbeOptions o;
  ArgParser args("probe", "tandem probe [--quick] [-m MODEL | --disk FILE] [--sim-device SIZE] | tandem probe --show",
                 "measures this machine: memory read bandwidth per NUMA node for 1..N threads, the CPU matmul\n"
                 "kernels per weight type (decode and prefill shapes), the sequential and 4 MiB random read speed\n"
                 "of the model's file system, each sim device's link; caches it (with the date and a hash of the\n"
                 "hardware) for tandem plan and --fit");
  args.flag("--show", "print the cached probe and exit (an error when there is none for this hardware)", &show);
  args.flag("--quick", "smaller buffers and shapes, fewer repetitions (a few seconds per weight type; less\n"
            "accurate)", &quick);
  args.string("-m,--model", "FILE", "measure the disk this model is on, reading the model file", &model);
  args.string("--disk", "FILE", "the same for any file of 4 MiB or more", &disk);
  args.custom("--sim-device", "SIZE", "measure a sim device of this size: its link and per-op hand-over (repeatable)", [&](std::string_view v) {
    TANDEM_ASSIGN(const uint64_t bytes, parse_size(v));
    if (bytes < (uint64_t(16) << 20)) return invalid_argument("'%.*s': give at least 16M", int(v.size()), v.data());
    o.sim_devices.push_back(bytes);
    return Status::ok();
  });
  args.string("-o,--output", "FILE", "where to cache it (default: $TANDEM_PROBE_FILE, else\n"
              "$XDG_CACHE_HOME/tandem/probe.json, else ~/.cache/tandem/probe.json)", &out_path);
  args.flag("--json", "print the probe as JSON", &json);
  if (auto code = parse_command_line(args, argc, argv)) return *code;
  if (out_path.empty()) out_path = placement::probe_cache_path();
  if (!disk.empty() && !model.empty()) return fail(invalid_argument("give -m or --disk, not both"));
  if (show) {
    std::string why;
    auto p = placement::load_probe(out_path, &why);
    if (!p) return fail(p.error());
    if (!*p) return fail(not_found("%s", why.c_str()));
    std::fputs(json ? (placement::probe_to_json(**p) + "\n").c_str() : placement::format_probe(**p).c_str(), stdout);
    return 0;
  }
  o.quick = quick;
  o.disk_path = model.empty() ? disk : model;
  if (!o.disk_path.empty())
    if (Status s = check_disk_file(model.empty() ? "--disk" : "-m", o.disk_path, !model.empty()); !s.is_ok())
      return fail(s);
  auto p = placement::run_probe(o, [](const std::string& s) { std::fprintf(stderr, "probe: %s\n", s.c_str()); });
  if (!p) return fail(p.error());
  if (Status s = placement::save_probe(*p, out_path); !s.is_ok()) return fail(s);
  std::fputs(json ? (placement::probe_to_json(*p) + "\n").c_str() : placement::format_probe(*p).c_str(), stdout);
  std::fprintf(stderr, "probe: saved to %s\n", out_path.c_str());
  return 0;
}

}  // namespace tandem::cli
