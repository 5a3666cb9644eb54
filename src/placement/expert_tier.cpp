// Sizing the expert cache from what RAM has left, and the speed the tier allows.
#include "placement/expert_tier.h"

#include <algorithm>
#include <cmath>

namespace tandem::placement {
namespace {

// size_text, with KiB below a MiB: a small model's expert is a few KiB.
std::string bytes_text(uint64_t bytes) {
  return bytes < (uint64_t(1) << 20) ? format("%.1f KiB", double(bytes) / 1024) : size_text(bytes);
}

}  // namespace

uint64_t expert_tier_margin(uint64_t ram_bytes) { return std::min<uint64_t>(uint64_t(1) << 30, ram_bytes / 8); }

uint64_t min_expert_cache_bytes(const RamNeeds& n) {
  return uint64_t(std::max<int64_t>(n.n_expert_used, 1)) * n.slot_bytes;
}

Result<ExpertTier> size_expert_tier(const ExpertCacheSetting& setting, const RamNeeds& n) {
  using Mode = ExpertCacheSetting::Mode;
  ExpertTier t;
  t.margin_bytes = expert_tier_margin(n.ram_bytes);
  if (setting.mode == Mode::Off) return t;
  if (setting.mode == Mode::Size) {
    t.on = true;
    t.cache_bytes = setting.bytes;
    t.reason = "--expert-cache " + bytes_text(setting.bytes);
    return t;
  }
  const uint64_t others = n.resident_bytes + n.kv_bytes + n.compute_bytes + t.margin_bytes;
  const uint64_t room = n.ram_bytes > others ? n.ram_bytes - others : 0;
  const std::string needs = format("%s of other weights, %s of KV cache, %s of compute buffers and a %s margin",
                                   bytes_text(n.resident_bytes).c_str(), bytes_text(n.kv_bytes).c_str(),
                                   bytes_text(n.compute_bytes).c_str(), bytes_text(t.margin_bytes).c_str());
  if (setting.mode == Mode::Default && others + n.expert_bytes <= n.ram_bytes) return t;  // fits: mapped as before
  const uint64_t least = min_expert_cache_bytes(n);
  if (room < least) {
    const std::string numbers =
        format("RAM has %s left for it (%s available, less %s); the least is one layer's %lld experts, %s (%lld x "
               "%s)", bytes_text(room).c_str(), bytes_text(n.ram_bytes).c_str(), needs.c_str(),
               (long long)std::max<int64_t>(n.n_expert_used, 1), bytes_text(least).c_str(),
               (long long)std::max<int64_t>(n.n_expert_used, 1), bytes_text(n.slot_bytes).c_str());
    if (setting.mode == Mode::Auto) return out_of_memory("--expert-cache auto: %s", numbers.c_str());
    t.warning = format("the model (%s of routed experts and the rest) does not fit the RAM, and the expert tier "
                       "cannot help: %s. Mapping the file instead: pages are read from disk again as they are evicted",
                       bytes_text(n.expert_bytes).c_str(), numbers.c_str());
    return t;
  }
  t.on = true;
  // More than every expert's slot holds nothing more.
  t.cache_bytes = std::min(room, uint64_t(std::max<int64_t>(n.n_experts_total, 1)) * n.slot_bytes);
  const char* who = setting.mode == Mode::Auto ? "--expert-cache auto" : "automatic";
  t.reason = others + n.expert_bytes <= n.ram_bytes
                 ? format("%s: RAM (%s) holds every expert beside %s", who, bytes_text(n.ram_bytes).c_str(),
                          needs.c_str())
                 : format("%s: the %s of routed experts do not fit beside %s in %s; the cache takes what is left", who,
                          bytes_text(n.expert_bytes).c_str(), needs.c_str(), bytes_text(n.ram_bytes).c_str());
  return t;
}

ExpertTierPrediction predict_expert_tier(const RamNeeds& n, uint64_t cache_bytes, uint64_t routed_bytes_per_token,
                                         const Prediction& decode, const Prediction& prefill, int64_t n_prompt,
                                         int64_t n_ubatch, double disk_bytes_per_s) {
  ExpertTierPrediction p;
  p.n_slots = n.slot_bytes ? int64_t(std::min<uint64_t>(cache_bytes / n.slot_bytes, uint64_t(n.n_experts_total))) : 0;
  p.hit_rate = n.n_experts_total ? double(p.n_slots) / double(n.n_experts_total) : 1;
  const double miss = 1 - p.hit_rate;
  p.disk_bytes_per_token = uint64_t(double(routed_bytes_per_token) * miss);
  p.tg_tokens_per_s = 1 / (1 / decode.tokens_per_s + double(p.disk_bytes_per_token) / disk_bytes_per_s);
  // A micro-batch of hundreds of tokens routes to nearly every expert: it reads the missed share of all.
  const double n_ub = std::ceil(double(n_prompt) / double(std::max<int64_t>(n_ubatch, 1)));
  p.pp_tokens_per_s = double(n_prompt) / (double(n_prompt) / prefill.tokens_per_s +
                                          n_ub * double(n.expert_bytes) * miss / disk_bytes_per_s);
  return p;
}

}  // namespace tandem::placement
