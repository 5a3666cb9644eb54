// --fit and tandem plan's default: the placement with the best predicted decode speed among those that
// fit, choosing only what the user left open (-ngl, the experts' home via --n-cpu-moe, the context).
// llama.cpp's --fit (common/arg.cpp, src/llama.cpp llama_params_fit) fits memory only, by lowering
// -ngl, moving experts to the CPU and shrinking the context down to --fit-ctx; this ranks its
// candidates by predict_decode as well.
#pragma once

#include <optional>
#include <vector>

#include "placement/plan.h"
#include "placement/predict.h"

namespace tandem::placement {

struct FitRequest {
  std::vector<TensorInfo> tensors;
  int n_layer = 0;
  std::vector<size_t> kv_bytes_per_cell;  // per layer
  int64_t n_ctx = 0;
  std::vector<DeviceInfo> devices;        // devices[0] the CPU: its free_bytes is the RAM the KV cache may take
  PlacementFlags flags;                   // what the user gave (n_gpu_layers included)
  bool ngl_given = false;                 // -ngl was on the command line: kept, only checked
  bool experts_given = false;             // -ot, --cpu-moe or --n-cpu-moe was: the experts' home is kept
  bool ctx_given = false;                 // -c was: kept; else lowered (halving) down to min_ctx to fit
  int64_t min_ctx = 4096;                 // llama.cpp's --fit-ctx
  std::vector<size_t> margin_bytes;       // per offload device (devices[1..]) left free (--fit-target)
  ModelShape shape;
  Speeds speeds;                          // per device of `devices`
  bool weights_mapped = true;             // the CPU's weights are mmapped (else read into RAM: devices[0]'s
                                          // free_bytes is what is left after them)
  double disk_bytes_per_s = 3e9;          // the model's disk, random reads: for mapped weights past the RAM
};

struct FitResult {
  Plan plan;
  PlacementFlags flags;  // as chosen (n_gpu_layers resolved, n_cpu_moe set where experts moved)
  int64_t n_ctx = 0;
  Prediction decode;     // its tokens_per_s from disk where disk_share > 0
  double disk_share = 0;  // of the CPU's (mapped) weights, past its RAM: read from disk as tokens need them
  std::string summary;   // "-ngl 62 --n-cpu-moe 40 -c 4096: 12.3 tokens/s predicted (best of 2 placements that fit)"
};

// The margin --fit leaves on an offload device of `free_bytes` when --fit-target is not given:
// llama.cpp's 1 GiB, at most an eighth of the device (so that small sim devices still take layers).
size_t default_fit_margin(size_t free_bytes);

// Errors: what the user fixed does not fit (make_plan's message), or the KV cache of min_ctx does not
// fit the CPU's free memory (with the numbers).
Result<FitResult> fit(const FitRequest& r);

}  // namespace tandem::placement
