// A loaded model: hyperparameters, the architecture's switches, and every weight on its home device.
// The forward pass (one file per architecture family) turns a batch into logits using a Backend's ops.
#pragma once

#include <functional>
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

struct LayerWeights {
  const Weight* attn_norm = nullptr;
  const Weight *wq = nullptr, *wk = nullptr, *wv = nullptr, *wo = nullptr;
  const Weight *bq = nullptr, *bk = nullptr, *bv = nullptr;  // qwen2
  const Weight *q_norm = nullptr, *k_norm = nullptr;         // qwen3, gemma3
  const Weight* post_attn_norm = nullptr;                    // gemma3
  const Weight* ffn_norm = nullptr;
  const Weight *gate = nullptr, *up = nullptr, *down = nullptr;
  const Weight* post_ffn_norm = nullptr;                     // gemma3
  Backend* backend = nullptr;  // where this layer's attention runs (its weights' home)
  bool sliding = false;        // gemma3 local layer
  RopeParams rope;
};

// Activation buffers of one forward pass, kept between calls so decoding allocates nothing.
struct ForwardScratch {
  std::vector<float> x, cur, q, k, v, attn, gate, up, out_rows;
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

  const HParams& hparams() const { return hp_; }
  const gguf::GgufFile& file() const { return *file_; }
  const std::vector<LayerWeights>& layers() const { return layers_; }
  const Weight& tok_embd() const { return *tok_embd_; }
  const Weight& output_norm() const { return *output_norm_; }
  const Weight& output() const { return *output_; }
  Backend& output_backend() const { return *output_->backend; }
  uint64_t weight_bytes() const;
  // Bytes of weights per backend name, for the start-up summary.
  std::map<std::string, uint64_t> bytes_by_device() const;

  // Architecture switches.
  bool gemma() const { return hp_.arch == "gemma3"; }
  float attn_scale() const { return attn_scale_; }
  float final_logit_softcap() const { return final_softcap_; }
  float embd_scale() const { return embd_scale_; }

  // Runs the batch (token ids already checked against the vocabulary) through the stack: writes K/V into `kv` at `cells` and the logits of the tokens
  // with want_logits into `logits` ([n_out, n_vocab], in batch order). flash_attn picks the attention path.
  Status forward(const Batch& batch, const std::vector<int32_t>& cells, KvCache& kv, ForwardScratch& scratch,
                 std::vector<float>& logits, bool flash_attn) const;

 private:
  Status bind(Backend& backend);
  const Weight* find(const std::string& name) const;

  std::unique_ptr<gguf::GgufFile> file_;
  HParams hp_;
  std::map<std::string, Weight, std::less<>> weights_;
  std::vector<LayerWeights> layers_;
  const Weight *tok_embd_ = nullptr, *output_norm_ = nullptr, *output_ = nullptr, *rope_freqs_ = nullptr;
  float attn_scale_ = 1, final_softcap_ = 0, embd_scale_ = 1;
};

}  // namespace tandem::model
