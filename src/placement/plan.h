// The placement plan: which device holds each weight tensor and each layer's KV cache, made from
// llama.cpp's flags (-ngl, -ot, --cpu-moe, --n-cpu-moe, -ts, -sm, -mg, -nkvo, -dev) with llama.cpp's
// rules (src/llama-model.cpp load_tensors, src/llama-model-loader.cpp create_tensor), and checked
// against each device's memory before anything loads. Pure: it sees tensor names and sizes, not data,
// so it plans for a model (or a header-only description of one) on any machine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "gguf/types.h"

namespace tandem::placement {

// A device the plan may use. devices[0] is always the CPU (the host); the rest are offload devices
// (sim or CUDA) in -dev / --list-devices order.
struct DeviceInfo {
  std::string name;      // "CPU", "SIM0", "CUDA0": the names -ot, -dev and the summary use
  size_t free_bytes = 0;  // what the plan may fill (weights + KV cache + reserve)
};

// A weight as the plan sees it. layer: its block number (blk.N.*), or -1 for the input layer
// (token embeddings) and n_layer for the output layer (output norm and matrix), as llama.cpp counts.
struct TensorInfo {
  std::string name;
  size_t bytes = 0;
  int layer = -1;
  // Another tensor's bytes read a second time (a tied output matrix reads token_embd): it costs memory
  // only on a device that does not already hold that tensor.
  std::string alias_of;
  // What the speed prediction needs: the type and shape (outermost first) of the matrix; empty shape:
  // unknown (no compute counted).
  WeightType type = WeightType::F32;
  std::vector<int64_t> shape;
  int64_t n_params() const;
};

enum class SplitMode { None, Layer, Row };

struct PlacementFlags {
  int64_t n_gpu_layers = 0;  // llama.cpp's -ngl: N of the n_layer + 1 layers (output included); -1 auto, -2 all
  std::vector<std::string> overrides;  // -ot values in order, each "REGEX=DEVICE[,REGEX=DEVICE...]"
  bool cpu_moe = false;                // --cpu-moe: every layer's routed experts on the CPU
  int64_t n_cpu_moe = 0;               // --n-cpu-moe N: those of layers 0..N-1
  std::vector<float> tensor_split;     // -ts: share of the offloaded layers per offload device
  SplitMode split_mode = SplitMode::Layer;
  int main_gpu = 0;                    // -mg: the offload device of -sm none (index among offload devices)
  bool no_kv_offload = false;          // -nkvo: every KV cache layer on the CPU
  std::vector<std::string> devices;    // -dev: offload devices to use by name; {"none"}: none; empty: all
  size_t reserve_bytes = 0;            // per offload device holding anything: room for a micro-batch's activations
  size_t output_reserve_bytes = 0;     // more on the output layer's device: room for the logits
};

struct Plan {
  std::vector<DeviceInfo> devices;  // devices[0] the CPU, then the offload devices the plan may use
  std::vector<int> device_ids;      // each one's index in the devices given to make_plan (-dev picks some)
  std::vector<int> tensor_device;   // per tensor (the order given), index into devices
  std::vector<int> layer_device;    // [n_layer]: where the layer's non-overridden weights went
  std::vector<int> kv_device;       // [n_layer]: where the layer's KV cache lives
  int output_device = 0;
  int64_t n_gpu_layers = 0;         // as applied (-1/-2 resolved)
  std::vector<size_t> weight_bytes, kv_bytes;  // per device
};

// The plan for `tensors` of a model with n_layer blocks and kv_bytes_per_layer[il] of KV cache per
// layer, on `devices`. Errors name the flag: a device name that does not exist, an -ot entry without
// '=' or with a bad regex, an -ot regex that matches no tensor, -ts with more values than devices,
// a negative count, or a plan that overflows a device (with the numbers and what to lower).
// -ngl auto offloads as many layers as fit.
Result<Plan> make_plan(const std::vector<TensorInfo>& tensors, int n_layer,
                       const std::vector<size_t>& kv_bytes_per_layer, const std::vector<DeviceInfo>& devices,
                       const PlacementFlags& flags);

// The start-up table: tensor groups (embeddings, attention, dense FFN, routed and shared experts,
// norms, output) by layer range and device with their bytes, the KV cache, then per-device totals and
// what stays free.
std::string format_plan(const Plan& plan, const std::vector<TensorInfo>& tensors);

// "512.0 MiB", "23.50 GiB": the sizes plans and their errors print.
std::string size_text(uint64_t bytes);

}  // namespace tandem::placement
