// What run, bench, perplexity and serve share: the engine settings (llama.cpp's model and engine
// flags, as values), loading model, tokenizer and context with the start-up summary, and the sampling
// defaults. The flags that fill these structs are registered in cli/engine_flags.h; nothing here
// knows about a command line.
#pragma once

#include <memory>
#include <string>

#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/sim/sim_backend.h"
#include "core/affinity.h"
#include "core/on_off_auto.h"
#include "engine/context.h"
#include "model/model.h"
#include "placement/expert_tier.h"
#include "placement/plan.h"
#include "placement/predict.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

namespace tandem {

struct EngineFlags {
  std::string model;
  int64_t threads = 0;  // 0: physical cores; -1 (-t 0 or below, as llama.cpp): every CPU the process may use
  int64_t ctx = 4096;   // 0: the model's training context
  int64_t batch = 2048, ubatch = 512;
  int64_t n_gpu_layers = 0;  // llama.cpp's encoding: -1 auto (fit), -2 all
  bool ngl_given = false, ctx_given = false;  // on the command line: --fit keeps them
  // --fit (placement/fit.h): -ngl, the experts' home and -c chosen where the user left them open, for the
  // best predicted decode speed within each device's memory less fit_target_bytes (per offload device;
  // one value: all; empty: placement::default_fit_margin); -c not below fit_min_ctx.
  bool fit = false;
  std::vector<size_t> fit_target_bytes;
  int64_t fit_min_ctx = 4096;
  // The rest of the placement flags (-ot, --cpu-moe, --n-cpu-moe, -ts, -sm, -mg, -nkvo, -dev);
  // placement.n_gpu_layers is taken from n_gpu_layers above.
  placement::PlacementFlags placement;
  std::vector<uint64_t> sim_devices;  // --sim-device SIZE: one sim device of that many bytes each
  bool list_devices = false;          // --list-devices: print them and exit
  std::string trace_path;             // --trace FILE: a Chrome trace of every op and copy, written at the end
  // Logits rows the output layer's device keeps room for: a micro-batch of them for perplexity, else a
  // few (a server's slots).
  int64_t n_outputs_max = 16;
  bool mmap = true, mlock = false, quiet = false;
  // --expert-cache SIZE|auto|off; not given: the expert tier when the model does not fit RAM
  // (placement/expert_tier.h sizes it).
  placement::ExpertCacheSetting expert_cache;
  bool repack = true;  // ModelLoadOptions::repack (--no-repack)
  std::string cache_type_k = "f16", cache_type_v = "f16", cpu_isa;
  OnOffAuto flash_attn = OnOffAuto::Auto;
  bool batch_invariant = false;  // ContextOptions::batch_invariant (--batch-invariant)
  // Where and how eagerly the threads run (llama.cpp's --prio, --poll, -C, -Cr, --cpu-strict, --numa).
  int64_t prio = 0, poll = 50;
  bool cpu_strict = false;
  CpuSet cpu_mask;  // union of --cpu-mask and --cpu-range; empty: neither given
  NumaMode numa = NumaMode::None;
  bool warmup = true;  // the warm-up decode (llama.cpp's --warmup / --no-warmup)
};

// A loaded model ready to decode. The context (and its KV cache) is not thread-safe: one thread
// drives it (the server's scheduler, or run's loop).
struct Engine {
  ~Engine();  // writes the --trace file
  std::string trace_path;
  std::unique_ptr<cpu::CpuBackend> cpu;
  std::vector<std::unique_ptr<Backend>> gpus;  // CUDA0, CUDA1, ... (cuda::probe()); before model, as sims
  std::vector<std::unique_ptr<sim::SimBackend>> sims;  // before model: they hold its offloaded weights
  placement::Plan plan;
  std::unique_ptr<model::Model> model;
  std::unique_ptr<tokenizer::Tokenizer> tokenizer;
  std::unique_ptr<Context> context;
  double t_load_s = 0;
  int threads = 0;
};

// Loads model, tokenizer and context, runs the warm-up decode (unless --no-warmup) and prints the
// start-up summary on stderr (unless quiet). Weights and KV layers go where the placement plan puts
// them (placement/plan.h); a plan that does not fit is refused before any weight is read.
Result<std::unique_ptr<Engine>> load_engine(const EngineFlags& f);

// Bytes of one micro-batch's activations on a device running layers (ForwardScratch's slots but the
// logits): what a placement plan keeps free there.
size_t activation_bytes(const model::HParams& hp, int64_t n_ubatch);

// What the planner's speed model needs of the model's shape (placement/predict.h).
placement::ModelShape model_shape(const model::HParams& hp);

// The expert cache's counters (--expert-cache) as run and bench print them at the end, over `n_tokens` tokens.
std::string describe_expert_cache(const expert::ExpertCacheStats& st, uint64_t n_tokens);

// The devices --list-devices prints: the CPU, the CUDA GPUs (or why there are none) and each
// --sim-device, with their memory.
std::string list_devices(const EngineFlags& f);

// llama.cpp's warm-up (common/common.cpp common_init_from_params): one decode of BOS and EOS, so
// weights are paged in and buffers sized before anything is timed; the cache is emptied afterwards.
Status warm_up(Context& ctx, const tokenizer::Vocab& vocab);

// The sampling settings a command starts with (run's, or the defaults a server request may override).
struct SamplingFlags {
  sampling::SamplerParams params;  // -l TOKEN(+|-)BIAS entries land in params.logit_bias
};

// The sampler of those settings, its logit-bias token ids checked against the vocabulary.
Result<sampling::Sampler> make_sampler(const SamplingFlags& f, int32_t n_vocab);
std::string describe_sampling(const SamplingFlags& f);

}  // namespace tandem
