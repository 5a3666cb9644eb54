#include "placement/plan.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <regex>
#include <tuple>

namespace tandem::placement {
namespace {

// llama.cpp's patterns for --cpu-moe / --n-cpu-moe (common/common.h LLM_FFN_EXPS_REGEX).
constexpr const char* kExpertsRegex = "\\.ffn_(up|down|gate|gate_up)_(ch|)exps";

struct Override {
  std::string flag;  // as the user gave it, for messages
  std::string pattern;
  std::regex re;
  int device = 0;
  bool must_match = true;
  int below_layer = -1;  // >= 0: only tensors of layers below it (--n-cpu-moe N: one rule, not N regexes)
  bool hit = false;  // its pattern matched some tensor
  bool won = false;  // and it was the first to match one
};

std::string upper(std::string s) {
  for (char& c : s) c = char(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string device_names(const std::vector<DeviceInfo>& devices) {
  std::string s;
  for (const auto& d : devices) s += (s.empty() ? "" : ", ") + d.name;
  return s;
}

int find_device(const std::vector<DeviceInfo>& devices, const std::string& name) {
  for (size_t i = 0; i < devices.size(); ++i)
    if (upper(devices[i].name) == upper(name)) return int(i);
  return -1;
}

Result<std::vector<Override>> parse_overrides(const PlacementFlags& flags, const std::vector<DeviceInfo>& devices,
                                              int n_layer) {
  std::vector<Override> out;
  auto add = [&](const std::string& flag, const std::string& pattern, int device, bool must_match,
                 int below_layer = -1) -> Status {
    Override o;
    o.below_layer = below_layer;
    o.flag = flag;
    o.pattern = pattern;
    o.device = device;
    o.must_match = must_match;
    try {
      o.re = std::regex(pattern);
    } catch (const std::regex_error& e) {
      return invalid_argument("%s: '%s' is not a valid regular expression (%s)", flag.c_str(), pattern.c_str(), e.what());
    }
    out.push_back(std::move(o));
    return Status::ok();
  };
  for (const std::string& value : flags.overrides) {
    size_t start = 0;
    while (start <= value.size()) {
      const size_t comma = value.find(',', start);
      const std::string item = value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      start = comma == std::string::npos ? value.size() + 1 : comma + 1;
      const size_t eq = item.rfind('=');
      if (eq == std::string::npos || eq == 0)
        return invalid_argument("-ot '%s': expected REGEX=DEVICE (e.g. exps=CPU)%s", value.c_str(),
                                item.empty() ? "; a rule is empty (a stray comma?)" : "");
      const std::string dev = item.substr(eq + 1);
      const int d = find_device(devices, dev);
      if (d < 0)
        return invalid_argument("-ot %s: no device '%s' (devices%s: %s)", item.c_str(), dev.c_str(),
                                flags.devices.empty() ? "" : " selected by -dev", device_names(devices).c_str());
      TANDEM_TRY(add("-ot " + item, item.substr(0, eq), d, true));
    }
  }
  if (flags.n_cpu_moe < 0) return invalid_argument("--n-cpu-moe %lld: must be 0 or more", (long long)flags.n_cpu_moe);
  if (flags.cpu_moe) TANDEM_TRY(add("--cpu-moe", kExpertsRegex, 0, true));
  // llama.cpp adds blk.<il>.<experts> for il < N; silent on dense models.
  if (flags.n_cpu_moe > 0)
    TANDEM_TRY(add("--n-cpu-moe", kExpertsRegex, 0, false, int(std::min<int64_t>(flags.n_cpu_moe, n_layer))));
  return out;
}

// Cumulative split points of the offloaded layers over the offload devices, as llama.cpp's.
Result<std::vector<float>> split_points(const PlacementFlags& flags, const std::vector<DeviceInfo>& devices) {
  const size_t n = devices.size() - 1;
  std::vector<float> s(n, 0.0f);
  if (flags.split_mode == SplitMode::None) {
    if (flags.main_gpu < 0 || size_t(flags.main_gpu) >= n)
      return invalid_argument("-mg %d: the offload devices are numbered 0 to %zu", flags.main_gpu, n - 1);
    s[size_t(flags.main_gpu)] = 1;
  } else if (flags.tensor_split.size() > n) {
    return invalid_argument("-ts: %zu values for %zu offload devices (%s)", flags.tensor_split.size(), n,
                            device_names(devices).c_str());
  } else if (std::all_of(flags.tensor_split.begin(), flags.tensor_split.end(), [](float x) { return x == 0; })) {
    for (size_t i = 0; i < n; ++i) s[i] = float(devices[i + 1].free_bytes);  // by free memory
  } else {
    for (float x : flags.tensor_split)
      if (x < 0) return invalid_argument("-ts: shares must not be negative");
    std::copy(flags.tensor_split.begin(), flags.tensor_split.end(), s.begin());
  }
  float sum = 0;
  for (float& x : s) x = sum += x;
  for (float& x : s) x = sum > 0 ? x / sum : 1.0f;
  return s;
}

// Everything but the overflow check, for a resolved n_gpu_layers.
Plan assign(const std::vector<TensorInfo>& tensors, int n_layer, const std::vector<size_t>& kv_bytes_per_layer,
            const std::vector<DeviceInfo>& devices, const PlacementFlags& flags, const std::vector<float>& splits,
            std::vector<Override>& overrides, int64_t ngl) {
  Plan p;
  p.devices = devices;
  p.n_gpu_layers = ngl;
  const int n_offload = int(devices.size()) - 1;
  const int64_t i_gpu_start = std::max<int64_t>(n_layer + 1 - ngl, 0);
  const int64_t act = n_offload == 0 ? 0 : std::min<int64_t>(ngl, n_layer + 1);
  auto layer_dev = [&](int64_t il) {
    if (il < i_gpu_start || il - i_gpu_start >= act) return 0;
    const float f = float(il - i_gpu_start) / float(act);
    const int g = int(std::upper_bound(splits.begin(), splits.end(), f) - splits.begin());
    return 1 + std::min(g, n_offload - 1);
  };
  for (int il = 0; il < n_layer; ++il) p.layer_device.push_back(layer_dev(il));
  p.output_device = layer_dev(n_layer);
  p.weight_bytes.assign(devices.size(), 0);
  p.kv_bytes.assign(devices.size(), 0);
  for (const TensorInfo& t : tensors) {
    int d = t.layer < 0 ? 0 : t.layer >= n_layer ? p.output_device : p.layer_device[size_t(t.layer)];
    bool placed = false;
    for (Override& o : overrides) {
      if (o.below_layer >= 0 && !(t.layer >= 0 && t.layer < o.below_layer)) continue;
      if (!std::regex_search(t.name, o.re)) continue;
      o.hit = true;
      if (placed) continue;
      o.won = placed = true;
      d = o.device;
    }
    p.tensor_device.push_back(d);
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = tensors[i];
    const int d = p.tensor_device[i];
    bool shared = false;
    if (!t.alias_of.empty())
      for (size_t j = 0; j < tensors.size(); ++j)
        if (tensors[j].name == t.alias_of) shared = p.tensor_device[j] == d;
    if (!shared) p.weight_bytes[size_t(d)] += t.bytes;
  }
  for (int il = 0; il < n_layer; ++il) {
    p.kv_device.push_back(flags.no_kv_offload ? 0 : p.layer_device[size_t(il)]);
    p.kv_bytes[size_t(p.kv_device.back())] += kv_bytes_per_layer[size_t(il)];
  }
  return p;
}

// What the plan asks of device d: its weights and KV cache, and room for activations where it holds
// anything (and for the logits on the output layer's device).
size_t reserve_of(const Plan& p, size_t d, const PlacementFlags& f) {
  const bool used = p.weight_bytes[d] + p.kv_bytes[d] > 0;
  return (used ? f.reserve_bytes : 0) + (int(d) == p.output_device ? f.output_reserve_bytes : 0);
}

// The first offload device the plan overflows, or -1.
int overflowing(const Plan& p, const PlacementFlags& f) {
  for (size_t d = 1; d < p.devices.size(); ++d)
    if (p.weight_bytes[d] + p.kv_bytes[d] + reserve_of(p, d, f) > p.devices[d].free_bytes) return int(d);
  return -1;
}

}  // namespace

Result<Plan> make_plan(const std::vector<TensorInfo>& tensors, int n_layer, const std::vector<size_t>& kv_bytes_per_layer,
                       const std::vector<DeviceInfo>& all_devices, const PlacementFlags& flags) {
  if (all_devices.empty() || upper(all_devices[0].name) != "CPU") return invalid_argument("placement: devices[0] must be the CPU");
  if (int(kv_bytes_per_layer.size()) != n_layer) return invalid_argument("placement: KV sizes for %zu of %d layers", kv_bytes_per_layer.size(), n_layer);
  // -dev: the offload devices to use.
  std::vector<DeviceInfo> devices = {all_devices[0]};
  std::vector<int> ids = {0};
  if (flags.devices.empty()) {
    devices = all_devices;
    for (size_t i = 1; i < all_devices.size(); ++i) ids.push_back(int(i));
  } else if (!(flags.devices.size() == 1 && flags.devices[0] == "none")) {
    for (const std::string& name : flags.devices) {
      const int d = find_device(all_devices, name);
      if (d == 0) return invalid_argument("-dev %s: the CPU always takes part; -dev names offload devices", name.c_str());
      if (d < 0)
        return invalid_argument("-dev %s: no offload device of that name (devices: %s)", name.c_str(),
                                device_names(all_devices).c_str());
      if (std::find(ids.begin(), ids.end(), d) != ids.end())
        return invalid_argument("-dev: %s is named twice", name.c_str());
      devices.push_back(all_devices[size_t(d)]);
      ids.push_back(d);
    }
  }
  if (flags.split_mode == SplitMode::Row) return unsupported("-sm row: not supported; use -sm layer (the default)");
  if (flags.n_gpu_layers < -2) return invalid_argument("-ngl %lld: use a count, auto (-1) or all (-2)", (long long)flags.n_gpu_layers);
  std::vector<float> splits;
  if (devices.size() > 1) {
    TANDEM_ASSIGN(splits, split_points(flags, devices));
  }
  TANDEM_ASSIGN(std::vector<Override> overrides, parse_overrides(flags, devices, n_layer));

  const int64_t max_ngl = n_layer + 1;
  auto plan_for = [&](int64_t ngl) {
    for (Override& o : overrides) o.hit = o.won = false;
    Plan p = assign(tensors, n_layer, kv_bytes_per_layer, devices, flags, splits, overrides, ngl);
    p.device_ids = ids;
    return p;
  };
  int64_t ngl = flags.n_gpu_layers == -2 ? max_ngl : std::min(flags.n_gpu_layers, max_ngl);
  if (devices.size() == 1) {
    ngl = 0;  // nothing to offload to
  } else if (flags.n_gpu_layers == -1) {  // auto: the most layers that fit
    ngl = max_ngl;
    while (ngl > 0 && overflowing(plan_for(ngl), flags) >= 0) --ngl;
  }
  Plan p = plan_for(ngl);

  for (const Override& o : overrides) {
    if (!o.must_match || o.won) continue;
    if (o.flag == "--cpu-moe") return invalid_argument("--cpu-moe: this model has no expert tensors");
    if (!o.hit) return invalid_argument("%s: the pattern '%s' matches no tensor of this model", o.flag.c_str(), o.pattern.c_str());
    return invalid_argument("%s: every tensor '%s' matches is taken by an earlier rule (the first match wins)",
                            o.flag.c_str(), o.pattern.c_str());
  }
  const int d = overflowing(p, flags);
  if (d >= 0) {
    int64_t fits = ngl;
    while (fits > 0 && overflowing(plan_for(fits), flags) >= 0) --fits;
    const bool none_fit = overflowing(plan_for(0), flags) >= 0;
    const size_t w = p.weight_bytes[size_t(d)], kv = p.kv_bytes[size_t(d)], r = reserve_of(p, size_t(d), flags);
    // As given (99, all), and the layers that is when it was more than the model has.
    const std::string given = flags.n_gpu_layers == -2 ? format("all (%lld layers)", (long long)ngl)
                              : flags.n_gpu_layers > ngl ? format("%lld (%lld layers)", (long long)flags.n_gpu_layers, (long long)ngl)
                                                         : format("%lld", (long long)ngl);
    return out_of_memory("-ngl %s: %s needs %s (weights %s + KV cache %s + activations %s) but has %s; %s",
                         given.c_str(), p.devices[size_t(d)].name.c_str(), size_text(w + kv + r).c_str(),
                         size_text(w).c_str(), size_text(kv).c_str(), size_text(r).c_str(),
                         size_text(p.devices[size_t(d)].free_bytes).c_str(),
                         none_fit ? "what -ot sends there does not fit even with -ngl 0"
                                  : format("-ngl %lld fits (or move tensors off it with -ot / --n-cpu-moe, or lower -c)",
                                           (long long)fits).c_str());
  }
  return p;
}

int64_t TensorInfo::n_params() const {
  int64_t n = shape.empty() ? 0 : 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string size_text(uint64_t bytes) {
  const double mib = double(bytes) / 1048576.0;
  return mib < 1024 ? format("%.1f MiB", mib) : format("%.2f GiB", mib / 1024);
}

namespace {

const char* group_of(const std::string& name) {
  if (name.rfind("token_embd", 0) == 0) return "token embeddings";
  if (name.rfind("output", 0) == 0) return "output";
  if (name.find("_exps") != std::string::npos) return "routed experts";
  if (name.find("_shexp") != std::string::npos) return "shared experts";
  if (name.find("ffn_gate_inp") != std::string::npos || name.find("exp_probs_b") != std::string::npos) return "router";
  if (name.find("norm") != std::string::npos) return "norms";
  if (name.find(".attn_") != std::string::npos) return "attention";
  if (name.find(".ffn_") != std::string::npos) return "dense FFN";
  return "other";
}

std::string layers_text(int lo, int hi, int n_layer) {
  if (lo < 0) return "input";
  if (lo >= n_layer) return "output";
  return lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi);
}

}  // namespace

std::string format_plan(const Plan& p, const std::vector<TensorInfo>& tensors) {
  const int n_layer = int(p.layer_device.size());
  struct Row {
    int lo = 1 << 30, hi = -2;
    size_t bytes = 0;
    int n = 0;
  };
  // (device, group) -> layer range and bytes; ordered by device, then first layer.
  std::map<std::pair<int, std::string>, Row> rows;
  for (size_t i = 0; i < tensors.size(); ++i) {
    Row& r = rows[{p.tensor_device[i], group_of(tensors[i].name)}];
    r.lo = std::min(r.lo, tensors[i].layer);
    r.hi = std::max(r.hi, tensors[i].layer);
    r.bytes += tensors[i].bytes;
    ++r.n;
  }
  std::vector<std::tuple<int, int, std::string, Row>> sorted;
  for (const auto& [key, r] : rows) sorted.emplace_back(key.first, r.lo, key.second, r);
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    return std::tie(std::get<0>(a), std::get<1>(a), std::get<2>(a)) < std::tie(std::get<0>(b), std::get<1>(b), std::get<2>(b));
  });
  std::string out = format("  %-18s %-9s %-7s %8s %10s\n", "tensors", "layers", "device", "count", "MiB");
  for (const auto& [dev, lo, group, r] : sorted)
    out += format("  %-18s %-9s %-7s %8d %10.1f\n", group.c_str(), layers_text(r.lo, r.hi, n_layer).c_str(),
                  p.devices[size_t(dev)].name.c_str(), r.n, double(r.bytes) / 1048576.0);
  for (size_t d = 0; d < p.devices.size(); ++d) {
    int lo = -1, hi = -1;
    for (int il = 0; il < n_layer; ++il)
      if (p.kv_device[size_t(il)] == int(d)) {
        if (lo < 0) lo = il;
        hi = il;
      }
    if (lo >= 0)
      out += format("  %-18s %-9s %-7s %8s %10.1f\n", "KV cache", layers_text(lo, hi, n_layer).c_str(),
                    p.devices[d].name.c_str(), "", double(p.kv_bytes[d]) / 1048576.0);
  }
  out += format("  -ngl %lld of %d layers (output included) offloaded\n", (long long)p.n_gpu_layers, n_layer + 1);
  for (size_t d = 0; d < p.devices.size(); ++d) {
    const size_t used = p.weight_bytes[d] + p.kv_bytes[d];
    out += format("  %-7s weights %s + KV cache %s = %s", p.devices[d].name.c_str(), size_text(p.weight_bytes[d]).c_str(),
                  size_text(p.kv_bytes[d]).c_str(), size_text(used).c_str());
    if (p.devices[d].free_bytes)
      out += format(" of %s free (%s left)", size_text(p.devices[d].free_bytes).c_str(),
                    size_text(used > p.devices[d].free_bytes ? 0 : p.devices[d].free_bytes - used).c_str());
    out += "\n";
  }
  return out;
}

}  // namespace tandem::placement
