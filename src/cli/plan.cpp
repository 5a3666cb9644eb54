// tandem plan: what fits where before anything loads, the flags that say so for Tandem and
// llama-server, the decode and prefill speed that placement allows with the bottleneck of each, and,
// when the model does not fit, the alternatives with their numbers. Reads only the model's tensor
// table, so it plans for a header-only description of a model too big for this machine.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "core/memory.h"
#include "core/progress.h"
#include "expert/expert_cache.h"
#include "model/model.h"
#include "placement/expert_tier.h"
#include "placement/fit.h"
#include "placement/probe.h"
#include "kv/kv_types.h"
#include "quant/mix.h"

namespace tandem::cli {
namespace {

// A positive number; "3G", "3GB/s" and "3" all mean 3 GB/s for the bandwidth flags.
Status parse_rate(std::string_view v, double* out) {
  std::string s(v);
  for (const char* suffix : {"GB/s", "G"})
    if (s.size() > std::strlen(suffix) && s.compare(s.size() - std::strlen(suffix), std::string::npos, suffix) == 0)
      s.resize(s.size() - std::strlen(suffix));
  char* end = nullptr;
  const double x = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || !std::isfinite(x) || x <= 0)
    return invalid_argument("'%.*s' is not a positive number", int(v.size()), v.data());
  *out = x;
  return Status::ok();
}

struct Alternative {
  std::string kind;   // "quantization", "context", "slots", "expert tier", "mmap"
  std::string name;   // Q4_K_M, -c 2048, -np 2, --expert-cache 40G, mmap
  uint64_t bytes = 0; // the model's size (quantization), the KV cache (context), the expert cache (expert tier)
  bool fits = false;
  double tg = 0, pp = 0;
  std::string note;
  std::string flags;  // expert tier: the command line's placement flags
  double hit_rate = 0;                // expert tier: the cache's share of the experts
  uint64_t disk_bytes_per_token = 0;  // expert tier, mmap
};

}  // namespace

int plan_main(int argc, char** argv) {
  std::string model_path, ctk = "f16", ctv = "f16";
  uint64_t vram_bytes = 0, ram_bytes = 0;  // ram_bytes 0: what this machine has available
  int64_t n_parallel = 1;
  int64_t ctx = 4096, ubatch = 512, gpus = -1, depth = 0, n_prompt = 512, fit_ctx = 4096;
  double ram_bw = 0, vram_bw = 900, link_bw = 25, cpu_gflops = 0, gpu_tflops = 50, disk_bw = 0;
  bool json = false, ctx_given = false;
  std::vector<size_t> fit_target;
  EngineFlags ef;  // the placement flags, with run's spellings
  ArgParser args("plan", "tandem plan -m MODEL [-c N] [-ctk T -ctv T] [--vram SIZE] [--gpus N] [--ram SIZE] [placement flags]",
                 "The placement of a model on a machine (this one, or one described by --ram/--vram) with the best\n"
                 "predicted decode speed, the flags for it, and the prefill and decode speed it allows. Speeds come\n"
                 "from tandem probe's cache (else a quick measurement now). Reads only the tensor table: a\n"
                 "header-only GGUF describing a model too big for this machine plans the same");
  args.string("-m,--model", "FILE", "the model (its first part if split); the data may be absent", &model_path);
  args.custom("-c,--ctx-size", "N", "context in tokens the KV cache holds (default 4096; when not given, halved\n"
              "down to --fit-ctx while the CPU's share does not fit the RAM)", [&](std::string_view v) {
                TANDEM_ASSIGN(ctx, parse_int(v, 1, int64_t(1) << 24));
                ctx_given = true;
                return Status::ok();
              });
  args.string("-ctk,--cache-type-k", "TYPE", "KV cache type of K (default f16)", &ctk);
  args.string("-ctv,--cache-type-v", "TYPE", "KV cache type of V (default f16)", &ctv);
  args.integer("-ub,--ubatch-size", "N", "micro-batch: the activations each device keeps room for, and prefill's\n"
               "tokens per pass (default 512)", &ubatch, 1, 1 << 20);
  args.integer("-np,--parallel", "N", "server slots sharing the context, as serve (each holds -c / N tokens; the KV\n"
               "cache is -c tokens whatever N is; default 1)", &n_parallel, 1, 4096);
  args.integer("-p,--n-prompt", "N", "prompt tokens of the prefill prediction (default 512: pp512)", &n_prompt, 1, 1 << 24);
  args.custom("--vram", "SIZE", "memory of each GPU (e.g. 24G; default 0: no GPU)", [&](std::string_view v) {
    TANDEM_ASSIGN(vram_bytes, parse_size(v));
    return Status::ok();
  });
  args.integer("--gpus", "N", "number of such GPUs (default 1 when --vram is given)", &gpus, 0, 64);
  std::vector<uint64_t> sims;
  std::string sim_flags;  // as given, for the printed command line
  args.custom("--sim-device", "SIZE", "plan for a sim device of this size too, as run's --sim-device (repeatable):\n"
              "the CPU's kernels and memory behind a PCIe 4.0 x16-like link", [&](std::string_view v) {
                TANDEM_ASSIGN(const uint64_t bytes, parse_size(v));
                if (bytes < (uint64_t(1) << 20)) return invalid_argument("'%.*s': a device needs at least 1M", int(v.size()), v.data());
                sims.push_back(bytes);
                sim_flags += " --sim-device " + std::string(v);
                return Status::ok();
              });
  args.custom("--ram", "SIZE", "RAM the model may use (default: what this machine has available)", [&](std::string_view v) {
    TANDEM_ASSIGN(ram_bytes, parse_size(v));
    if (ram_bytes == 0) return invalid_argument("'%.*s': the RAM must be more than 0", int(v.size()), v.data());
    return Status::ok();
  });
  args.custom("--ram-bw", "GB/s", "the CPU's memory read bandwidth (default: tandem probe's, or measured now)",
              [&](std::string_view v) { return parse_rate(v, &ram_bw); });
  args.custom("--cpu-gflops", "N", "the CPU's matmul throughput in prefill, every weight type (default: tandem\n"
              "probe's figures per type)", [&](std::string_view v) { return parse_rate(v, &cpu_gflops); });
  args.custom("--vram-bw", "GB/s", "each GPU's memory bandwidth (default 900: a 24 GB RTX 3090/4090 class card)",
              [&](std::string_view v) { return parse_rate(v, &vram_bw); });
  args.custom("--gpu-tflops", "N", "each GPU's matmul throughput in prefill (default 50: an RTX 3090's dense f16\n"
              "tensor rate with f32 sums is 71; quantized kernels reach less)",
              [&](std::string_view v) { return parse_rate(v, &gpu_tflops); });
  args.custom("--link-bw", "GB/s", "host-GPU link bandwidth (default 25: PCIe 4.0 x16)",
              [&](std::string_view v) { return parse_rate(v, &link_bw); });
  args.custom("--disk-bw", "GB/s", "the model's disk, 4 MiB random reads (default: tandem probe -m MODEL's, else 3:\n"
              "an NVMe drive)", [&](std::string_view v) { return parse_rate(v, &disk_bw); });
  args.integer("-d,--depth", "N", "tokens already in the context (default 0)", &depth, 0, int64_t(1) << 24);
  args.custom("-fitt,--fit-target", "MiB,...", "memory left free on each GPU (one value: all; default 1024, at\n"
              "most an eighth of the device), as llama.cpp's --fit-target", [&](std::string_view v) {
                TANDEM_ASSIGN(const auto items, split_list(v, false));
                fit_target.clear();
                for (const auto& item : items) {
                  TANDEM_ASSIGN(const int64_t mib, parse_int(item, 0, int64_t(1) << 30));
                  fit_target.push_back(size_t(mib) << 20);
                }
                return Status::ok();
              });
  args.integer("-fitc,--fit-ctx", "N", "the least context the fit may lower -c to (default 4096, as llama.cpp)",
               &fit_ctx, 1, int64_t(1) << 24);
  args.flag("--json", "print the plan and the predictions as JSON", &json);
  add_placement_flags(args, ef);
  if (auto code = parse_command_line(args, argc, argv)) return *code;
  if (model_path.empty()) return fail(invalid_argument("no model given (use -m FILE)"));
  const auto type_k = parse_weight_type(ctk), type_v = parse_weight_type(ctv);
  constexpr const char* kKvTypes = "use f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1 or iq4_nl";
  if (!type_k || !is_kv_cache_type(*type_k))
    return fail(invalid_argument("plan: -ctk %s: not a KV cache type (%s)", ctk.c_str(), kKvTypes));
  if (!type_v || !is_kv_cache_type(*type_v))
    return fail(invalid_argument("plan: -ctv %s: not a KV cache type (%s)", ctv.c_str(), kKvTypes));
  if (gpus < 0) gpus = vram_bytes > 0 ? 1 : 0;
  if (gpus > 0 && vram_bytes == 0) return fail(invalid_argument("--gpus %lld: give their memory with --vram", (long long)gpus));
  if (ram_bytes == 0) ram_bytes = available_memory().bytes;

  model::ModelLoadOptions lo;
  lo.header_only = true;
  auto m = model::Model::open(model_path, lo);
  if (!m) return fail(m.error());
  const auto& hp = (*m)->hparams();
  const auto tensors = (*m)->tensor_infos();

  // Speeds: the probe's (cached, or a quick one now of what this plan needs), overridden by the flags.
  std::string speeds_from;
  placement::Probe probe;
  std::string why;
  auto cached = placement::load_probe(placement::probe_cache_path(), &why);
  if (!cached) return fail(cached.error());
  if (*cached) {
    probe = **cached;
    speeds_from = "tandem probe of " + probe.date + (probe.quick ? " (--quick)" : "");
  } else if (ram_bw == 0 || cpu_gflops == 0) {
    placement::ProbeOptions po;
    po.quick = true;
    std::set<WeightType> types = {WeightType::F16};  // F16: attention's stand-in
    for (const auto& t : tensors)
      if (t.shape.size() >= 2) types.insert(t.type);
    po.types.assign(types.begin(), types.end());
    if (!json)  // several seconds of silence otherwise
      std::fprintf(stderr, "plan: no cached probe (%s): measuring this machine's %zu weight types now, a few seconds "
                           "each; `tandem probe` caches a full measurement once\n", why.c_str(), po.types.size());
    auto p = placement::run_probe(po);
    if (!p) return fail(p.error());
    probe = *p;
    speeds_from = "a quick measurement now (" + why + ")";
  }
  // What a placement's speed depends on besides the plan.
  struct {
    placement::ModelShape shape;
    placement::Speeds speeds;
    std::vector<size_t> kv_per_cell;
  } st{model_shape(hp), {}, (*m)->kv_bytes_per_cell(*type_k, *type_v)};
  placement::DeviceSpeed cpu = placement::cpu_speed(probe);
  if (ram_bw > 0) {  // another machine's memory: this one's kernel rates do not apply to decode
    cpu.bytes_per_s = ram_bw * 1e9;
    for (auto& [type, rates] : cpu.kernels)
      for (placement::KernelRate& k : rates) k.decode_bytes_per_s = cpu.bytes_per_s, k.decode_call_s = 0;
    cpu.op_call_s = 0;  // this machine's fixed costs say nothing of the other's
    for (placement::AttentionRate& a : cpu.attention) a.call_s = 0;
  }
  if (cpu_gflops > 0) {
    for (auto& [type, rates] : cpu.kernels)
      for (placement::KernelRate& k : rates) {
        k.prefill_flops_per_s = cpu_gflops * 1e9;
        k.prefill_few_flops_per_s = k.expert_few_flops_per_s = k.expert_flops_per_s = 0;
      }
    cpu.flops_per_s = cpu_gflops * 1e9;
    cpu.elementwise_per_s = 0;  // elementwise ops not counted, attention at the given rate
    for (placement::AttentionRate& a : cpu.attention) a.flops_per_s = 0;
  }
  if (ram_bw > 0 || cpu_gflops > 0) speeds_from += std::string(speeds_from.empty() ? "" : "; ") + "flags";
  st.speeds.devices.push_back(cpu);
  for (int64_t g = 0; g < gpus; ++g) st.speeds.devices.push_back({vram_bw * 1e9, {}, gpu_tflops * 1e12});
  st.speeds.link_bytes_per_s = link_bw * 1e9;
  // A sim device runs the CPU's kernels behind its queue and link: what each op's hand-over to its thread
  // and each waited-for copy cost, from the cached probe of a sim of that size, else measured now (quick).
  for (size_t i = 0; i < sims.size(); ++i) {
    placement::DeviceSpeed sim = cpu;
    std::optional<placement::SimProbe> sp;
    for (const placement::SimProbe& c : probe.sims)
      if (c.name == "SIM" + std::to_string(i) && c.memory_bytes == sims[i] && c.op_handover_s >= 0) sp = c;
    if (!sp && probe.n_threads > 0) {
      auto measured = placement::probe_sim(i, sims[i], probe.n_threads, true);
      if (!measured) return fail(measured.error());
      sp = *measured;
    }
    if (sp) {
      sim.op_handover_s = sp->op_handover_s;
      if (gpus == 0 && i == 0) st.speeds.link_latency_s = sp->link_latency_s;  // one link figure for all devices
    }
    st.speeds.devices.push_back(sim);
  }
  if (disk_bw == 0) disk_bw = probe.disk ? probe.disk->random_bytes_per_s / 1e9 : 3;

  std::vector<placement::DeviceInfo> devices = {{"CPU", ram_bytes}};
  for (int64_t g = 0; g < gpus; ++g) devices.push_back({"CUDA" + std::to_string(g), vram_bytes});
  for (size_t i = 0; i < sims.size(); ++i) devices.push_back({"SIM" + std::to_string(i), sims[i]});
  placement::FitRequest fr;
  fr.tensors = tensors;
  fr.n_layer = int(hp.n_layer);
  fr.kv_bytes_per_cell = st.kv_per_cell;
  fr.n_ctx = ctx;
  fr.devices = devices;
  fr.flags = ef.placement;
  fr.flags.n_gpu_layers = ef.n_gpu_layers;
  fr.flags.reserve_bytes = activation_bytes(hp, ubatch);
  fr.flags.output_reserve_bytes = size_t(hp.n_vocab) * sizeof(float) * size_t(std::min<int64_t>(16, ubatch));
  fr.ngl_given = ef.ngl_given;
  fr.experts_given = !ef.placement.overrides.empty() || ef.placement.cpu_moe || ef.placement.n_cpu_moe > 0;
  fr.ctx_given = ctx_given;
  fr.min_ctx = std::min(fit_ctx, ctx);
  for (size_t d = 1; d < devices.size(); ++d)
    if (!fit_target.empty()) fr.margin_bytes.push_back(fit_target[std::min(d - 1, fit_target.size() - 1)]);
  fr.shape = st.shape;
  fr.speeds = st.speeds;
  // A model whose CPU share does not fit the RAM still gets an answer: the placement as if the RAM had
  // room (the context kept), reported as not fitting, with the alternatives. Only what the RAM does not
  // explain stays an error (an -ngl given that overflows a device).
  auto fit_or_overflow = [&](placement::FitRequest req) -> Result<placement::FitResult> {
    auto f = placement::fit(req);
    if (f || f.error().code() != StatusCode::OutOfMemory) return f;
    req.devices[0].free_bytes = std::numeric_limits<size_t>::max() / 4;
    req.ctx_given = true;
    auto unbounded = placement::fit(req);
    if (!unbounded) return f;
    unbounded->plan.devices[0].free_bytes = ram_bytes;
    return unbounded;
  };
  auto fitted = fit_or_overflow(fr);
  if (!fitted) return fail(fitted.error());
  const placement::Plan& plan = fitted->plan;
  const placement::Prediction tg =
      placement::predict_decode(plan, tensors, st.shape, st.kv_per_cell, depth, st.speeds);
  const placement::Prediction pp =
      placement::predict_prefill(plan, tensors, st.shape, st.kv_per_cell, n_prompt, ubatch, depth, st.speeds);
  // llama-server with the same flags copies the CPU's matrices to the GPU for micro-batches of 32 tokens
  // or more (its op offload, on by default); Tandem computes them where they live. Both are printed.
  constexpr int64_t kLlamaOpOffloadMinBatch = 32;  // ggml-cuda.cu, GGML_OP_OFFLOAD_MIN_BATCH's default
  const bool has_offload_device = plan.devices.size() > 1 && plan.weight_bytes[0] > 0 &&
                                  std::any_of(plan.weight_bytes.begin() + 1, plan.weight_bytes.end(),
                                              [](size_t b) { return b > 0; });
  const std::optional<placement::Prediction> pp_offload =
      has_offload_device ? std::optional(placement::predict_prefill(plan, tensors, st.shape, st.kv_per_cell, n_prompt,
                                                                    ubatch, depth, st.speeds, kLlamaOpOffloadMinBatch))
                         : std::nullopt;
  // The CPU holds its weights through the page cache: more than RAM streams them from disk every token.
  // Its KV cache and buffers (a micro-batch's activations, the logits rows) must fit, or nothing runs.
  auto cpu_buffers = [&](const placement::Plan& p) {
    return uint64_t(fr.flags.reserve_bytes + (p.output_device == 0 ? fr.flags.output_reserve_bytes : 0));
  };
  auto cpu_need = [&](const placement::Plan& p) { return p.weight_bytes[0] + p.kv_bytes[0] + cpu_buffers(p); };
  const bool ram_overflow = cpu_need(plan) > ram_bytes;
  const bool kv_overflow = plan.kv_bytes[0] + cpu_buffers(plan) > ram_bytes;
  // Everything the plan depends on, so that the printed command reproduces it: the context and slots
  // (serve's defaults differ from plan's), the cache types and micro-batch where not the default, the
  // placement. llama-server has no simulated device, so a plan with one has no llama-server command.
  std::string common_flags = format("-c %lld -np %lld", (long long)fitted->n_ctx, (long long)n_parallel);
  if (ctk != "f16") common_flags += " -ctk " + ctk;
  if (ctv != "f16") common_flags += " -ctv " + ctv;
  if (ubatch != 512) common_flags += " -ub " + std::to_string(ubatch);
  common_flags += " " + placement::equivalent_flags(plan, fitted->flags);
  const std::string flags = common_flags + sim_flags;
  const std::optional<std::string> llama_flags = sims.empty() ? std::optional(common_flags) : std::nullopt;

  // When it does not fit: smaller quantizations, a shorter context, or mmap from disk, each with its speed.
  std::vector<Alternative> alts;
  if (ram_overflow) {
    // Mixes by size: the model re-typed as llama-quantize would write each, then fitted again.
    quant::MixModel mm{hp.arch, hp.n_layer, hp.n_head, hp.n_head_kv, hp.n_expert, hp.n_embd};
    // The file's tensors only: a tied output is no tensor of its own, and llama-quantize, seeing none, gives
    // token_embd the output's type.
    std::vector<quant::MixTensor> mt;
    std::vector<size_t> file_index;  // mt's entry -> tensors'
    for (size_t i = 0; i < tensors.size(); ++i)
      if (tensors[i].alias_of.empty()) mt.push_back({tensors[i].name, tensors[i].shape}), file_index.push_back(i);
    uint64_t total = 0;
    for (const auto& t : tensors)
      if (t.alias_of.empty()) total += t.bytes;
    for (quant::FileType ft : {quant::FileType::Q6_K, quant::FileType::Q5_K_M, quant::FileType::Q4_K_M,
                               quant::FileType::IQ4_XS, quant::FileType::Q3_K_M, quant::FileType::Q2_K}) {
      const auto types = quant::choose_types(ft, mm, mt);
      auto retyped = tensors;
      uint64_t bytes = 0;
      for (size_t k = 0; k < mt.size(); ++k) {
        auto& t = retyped[file_index[k]];
        if (types[k] && t.shape.size() >= 1) {
          t.type = *types[k];
          t.bytes = row_bytes(t.type, t.shape.back()) * size_t(t.n_params() / t.shape.back());
        }
        bytes += t.bytes;
      }
      if (bytes > total / 20 * 19) continue;  // not clearly smaller than the model as it is (its own mix)
      for (auto& t : retyped)  // a tied output follows token_embd's new size
        if (!t.alias_of.empty())
          for (const auto& u : retyped)
            if (u.name == t.alias_of) t.bytes = u.bytes, t.type = u.type;
      Alternative a{"quantization", std::string(quant::file_type_name(ft)), bytes, false, 0, 0, "", "", 0, 0};
      placement::FitRequest fq = fr;
      fq.tensors = retyped;
      auto f = fit_or_overflow(fq);
      if (f) {
        a.fits = cpu_need(f->plan) <= ram_bytes;
        a.tg = placement::predict_decode(f->plan, retyped, st.shape, st.kv_per_cell, depth, st.speeds).tokens_per_s;
        a.pp = placement::predict_prefill(f->plan, retyped, st.shape, st.kv_per_cell, n_prompt, ubatch, depth, st.speeds)
                   .tokens_per_s;
        a.note = placement::equivalent_flags(f->plan, f->flags) +
                 (f->n_ctx != fitted->n_ctx ? " -c " + std::to_string(f->n_ctx) : "");
      }
      alts.push_back(a);
    }
    // A shorter context, when the weights and buffers leave room for some KV cache: planned again at that
    // context (a smaller KV cache may let more layers onto a device), with its speeds.
    uint64_t kv_per_token_cpu = 0;
    for (size_t il = 0; il < plan.kv_device.size(); ++il)
      if (plan.kv_device[il] == 0) kv_per_token_cpu += st.kv_per_cell[il];
    const uint64_t fixed_need = plan.weight_bytes[0] + cpu_buffers(plan);
    const int64_t n = fixed_need < ram_bytes && kv_per_token_cpu > 0
                          ? std::min<int64_t>(int64_t((ram_bytes - fixed_need) / kv_per_token_cpu), fitted->n_ctx - 1)
                          : 0;
    // The KV cache holds -c tokens whatever -np is: fewer slots save memory only when each keeps its
    // context, so that alternative is the most slots of -c / -np tokens that fit.
    const int64_t per_slot = fitted->n_ctx / n_parallel;
    const int64_t n_slots = std::min(n / std::max<int64_t>(per_slot, 1), n_parallel - 1);
    auto add_context = [&](const char* kind, int64_t n_ctx, int64_t np, const std::string& name, const char* why) {
      placement::FitRequest fc = fr;
      fc.n_ctx = n_ctx;
      fc.ctx_given = true;
      auto f = fit_or_overflow(fc);
      if (!f) return;
      Alternative a{kind, name, f->plan.kv_bytes[0], cpu_need(f->plan) <= ram_bytes, 0, 0, "", "", 0, 0};
      a.tg = placement::predict_decode(f->plan, tensors, st.shape, st.kv_per_cell, depth, st.speeds).tokens_per_s;
      a.pp = placement::predict_prefill(f->plan, tensors, st.shape, st.kv_per_cell, n_prompt, ubatch, depth, st.speeds)
                 .tokens_per_s;
      a.note = format("%s (-np %lld: %lld per slot); -c %lld -np %lld %s", why, (long long)np, (long long)(n_ctx / np),
                      (long long)n_ctx, (long long)np, placement::equivalent_flags(f->plan, f->flags).c_str());
      alts.push_back(a);
    };
    if (n > 0) add_context("context", n, n_parallel, "-c " + std::to_string(n),
                           "the longest context whose KV cache fits beside the weights and buffers");
    if (n_slots > 0) add_context("slots", n_slots * per_slot, n_slots, "-np " + std::to_string(n_slots),
                                 "the most slots of this context each that fit");
    // The expert tier (docs/expert-tier.md), as run and serve choose it when the model does not fit: the same
    // placement, the routed experts it leaves on the CPU cached in what RAM has left, the rest read from disk.
    if (hp.n_expert > 0) {
      std::set<std::string> offloaded;
      for (size_t i = 0; i < tensors.size(); ++i)
        if (plan.tensor_device[i] != 0) offloaded.insert(tensors[i].name);
      auto layout = expert::ExpertLayout::from_gguf((*m)->file(), offloaded);
      if (!layout) return fail(layout.error());
      placement::RamNeeds n;
      n.ram_bytes = ram_bytes;
      uint64_t routed_per_token = 0;
      for (size_t i = 0; i < tensors.size(); ++i) {
        const auto& t = tensors[i];
        if (!t.alias_of.empty()) continue;
        if (layout->is_expert_tensor(t.name)) {
          n.expert_bytes += t.bytes;
          routed_per_token += t.bytes / uint64_t(hp.n_expert) * uint64_t(hp.n_expert_used);
        } else if (plan.tensor_device[i] == 0) {
          n.resident_bytes += t.bytes;  // read into RAM at load
        }
      }
      n.kv_bytes = plan.kv_bytes[0];
      n.compute_bytes = fr.flags.reserve_bytes + fr.flags.output_reserve_bytes;
      n.slot_bytes = layout->layers().empty() ? 0 : expert::expert_slot_bytes(*layout);
      n.n_experts_total = layout->n_experts_total();
      n.n_expert_used = hp.n_expert_used;
      Alternative a{"expert tier", "--expert-cache", 0, false, 0, 0, "", "", 0, 0};
      auto tier = placement::size_expert_tier({placement::ExpertCacheSetting::Mode::Auto, 0}, n);
      if (layout->layers().empty()) {
        a.note = "every routed expert is on an offload device";
      } else if (!tier) {
        a.note = tier.error().message();
      } else {
        const auto p = placement::predict_expert_tier(n, tier->cache_bytes, routed_per_token, tg, pp, n_prompt, ubatch,
                                                      disk_bw * 1e9);
        a.fits = true;
        a.bytes = tier->cache_bytes;
        a.name = format("--expert-cache %lluM", (unsigned long long)(tier->cache_bytes >> 20));
        a.tg = p.tg_tokens_per_s;
        a.pp = p.pp_tokens_per_s;
        a.hit_rate = p.hit_rate;
        a.disk_bytes_per_token = p.disk_bytes_per_token;
        a.flags = flags + " " + a.name;
        a.note = format("%lld of the CPU's %lld experts cached (%.1f%%); hit rate taken as that share (uniform "
                        "routing: conservative; LFU-decay held 0.53-0.61 at a 25%% cache on DeepSeek-V2-Lite's "
                        "recorded routing, docs/expert-tier.md); %s read from disk per token at %.1f GB/s; RAM also "
                        "holds %s of other weights and %s of KV cache",
                        (long long)p.n_slots, (long long)n.n_experts_total, 100 * p.hit_rate,
                        placement::size_text(p.disk_bytes_per_token).c_str(), disk_bw,
                        placement::size_text(n.resident_bytes).c_str(), placement::size_text(n.kv_bytes).c_str());
      }
      alts.push_back(a);
    }
    // mmap from disk: the page cache keeps what RAM has room for; a token's reads miss in the same
    // proportion (experts are picked about uniformly) and the misses come at the disk's random-read speed.
    const double cached = kv_overflow ? 0 : double(ram_bytes - plan.kv_bytes[0] - cpu_buffers(plan));
    const double miss = placement::mmap_miss_share(plan.weight_bytes[0], cached);
    Alternative a{"mmap", "mmap from disk", plan.weight_bytes[0], !kv_overflow, 0, 0, "", "", 0, 0};
    a.tg = placement::tokens_per_s_from_disk(tg, miss, disk_bw * 1e9);
    // Prefill reads (almost) every CPU weight once per micro-batch.
    const double n_ub = std::ceil(double(n_prompt) / double(ubatch));
    a.pp = double(n_prompt) / (double(n_prompt) / pp.tokens_per_s + n_ub * double(plan.weight_bytes[0]) * miss / (disk_bw * 1e9));
    a.note = format("%.0f%% of the CPU's weights stay on disk; %s read from disk per token at %.1f GB/s", miss * 100,
                    placement::size_text(uint64_t(double(tg.read_bytes[0]) * miss)).c_str(), disk_bw);
    alts.push_back(a);
  }

  if (json) {
    nlohmann::json j;
    j["model"] = model_path;
    j["n_gpu_layers"] = plan.n_gpu_layers;
    j["n_cpu_moe"] = fitted->flags.n_cpu_moe;
    j["ctx"] = fitted->n_ctx;
    j["n_parallel"] = n_parallel;
    j["flags"] = flags;
    j["llama_server_flags"] = llama_flags ? nlohmann::json(*llama_flags) : nlohmann::json(nullptr);
    j["speeds_from"] = speeds_from;
    for (size_t d = 0; d < plan.devices.size(); ++d)
      j["devices"].push_back({{"name", plan.devices[d].name}, {"free_bytes", plan.devices[d].free_bytes},
                              {"weight_bytes", plan.weight_bytes[d]}, {"kv_bytes", plan.kv_bytes[d]},
                              {"read_bytes_per_token", tg.read_bytes[d]}, {"seconds_per_token", tg.seconds[d]},
                              {"tg_bound", tg.bound[d]}, {"pp_seconds", pp.seconds[d]}, {"pp_bound", pp.bound[d]}});
    j["link_seconds_per_token"] = tg.link_seconds;
    j["tg_tokens_per_s"] = tg.tokens_per_s;
    j["bottleneck"] = tg.bottleneck;
    j["pp_tokens_per_s"] = pp.tokens_per_s;
    j["pp_bottleneck"] = pp.bottleneck;
    if (pp_offload) {
      j["pp_tokens_per_s_op_offload"] = pp_offload->tokens_per_s;
      j["pp_bottleneck_op_offload"] = pp_offload->bottleneck;
    }
    j["n_prompt"] = n_prompt;
    j["fits_in_ram"] = !ram_overflow;
    j["ram_bytes"] = ram_bytes;
    j["cpu_buffer_bytes"] = cpu_buffers(plan);
    j["alternatives"] = nlohmann::json::array();
    for (const Alternative& a : alts) {
      j["alternatives"].push_back({{"kind", a.kind}, {"name", a.name}, {"bytes", a.bytes}, {"fits", a.fits},
                                   {"tg_tokens_per_s", a.tg}, {"pp_tokens_per_s", a.pp}, {"note", a.note}});
      if (a.kind == "expert tier")
        j["alternatives"].back().update({{"flags", a.flags}, {"hit_rate", a.hit_rate},
                                         {"disk_bytes_per_token", a.disk_bytes_per_token}});
    }
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model:     %s (%s, %lld layers%s)\n", model_path.c_str(), hp.arch.c_str(), (long long)hp.n_layer,
              hp.n_expert ? format(", %lld experts, %lld used", (long long)hp.n_expert, (long long)hp.n_expert_used).c_str() : "");
  // Budgets in the unit --ram / --vram read them in (G = GiB), so that 64G prints as 64.00 GiB.
  std::printf("machine:   RAM %s at %.0f GB/s%s\n", placement::size_text(ram_bytes).c_str(), cpu.bytes_per_s / 1e9,
              gpus ? format("; %lld GPU x %s at %.0f GB/s, %.0f TFLOP/s, link %.0f GB/s", (long long)gpus,
                            placement::size_text(vram_bytes).c_str(), vram_bw, gpu_tflops, link_bw).c_str() : "");
  if (ram_overflow) {  // first, so that nobody copies the flags below without reading the alternatives at the end
    const bool any_runs = std::any_of(alts.begin(), alts.end(), [](const Alternative& a) { return a.fits; });
    std::printf("verdict:   DOES NOT FIT: the CPU's share needs %s of the RAM's %s; the placement, flags and speeds\n"
                "           below are what it would take, %s\n",
                placement::size_text(cpu_need(plan)).c_str(), placement::size_text(ram_bytes).c_str(),
                any_runs ? "the alternatives that run are at the end" : "and none of the alternatives at the end runs");
  }
  std::printf("speeds:    from %s\n", speeds_from.c_str());
  std::printf("context:   %lld tokens%s, %s K / %s V\n\nplacement:\n%s\n", (long long)fitted->n_ctx,
              n_parallel > 1 ? format(" (-np %lld: %lld per slot)", (long long)n_parallel,
                                      (long long)(fitted->n_ctx / n_parallel)).c_str() : "",
              ctk.c_str(), ctv.c_str(),
              placement::format_plan(plan, tensors).c_str());
  std::printf("flags:     tandem serve -m MODEL %s\n", flags.c_str());
  if (llama_flags)
    std::printf("           llama-server -m MODEL %s\n\n", llama_flags->c_str());
  else
    std::printf("           llama-server: no equivalent (it has no simulated device; --sim-device is Tandem's)\n\n");
  std::printf("prefill:   %.1f tokens/s predicted for %lld tokens (pp%lld; bound by %s)\n", pp.tokens_per_s,
              (long long)n_prompt, (long long)n_prompt, pp.bottleneck.c_str());
  for (size_t d = 0; d < plan.devices.size(); ++d)
    std::printf("           %-7s %.2f TFLOP in %.1f ms (%s)\n", plan.devices[d].name.c_str(), pp.flops[d] / 1e12,
                pp.seconds[d] * 1e3, pp.bound[d].c_str());
  if (pp_offload)
    std::printf("           %.1f tokens/s with llama.cpp's op offload (llama-server copies the CPU's matrices to %s\n"
                "           for micro-batches of %lld tokens or more; Tandem multiplies them where they live; bound by %s)\n",
                pp_offload->tokens_per_s, plan.devices[1].name.c_str(), (long long)kLlamaOpOffloadMinBatch,
                pp_offload->bottleneck.c_str());
  std::printf("decode:    %.1f tokens/s predicted (tg; bound by %s)\n", tg.tokens_per_s, tg.bottleneck.c_str());
  for (size_t d = 0; d < plan.devices.size(); ++d)
    std::printf("           %-7s reads %s per token: %.1f ms (%s)\n", plan.devices[d].name.c_str(),
                human_bytes(tg.read_bytes[d]).c_str(), tg.seconds[d] * 1e3, tg.bound[d].c_str());
  if (devices.size() > 1) std::printf("           link    %.2f ms per token\n", tg.link_seconds * 1e3);
  if (ram_overflow) {
    std::printf("\ndoes not fit: the CPU's share, %s of weights + %s of KV cache + %s of buffers = %s, exceeds the "
                "RAM (%s): %s. Alternatives:\n",
                placement::size_text(plan.weight_bytes[0]).c_str(), placement::size_text(plan.kv_bytes[0]).c_str(),
                placement::size_text(cpu_buffers(plan)).c_str(), placement::size_text(cpu_need(plan)).c_str(),
                placement::size_text(ram_bytes).c_str(),
                kv_overflow ? "its KV cache and buffers alone exceed it, so this plan cannot run"
                            : "the mapped weights are read from disk again every token, far below this prediction");
    const Alternative* smallest = nullptr;
    for (const Alternative& a : alts)
      if (a.kind == "quantization" && (!smallest || a.bytes < smallest->bytes)) smallest = &a;
    if (!smallest)
      std::printf("  quantization: no mix Tandem writes is clearly smaller than this model (%s)\n",
                  human_bytes(std::accumulate(plan.weight_bytes.begin(), plan.weight_bytes.end(), uint64_t(0))).c_str());
    else if (!smallest->fits)
      std::printf("  quantization: none fits; the smallest, %s, is %s\n", smallest->name.c_str(),
                  human_bytes(smallest->bytes).c_str());
    for (const Alternative& a : alts) {
      if (a.kind == "quantization")
        std::printf("  %-9s %-14s %10s  %-11s pp %8.1f  tg %7.2f tokens/s  %s\n", a.kind.c_str(), a.name.c_str(),
                    human_bytes(a.bytes).c_str(), a.fits ? "fits" : "still over", a.pp, a.tg, a.note.c_str());
      else if (a.kind == "expert tier" && !a.fits)
        std::printf("  %-9s %s\n", a.kind.c_str(), a.note.c_str());
      else if (a.kind == "expert tier")
        std::printf("  %-9s %-14s %10s  %-11s pp %8.1f  tg %7.2f tokens/s  %s\n"
                    "            tandem serve -m MODEL %s (run and serve choose it when the model does not fit)\n",
                    "experts", "tier", human_bytes(a.bytes).c_str(), "cache", a.pp, a.tg, a.note.c_str(),
                    a.flags.c_str());
      else
        std::printf("  %-9s %-14s %10s  %-11s pp %8.1f  tg %7.2f tokens/s  %s\n", a.kind.c_str(), a.name.c_str(),
                    human_bytes(a.bytes).c_str(), a.kind == "context" || a.kind == "slots" ? (a.fits ? "fits" : "still over")
                                                                       : (a.fits ? "runs" : "no room"),
                    a.pp, a.tg, a.note.c_str());
    }
  }
  return 0;
}

}  // namespace tandem::cli
