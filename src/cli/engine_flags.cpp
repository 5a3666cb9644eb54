// The command-line flags that fill EngineFlags and SamplingFlags (engine/engine.h), shared by run,
// bench, perplexity and serve.
#include "cli/engine_flags.h"

#include <cmath>

#include "backend/cpu/kernels.h"
#include "core/numa.h"
#include "kv/kv_types.h"

namespace tandem::cli {
namespace {

Status parse_float(std::string_view v, float* out) {
  const std::string s(v);
  char* end = nullptr;
  const float f = std::strtof(s.c_str(), &end);
  if (s.empty() || *end != '\0' || std::isnan(f)) return invalid_argument("'%s' is not a number", s.c_str());
  *out = f;
  return Status::ok();
}

// llama.cpp refuses these penalties when infinite (common/arg.cpp), and a repeat penalty <= 0.
Status parse_finite(std::string_view v, float* out) {
  TANDEM_TRY(parse_float(v, out));
  if (!std::isfinite(*out)) return invalid_argument("'%.*s': must be finite", int(v.size()), v.data());
  return Status::ok();
}

std::vector<std::string> split(std::string_view v, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i <= v.size(); ++i)
    if (i == v.size() || v[i] == sep) {
      out.emplace_back(v.substr(start, i - start));
      start = i + 1;
    }
  return out;
}

}  // namespace

void add_placement_flags(ArgParser& args, EngineFlags& f) {
  args.custom("-ngl,--n-gpu-layers,--gpu-layers,-n-gpu-layers", "N|auto|all",
              "layers on the offload devices, as llama.cpp counts them: the last N of the model's layers\n"
              "plus its output layer (token embeddings stay on the CPU); auto: as many as fit; all.\n"
              "Offload devices: CUDA GPUs (--list-devices) and --sim-device", [&f](std::string_view v) {
                f.ngl_given = true;
                if (v == "auto") {
                  f.n_gpu_layers = -1;
                } else if (v == "all") {
                  f.n_gpu_layers = -2;
                } else {
                  TANDEM_ASSIGN(f.n_gpu_layers, parse_int(v, INT32_MIN, INT32_MAX));
                }
                return Status::ok();
              });
  args.custom("-dev,--device", "LIST", "offload devices to use, comma-separated names from --list-devices\n"
              "(default: all; none: offload nothing)", [&f](std::string_view v) {
                f.placement.devices.clear();
                for (const auto& d : split(v, ','))
                  if (!d.empty()) f.placement.devices.push_back(d);
                if (f.placement.devices.empty()) return invalid_argument("no device named");
                return Status::ok();
              });
  args.custom("-ot,--override-tensor", "REGEX=DEV,...",
              "put the tensors whose names match REGEX on device DEV (CPU, SIM0, ...), overriding -ngl; the\n"
              "first matching pattern wins; repeatable. E.g. -ot exps=CPU keeps MoE experts in RAM. A pattern\n"
              "that matches no tensor is an error", [&f](std::string_view v) {
                f.placement.overrides.emplace_back(v);
                return Status::ok();
              });
  args.flag("-cmoe,--cpu-moe", "keep every layer's MoE expert weights on the CPU (llama.cpp's pattern)",
            &f.placement.cpu_moe);
  args.integer("-ncmoe,--n-cpu-moe", "N", "keep the MoE expert weights of the first N layers on the CPU",
               &f.placement.n_cpu_moe, 0, 1 << 20);
  args.custom("-ts,--tensor-split", "A,B,...", "share of the offloaded layers per offload device, e.g. 3,1\n"
              "(default: in proportion to their free memory)", [&f](std::string_view v) {
                f.placement.tensor_split.clear();
                for (const auto& part : split(v, v.find('/') != std::string_view::npos ? '/' : ',')) {
                  char* end = nullptr;
                  const float x = std::strtof(part.c_str(), &end);
                  if (part.empty() || *end != '\0' || !std::isfinite(x) || x < 0 || x > 1e30f)
                    return invalid_argument("'%s' is not a share (a number from 0 to 1e30)", part.c_str());
                  f.placement.tensor_split.push_back(x);
                }
                return Status::ok();
              });
  args.custom("-sm,--split-mode", "none|layer|row", "how layers spread over several offload devices: layer\n"
              "(default: whole layers by -ts), none (all on -mg's device); row is not supported",
              [&f](std::string_view v) {
                if (v == "none") f.placement.split_mode = placement::SplitMode::None;
                else if (v == "layer") f.placement.split_mode = placement::SplitMode::Layer;
                else if (v == "row") f.placement.split_mode = placement::SplitMode::Row;
                else return invalid_argument("'%.*s' is not a split mode (none, layer, row)", int(v.size()), v.data());
                return Status::ok();
              });
  args.custom("-mg,--main-gpu", "N", "the offload device of -sm none (default 0)", [&f](std::string_view v) {
    TANDEM_ASSIGN(const int64_t n, parse_int(v, 0, 1024));
    f.placement.main_gpu = int(n);
    return Status::ok();
  });
  args.flag("-nkvo,--no-kv-offload", "keep every layer's KV cache on the CPU (attention then runs there)",
            &f.placement.no_kv_offload);
}

void add_engine_flags(ArgParser& args, EngineFlags& f) {
  args.string("-m,--model", "FILE", "model file (for a split model, its first part)", &f.model);
  args.custom("-t,--threads", "N", "CPU threads (default: the physical cores of the CPUs this process may use;\n"
              "0 or less: every CPU it may use, as llama.cpp)", [&f](std::string_view v) {
                TANDEM_ASSIGN(const int64_t n, parse_int(v, INT32_MIN, 4096));
                f.threads = n > 0 ? n : -1;
                return Status::ok();
              });
  args.custom("-c,--ctx-size", "N",
              format("context size in tokens (default %lld; 0: the model's training context)", (long long)f.ctx),
              [&f](std::string_view v) {
                TANDEM_ASSIGN(f.ctx, parse_int(v, 0, 1 << 24));
                f.ctx_given = true;
                return Status::ok();
              });
  args.integer("-b,--batch-size", "N",
               "logical batch: prompt tokens handed to one decode; longer prompts go in chunks (default 2048)",
               &f.batch, 1, 1 << 20);
  args.integer("-ub,--ubatch-size", "N", "physical micro-batch: tokens per forward pass (default 512; at most -b)",
               &f.ubatch, 1, 1 << 20);
  add_placement_flags(args, f);
  args.optional_value("-fit,--fit", "on|off", "on",
                      "choose what the command line leaves open so the model fits and decodes fastest: -ngl, which\n"
                      "layers' experts stay on the CPU (--n-cpu-moe), and -c (halved down to --fit-ctx) while the\n"
                      "CPU's share does not fit the RAM; flags given are kept and checked. As tandem plan predicts (its speeds\n"
                      "from tandem probe's cache). Default off (llama.cpp's is on); '--fit' alone means on",
                      [](std::string_view v) { return parse_bool(v).has_value(); }, [&f](std::string_view v) {
                        TANDEM_ASSIGN(f.fit, parse_bool(v));
                        return Status::ok();
                      });
  args.custom("-fitt,--fit-target", "MiB,...", "memory --fit leaves free on each offload device (one value: all;\n"
              "default 1024, at most an eighth of the device)", [&f](std::string_view v) {
                TANDEM_ASSIGN(const auto items, split_list(v, false));
                f.fit_target_bytes.clear();
                for (const auto& item : items) {
                  TANDEM_ASSIGN(const int64_t mib, parse_int(item, 0, int64_t(1) << 30));
                  f.fit_target_bytes.push_back(size_t(mib) << 20);
                }
                return Status::ok();
              });
  args.integer("-fitc,--fit-ctx", "N", "the least context --fit may lower -c to (default 4096, as llama.cpp)",
               &f.fit_min_ctx, 1, 1 << 24);
  args.custom("--sim-device", "SIZE",
              "add a simulated GPU with SIZE of memory (e.g. 4G; repeatable: SIM0, SIM1, ...): a device on the\n"
              "CPU with its own memory budget, queue and a PCIe 4.0 x16-like link, so -ngl/-ot/-ts plans run\n"
              "and can be checked without a GPU (same kernels, same results, slower)", [&f](std::string_view v) {
                TANDEM_ASSIGN(const uint64_t bytes, parse_size(v));
                if (bytes < (uint64_t(1) << 20)) return invalid_argument("'%.*s': a device needs at least 1M", int(v.size()), v.data());
                f.sim_devices.push_back(bytes);
                return Status::ok();
              });
  args.string("--trace", "FILE", "write a timeline of every op and copy per device (Chrome trace-event JSON:\n"
              "open it in Perfetto or chrome://tracing) when the command ends", &f.trace_path);
  args.flag("--list-devices", "print the devices (the CPU, CUDA GPUs, each --sim-device) and exit", &f.list_devices);
  args.integer("--prio", "N",
               "process and thread priority, llama.cpp's levels: -1 low (nice 5, SCHED_BATCH), 0 normal\n"
               "(default: unchanged), 1 medium (nice -5, SCHED_FIFO 40), 2 high (nice -10, SCHED_FIFO 80),\n"
               "3 realtime (nice -20, SCHED_FIFO 90). Raising it needs root or CAP_SYS_NICE: when the OS\n"
               "refuses, a warning says so and the run goes on", &f.prio, -1, 3);
  args.integer("--poll", "0..100",
               "how long idle threads spin before sleeping (default 50: a few hundred us; 0: sleep at\n"
               "once, least CPU; 100: spin longest, lowest latency)", &f.poll, 0, 100);
  args.custom("-C,--cpu-mask", "HEX", "pin the threads to these CPUs: hex mask, rightmost digit CPUs 0-3 (e.g. 0xff);\n"
              "adds to --cpu-range. CPUs must exist and be allowed to this process", [&f](std::string_view v) {
                TANDEM_ASSIGN(const CpuSet cpus, parse_cpu_mask(v));
                f.cpu_mask = cpu_set_union(f.cpu_mask, cpus);
                return Status::ok();
              });
  args.custom("-Cr,--cpu-range", "LO-HI", "pin the threads to CPUs LO..HI (both included; adds to --cpu-mask)",
              [&f](std::string_view v) {
                TANDEM_ASSIGN(const CpuSet cpus, parse_cpu_range(v, CpuTopology::detect().n_configured));
                f.cpu_mask = cpu_set_union(f.cpu_mask, cpus);
                return Status::ok();
              });
  args.custom("--cpu-strict", "0|1", "1: one CPU per thread, taken in turn from the allowed or given CPUs\n"
              "(default 0: each thread may use all of them)", [&f](std::string_view v) {
                TANDEM_ASSIGN(f.cpu_strict, parse_bool(v));
                return Status::ok();
              });
  args.custom("--numa", "MODE", "on a machine with several NUMA nodes: distribute (thread i on node i % nodes),\n"
              "isolate (every thread on the node the process started on), numactl (the CPUs numactl\n"
              "gave). Never widens the CPUs or memory policy the process was started with",
              [&f](std::string_view v) {
                if (v.empty()) {
                  f.numa = NumaMode::Distribute;  // llama.cpp: an empty value is distribute
                } else {
                  TANDEM_ASSIGN(f.numa, parse_numa_mode(v));
                }
                return Status::ok();
              });
  args.toggle("--warmup", "--no-warmup",
              "run the warm-up decode (BOS, EOS) that pages the weights in before anything is timed (default)",
              &f.warmup);
  args.string("--cpu-isa", "ISA", "use at most this SIMD level: generic, avx2, avx512, amx (default: the best the\n"
              "CPU and OS support; TANDEM_NO_AMX=1 also turns AMX off)", &f.cpu_isa);
  args.toggle("--mmap", "--no-mmap", "map the model file (default); --no-mmap reads it into RAM", &f.mmap);
  args.flag("--mlock", "lock the model in RAM (warns, naming RLIMIT_MEMLOCK, when refused)", &f.mlock);
  args.custom("-lm,--load-mode", "MODE", "llama.cpp's newer spelling of the three flags above: auto or mmap (map),\n"
              "none (read into RAM), mlock (read and lock), mmap+mlock (map and lock)", [&f](std::string_view v) {
                if (v == "auto" || v == "mmap") f.mmap = true, f.mlock = false;
                else if (v == "none") f.mmap = false, f.mlock = false;
                else if (v == "mlock") f.mmap = false, f.mlock = true;
                else if (v == "mmap+mlock") f.mmap = true, f.mlock = true;
                else if (v == "dio") return unsupported("direct I/O (dio) is not supported (none reads into RAM)");
                else return invalid_argument("unknown mode '%.*s' (auto, none, mmap, mlock, mmap+mlock)", int(v.size()),
                                             v.data());
                return Status::ok();
              });
  args.toggle("--repack", "--no-repack",
              "re-lay matrices out at load where this CPU's kernels gain (default; AVX-512 without AMX and AVX2: Q8_0,\n"
              "Q5_0, Q4_0, Q2_K..Q6_K, IQ4_XS, IQ4_NL; as 16-row panels in (about) as many bytes, their mapped\n"
              "pages let go; decode and a server's few-token steps run faster; off with --no-mmap or --mlock);\n"
              "--no-repack keeps the file's layout",
              &f.repack);
  args.custom("--expert-cache", "SIZE|auto|off",
              "MoE models larger than RAM: keep the routed experts in a RAM cache of SIZE (e.g. 8G, 512M) and\n"
              "read them from the file(s) on demand (O_DIRECT, io_uring) instead of through the mapping;\n"
              "every other tensor is read into RAM. auto: as big as RAM allows after the other weights, the KV\n"
              "cache, compute buffers and a margin (MemAvailable or the cgroup's limit); off or 0: map the file.\n"
              "Default: auto when the model does not fit RAM, else off. At least one expert's slot (the error\n"
              "names its size; auto: one layer's top-k); docs/expert-tier.md",
              [&f](std::string_view v) {
                using Mode = placement::ExpertCacheSetting::Mode;
                if (v == "auto") f.expert_cache = {Mode::Auto, 0};
                else if (v == "off") f.expert_cache = {Mode::Off, 0};
                else {
                  TANDEM_ASSIGN(const uint64_t bytes, parse_size(v));
                  f.expert_cache = {bytes ? Mode::Size : Mode::Off, bytes};
                }
                return Status::ok();
              });
  auto kv_type = [](std::string* out) {
    return [out](std::string_view v) {
      const auto t = parse_weight_type(v);
      if (!t || !is_kv_cache_type(*t))
        return invalid_argument("'%.*s' is not a KV cache type (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl)",
                                int(v.size()), v.data());
      *out = std::string(v);
      return Status::ok();
    };
  };
  args.custom("-ctk,--cache-type-k", "TYPE",
              "KV cache type for K: f16 (default), f32, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl\n"
              "(quantized types need head dimensions that are a multiple of 32)", kv_type(&f.cache_type_k));
  args.custom("-ctv,--cache-type-v", "TYPE", "KV cache type for V: the same choices as -ctk, independently",
              kv_type(&f.cache_type_v));
  args.optional_value("-fa,--flash-attn", "on|off|auto", "on",
                      "flash attention: tiled, online softmax, reads quantized K/V directly. 'auto' (default)\n"
                      "means on where the CPU has AVX-512 (its kernels), else off; 'off' runs the plain path\n"
                      "(ggml's non-flash roundings). '-fa' alone means on. llama.cpp's other spellings work:\n"
                      "1/true/enabled/yes, 0/false/disabled/no, -1 (auto).\n"
                      "Every KV type works with both paths",
                      is_on_off_auto, [&f](std::string_view v) {
                        TANDEM_ASSIGN(f.flash_attn, parse_on_off_auto(v));
                        return Status::ok();
                      });
  args.custom("--batch-invariant", "on|off",
              "on: a sequence's logits are the same bits whatever shares its batches (other sequences,\n"
              "prefill or decode neighbours, -ub, threads), through matmul kernels that sum every token\n"
              "alike, at some prefill speed on AVX-512 and AMX CPUs (BENCHMARKS.md). Default: on in serve,\n"
              "off in run and bench",
              [&f](std::string_view v) {
                TANDEM_ASSIGN(const OnOffAuto o, parse_on_off_auto(v));
                if (o == OnOffAuto::Auto) return invalid_argument("expected on or off");
                f.batch_invariant = o == OnOffAuto::On;
                return Status::ok();
              });
}

void add_sampling_flags(ArgParser& args, SamplingFlags& f) {
  auto& p = f.params;
  auto float_flag = [&](const char* names, const char* help, float* out) {
    args.custom(names, "X", help, [out](std::string_view v) { return parse_float(v, out); });
  };
  float_flag("--temp,--temperature", "temperature (default 0.8; <= 0: greedy)", &p.temp);
  args.custom("--top-k", "N", "keep the N most likely tokens (default 40; 0: off)", [&p](std::string_view v) {
    TANDEM_ASSIGN(const int64_t n, parse_int(v, -1, INT32_MAX));
    p.top_k = int32_t(n);
    return Status::ok();
  });
  float_flag("--top-p,--top_p", "nucleus sampling: smallest set with probability >= P (default 0.95; 1: off)", &p.top_p);
  float_flag("--min-p", "drop tokens below P times the best token's probability (default 0.05; 0: off)", &p.min_p);
  float_flag("--typical,--typical-p", "locally typical sampling (default 1.0: off)", &p.typical_p);
  args.custom("--repeat-penalty", "X", "penalize repeated tokens (default 1.0: off; must be > 0)",
              [&p](std::string_view v) {
                TANDEM_TRY(parse_finite(v, &p.repeat_penalty));
                if (p.repeat_penalty <= 0) return invalid_argument("%g: must be greater than 0", p.repeat_penalty);
                return Status::ok();
              });
  args.custom("--repeat-last-n", "N", "window of recent tokens for the penalties (default 64; 0: off)",
              [&p](std::string_view v) {
                TANDEM_ASSIGN(const int64_t n, parse_int(v, 0, INT32_MAX));
                p.repeat_last_n = int32_t(n);
                return Status::ok();
              });
  args.custom("--frequency-penalty", "X", "subtract X per occurrence in the window (default 0)",
              [&p](std::string_view v) { return parse_finite(v, &p.frequency_penalty); });
  args.custom("--presence-penalty", "X", "subtract X once if present in the window (default 0)",
              [&p](std::string_view v) { return parse_finite(v, &p.presence_penalty); });
  args.custom("-s,--seed", "N", "random seed (default: random)", [&p](std::string_view v) {
    TANDEM_ASSIGN(const int64_t n, parse_int(v, -1, UINT32_MAX));
    p.seed = n < 0 ? sampling::kDefaultSeed : uint32_t(n);
    return Status::ok();
  });
  args.custom("-l,--logit-bias", "TOKEN(+|-)BIAS", "add BIAS to a token's logit, e.g. 15043+1 or 15043-inf (repeatable)",
              [&p](std::string_view v) {
                const size_t sign = v.find_first_of("+-", 1);
                if (sign == std::string_view::npos)
                  return invalid_argument("'%.*s': expected TOKEN+BIAS or TOKEN-BIAS", int(v.size()), v.data());
                TANDEM_ASSIGN(const int64_t token, parse_int(v.substr(0, sign), 0, INT32_MAX));
                float bias = 0;
                TANDEM_TRY(parse_float(v.substr(sign), &bias));
                p.logit_bias[int32_t(token)] = bias;
                return Status::ok();
              });
}

}  // namespace tandem::cli
