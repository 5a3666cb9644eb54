// Where each routed expert of a GGUF model lies on disk: per MoE layer, its ffn_{gate,up,down}_exps (or
// fused ffn_gate_up_exps) tensors, each holding one contiguous slice per expert. No I/O beyond the header.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "core/status.h"
#include "gguf/gguf_file.h"

namespace tandem::expert {

// One expert tensor of a layer ([n_expert, expert_rows, row_length]): expert e's bytes are
// [file_offset + e * expert_bytes, + expert_bytes) of part `part`.
struct ExpertTensor {
  std::string name;          // "blk.3.ffn_down_exps.weight"
  uint32_t part = 0;         // index into ExpertLayout::paths
  uint64_t file_offset = 0;  // absolute, of expert 0
  uint64_t expert_bytes = 0;
};

struct MoeLayer {
  int layer = 0;  // block index (blk.N)
  int n_expert = 0;
  std::vector<ExpertTensor> tensors;  // in name order: down, gate, gate_up, up (those present)
  uint64_t expert_bytes() const;      // all of one expert's slices
};

// Whether a tensor is a layer's routed experts by llama.cpp's names (blk.N.ffn_{gate,up,down,gate_up}_exps.weight);
// sets *layer to N.
bool is_routed_expert_name(const std::string& name, int* layer = nullptr);

class ExpertLayout {
 public:
  // Every layer with routed-expert tensors, in block order; an error if a layer's tensors disagree on
  // the expert count or a size does not divide by it. A layer any of whose expert tensors is in `skip`
  // (an offload device holds it) is left out: its experts are not the cache's.
  static Result<ExpertLayout> from_gguf(const gguf::GgufFile& file, const std::set<std::string>& skip = {});

  const std::vector<MoeLayer>& layers() const { return layers_; }
  const std::vector<std::string>& paths() const { return paths_; }  // the parts, in order
  const MoeLayer* find(int layer) const;
  int n_experts_total() const;  // over all MoE layers
  bool is_expert_tensor(const std::string& name) const;

 private:
  std::vector<MoeLayer> layers_;
  std::vector<std::string> paths_;
};

}  // namespace tandem::expert
