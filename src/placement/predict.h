// What a placement plan allows: the decode speed from the bytes each device reads per token and its
// memory bandwidth, plus the activations crossing the host link; and the command-line flags that
// reproduce the plan. Decode of these models is memory-bound (every active weight byte is read once
// per token), so time per token = sum over devices of bytes read / bandwidth, the devices taking turns
// layer by layer, plus per crossing: link latency + bytes / link bandwidth. Sources: the roofline
// model (Williams et al., CACM 2009) as llama.cpp's and KTransformers' decode figures follow it.
#pragma once

#include <string>
#include <vector>

#include "placement/plan.h"

namespace tandem::placement {

struct Speeds {
  std::vector<double> bytes_per_s;   // per plan device: memory read bandwidth
  double link_bytes_per_s = 25e9;    // host <-> device
  double link_latency_s = 10e-6;     // per transfer
};

struct ModelShape {
  int64_t n_embd = 0, n_vocab = 0, n_expert = 0, n_expert_used = 0;
};

struct Prediction {
  std::vector<uint64_t> read_bytes;  // per device, per token
  std::vector<double> seconds;       // per device, per token
  double link_seconds = 0;
  double tokens_per_s = 0;
  std::string bottleneck;            // the device (or "the host link") with the largest share
};

// One decoded token at `depth` tokens of context: routed experts count n_expert_used / n_expert of
// their bytes, token embeddings one row, everything else (and the KV cache up to depth) in full.
Prediction predict_decode(const Plan& plan, const std::vector<TensorInfo>& tensors, const ModelShape& shape,
                          const std::vector<size_t>& kv_bytes_per_token_per_layer, int64_t depth, const Speeds& s);

// The flags that give this plan in Tandem and llama-server: -ngl N and the overrides.
std::string equivalent_flags(const Plan& plan, const PlacementFlags& flags);

// This machine's memory read bandwidth in bytes/s: every hardware thread streaming a buffer well beyond
// the caches (about a quarter of a second).
double measure_read_bandwidth();

}  // namespace tandem::placement
