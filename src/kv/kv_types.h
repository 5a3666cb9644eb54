// The element types a KV cache may hold: llama.cpp's -ctk/-ctv set. One list for the engine's flag
// checks and the backends' attention kernels, so the two cannot drift apart.
#pragma once

#include "gguf/types.h"

namespace tandem {

inline bool is_kv_cache_type(WeightType t) {
  switch (t) {
    case WeightType::F32: case WeightType::F16: case WeightType::BF16: case WeightType::Q8_0: case WeightType::Q4_0:
    case WeightType::Q4_1: case WeightType::Q5_0: case WeightType::Q5_1: case WeightType::IQ4_NL:
      return true;
    default:
      return false;
  }
}

}  // namespace tandem
