// Engine flags, loading and the start-up summary.
#include "cli/engine_setup.h"

#include <chrono>
#include <cmath>
#include <cstdio>

#include "backend/cpu/kernels.h"
#include "core/memory.h"
#include "core/numa.h"
#include "gguf/gguf_file.h"
#include "model/arch.h"
#include "core/progress.h"
#include "core/thread_pool.h"

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

// llama.cpp's warm-up (common/common.cpp common_init_from_params): one decode of BOS and EOS, so
// weights are paged in and buffers sized before anything is timed; the cache is emptied afterwards.
Status warm_up(Context& ctx, const tokenizer::Vocab& vocab) {
  std::vector<int32_t> tokens;
  if (vocab.special.bos != tokenizer::kNoToken) tokens.push_back(vocab.special.bos);
  if (vocab.special.eos != tokenizer::kNoToken) tokens.push_back(vocab.special.eos);
  if (tokens.empty()) tokens.push_back(0);
  tokens.resize(size_t(std::min<int64_t>({int64_t(tokens.size()), ctx.options().n_batch, ctx.kv().n_cells()})));
  Batch b;
  for (size_t i = 0; i < tokens.size(); ++i) b.add(tokens[i], int32_t(i), 0, i + 1 == tokens.size());
  const Status s = ctx.decode(b);
  ctx.kv().clear();
  return s;
}

// Refuses, before anything is allocated, a context the machine cannot hold: the KV cache (and the
// weights when --no-mmap reads them into RAM) against available_memory(). Mapped weights are page
// cache the kernel can evict and read again, so they only warn.
Status check_memory(const EngineFlags& f, WeightType type_k, WeightType type_v) {
  TANDEM_ASSIGN(const auto file, gguf::GgufFile::open(f.model));
  auto hp = model::read_hparams(file->metadata(), f.model);
  if (!hp) return Status::ok();  // Model::load reports it with its context
  if (hp->head_dim_k % block_size(type_k) != 0 || hp->head_dim_v % block_size(type_v) != 0)
    return Status::ok();  // Context::create refuses the type with its own message
  const int64_t n_ctx = f.ctx > 0 ? f.ctx : hp->n_ctx_train;
  const uint64_t per_token = uint64_t(hp->n_layer) * (row_bytes(type_k, hp->n_head_kv * hp->head_dim_k) +
                                                      row_bytes(type_v, hp->n_head_kv * hp->head_dim_v));
  const uint64_t kv = per_token * uint64_t(n_ctx), weights = file->tensor_bytes();
  const MemoryBudget budget = available_memory();
  const uint64_t resident = f.mmap ? 0 : weights;
  if (kv + resident > budget.bytes) {
    const uint64_t room = budget.bytes > resident ? budget.bytes - resident : 0;
    return out_of_memory(
        "a context of %lld tokens needs a KV cache of %s (%llu bytes per token, %s K / %s V, %lld layers)%s, "
        "but only %s is available (%s). Lower -c (at most %llu tokens fit) or use a smaller cache type "
        "(-ctk/-ctv q8_0 takes about half of f16, q4_0 about a quarter)",
        (long long)n_ctx, human_bytes(kv).c_str(), (unsigned long long)per_token, type_name(type_k).data(),
        type_name(type_v).data(), (long long)hp->n_layer,
        resident ? format(" plus %s of weights read into RAM (--no-mmap)", human_bytes(weights).c_str()).c_str() : "",
        human_bytes(budget.bytes).c_str(), budget.source.c_str(), (unsigned long long)(room / per_token));
  }
  if (f.mmap && kv + weights > budget.bytes && !f.quiet)
    std::fprintf(stderr, "warning: the KV cache (%s) and the mapped weights (%s) exceed the %s available (%s): "
                 "weights will be read from disk again as they are evicted\n", human_bytes(kv).c_str(),
                 human_bytes(weights).c_str(), human_bytes(budget.bytes).c_str(), budget.source.c_str());
  return Status::ok();
}

}  // namespace

void add_engine_flags(ArgParser& args, EngineFlags& f) {
  args.string("-m,--model", "FILE", "model file (for a split model, its first part)", &f.model);
  args.custom("-t,--threads", "N", "CPU threads (default: the physical cores of the CPUs this process may use;\n"
              "0 or less: every CPU it may use, as llama.cpp)", [&f](std::string_view v) {
                TANDEM_ASSIGN(const int64_t n, parse_int(v, INT32_MIN, 4096));
                f.threads = n > 0 ? n : -1;
                return Status::ok();
              });
  args.integer("-c,--ctx-size", "N",
               format("context size in tokens (default %lld; 0: the model's training context)", (long long)f.ctx), &f.ctx, 0,
               1 << 24);
  args.integer("-b,--batch-size", "N",
               "logical batch: prompt tokens handed to one decode; longer prompts go in chunks (default 2048)",
               &f.batch, 1, 1 << 20);
  args.integer("-ub,--ubatch-size", "N", "physical micro-batch: tokens per forward pass (default 512; at most -b)",
               &f.ubatch, 1, 1 << 20);
  args.custom("-ngl,--n-gpu-layers,--gpu-layers,-n-gpu-layers", "N|auto|all",
              "layers to place on the GPU: a number, auto (fit) or all (this build has no GPU backend\n"
              "yet: warns and runs on the CPU)", [&f](std::string_view v) {
                if (v == "auto") {
                  f.n_gpu_layers = -1;
                } else if (v == "all") {
                  f.n_gpu_layers = -2;
                } else {
                  TANDEM_ASSIGN(f.n_gpu_layers, parse_int(v, INT32_MIN, INT32_MAX));
                }
                return Status::ok();
              });
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
}

Result<std::unique_ptr<Engine>> load_engine(const EngineFlags& f) {
  if (f.model.empty()) return invalid_argument("no model given (use -m FILE)");
  const WeightType type_k = *parse_weight_type(f.cache_type_k), type_v = *parse_weight_type(f.cache_type_v);
  if (f.n_gpu_layers != 0)
    std::fprintf(stderr, "warning: -ngl %s: this build has no GPU backend; every layer runs on the CPU\n",
                 f.n_gpu_layers == -1 ? "auto" : f.n_gpu_layers == -2 ? "all" : std::to_string(f.n_gpu_layers).c_str());

  TANDEM_TRY(check_memory(f, type_k, type_v));
  if (!f.cpu_isa.empty()) TANDEM_TRY(cpu::limit_isa(f.cpu_isa));
  auto e = std::make_unique<Engine>();
  const auto t0 = std::chrono::steady_clock::now();
  const CpuTopology topology = CpuTopology::detect();
  TANDEM_ASSIGN(const Placement placement,
                plan_placement({.n_threads = f.threads < 0 ? int(topology.allowed.size()) : int(f.threads),
                                .mask = f.cpu_mask, .strict = f.cpu_strict,
                                .numa = f.numa},
                               topology));
  for (const auto& w : placement.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  const int threads = placement.n_threads;
  const auto priority = Priority(f.prio);
  const Status process_priority = set_process_priority(priority);  // first: the pool's threads inherit it
  e->cpu = std::make_unique<cpu::CpuBackend>(threads, "cpu",
                                             ThreadPoolOptions{placement.thread_cpus, int(f.poll), priority});
  std::string refused = process_priority.is_ok() ? "" : process_priority.message();
  if (const Status& s = e->cpu->pool().priority_status(); !s.is_ok())
    refused += (refused.empty() ? "" : ", ") + s.message();
  if (!refused.empty())
    std::fprintf(stderr, "warning: --prio %lld (%s): the OS refused %s; raising priority needs root or CAP_SYS_NICE; "
                 "running at the priority it has\n", (long long)f.prio, priority_name(priority), refused.c_str());
  if (const Status& s = e->cpu->pool().affinity_status(); !s.is_ok())
    std::fprintf(stderr, "warning: %s; the threads run unpinned\n", s.message().c_str());
  // A mapped model loads lazily (nothing to show); --no-mmap reads every byte first: show it.
  std::unique_ptr<ProgressBar> bar;
  model::ModelLoadOptions lo{.use_mmap = f.mmap, .mlock = f.mlock};
  if (!f.mmap && !f.quiet)
    lo.on_progress = [&bar](uint64_t done, uint64_t total) {
      if (!bar) bar = std::make_unique<ProgressBar>("load  ", total);
      bar->update(done);
    };
  TANDEM_ASSIGN(e->model, model::Model::load(f.model, lo, *e->cpu));
  if (bar) bar->finish();
  for (const auto& w : e->model->file().warnings()) std::fprintf(stderr, "warning: %s\n", w.c_str());
  TANDEM_ASSIGN(e->tokenizer, tokenizer::Tokenizer::from_metadata(e->model->file().metadata(), f.model));
  for (const auto& w : e->tokenizer->warnings()) std::fprintf(stderr, "warning: %s\n", w.c_str());
  const auto& hp = e->model->hparams();
  if (int64_t(e->tokenizer->n_tokens()) != e->model->output().n_rows())
    return corrupt("%s: the tokenizer has %zu tokens but the output layer has %lld rows", f.model.c_str(),
                   e->tokenizer->n_tokens(), (long long)e->model->output().n_rows());
  ContextOptions co;
  co.n_ctx = f.ctx > 0 ? f.ctx : hp.n_ctx_train;
  co.n_batch = f.batch;
  co.n_ubatch = std::min(f.ubatch, f.batch);
  co.type_k = type_k;
  co.type_v = type_v;
  // 'auto' takes flash attention where its vector kernels exist (AVX-512); below that the plain path's
  // AVX2 kernels are faster than the scalar flash tile.
  co.flash_attn =
      f.flash_attn == OnOffAuto::On || (f.flash_attn == OnOffAuto::Auto && cpu::best_isa() >= cpu::Isa::Avx512);
  TANDEM_ASSIGN(e->context, Context::create(*e->model, co));
  const auto t_warm = std::chrono::steady_clock::now();
  if (f.warmup) TANDEM_TRY(warm_up(*e->context, e->tokenizer->vocab()));
  const double t_warmup_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_warm).count();
  e->t_load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  if (!f.quiet) {
    std::map<std::string, uint64_t> by_type;
    uint64_t n_params = 0;
    for (const auto& t : e->model->file().tensors()) {
      by_type[std::string(type_name(t.type))] += t.size_bytes;
      n_params += uint64_t(t.n_elements());
    }
    std::string types;
    for (const auto& [t, b] : by_type) types += format("%s%s %s", types.empty() ? "" : ", ", t.c_str(), human_bytes(b).c_str());
    std::fprintf(stderr, "model:   %s\n         %s, %.2f B parameters, %lld layers, vocab %lld, trained context %lld\n",
                 f.model.c_str(), hp.arch.c_str(), double(n_params) / 1e9, (long long)hp.n_layer, (long long)hp.n_vocab,
                 (long long)hp.n_ctx_train);
    std::fprintf(stderr, "weights: %s (%s)\n", human_bytes(e->model->weight_bytes()).c_str(), types.c_str());
    for (const auto& [dev, bytes] : e->model->bytes_by_device())
      std::fprintf(stderr, "device:  %s holds %s of weights (%s)\n", dev.c_str(), human_bytes(bytes).c_str(),
                   f.mmap ? "memory-mapped" : "read into RAM");
    const auto& kv = e->context->kv();
    std::fprintf(stderr, "kv:      %s K / %s V, %zu bytes per token, %lld tokens: %s; flash attention %s\n",
                 type_name(type_k).data(), type_name(type_v).data(), kv.bytes_per_token(), (long long)kv.n_cells(),
                 human_bytes(kv.total_bytes()).c_str(), co.flash_attn ? "on" : "off");
    const int k_rot = kv_rotation_block(type_k, hp.head_dim_k, false), v_rot = kv_rotation_block(type_v, hp.head_dim_v, true);
    if (k_rot || v_rot)
      std::fprintf(stderr, "         quantized cache: %s rotated by a %d-wide Walsh-Hadamard block before storing (as llama.cpp)\n",
                   k_rot && v_rot ? "Q/K and V" : k_rot ? "Q/K" : "V", k_rot ? k_rot : v_rot);
    std::fprintf(stderr, "threads: %d, batch %lld, micro-batch %lld, matmul kernels: %s (%s choices)\n", threads,
                 (long long)co.n_batch, (long long)co.n_ubatch, cpu::isa_name(cpu::kernels().isa),
                 cpu::uarch_name(cpu::kernels().uarch));
    std::fprintf(stderr, "cpu:     priority %s%s, poll %lld; %s; memory policy %s\n",
                 describe_priority(priority).c_str(), refused.empty() ? "" : " (refused by the OS, see above)",
                 (long long)f.poll, placement.description.c_str(), describe_memory_policy().c_str());
    if (!f.warmup) std::fprintf(stderr, "loaded in %.2f s (no warm-up)\n", e->t_load_s);
    else std::fprintf(stderr, "loaded in %.2f s (warm-up decode %.2f s)\n", e->t_load_s, t_warmup_s);
  }
  return e;
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
  float_flag("--top-p", "nucleus sampling: smallest set with probability >= P (default 0.95; 1: off)", &p.top_p);
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
              [&f](std::string_view v) {
                f.logit_bias.emplace_back(v);
                return Status::ok();
              });
}

Result<sampling::Sampler> make_sampler(const SamplingFlags& f, int32_t n_vocab) {
  sampling::SamplerParams p = f.params;
  for (const std::string& s : f.logit_bias) {
    const size_t sign = s.find_first_of("+-", 1);
    if (sign == std::string::npos) return invalid_argument("-l '%s': expected TOKEN+BIAS or TOKEN-BIAS", s.c_str());
    TANDEM_ASSIGN(const int64_t token, parse_int(s.substr(0, sign), 0, INT32_MAX));
    float bias = 0;
    TANDEM_TRY(parse_float(s.substr(sign), &bias));
    p.logit_bias[int32_t(token)] = bias;
  }
  return sampling::Sampler::create(p, n_vocab);
}

std::string describe_sampling(const SamplingFlags& f) {
  const auto& p = f.params;
  if (p.temp <= 0) return "greedy";
  return format("temp %.2f, top-k %d, top-p %.2f, min-p %.2f, typical %.2f, repeat penalty %.2f (last %d)", p.temp,
                p.top_k, p.top_p, p.min_p, p.typical_p, p.repeat_penalty, p.repeat_last_n);
}

}  // namespace tandem::cli
