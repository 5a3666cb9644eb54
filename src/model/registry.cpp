// The list of architectures Tandem runs, and the lookups arch.h promises over it.
#include "model/registry.h"

namespace tandem::model {
namespace {

const Architecture* const kArchitectures[] = {&kLlama, &kQwen2, &kQwen3, &kQwen3Moe, &kGemma3, &kDeepseek2};

}  // namespace

const Architecture* find_architecture(std::string_view name) {
  for (const Architecture* a : kArchitectures)
    if (name == a->name) return a;
  return nullptr;
}

std::string supported_architectures() {
  std::string out;
  for (const Architecture* a : kArchitectures) out += (out.empty() ? "" : ", ") + std::string(a->name);
  return out;
}

bool is_supported_architecture(const std::string& arch) { return find_architecture(arch) != nullptr; }

Result<std::vector<TensorSpec>> required_tensors(const HParams& hp, const gguf::Metadata& meta,
                                                 const std::string& source) {
  const Architecture* a = find_architecture(hp.arch);
  if (!a)
    return unsupported("architecture '%s' is not supported (supported: %s)", hp.arch.c_str(),
                       supported_architectures().c_str());
  return a->tensors(hp, meta, source);
}

}  // namespace tandem::model
