// Hyperparameters every architecture shares, read from GGUF metadata (`<arch>.*` keys), and the
// questions info, verify and the loader ask of the architecture registry (registry.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "gguf/value.h"

namespace tandem::model {

struct HParams {
  std::string arch;
  int64_t n_vocab = 0;
  int64_t n_ctx_train = 0;
  int64_t n_embd = 0;
  int64_t n_layer = 0;
  int64_t n_ff = 0;
  int64_t n_head = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim_k = 0;  // attention.key_length, else n_embd / n_head
  int64_t head_dim_v = 0;
  int64_t n_rot = 0;       // rope.dimension_count
  double rope_freq_base = 10000;
  double norm_eps = 1e-5;
  int64_t sliding_window = 0;
  int64_t n_expert = 0;
  int64_t n_expert_used = 0;
};

// Reads hyperparameters; missing required keys are an error naming them.
Result<HParams> read_hparams(const gguf::Metadata& meta, const std::string& source);

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;  // outermost first, like TensorInfo::shape
  bool optional = false;       // e.g. output.weight when tied to token_embd
  std::string instead = {};    // not needed when the file has this tensor (ffn_gate_exps: ffn_gate_up_exps)
};

// Supported architecture names, for messages: "llama, qwen2, qwen3, gemma3".
std::string supported_architectures();
bool is_supported_architecture(const std::string& arch);
// Every tensor the architecture needs, at its shape; checks the architecture's own keys in `meta`
// (errors name the key and `source`).
Result<std::vector<TensorSpec>> required_tensors(const HParams& hp, const gguf::Metadata& meta,
                                                 const std::string& source);

}  // namespace tandem::model
