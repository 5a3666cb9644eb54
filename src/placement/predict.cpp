#include "placement/predict.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>

#include "core/status.h"

namespace tandem::placement {

Prediction predict_decode(const Plan& plan, const std::vector<TensorInfo>& tensors, const ModelShape& shape,
                          const std::vector<size_t>& kv_per_token, int64_t depth, const Speeds& s) {
  const size_t n_dev = plan.devices.size();
  Prediction p;
  p.read_bytes.assign(n_dev, 0);
  p.seconds.assign(n_dev, 0);
  const int n_layer = int(plan.layer_device.size());
  // The device each layer's attention and FFN run on (their first matrix's home), for the crossings.
  std::vector<int> attn_dev(size_t(n_layer), -1), ffn_dev(size_t(n_layer), -1);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = tensors[i];
    const int d = plan.tensor_device[i];
    uint64_t bytes = t.bytes;
    if (t.name.rfind("token_embd", 0) == 0 && shape.n_vocab > 0) bytes /= uint64_t(shape.n_vocab);  // one row
    else if (t.name.find("_exps") != std::string::npos && shape.n_expert > 0)
      bytes = bytes * uint64_t(shape.n_expert_used) / uint64_t(shape.n_expert);
    p.read_bytes[size_t(d)] += bytes;
    if (t.layer < 0 || t.layer >= n_layer) continue;
    const bool attn = t.name.find(".attn_") != std::string::npos && t.name.find("norm") == std::string::npos;
    const bool ffn = t.name.find(".ffn_") != std::string::npos && t.name.find("norm") == std::string::npos &&
                     t.name.find("_shexp") == std::string::npos && t.name.find("gate_inp") == std::string::npos;
    if (attn && attn_dev[size_t(t.layer)] < 0) attn_dev[size_t(t.layer)] = d;
    if (ffn && (ffn_dev[size_t(t.layer)] < 0 || t.name.find("_exps") != std::string::npos)) ffn_dev[size_t(t.layer)] = d;
  }
  for (int il = 0; il < n_layer; ++il)
    p.read_bytes[size_t(plan.kv_device[size_t(il)])] += kv_per_token[size_t(il)] * uint64_t(depth);
  for (size_t d = 0; d < n_dev; ++d) p.seconds[d] = double(p.read_bytes[d]) / s.bytes_per_s[d];

  // The hidden state crosses wherever consecutive blocks sit on different devices; the logits come
  // back from the output layer's device.
  int crossings = 0, at = 0;
  for (int il = 0; il < n_layer; ++il)
    for (int d : {attn_dev[size_t(il)], ffn_dev[size_t(il)]})
      if (d >= 0 && d != at) {
        ++crossings;
        at = d;
      }
  if (plan.output_device != at) ++crossings;
  p.link_seconds = crossings * (s.link_latency_s + double(shape.n_embd) * 4 / s.link_bytes_per_s);
  if (plan.output_device != 0) p.link_seconds += s.link_latency_s + double(shape.n_vocab) * 4 / s.link_bytes_per_s;

  double total = p.link_seconds, worst = p.link_seconds;
  p.bottleneck = "the host link";
  for (size_t d = 0; d < n_dev; ++d) {
    total += p.seconds[d];
    if (p.seconds[d] > worst) {
      worst = p.seconds[d];
      p.bottleneck = plan.devices[d].name + "'s memory bandwidth";
    }
  }
  p.tokens_per_s = total > 0 ? 1 / total : 0;
  return p;
}

std::string equivalent_flags(const Plan& plan, const PlacementFlags& flags) {
  std::string out = "-ngl " + std::to_string(plan.n_gpu_layers);
  for (const std::string& o : flags.overrides) out += " -ot '" + o + "'";
  if (flags.cpu_moe) out += " --cpu-moe";
  if (flags.n_cpu_moe) out += " --n-cpu-moe " + std::to_string(flags.n_cpu_moe);
  if (!flags.tensor_split.empty()) {
    out += " -ts ";
    for (size_t i = 0; i < flags.tensor_split.size(); ++i) out += (i ? "," : "") + format("%g", flags.tensor_split[i]);
  }
  if (flags.no_kv_offload) out += " -nkvo";
  return out;
}

double measure_read_bandwidth() {
  const int n_threads = std::max(1u, std::thread::hardware_concurrency());
  const size_t per_thread = size_t(64) << 20;  // 64 MiB each: far past any last-level cache share
  std::unique_ptr<uint64_t[]> buf(new uint64_t[per_thread / 8 * size_t(n_threads)]);
  std::atomic<uint64_t> sink{0};
  auto pass = [&] {
    std::vector<std::thread> threads;
    for (int t = 0; t < n_threads; ++t)
      threads.emplace_back([&, t] {
        const uint64_t* p = buf.get() + per_thread / 8 * size_t(t);
        uint64_t acc[8] = {};
        for (size_t i = 0; i < per_thread / 8; i += 8)
          for (int j = 0; j < 8; ++j) acc[j] += p[i + size_t(j)];
        sink += acc[0] ^ acc[1] ^ acc[2] ^ acc[3] ^ acc[4] ^ acc[5] ^ acc[6] ^ acc[7];
      });
    for (auto& th : threads) th.join();
  };
  std::memset(buf.get(), 1, per_thread * size_t(n_threads));  // commit the pages first
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    pass();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, double(per_thread) * n_threads / s);
  }
  return best;
}

}  // namespace tandem::placement
