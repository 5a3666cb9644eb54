// The decode and prefill predictions (predict.h states the model; docs/plan.md its derivation and sources).
#include "placement/predict.h"

#include <algorithm>
#include <cmath>

#include "core/status.h"

namespace tandem::placement {

namespace {

bool is_experts(const std::string& name) { return name.find("_exps") != std::string::npos; }
bool is_token_embd(const TensorInfo& t) { return t.name.rfind("token_embd", 0) == 0 && t.alias_of.empty(); }
bool is_output(const TensorInfo& t) { return t.name.rfind("output.", 0) == 0 && t.shape.size() >= 2; }

// Crossings of the hidden state per pass: wherever consecutive blocks (a layer's attention, its FFN)
// sit on different devices, and to the output layer's device.
int count_crossings(const Plan& plan, const std::vector<TensorInfo>& tensors) {
  const int n_layer = int(plan.layer_device.size());
  // The device each layer's attention and FFN run on (their first matrix's home; the experts' for a MoE FFN).
  std::vector<int> attn_dev(size_t(n_layer), -1), ffn_dev(size_t(n_layer), -1);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = tensors[i];
    const int d = plan.tensor_device[i];
    if (t.layer < 0 || t.layer >= n_layer) continue;
    const bool attn = t.name.find(".attn_") != std::string::npos && t.name.find("norm") == std::string::npos;
    const bool ffn = t.name.find(".ffn_") != std::string::npos && t.name.find("norm") == std::string::npos &&
                     t.name.find("_shexp") == std::string::npos && t.name.find("gate_inp") == std::string::npos;
    if (attn && attn_dev[size_t(t.layer)] < 0) attn_dev[size_t(t.layer)] = d;
    if (ffn && (ffn_dev[size_t(t.layer)] < 0 || is_experts(t.name))) ffn_dev[size_t(t.layer)] = d;
  }
  int crossings = 0, at = 0;
  for (int il = 0; il < n_layer; ++il)
    for (int d : {attn_dev[size_t(il)], ffn_dev[size_t(il)]})
      if (d >= 0 && d != at) {
        ++crossings;
        at = d;
      }
  if (plan.output_device != at) ++crossings;
  return crossings;
}

// The host round trips of a forward pass's MoE layers, in seconds, for u tokens: where a layer's router
// (ffn_gate_inp) is on an offload device its logits come to the host (forward.cpp moe_ffn routes there),
// and where its experts are, the chosen ids and weights go back, each a transfer of its own.
double moe_transfer_seconds(const Plan& plan, const std::vector<TensorInfo>& tensors, const ModelShape& shape,
                            int64_t u, const Speeds& s) {
  if (shape.n_expert == 0) return 0;
  auto transfer = [&](double bytes) { return s.link_latency_s + bytes / s.link_bytes_per_s; };
  const double logits = double(shape.n_expert * u) * 4, picks = double(shape.n_expert_used * u) * 4;
  double total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = tensors[i];
    if (t.layer < 0 || plan.tensor_device[i] == 0) continue;
    if (t.name.find("ffn_gate_inp") != std::string::npos && t.name.find("_shexp") == std::string::npos)
      total += transfer(logits);
    if (t.name.find("ffn_down_exps") != std::string::npos) total += 2 * transfer(picks);
  }
  return total;
}

// A layer's ops besides its matmuls and attention: one per norm it has (its 1-D *norm* tensors) and
// five more (the FFN's activation, RoPE of Q and of K, the KV store, the residual adds), each a call
// of the thread pool; and the values a token puts through them (each norm and the other four ops over
// n_embd values; the activation over the FFN's width, ffn_up's rows, n_used experts' for a MoE layer).
struct LayerOps {
  double n_calls = 0;
  double values_per_token = 0;  // all but the activation's
  double ffn_values_per_token = 0;

  // A micro-batch of u tokens through them at ds's elementwise rates (0 without them).
  double seconds(const DeviceSpeed& ds, const ModelShape& shape, int64_t u) const {
    if (ds.elementwise_per_s <= 0) return 0;
    const double act_rate = shape.ffn_gelu && ds.gelu_per_s > 0 ? ds.gelu_per_s : ds.elementwise_per_s;
    return double(u) * (values_per_token / ds.elementwise_per_s + ffn_values_per_token / act_rate);
  }
};

LayerOps layer_ops(const std::vector<TensorInfo>& tensors, int il, const ModelShape& shape) {
  int n_norms = 0;
  double ffn_width = 0;
  for (const TensorInfo& t : tensors) {
    if (t.layer != il) continue;
    if (t.shape.size() == 1 && t.name.find("norm") != std::string::npos) ++n_norms;
    const bool fused = t.name.find("ffn_gate_up") != std::string::npos;  // gate and up rows in one matrix
    if ((t.name.find("ffn_up") == std::string::npos && !fused) || t.shape.size() < 2) continue;
    const bool experts = is_experts(t.name) && t.shape.size() == 3 && shape.n_expert > 0;
    const double rows = double(t.shape[t.shape.size() - 2]) / (fused ? 2 : 1);
    ffn_width += experts ? rows * double(shape.n_expert_used) : rows;
  }
  return {double(n_norms + 5), double(n_norms + 4) * double(shape.n_embd), ffn_width};
}

// Speeds are given per device of make_plan's input; -dev may have left some out of the plan.
const DeviceSpeed& speed_of(const Plan& plan, const Speeds& s, size_t d) {
  return s.devices[plan.device_ids.empty() ? d : size_t(plan.device_ids[d])];
}

std::string largest(const std::map<std::string, double>& m) {
  std::string best;
  double most = -1;
  for (const auto& [k, v] : m)
    if (v > most) most = v, best = k;
  return best;
}

// Fills seconds, bound and bottleneck from the per-device times and the link's.
void finish(const Plan& plan, Prediction& p, int64_t n_tokens) {
  double total = p.link_seconds, worst = p.link_seconds;
  p.bottleneck = "the host link";
  for (size_t d = 0; d < p.seconds.size(); ++d) {
    total += p.seconds[d];
    if (p.seconds[d] > worst) {
      worst = p.seconds[d];
      p.bottleneck = plan.devices[d].name + "'s " + p.bound[d];
    }
  }
  p.tokens_per_s = total > 0 ? double(n_tokens) / total : 0;
}

}  // namespace

std::optional<KernelRate> DeviceSpeed::kernel(WeightType t, int64_t row_length) const {
  const auto it = kernels.find(t);
  if (it == kernels.end() || it->second.empty()) return std::nullopt;
  const std::vector<KernelRate>& k = it->second;
  if (row_length <= k.front().row_length) return k.front();
  for (size_t i = 1; i < k.size(); ++i)
    if (row_length <= k[i].row_length) {
      const double f = std::log(double(row_length) / double(k[i - 1].row_length)) /
                       std::log(double(k[i].row_length) / double(k[i - 1].row_length));
      auto mix = [f](double a, double b) { return a + (b - a) * f; };
      return KernelRate{row_length, mix(k[i - 1].decode_bytes_per_s, k[i].decode_bytes_per_s),
                        mix(k[i - 1].decode_call_s, k[i].decode_call_s),
                        mix(k[i - 1].prefill_flops_per_s, k[i].prefill_flops_per_s),
                        mix(k[i - 1].prefill_few_flops_per_s, k[i].prefill_few_flops_per_s),
                        mix(k[i - 1].expert_few_flops_per_s, k[i].expert_few_flops_per_s),
                        mix(k[i - 1].expert_flops_per_s, k[i].expert_flops_per_s)};
    }
  return k.back();
}

AttentionRate DeviceSpeed::attention_at(int64_t head_dim_k) const {
  if (attention.empty()) return {head_dim_k, 0, 0};
  if (head_dim_k <= attention.front().head_dim_k) return attention.front();
  for (size_t i = 1; i < attention.size(); ++i)
    if (head_dim_k <= attention[i].head_dim_k) {
      const AttentionRate &a = attention[i - 1], &b = attention[i];
      const double f = std::log(double(head_dim_k) / double(a.head_dim_k)) / std::log(double(b.head_dim_k) / double(a.head_dim_k));
      return {head_dim_k, a.call_s + (b.call_s - a.call_s) * f, a.flops_per_s + (b.flops_per_s - a.flops_per_s) * f};
    }
  return attention.back();
}

double DeviceSpeed::flops(WeightType t, int64_t row_length, double tokens) const {
  const auto k = kernel(t, row_length);
  if (!k) return flops_per_s;
  constexpr double kFew = 64, kMany = 512;  // the token counts tandem probe times
  if (k->prefill_few_flops_per_s <= 0 || tokens >= kMany) return k->prefill_flops_per_s;
  if (tokens <= kFew) return k->prefill_few_flops_per_s;
  const double f = std::log(tokens / kFew) / std::log(kMany / kFew);
  return k->prefill_few_flops_per_s + (k->prefill_flops_per_s - k->prefill_few_flops_per_s) * f;
}

double DeviceSpeed::expert_flops(WeightType t, int64_t row_length, double tokens) const {
  const auto k = kernel(t, row_length);
  if (!k || k->expert_few_flops_per_s <= 0 || k->expert_flops_per_s <= 0) return flops(t, row_length, tokens);
  const double few = double(kExpertTokens[0]), many = double(kExpertTokens[1]);
  if (tokens <= few) return k->expert_few_flops_per_s;
  if (tokens >= many) return k->expert_flops_per_s * flops(t, row_length, tokens) / flops(t, row_length, many);
  const double f = std::log(tokens / few) / std::log(many / few);
  return k->expert_few_flops_per_s + (k->expert_flops_per_s - k->expert_few_flops_per_s) * f;
}

Prediction predict_decode(const Plan& plan, const std::vector<TensorInfo>& tensors, const ModelShape& shape,
                          const std::vector<size_t>& kv_per_token, int64_t depth, const Speeds& s) {
  const size_t n_dev = plan.devices.size();
  Prediction p(n_dev);
  std::vector<double> memory_s(n_dev, 0);
  std::vector<std::map<std::string, double>> by_type(n_dev);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = tensors[i];
    const size_t d = size_t(plan.tensor_device[i]);
    const DeviceSpeed& ds = speed_of(plan, s, d);
    uint64_t bytes = t.bytes;
    double params = double(t.n_params()), calls = 1;
    double rate = ds.bytes_per_s, call_s = 0;
    if (is_token_embd(t) && shape.n_vocab > 0) {  // one row, copied out
      bytes /= uint64_t(shape.n_vocab);
      params = 0;
    } else if (is_experts(t.name) && shape.n_expert > 0) {
      bytes = bytes * uint64_t(shape.n_expert_used) / uint64_t(shape.n_expert);
      params = params * double(shape.n_expert_used) / double(shape.n_expert);
      calls = double(shape.n_expert_used);  // each picked expert's matrix is a stream of its own
    }
    if (t.shape.size() >= 2 && params > 0)
      if (const auto k = ds.kernel(t.type, t.shape.back())) rate = k->decode_bytes_per_s, call_s = k->decode_call_s;
    p.read_bytes[d] += bytes;
    if (t.shape.size() >= 2) p.flops[d] += 2 * params;
    // One op per matrix (all of a tensor's experts in one); the embeddings' row lookup is the CPU's.
    const double handover_s = t.shape.size() >= 2 && params > 0 ? ds.op_handover_s : 0;
    const double matmul_s = double(bytes) / rate + (params > 0 ? calls * call_s : 0) + handover_s;
    p.seconds[d] += matmul_s;
    memory_s[d] += double(bytes) / ds.bytes_per_s;
    by_type[d][std::string(type_name(t.type)) + " matmul kernels"] += matmul_s;
  }
  for (size_t il = 0; il < plan.kv_device.size(); ++il) {
    const size_t d = size_t(plan.kv_device[il]);
    const DeviceSpeed& ds = speed_of(plan, s, d);
    const double bytes = double(kv_per_token[il]) * double(depth);
    p.read_bytes[d] += uint64_t(bytes);
    p.seconds[d] += bytes / ds.bytes_per_s;
    memory_s[d] += bytes / ds.bytes_per_s;
    // A token's other ops are all fixed cost: attention's call, and each elementwise op's.
    const LayerOps ops = layer_ops(tensors, int(il), shape);
    const double fixed_s = ds.attention_at(shape.head_dim_k).call_s + ops.n_calls * ds.op_call_s +
                           (ops.n_calls + 1) * ds.op_handover_s;  // the ops and attention, each queued
    p.seconds[d] += fixed_s;
    by_type[d]["per-op fixed costs"] += fixed_s;
  }
  // A kernel that streams a type clearly slower than memory (or the ops' fixed costs) is what bounds
  // the device.
  for (size_t d = 0; d < n_dev; ++d)
    if (p.seconds[d] > 1.2 * memory_s[d]) p.bound[d] = largest(by_type[d]);
  p.link_seconds = count_crossings(plan, tensors) * (s.link_latency_s + double(shape.n_embd) * 4 / s.link_bytes_per_s) +
                   moe_transfer_seconds(plan, tensors, shape, 1, s);
  if (plan.output_device != 0) p.link_seconds += s.link_latency_s + double(shape.n_vocab) * 4 / s.link_bytes_per_s;
  finish(plan, p, 1);
  return p;
}

Prediction predict_prefill(const Plan& plan, const std::vector<TensorInfo>& tensors, const ModelShape& shape,
                           const std::vector<size_t>& kv_per_token, int64_t n_prompt, int64_t n_ubatch, int64_t depth,
                           const Speeds& s, int64_t op_offload_min_batch) {
  const size_t n_dev = plan.devices.size();
  Prediction p(n_dev);
  std::vector<double> memory_total(n_dev, 0), compute_total(n_dev, 0);
  std::vector<std::map<std::string, double>> by_type(n_dev);
  const int crossings = count_crossings(plan, tensors);
  const double used = shape.n_expert > 0 ? double(shape.n_expert_used) / double(shape.n_expert) : 1;
  std::vector<LayerOps> ops;
  for (size_t il = 0; il < plan.kv_device.size(); ++il) ops.push_back(layer_ops(tensors, int(il), shape));
  for (int64_t done = 0; done < n_prompt; done += n_ubatch) {
    const int64_t u = std::min(n_ubatch, n_prompt - done);
    const bool last = done + u >= n_prompt;  // only the prompt's last token needs logits
    const bool offload = op_offload_min_batch > 0 && u >= op_offload_min_batch && n_dev > 1;
    std::vector<double> memory_s(n_dev, 0), compute_s(n_dev, 0);
    for (size_t i = 0; i < tensors.size(); ++i) {
      const TensorInfo& t = tensors[i];
      size_t d = size_t(plan.tensor_device[i]);
      // llama.cpp's op offload: a CPU matrix (not the embeddings' row lookup) goes over the link whole.
      if (offload && d == 0 && t.shape.size() >= 2 && !is_token_embd(t) && (!is_output(t) || last)) {
        d = 1;
        p.link_seconds += s.link_latency_s + double(t.bytes) / s.link_bytes_per_s;
      }
      const DeviceSpeed& ds = speed_of(plan, s, d);
      double bytes = double(t.bytes), flops = 0, tokens = double(u);
      bool experts = false;
      if (is_token_embd(t)) {
        bytes = shape.n_vocab > 0 ? bytes / double(shape.n_vocab) * double(u) : bytes;
      } else if (is_output(t)) {
        if (!last) continue;
        // One row of logits: a decode-shaped matmul, streaming the matrix (Gemma's 178 MB took 5.4 ms of
        // its pp512), in turn with the other ops rather than hidden under them.
        const auto k = t.shape.size() >= 2 ? ds.kernel(t.type, t.shape.back()) : std::nullopt;
        const double row_s =
            (k ? bytes / k->decode_bytes_per_s + k->decode_call_s : bytes / ds.bytes_per_s) + ds.op_handover_s;
        p.read_bytes[d] += uint64_t(bytes);
        p.flops[d] += 2 * double(t.n_params());
        compute_s[d] += row_s;
        by_type[d][std::string(type_name(t.type)) + " matmul kernels"] += row_s;
        continue;
      } else if (is_experts(t.name) && shape.n_expert > 0) {
        // The expected share of experts that at least one of u tokens picks (n_used each, uniformly).
        bytes *= 1 - std::pow(1 - used, double(u));
        flops = 2 * double(t.n_params()) * used * double(u);
        tokens = used * double(u);  // each expert's share of the micro-batch
        experts = true;
      } else if (t.shape.size() >= 2) {
        flops = 2 * double(t.n_params()) * double(u);
      }
      p.read_bytes[d] += uint64_t(bytes);
      p.flops[d] += flops;
      memory_s[d] += bytes / ds.bytes_per_s;
      if (flops > 0) compute_s[d] += ds.op_handover_s;
      // The routed experts at the grouped matmul's own rate (matmul_id, measured), the rest at the kernel's.
      const double rate = t.shape.empty() ? 0
                          : experts     ? ds.expert_flops(t.type, t.shape.back(), tokens)
                                        : ds.flops(t.type, t.shape.back(), tokens);
      if (flops > 0 && rate > 0) {
        compute_s[d] += flops / rate;
        by_type[d][std::string(type_name(t.type)) + (experts ? " expert" : "") + " matmul throughput"] += flops / rate;
      }
    }
    for (size_t il = 0; il < plan.kv_device.size(); ++il) {
      const size_t d = size_t(plan.kv_device[il]);
      const DeviceSpeed& ds = speed_of(plan, s, d);
      // Attention: each token against the cache so far (causal within the micro-batch), read once.
      const double cells = double(depth + done) + double(u + 1) / 2;
      const double flops = 2.0 * double(shape.n_head) * double(shape.head_dim_k + shape.head_dim_v) * double(u) * cells;
      const double measured = ds.attention_at(shape.head_dim_k).flops_per_s;
      const double rate = measured > 0 ? measured : ds.flops(WeightType::F16, 4096);
      const double kv_bytes = double(kv_per_token[il]) * double(depth + done + u);
      p.read_bytes[d] += uint64_t(kv_bytes);
      memory_s[d] += kv_bytes / ds.bytes_per_s;
      p.flops[d] += flops;
      if (rate > 0) {
        compute_s[d] += flops / rate;
        by_type[d]["attention throughput"] += flops / rate;
      }
      compute_s[d] += (ops[il].n_calls + 1) * ds.op_handover_s;  // the ops and attention, each queued
      // Norms, activation, RoPE, residual adds: each token's values through the elementwise rate.
      if (const double op_s = ops[il].seconds(ds, shape, u); op_s > 0) {
        compute_s[d] += op_s;
        by_type[d]["elementwise ops"] += op_s;
      }
    }
    for (size_t d = 0; d < n_dev; ++d) {
      p.seconds[d] += std::max(memory_s[d], compute_s[d]);
      memory_total[d] += memory_s[d];
      compute_total[d] += compute_s[d];
    }
    p.link_seconds += crossings * (s.link_latency_s + double(u * shape.n_embd) * 4 / s.link_bytes_per_s) +
                      moe_transfer_seconds(plan, tensors, shape, u, s);
    if (last && plan.output_device != 0) p.link_seconds += s.link_latency_s + double(shape.n_vocab) * 4 / s.link_bytes_per_s;
  }
  for (size_t d = 0; d < n_dev; ++d)
    if (compute_total[d] > memory_total[d]) p.bound[d] = largest(by_type[d]);
  finish(plan, p, n_prompt);
  return p;
}

double mmap_miss_share(uint64_t weight_bytes, double cached_bytes) {
  return weight_bytes ? std::clamp(1 - cached_bytes / double(weight_bytes), 0.0, 1.0) : 0.0;
}

double tokens_per_s_from_disk(const Prediction& decode, double miss_share, double disk_bytes_per_s) {
  return 1 / (1 / decode.tokens_per_s + double(decode.read_bytes[0]) * miss_share / disk_bytes_per_s);
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

}  // namespace tandem::placement
