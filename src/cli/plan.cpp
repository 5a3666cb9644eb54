// tandem plan: what fits where before anything loads, the flags that say so for Tandem and
// llama-server, and the decode speed that placement allows. Reads only the model's tensor table, so
// it plans for a header-only description of a model too big for this machine.
#include <cmath>
#include <cstdio>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "core/memory.h"
#include "core/progress.h"
#include "engine/context.h"
#include "model/model.h"
#include "placement/predict.h"

namespace tandem::cli {
namespace {

Status parse_positive(std::string_view v, double* out) {
  const std::string s(v);
  char* end = nullptr;
  const double x = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || !std::isfinite(x) || x <= 0) return invalid_argument("'%s' is not a positive number", s.c_str());
  *out = x;
  return Status::ok();
}

}  // namespace

int plan_main(int argc, char** argv) {
  std::string model_path, ctk = "f16", ctv = "f16", vram = "0", ram, json_out;
  int64_t ctx = 4096, ubatch = 512, gpus = -1, depth = 0;
  double ram_bw = 0, vram_bw = 900, link_bw = 25;
  bool json = false;
  EngineFlags ef;  // the placement flags, with run's spellings
  ef.n_gpu_layers = -1;  // unless -ngl says otherwise: as many layers as fit
  ArgParser args("plan", "tandem plan -m MODEL [-c N] [-ctk T -ctv T] [--vram SIZE] [--gpus N] [--ram SIZE] [placement flags]",
                 "the placement of a model on a machine (this one, or one described by --ram/--vram),\n"
                 "the flags for it, and the decode speed it allows. Reads only the tensor table: a header-only\n"
                 "GGUF describing a model too big for this machine plans the same");
  args.string("-m,--model", "FILE", "the model (its first part if split); the data may be absent", &model_path);
  args.integer("-c,--ctx-size", "N", "context in tokens the KV cache holds (default 4096)", &ctx, 1, int64_t(1) << 24);
  args.string("-ctk,--cache-type-k", "TYPE", "KV cache type of K (default f16)", &ctk);
  args.string("-ctv,--cache-type-v", "TYPE", "KV cache type of V (default f16)", &ctv);
  args.integer("-ub,--ubatch-size", "N", "micro-batch whose activations each device keeps room for (default 512)",
               &ubatch, 1, 1 << 20);
  args.string("--vram", "SIZE", "memory of each GPU (e.g. 24G; default 0: no GPU)", &vram);
  args.integer("--gpus", "N", "number of such GPUs (default 1 when --vram is given)", &gpus, 0, 64);
  args.string("--ram", "SIZE", "RAM the model may use (default: what this machine has available)", &ram);
  args.custom("--ram-bw", "GB/s", "the CPU's memory read bandwidth (default: measured here, all threads)",
              [&](std::string_view v) { return parse_positive(v, &ram_bw); });
  args.custom("--vram-bw", "GB/s", "each GPU's memory bandwidth (default 900: a 24 GB RTX 3090/4090 class card)",
              [&](std::string_view v) { return parse_positive(v, &vram_bw); });
  args.custom("--link-bw", "GB/s", "host-GPU link bandwidth (default 25: PCIe 4.0 x16)",
              [&](std::string_view v) { return parse_positive(v, &link_bw); });
  args.integer("-d,--depth", "N", "tokens already in the context when decoding (default 0)", &depth, 0, int64_t(1) << 24);
  args.flag("--json", "print the plan and the prediction as JSON", &json);
  add_placement_flags(args, ef);
  if (auto code = parse_command_line(args, argc, argv)) return *code;
  if (model_path.empty()) return fail(invalid_argument("no model given (use -m FILE)"));
  const auto type_k = parse_weight_type(ctk), type_v = parse_weight_type(ctv);
  if (!type_k || !is_kv_cache_type(*type_k)) return fail(invalid_argument("-ctk %s: not a KV cache type", ctk.c_str()));
  if (!type_v || !is_kv_cache_type(*type_v)) return fail(invalid_argument("-ctv %s: not a KV cache type", ctv.c_str()));
  auto vram_bytes = parse_size(vram);
  if (!vram_bytes) return fail(Status(vram_bytes.error().code(), "--vram: " + vram_bytes.error().message()));
  if (gpus < 0) gpus = *vram_bytes > 0 ? 1 : 0;
  if (gpus > 0 && *vram_bytes == 0) return fail(invalid_argument("--gpus %lld: give their memory with --vram", (long long)gpus));
  uint64_t ram_bytes = available_memory().bytes;
  if (!ram.empty()) {
    auto r = parse_size(ram);
    if (!r || *r == 0) return fail(invalid_argument("--ram %s: not a size (e.g. 64G)", ram.c_str()));
    ram_bytes = *r;
  }

  model::ModelLoadOptions lo;
  lo.header_only = true;
  auto m = model::Model::open(model_path, lo);
  if (!m) return fail(m.error());
  const auto& hp = (*m)->hparams();
  std::vector<placement::DeviceInfo> devices = {{"CPU", ram_bytes}};
  for (int64_t g = 0; g < gpus; ++g) devices.push_back({"CUDA" + std::to_string(g), *vram_bytes});
  const std::vector<size_t> kv_per_cell = (*m)->kv_bytes_per_cell(*type_k, *type_v);
  std::vector<size_t> kv_bytes = kv_per_cell;
  for (size_t& b : kv_bytes) b *= size_t(ctx);
  placement::PlacementFlags pf = ef.placement;
  pf.n_gpu_layers = ef.n_gpu_layers;
  pf.reserve_bytes = activation_bytes(hp, ubatch);
  const auto tensors = (*m)->tensor_infos();
  auto plan = placement::make_plan(tensors, int(hp.n_layer), kv_bytes, devices, pf);
  if (!plan) return fail(plan.error());

  if (ram_bw <= 0) ram_bw = placement::measure_read_bandwidth() / 1e9;
  placement::Speeds speeds;
  speeds.bytes_per_s.push_back(ram_bw * 1e9);
  for (int64_t g = 0; g < gpus; ++g) speeds.bytes_per_s.push_back(vram_bw * 1e9);
  speeds.link_bytes_per_s = link_bw * 1e9;
  const placement::ModelShape shape{hp.n_embd, hp.n_vocab, hp.n_expert, hp.n_expert_used};
  const placement::Prediction p = placement::predict_decode(*plan, tensors, shape, kv_per_cell, depth, speeds);
  // The CPU holds its weights through the page cache: more than RAM streams them from disk every token.
  const bool ram_overflow = plan->weight_bytes[0] + plan->kv_bytes[0] > ram_bytes;
  const std::string flags = placement::equivalent_flags(*plan, pf);

  if (json) {
    nlohmann::json j;
    j["model"] = model_path;
    j["n_gpu_layers"] = plan->n_gpu_layers;
    j["flags"] = flags;
    for (size_t d = 0; d < plan->devices.size(); ++d)
      j["devices"].push_back({{"name", plan->devices[d].name}, {"free_bytes", plan->devices[d].free_bytes},
                              {"weight_bytes", plan->weight_bytes[d]}, {"kv_bytes", plan->kv_bytes[d]},
                              {"read_bytes_per_token", p.read_bytes[d]}, {"seconds_per_token", p.seconds[d]}});
    j["link_seconds_per_token"] = p.link_seconds;
    j["tg_tokens_per_s"] = p.tokens_per_s;
    j["bottleneck"] = p.bottleneck;
    j["fits_in_ram"] = !ram_overflow;
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("model:     %s (%s, %lld layers%s)\n", model_path.c_str(), hp.arch.c_str(), (long long)hp.n_layer,
              hp.n_expert ? format(", %lld experts, %lld used", (long long)hp.n_expert, (long long)hp.n_expert_used).c_str() : "");
  std::printf("machine:   RAM %s at %.0f GB/s%s\n", human_bytes(ram_bytes).c_str(), ram_bw,
              gpus ? format("; %lld GPU x %s at %.0f GB/s, link %.0f GB/s", (long long)gpus,
                            human_bytes(*vram_bytes).c_str(), vram_bw, link_bw).c_str() : "");
  std::printf("context:   %lld tokens, %s K / %s V\n\nplacement:\n%s\n", (long long)ctx, ctk.c_str(), ctv.c_str(),
              placement::format_plan(*plan, tensors).c_str());
  std::printf("flags:     tandem serve -m MODEL %s\n           llama-server -m MODEL %s\n\n", flags.c_str(), flags.c_str());
  std::printf("decode:    %.1f tokens/s predicted (bound by %s)\n", p.tokens_per_s, p.bottleneck.c_str());
  for (size_t d = 0; d < plan->devices.size(); ++d)
    std::printf("           %-7s reads %s per token: %.1f ms\n", plan->devices[d].name.c_str(),
                human_bytes(p.read_bytes[d]).c_str(), p.seconds[d] * 1e3);
  if (gpus) std::printf("           link    %.2f ms per token\n", p.link_seconds * 1e3);
  if (ram_overflow)
    std::printf("\nwarning: the CPU's share (%s of weights + %s of KV cache) exceeds the RAM (%s): the mapped weights "
                "are read from disk again every token, far below this prediction. A smaller quantization, a shorter "
                "-c, or more VRAM would fit.\n", human_bytes(plan->weight_bytes[0]).c_str(),
                human_bytes(plan->kv_bytes[0]).c_str(), human_bytes(ram_bytes).c_str());
  return 0;
}

}  // namespace tandem::cli
