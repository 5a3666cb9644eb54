// Finds the routed-expert tensors of a GGUF model and the file range of every expert's slice.
#include "expert/layout.h"

#include <algorithm>
#include <cstdio>
#include <map>

namespace tandem::expert {

uint64_t MoeLayer::expert_bytes() const {
  uint64_t sum = 0;
  for (const auto& t : tensors) sum += t.expert_bytes;
  return sum;
}

bool is_routed_expert_name(const std::string& name, int* layer) {
  int n = -1, end = 0;
  char kind[16] = {};
  if (std::sscanf(name.c_str(), "blk.%d.ffn_%15[a-z_]%n", &n, kind, &end) != 2) return false;
  const std::string k = kind;
  if (name.compare(size_t(end), std::string::npos, ".weight") != 0 ||
      (k != "gate_exps" && k != "up_exps" && k != "down_exps" && k != "gate_up_exps"))
    return false;
  if (layer) *layer = n;
  return true;
}

Result<ExpertLayout> ExpertLayout::from_gguf(const gguf::GgufFile& file, const std::set<std::string>& skip) {
  ExpertLayout out;
  for (const auto& p : file.parts()) out.paths_.push_back(p.file.path());
  std::map<int, MoeLayer> by_layer;
  for (const auto& t : file.tensors()) {
    int layer = -1;
    if (!is_routed_expert_name(t.name, &layer)) continue;
    if (t.shape.size() != 3 || t.shape[0] <= 0 || t.size_bytes % uint64_t(t.shape[0]) != 0)
      return corrupt("%s: tensor '%s' of shape %s is not [n_expert, rows, cols] in whole experts",
                     file.path().c_str(), t.name.c_str(), t.shape_string().c_str());
    MoeLayer& l = by_layer[layer];
    l.layer = layer;
    if (l.n_expert != 0 && l.n_expert != t.shape[0])
      return corrupt("%s: tensor '%s' has %lld experts, the layer's other expert tensors %d", file.path().c_str(),
                     t.name.c_str(), (long long)t.shape[0], l.n_expert);
    l.n_expert = int(t.shape[0]);
    const uint64_t data_offset = file.parts()[t.part].header.data_offset;
    l.tensors.push_back({t.name, t.part, data_offset + t.offset, t.size_bytes / uint64_t(t.shape[0])});
  }
  std::erase_if(by_layer, [&](const auto& entry) {
    return std::any_of(entry.second.tensors.begin(), entry.second.tensors.end(),
                       [&](const ExpertTensor& t) { return skip.contains(t.name); });
  });
  for (auto& [_, l] : by_layer) {
    std::sort(l.tensors.begin(), l.tensors.end(), [](auto& a, auto& b) { return a.name < b.name; });
    out.layers_.push_back(std::move(l));
  }
  return out;
}

const MoeLayer* ExpertLayout::find(int layer) const {
  for (const auto& l : layers_)
    if (l.layer == layer) return &l;
  return nullptr;
}

bool ExpertLayout::is_expert_tensor(const std::string& name) const {
  for (const auto& l : layers_)
    for (const auto& t : l.tensors)
      if (t.name == name) return true;
  return false;
}

int ExpertLayout::n_experts_total() const {
  int n = 0;
  for (const auto& l : layers_) n += l.n_expert;
  return n;
}

}  // namespace tandem::expert
