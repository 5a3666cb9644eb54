// The architecture registry: each architecture's file (llama.cpp, gemma3.cpp, ...) defines one entry
// saying which tensors a file of it must hold and how to make its Model; registry.cpp lists them.
// Nothing outside the registry and those files tells architectures apart by name.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "model/model.h"

namespace tandem::model {

struct Architecture {
  const char* name;  // general.architecture, as llama.cpp spells it
  // Every tensor a file needs, at its shape. Reads and checks the architecture's own <arch>.* keys from
  // `meta`; a bad one is an error naming the key and `source`.
  Result<std::vector<TensorSpec>> (*tensors)(const HParams& hp, const gguf::Metadata& meta, const std::string& source);
  // An empty model of this architecture, filled by Model::open.
  std::unique_ptr<Model> (*create)();
  // Its gated FFN's activation is tanh GELU (GeGLU) rather than SiLU: about three times SwiGLU's cost a
  // value, which the planner prices apart (placement/predict.h).
  bool ffn_gelu = false;
};

// The entry for `name`, or null.
const Architecture* find_architecture(std::string_view name);

// Defined in each architecture's file.
extern const Architecture kLlama, kQwen2, kQwen3, kQwen3Moe;  // llama.cpp
extern const Architecture kGemma3;                 // gemma3.cpp
extern const Architecture kDeepseek2;              // deepseek2.cpp

}  // namespace tandem::model
