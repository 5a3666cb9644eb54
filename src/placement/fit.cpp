// The --fit search: candidates that fit, ranked by predicted decode speed.
#include "placement/fit.h"

#include <algorithm>

namespace tandem::placement {

size_t default_fit_margin(size_t free_bytes) { return std::min<size_t>(size_t(1) << 30, free_bytes / 8); }

namespace {

struct Candidate {
  Plan plan;
  PlacementFlags flags;
  Prediction decode;
};

}  // namespace

Result<FitResult> fit(const FitRequest& r) {
  // The margin is for what --fit chooses; an -ngl the user gave is checked as a run without --fit checks it.
  std::vector<DeviceInfo> devices = r.devices;
  for (size_t d = 1; d < devices.size(); ++d) {
    const size_t margin = d - 1 < r.margin_bytes.size() ? r.margin_bytes[d - 1] : default_fit_margin(devices[d].free_bytes);
    devices[d].free_bytes -= std::min(margin, devices[d].free_bytes);
  }
  int64_t n_ctx = r.n_ctx;
  for (;;) {
    std::vector<size_t> kv = r.kv_bytes_per_cell;
    for (size_t& b : kv) b *= size_t(n_ctx);
    auto plan_with = [&](const PlacementFlags& f) {
      return make_plan(r.tensors, r.n_layer, kv, r.ngl_given ? r.devices : devices, f);
    };
    std::vector<Candidate> ok;
    auto consider = [&](const PlacementFlags& f, Result<Plan> p) {
      if (!p) return;
      Candidate c{*p, f, predict_decode(*p, r.tensors, r.shape, r.kv_bytes_per_cell, 0, r.speeds)};
      c.flags.n_gpu_layers = p->n_gpu_layers;
      ok.push_back(std::move(c));
    };
    // A: the user's flags, -ngl as given or as many layers as fit.
    PlacementFlags a = r.flags;
    if (!r.ngl_given) a.n_gpu_layers = -1;
    Result<Plan> first = plan_with(a);
    if (!first && r.ngl_given) return first.error();  // the user's plan itself does not fit
    consider(a, first);
    // B: every layer offloaded, the experts of the first N layers on the CPU, N as small as fits (llama.cpp's
    // advice for MoE models: attention and shared weights on the GPU beat whole layers there).
    if (!r.ngl_given && !r.experts_given && r.shape.n_expert > 0 && devices.size() > 1) {
      PlacementFlags b = r.flags;
      b.n_gpu_layers = -2;
      auto fits = [&](int64_t n) {
        b.n_cpu_moe = n;
        return plan_with(b).has_value();
      };
      if (fits(r.n_layer)) {
        int64_t lo = 0, hi = r.n_layer;  // fits(hi) holds; find the smallest
        while (lo < hi) {
          const int64_t mid = (lo + hi) / 2;
          if (fits(mid)) hi = mid;
          else lo = mid + 1;
        }
        b.n_cpu_moe = hi;
        consider(b, plan_with(b));
      } else {
        // C: where even the attention and shared weights of every layer do not fit, every routed expert on the
        // CPU and as many layers' other weights offloaded as fit (-ngl N --cpu-moe): more of a token's dense
        // bytes on the device than A's whole layers.
        PlacementFlags c = r.flags;
        c.n_gpu_layers = -1;
        c.cpu_moe = true;
        consider(c, plan_with(c));
      }
    }
    if (ok.empty()) return first.error();
    const auto best = std::max_element(ok.begin(), ok.end(), [](const Candidate& x, const Candidate& y) {
      return x.decode.tokens_per_s < y.decode.tokens_per_s;
    });
    // The CPU must hold its KV layers and a micro-batch's activations. Its weights are mapped: beyond the
    // RAM they are read from disk again every token, so the context also shortens to keep them in RAM,
    // where the weights alone leave room for some KV cache.
    const size_t cpu_kv = best->plan.kv_bytes[0];
    const size_t cpu_act = r.flags.reserve_bytes + (best->plan.output_device == 0 ? r.flags.output_reserve_bytes : 0);
    const size_t cpu_weights = r.weights_mapped ? best->plan.weight_bytes[0] : 0;  // --no-mmap: counted in `devices`
    const size_t ram = devices[0].free_bytes;
    const bool weights_spill = cpu_weights + cpu_kv + cpu_act > ram && cpu_weights + cpu_act < ram;
    if (cpu_kv + cpu_act > ram || weights_spill) {
      if (!r.ctx_given && n_ctx / 2 >= r.min_ctx) {
        n_ctx /= 2;
        continue;
      }
    }
    if (cpu_kv + cpu_act > ram) {
      return out_of_memory("a context of %lld tokens puts a KV cache of %s on the CPU (and %s of activations), which "
                           "has %s free; %s", (long long)n_ctx, size_text(cpu_kv).c_str(), size_text(cpu_act).c_str(),
                           size_text(devices[0].free_bytes).c_str(),
                           r.ctx_given ? "lower -c (or leave it out: --fit lowers it down to --fit-ctx)"
                                       : format("--fit-ctx %lld is the least --fit may go to", (long long)r.min_ctx).c_str());
    }
    FitResult out{best->plan, best->flags, n_ctx, best->decode, 0, ""};
    // Mapped weights past the RAM are read from disk again as tokens need them (tandem plan's mmap alternative).
    out.disk_share = mmap_miss_share(cpu_weights, double(ram) - double(cpu_kv + cpu_act));
    if (out.disk_share > 0) out.decode.tokens_per_s = tokens_per_s_from_disk(best->decode, out.disk_share, r.disk_bytes_per_s);
    out.summary = format("%s -c %lld: %.2f tokens/s predicted (best of %zu placement%s that fit)",
                         equivalent_flags(out.plan, out.flags).c_str(), (long long)n_ctx, out.decode.tokens_per_s,
                         ok.size(), ok.size() > 1 ? "s" : "");
    if (out.disk_share > 0)
      out.summary += format("; the CPU's %s of weights exceed its %s of free RAM: %.0f%% of them are read from disk "
                            "as tokens need them (mmap), at %.1f GB/s (tandem plan -m MODEL gives the alternatives)",
                            size_text(cpu_weights).c_str(), size_text(ram).c_str(), out.disk_share * 100,
                            r.disk_bytes_per_s / 1e9);
    return out;
  }
}

}  // namespace tandem::placement
