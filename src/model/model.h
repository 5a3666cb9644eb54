// A loaded model: hyperparameters and every weight on its home device, behind its architecture's
// forward pass. Each architecture derives from Model in its own file (src/model/<arch>.cpp), listed
// in registry.cpp; the blocks they share (attention, gated FFN, output head) are in blocks.h.
#pragma once

#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "gguf/gguf_file.h"
#include "kv/kv_cache.h"
#include "model/arch.h"
#include "model/batch.h"

namespace tandem::model {

// Activation buffers of one forward pass, kept between calls so a step no larger than an earlier
// one reuses their memory.
struct ForwardScratch {
  std::vector<float> x, cur, q, k, v, attn, gate, up, out_rows;
};

// One layer's KV cache: the device it lives on and its row sizes in elements per cell.
struct KvLayerSpec {
  Backend* backend = nullptr;
  int64_t row_k = 0, row_v = 0;
};

struct ModelLoadOptions {
  bool use_mmap = true;
  bool mlock = false;
  std::function<void(uint64_t done, uint64_t total)> on_progress;  // bytes read, with use_mmap off
};

class Model {
 public:
  // Opens, validates and places every weight on `backend` (the only device for now).
  static Result<std::unique_ptr<Model>> load(const std::string& path, const ModelLoadOptions& options,
                                             Backend& backend);
  virtual ~Model() = default;

  const HParams& hparams() const { return hp_; }
  const gguf::GgufFile& file() const { return *file_; }
  const Weight& tok_embd() const { return *tok_embd_; }
  const Weight& output_norm() const { return *output_norm_; }
  const Weight& output() const { return *output_; }
  const std::vector<KvLayerSpec>& kv_layers() const { return kv_layers_; }
  uint64_t weight_bytes() const;
  // Bytes of weights per backend name, for the start-up summary.
  std::map<std::string, uint64_t> bytes_by_device() const;

  // Runs the batch (token ids already checked against the vocabulary) through the stack: writes K/V into `kv` at `cells` and the logits of the tokens
  // with want_logits into `logits` ([n_out, n_vocab], in batch order). flash_attn picks the attention path.
  virtual Status forward(const Batch& batch, const std::vector<int32_t>& cells, KvCache& kv, ForwardScratch& scratch,
                         std::vector<float>& logits, bool flash_attn) const = 0;

 protected:
  Model() = default;

  // The architecture's own tensors and settings, bound once load() has checked every tensor its list
  // names; fills kv_layers_.
  virtual Status bind_layers(Backend& backend) = 0;

  const Weight* find(const std::string& name) const;  // null when the file has no such tensor
  // RoPE from the <arch>.rope.* keys (linear or YaRN scaling, rope_freqs.weight), of the given kind.
  Result<RopeParams> rope_params(RopeKind kind) const;
  // <arch>.attention.scale, else 1/sqrt(head_dim_k).
  float attention_scale() const;
  // Norms and biases are read as f32 arrays by the ops; the message names the first that is not.
  Status require_f32(std::initializer_list<const Weight*> weights) const;

  HParams hp_;
  std::vector<KvLayerSpec> kv_layers_;

 private:
  Status bind(Backend& backend);

  std::unique_ptr<gguf::GgufFile> file_;
  std::map<std::string, Weight, std::less<>> weights_;
  const Weight *tok_embd_ = nullptr, *output_norm_ = nullptr, *output_ = nullptr;
};

}  // namespace tandem::model
