// Loading an engine and its start-up summary; the sampling defaults.
#include "engine/engine.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>

#include "backend/cpu/kernels.h"
#include "core/memory.h"
#include "core/numa.h"
#include "core/progress.h"
#include "core/thread_pool.h"
#include "core/trace.h"
#include "gguf/gguf_file.h"
#include "model/arch.h"
#include "model/registry.h"
#include "placement/fit.h"
#include "placement/probe.h"

namespace tandem {
namespace {

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
  return Status::ok();
}

// The expert tier (--expert-cache, placement/expert_tier.h) for the routed experts `plan` leaves on the CPU
// (`offloaded`: the tensors it puts elsewhere): RAM holds the CPU's other tensors (Model::read_resident), its
// KV cache and a micro-batch's buffers; the cache takes what is left. Warns when the model is mapped and
// exceeds the RAM.
Result<placement::ExpertTier> choose_expert_tier(const EngineFlags& f, const model::Model& desc,
                                                 const placement::Plan& plan, const std::set<std::string>& offloaded,
                                                 const placement::PlacementFlags& pf, const MemoryBudget& budget) {
  using Mode = placement::ExpertCacheSetting::Mode;
  TANDEM_ASSIGN(const expert::ExpertLayout layout, expert::ExpertLayout::from_gguf(desc.file(), offloaded));
  placement::RamNeeds n;
  n.ram_bytes = budget.bytes;
  const std::vector<placement::TensorInfo> infos = desc.tensor_infos();
  for (size_t i = 0; i < infos.size(); ++i) {
    if (!infos[i].alias_of.empty()) continue;  // a tied output reads token_embd's bytes
    if (layout.is_expert_tensor(infos[i].name)) n.expert_bytes += infos[i].bytes;
    else if (plan.tensor_device[i] == 0) n.resident_bytes += infos[i].bytes;
  }
  n.kv_bytes = plan.kv_bytes[0];
  n.compute_bytes = pf.reserve_bytes + pf.output_reserve_bytes;
  n.slot_bytes = layout.layers().empty() ? 0 : expert::expert_slot_bytes(layout);
  n.n_experts_total = layout.n_experts_total();
  n.n_expert_used = desc.hparams().n_expert_used;
  placement::ExpertCacheSetting s = f.expert_cache;
  if (s.mode == Mode::Default && (layout.layers().empty() || !f.mmap)) s.mode = Mode::Off;  // nothing to cache; or
  // --no-mmap, which reads every weight into RAM (check_memory has refused it when they do not fit)
  if (s.mode == Mode::Auto && layout.layers().empty())
    return invalid_argument("%s: --expert-cache: the model has no routed experts%s (%s)", f.model.c_str(),
                            offloaded.empty() ? "" : " on the CPU", desc.hparams().arch.c_str());
  TANDEM_ASSIGN(placement::ExpertTier tier, placement::size_expert_tier(s, n));
  const uint64_t weights = desc.weight_bytes();
  if (!tier.on && f.mmap && !f.quiet && n.kv_bytes + weights > budget.bytes)
    std::fprintf(stderr, "warning: %s\n",
                 !tier.warning.empty()
                     ? tier.warning.c_str()
                     : format("the KV cache (%s) and the mapped weights (%s) exceed the %s available (%s): weights "
                              "will be read from disk again as they are evicted", human_bytes(n.kv_bytes).c_str(),
                              human_bytes(weights).c_str(), human_bytes(budget.bytes).c_str(),
                              budget.source.c_str()).c_str());
  if (tier.on && s.mode != Mode::Size) tier.reason += " (" + budget.source + ")";
  return tier;
}

}  // namespace

Engine::~Engine() {
  if (trace_path.empty() || !Trace::active()) return;
  const Status s = Trace::active()->write(trace_path);
  if (!s.is_ok()) std::fprintf(stderr, "error: %s\n", s.message().c_str());
  else std::fprintf(stderr, "trace: %s (open it in https://ui.perfetto.dev or chrome://tracing)\n", trace_path.c_str());
}

Status warm_up(Context& ctx, const tokenizer::Vocab& vocab) {
  std::vector<int32_t> tokens;
  if (vocab.special.bos != tokenizer::kNoToken) tokens.push_back(vocab.special.bos);
  if (vocab.special.eos != tokenizer::kNoToken) tokens.push_back(vocab.special.eos);
  if (tokens.empty()) tokens.push_back(0);
  tokens.resize(size_t(std::min<int64_t>(int64_t(tokens.size()), ctx.kv().n_cells())));
  const Status s = ctx.prefill(0, tokens, 0);
  ctx.kv().clear();
  return s;
}

Result<std::unique_ptr<Engine>> load_engine(const EngineFlags& f) {
  if (f.list_devices) {  // as llama.cpp: print and exit, whatever else the line asks
    std::fputs(list_devices(f).c_str(), stdout);
    std::exit(0);
  }
  if (f.model.empty()) return invalid_argument("no model given (use -m FILE)");
  const WeightType type_k = *parse_weight_type(f.cache_type_k), type_v = *parse_weight_type(f.cache_type_v);
  if (f.n_gpu_layers != 0 && f.sim_devices.empty() && cuda::probe().devices.empty() && !f.quiet)
    std::fprintf(stderr, "warning: -ngl %s: no offload device (CUDA: %s; --sim-device adds a simulated one); every "
                 "layer runs on the CPU\n",
                 f.n_gpu_layers == -1 ? "auto" : f.n_gpu_layers == -2 ? "all" : std::to_string(f.n_gpu_layers).c_str(),
                 cuda::probe().reason.c_str());

  // -c 0 (the trained context) is llama.cpp's default, which its --fit may lower: not a fixed choice.
  const bool ctx_fixed = f.ctx_given && f.ctx > 0;
  if (!f.fit || ctx_fixed) TANDEM_TRY(check_memory(f, type_k, type_v));  // else --fit checks the -c it chooses
  if (!f.cpu_isa.empty()) TANDEM_TRY(cpu::limit_isa(f.cpu_isa));
  auto e = std::make_unique<Engine>();
  if (!f.trace_path.empty()) {
    if (std::FILE* probe = std::fopen(f.trace_path.c_str(), "w")) std::fclose(probe);
    else return io_error("--trace %s: cannot open the file for writing", f.trace_path.c_str());
    Trace::start();
    e->trace_path = f.trace_path;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const CpuTopology topology = CpuTopology::detect();
  TANDEM_ASSIGN(const Placement placement,
                plan_placement({.n_threads = f.threads < 0 ? int(topology.allowed.size()) : int(f.threads),
                                .mask = f.cpu_mask, .strict = f.cpu_strict,
                                .numa = f.numa},
                               topology));
  for (const auto& w : placement.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  const int threads = placement.n_threads;
  e->threads = threads;
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
  lo.repack = f.repack;
  if (!f.mmap && !f.quiet)
    lo.on_progress = [&bar](uint64_t done, uint64_t total) {
      if (!bar) bar = std::make_unique<ProgressBar>("load  ", total);
      bar->update(done);
    };
  for (const cuda::DeviceInfo& d : cuda::probe().devices) {
    TANDEM_ASSIGN(auto gpu, cuda::create_backend(d.index));
    e->gpus.push_back(std::move(gpu));
  }
  for (size_t i = 0; i < f.sim_devices.size(); ++i) {
    sim::SimOptions so{.name = "SIM" + std::to_string(i), .budget_bytes = f.sim_devices[i], .n_threads = threads};
    TANDEM_ASSIGN(auto sim, sim::SimBackend::create(so));
    e->sims.push_back(std::move(sim));
  }
  // The placement and the expert tier are decided from the model's description (its tensor table) before
  // any weight is read: the tier decides how the model opens.
  model::ModelLoadOptions desc_options;
  desc_options.header_only = true;
  TANDEM_ASSIGN(const auto desc, model::Model::open(f.model, desc_options));
  int64_t n_ctx = f.ctx > 0 ? f.ctx : desc->hparams().n_ctx_train;
  if (n_ctx > desc->hparams().n_ctx_train && desc->hparams().n_ctx_train > 0 && !f.quiet)
    std::fprintf(stderr, "warning: -c %lld is longer than the %lld tokens the model was trained on: positions past "
                 "that may give poor output (as llama.cpp warns, n_ctx > n_ctx_train)\n", (long long)n_ctx,
                 (long long)desc->hparams().n_ctx_train);
  placement::ExpertTier tier;
  {
    const MemoryBudget budget = available_memory();
    std::vector<Backend*> backends = {e->cpu.get()};
    std::vector<placement::DeviceInfo> infos = {{"CPU", budget.bytes}};
    for (size_t i = 0; i < e->gpus.size(); ++i) {
      backends.push_back(e->gpus[i].get());
      infos.push_back({e->gpus[i]->name(), cuda::probe().devices[i].free_bytes});
    }
    for (const auto& sim : e->sims) {
      backends.push_back(sim.get());
      infos.push_back({sim->name(), sim->budget_bytes()});
    }
    const std::vector<size_t> kv_per_cell = desc->kv_bytes_per_cell(type_k, type_v);
    std::vector<size_t> kv_bytes = kv_per_cell;
    for (size_t& b : kv_bytes) b *= size_t(n_ctx);
    placement::PlacementFlags pf = f.placement;
    pf.n_gpu_layers = f.n_gpu_layers;
    // Room on each offload device for one micro-batch's activations, and on the output layer's device
    // for the logits rows a step asks for.
    const auto& hp = desc->hparams();
    const int64_t ub = std::min(f.ubatch, f.batch);
    pf.reserve_bytes = activation_bytes(hp, ub);
    pf.output_reserve_bytes = size_t(hp.n_vocab) * sizeof(float) * size_t(std::min(f.n_outputs_max, ub));
    model::Placement where;
    bool fit_from_disk = false;  // --fit priced mapped weights past the RAM from the disk
    if (f.fit) {
      placement::FitRequest fr;
      fr.tensors = desc->tensor_infos();
      fr.n_layer = int(hp.n_layer);
      fr.kv_bytes_per_cell = kv_per_cell;
      fr.n_ctx = n_ctx;
      fr.devices = infos;
      // What check_memory checks without --fit: the KV cache on the CPU, and the weights too when
      // --no-mmap reads them into RAM.
      const uint64_t resident = f.mmap ? 0 : desc->weight_bytes();
      fr.devices[0].free_bytes = fr.devices[0].free_bytes > resident ? fr.devices[0].free_bytes - resident : 0;
      fr.weights_mapped = f.mmap;
      if (const auto probe = placement::load_probe(placement::probe_cache_path()); probe && *probe && (*probe)->disk)
        fr.disk_bytes_per_s = (*probe)->disk->random_bytes_per_s;
      fr.flags = pf;
      fr.ngl_given = f.ngl_given;
      fr.experts_given = !pf.overrides.empty() || pf.cpu_moe || pf.n_cpu_moe > 0;
      fr.ctx_given = ctx_fixed;
      fr.min_ctx = f.fit_min_ctx;
      for (size_t d = 1; d < infos.size() && !f.fit_target_bytes.empty(); ++d)
        fr.margin_bytes.push_back(f.fit_target_bytes[std::min(d - 1, f.fit_target_bytes.size() - 1)]);
      fr.shape = model_shape(hp);
      // A sim device runs the CPU's kernels in host memory: the CPU's speeds, behind its link. A CUDA
      // device's speeds are not measured yet (issue 17): it is planned as the CPU too.
      fr.speeds.devices.assign(infos.size(), placement::this_cpu_speed(threads));
      TANDEM_ASSIGN(const placement::FitResult fitted, placement::fit(fr));
      where.plan = fitted.plan;
      n_ctx = fitted.n_ctx;
      std::fprintf(stderr, "fit:     %s\n", fitted.summary.c_str());  // bench's too: what --fit chose
      fit_from_disk = fitted.disk_share > 0;
    } else {
      TANDEM_ASSIGN(where.plan, placement::make_plan(desc->tensor_infos(), int(hp.n_layer), kv_bytes, infos, pf));
    }
    for (int id : where.plan.device_ids) where.devices.push_back(backends[size_t(id)]);
    if (where.devices.size() == 1 && f.n_gpu_layers != 0 && (!e->sims.empty() || !e->gpus.empty()) && !f.quiet)
      std::fprintf(stderr, "warning: -ngl with -dev none: no offload device is used; every layer runs on the CPU\n");
    e->plan = where.plan;
    const std::vector<placement::TensorInfo> tensors = desc->tensor_infos();
    for (size_t i = 0; i < tensors.size(); ++i)
      if (where.plan.tensor_device[i] != 0 && tensors[i].alias_of.empty()) lo.offloaded.insert(tensors[i].name);
    TANDEM_ASSIGN(tier, choose_expert_tier(f, *desc, where.plan, lo.offloaded, pf, budget));
    lo.expert_cache_bytes = tier.on ? tier.cache_bytes : 0;
    if (fit_from_disk && tier.on)  // fit's figure is mmap's; the tier reads fewer of the experts from disk
      std::fprintf(stderr, "fit:     the routed experts past the RAM go to the expert tier (--expert-cache %s), "
                           "faster than mmap's figure above; tandem plan -m MODEL predicts its speed\n",
                   human_bytes(tier.cache_bytes).c_str());
    TANDEM_ASSIGN(e->model, model::Model::open(f.model, lo));
    TANDEM_TRY(e->model->place(where));
  }
  if (bar) bar->finish();
  for (const auto& w : e->model->warnings()) std::fprintf(stderr, "warning: %s\n", w.c_str());
  TANDEM_ASSIGN(e->tokenizer, tokenizer::Tokenizer::from_metadata(e->model->file().metadata(), f.model));
  for (const auto& w : e->tokenizer->warnings()) std::fprintf(stderr, "warning: %s\n", w.c_str());
  const auto& hp = e->model->hparams();
  if (int64_t(e->tokenizer->n_tokens()) != e->model->output().n_rows())
    return corrupt("%s: the tokenizer has %zu tokens but the output layer has %lld rows", f.model.c_str(),
                   e->tokenizer->n_tokens(), (long long)e->model->output().n_rows());
  ContextOptions co;
  co.n_ctx = n_ctx;
  co.n_batch = f.batch;
  co.n_ubatch = std::min(f.ubatch, f.batch);
  co.type_k = type_k;
  co.type_v = type_v;
  // 'auto' takes flash attention where its vector kernels exist (AVX-512); below that the plain path's
  // AVX2 kernels are faster than the scalar flash tile.
  co.flash_attn =
      f.flash_attn == OnOffAuto::On || (f.flash_attn == OnOffAuto::Auto && cpu::best_isa() >= cpu::Isa::Avx512);
  co.batch_invariant = f.batch_invariant;
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
    if (const uint64_t packed = e->model->repacked_bytes()) {
      std::string packed_types;
      bool experts = false;
      for (const Weight* w : e->model->repacked()) {
        experts |= w->shape.size() == 3;
        const std::string_view name = type_name(w->type);
        if (packed_types.find(name) != std::string::npos) continue;
        if (!packed_types.empty()) packed_types += ", ";
        packed_types += name;
      }
      std::fprintf(stderr, "repack:  %s of the matrices%s (%s) as 16-row panels in RAM of their own, %s of "
                   "their mapped file pages let go (--no-repack: off)\n", human_bytes(packed).c_str(),
                   experts ? " and routed experts" : "", packed_types.c_str(),
                   human_bytes(e->model->dropped_bytes()).c_str());
    }
    else if (f.repack && (!f.mmap || f.mlock))
      std::fprintf(stderr, "repack:  off with %s (the file's layout kept: a copy would hold its matrices %s)\n",
                   f.mmap ? "--mlock" : "--no-mmap", f.mmap ? "unlocked" : "twice");
    if (e->sims.empty() && e->gpus.empty()) {
      for (const auto& [dev, bytes] : e->model->bytes_by_device())
        std::fprintf(stderr, "device:  %s holds %s of weights (%s)\n", dev.c_str(), human_bytes(bytes).c_str(),
                     !f.mmap                           ? "read into RAM"
                     : e->model->repacked_bytes() > 0 ? "memory-mapped, the repacked matrices in RAM"
                                                       : "memory-mapped");
    } else {
      std::fprintf(stderr, "placement:\n%s", placement::format_plan(e->plan, e->model->tensor_infos()).c_str());
    }
    if (const expert::ExpertCache* c = e->model->expert_cache()) {
      const expert::ExpertLayout& l = c->layout();
      std::fprintf(stderr, "experts: a cache of %d slots of %s (%s) for %d routed experts in %zu layers (%.1f%%), "
                   "read with %s\n", c->n_slots(), human_bytes(c->slot_bytes()).c_str(),
                   human_bytes(uint64_t(c->n_slots()) * c->slot_bytes()).c_str(), l.n_experts_total(), l.layers().size(),
                   100.0 * c->n_slots() / l.n_experts_total(), c->direct() ? "O_DIRECT" : "buffered reads");
      std::fprintf(stderr, "         %s\n", tier.reason.c_str());
    }
    const auto& kv = e->context->kv();
    const bool latent = kv.n_layers() > 0 && kv.layer(0).row_v == 0;  // absorbed MLA: V is read out of the K rows
    const std::string kv_types = latent ? format("%s latent (MLA absorbed: %lld values a layer, no V of its own)",
                                              type_name(type_k).data(), (long long)kv.layer(0).row_k)
                                     : format("%s K / %s V", type_name(type_k).data(), type_name(type_v).data());
    std::fprintf(stderr, "kv:      %s, %zu bytes per token, %lld tokens: %s; flash attention %s\n", kv_types.c_str(),
                 kv.bytes_per_token(), (long long)kv.n_cells(), human_bytes(kv.total_bytes()).c_str(),
                 co.flash_attn ? "on" : "off");
    const int k_rot = kv_rotation_block(type_k, hp.head_dim_k, false), v_rot = kv_rotation_block(type_v, hp.head_dim_v, true);
    if (k_rot || v_rot)
      std::fprintf(stderr, "         quantized cache: %s rotated by a %d-wide Walsh-Hadamard block before storing (as llama.cpp)\n",
                   k_rot && v_rot ? "Q/K and V" : k_rot ? "Q/K" : "V", k_rot ? k_rot : v_rot);
    std::fprintf(stderr, "threads: %d, batch %lld, micro-batch %lld, matmul kernels: %s (%s choices%s)\n", threads,
                 (long long)co.n_batch, (long long)co.n_ubatch, cpu::isa_name(cpu::kernels().isa),
                 cpu::uarch_name(cpu::kernels().uarch), co.batch_invariant ? ", batch-invariant" : "");
    std::fprintf(stderr, "cpu:     priority %s%s, poll %lld; %s; memory policy %s\n",
                 describe_priority(priority).c_str(), refused.empty() ? "" : " (refused by the OS, see above)",
                 (long long)f.poll, placement.description.c_str(), describe_memory_policy().c_str());
    if (!f.warmup) std::fprintf(stderr, "loaded in %.2f s (no warm-up)\n", e->t_load_s);
    else std::fprintf(stderr, "loaded in %.2f s (warm-up decode %.2f s)\n", e->t_load_s, t_warmup_s);
  }
  return e;
}

placement::ModelShape model_shape(const model::HParams& hp) {
  const model::Architecture* arch = model::find_architecture(hp.arch);
  return {hp.n_embd,     hp.n_vocab,     hp.n_expert,        hp.n_expert_used, hp.n_head,
          hp.head_dim_k, hp.head_dim_v, arch && arch->ffn_gelu};
}

size_t activation_bytes(const model::HParams& hp, int64_t n_ubatch) {
  const int64_t per_token = 3 * hp.n_embd + hp.n_head * (hp.head_dim_k + hp.head_dim_v) +
                            hp.n_head_kv * (hp.head_dim_k + hp.head_dim_v) + 2 * hp.n_ff;
  return size_t(per_token) * sizeof(float) * size_t(n_ubatch);
}

std::string describe_expert_cache(const expert::ExpertCacheStats& st, uint64_t n_tokens) {
  const uint64_t n = std::max<uint64_t>(n_tokens, 1);
  std::string out = format("expert cache: hit rate %.1f%% (%llu hits, %llu late, %llu misses, %llu evictions), read %s "
                           "from disk (%s per token) at %.2f GB/s, %.2f s waiting",
                           100 * st.hit_rate(), (unsigned long long)st.hits, (unsigned long long)st.late,
                           (unsigned long long)st.misses, (unsigned long long)st.evictions,
                           human_bytes(st.bytes_read).c_str(), human_bytes(st.bytes_read / n).c_str(),
                           st.bandwidth_gbs(), double(st.wait_us) / 1e6);
  if (st.routed)
    out += format("; next-layer guess right for %.1f%% of routed experts (%llu guessed)", 100 * st.guess_hit_rate(),
                  (unsigned long long)st.guessed);
  return out;
}

std::string list_devices(const EngineFlags& f) {
  std::string out = "Available devices:\n";
  out += format("  CPU: %s (%s available)\n", cpu::isa_name(cpu::kernels().isa), human_bytes(available_memory().bytes).c_str());
  out += cuda::describe_devices();
  for (size_t i = 0; i < f.sim_devices.size(); ++i)
    out += format("  SIM%zu: simulated GPU on the CPU (%s; link 25 GB/s, 10 us)\n", i,
                  placement::size_text(f.sim_devices[i]).c_str());
  return out;
}

Result<sampling::Sampler> make_sampler(const SamplingFlags& f, int32_t n_vocab) {
  return sampling::Sampler::create(f.params, n_vocab);
}

std::string describe_sampling(const SamplingFlags& f) {
  const auto& p = f.params;
  if (p.temp <= 0) return "greedy";
  return format("temp %.2f, top-k %d, top-p %.2f, min-p %.2f, typical %.2f, repeat penalty %.2f (last %d)", p.temp,
                p.top_k, p.top_p, p.min_p, p.typical_p, p.repeat_penalty, p.repeat_last_n);
}

}  // namespace tandem
