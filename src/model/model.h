// A loaded model: hyperparameters and every weight on its home device, behind its architecture's
// forward pass. Each architecture derives from Model in its own file (src/model/<arch>.cpp), listed
// in registry.cpp; the blocks they share (attention, gated FFN, output head) are in blocks.h.
#pragma once

#include <cstdlib>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "expert/expert_cache.h"
#include "expert/layout.h"
#include "gguf/gguf_file.h"
#include "kv/kv_cache.h"
#include "model/arch.h"
#include "model/batch.h"
#include "model/scratch.h"
#include "placement/plan.h"

namespace tandem::model {

// One layer's KV cache: the device it lives on (set by place()) and its row sizes in elements per cell.
struct KvLayerSpec {
  Backend* backend = nullptr;
  int64_t row_k = 0, row_v = 0;
};

struct ModelLoadOptions {
  bool use_mmap = true;
  bool mlock = false;
  bool header_only = false;  // the tensor table without data: open() for planning only, never place()
  std::function<void(uint64_t done, uint64_t total)> on_progress;  // bytes read, with use_mmap off
  // > 0 (--expert-cache): the routed experts (*_exps) are never read through the mapping; moe_ffn takes
  // them from an ExpertCache of this many bytes, reading the file(s) itself. Every other tensor is read
  // into RAM at load; --mlock locks those and the cache's slots, never the experts' bytes.
  uint64_t expert_cache_bytes = 0;
  // With expert_cache_bytes: the tensors the placement puts on an offload device. place() uploads them
  // from the mapping; reading them into RAM as well would take RAM the cache could have. A layer with
  // routed experts among them is left out of the cache (its experts run where they are).
  std::set<std::string> offloaded;
  // Matrices re-laid out by their device for its matmul kernels where they gain (Backend::repack; false:
  // --no-repack), their mapped file pages then let go; the routed experts too, unless the expert cache reads
  // them or the file is larger than the memory the process may take (core/memory.h). The copies live in the devices until this model is
  // destroyed.
  bool repack = true;
};

// Where a model's weights and KV layers go: devices[i] is the backend of the plan's device i
// (devices[0] the CPU); plan.tensor_device follows the order of Model::tensor_infos().
struct Placement {
  std::vector<Backend*> devices;
  placement::Plan plan;
};

class Model {
 public:
  // Opens and validates a file: hyperparameters, every tensor its architecture needs at its shape,
  // the layers bound. Nothing is placed yet: tensor_infos() and kv_layers() feed the placement plan.
  static Result<std::unique_ptr<Model>> open(const std::string& path, const ModelLoadOptions& options);
  // Binds every weight to its device (in place on the CPU, uploaded elsewhere) and every KV layer to
  // the plan's device. A block's matrices must share a device (an error names them otherwise); small
  // F32 weights (norms, biases, RoPE factors) get a replica on every device so any block can use them.
  Status place(const Placement& placement);
  // open() and place() with everything on `backend`.
  static Result<std::unique_ptr<Model>> load(const std::string& path, const ModelLoadOptions& options,
                                             Backend& backend);
  virtual ~Model();

  // Each tensor's name, bytes and layer (-1 input, n_layer output), in file order.
  std::vector<placement::TensorInfo> tensor_infos() const;
  // `w` as seen by `b`: w itself where it lives on b, else its replica there (placed small weights only).
  const Weight& on(const Weight& w, Backend& b) const;

  const HParams& hparams() const { return hp_; }
  const gguf::GgufFile& file() const { return *file_; }
  // The expert cache (--expert-cache), or null. Single-threaded, as the forward pass that uses it.
  expert::ExpertCache* expert_cache() const { return expert_cache_.get(); }
  // What the start-up summary should warn about: the file's (a refused --mlock), the expert cache's.
  std::vector<std::string> warnings() const;
  const Weight& tok_embd() const { return *tok_embd_; }
  const Weight& output_norm() const { return *output_norm_; }
  const Weight& output() const { return *output_; }
  const std::vector<KvLayerSpec>& kv_layers() const { return kv_layers_; }
  // Bytes one cell of each layer's KV cache takes in these types (the plan's KV share, per token).
  std::vector<size_t> kv_bytes_per_cell(WeightType type_k, WeightType type_v) const;
  const std::vector<Backend*>& devices() const { return devices_; }  // place()'s devices
  uint64_t weight_bytes() const;
  // Bytes of the matrices' repacked copies (ModelLoadOptions::repack) and of their file pages then let go (0
  // when the weights were read into RAM), for the start-up summary.
  uint64_t repacked_bytes() const { return repacked_bytes_; }
  const std::vector<const Weight*>& repacked() const { return repacked_; }  // the matrices with a packed copy
  uint64_t dropped_bytes() const { return dropped_bytes_; }
  // Bytes of weights per backend name, for the start-up summary.
  std::map<std::string, uint64_t> bytes_by_device() const;

  // Runs the batch (token ids already checked against the vocabulary) through the stack: writes K/V
  // into `kv` at `cells` and the logits of the tokens with want_logits into `logits` (host memory,
  // [n_out, n_vocab], in batch order). flash_attn picks the attention path. Fails when a device runs
  // out of memory for activations or reports an error.
  virtual Status forward(const Batch& batch, const std::vector<int32_t>& cells, KvCache& kv, ForwardScratch& scratch,
                         std::vector<float>& logits, bool flash_attn) const = 0;

 protected:
  Model() = default;

  // The architecture's own tensors and settings, bound once open() has checked every tensor its list
  // names; fills kv_layers_ (without devices: place() sets them).
  virtual Status bind_layers() = 0;
  // The groups of matrices that one block runs together, so must share a device (checked by place()).
  virtual std::vector<std::vector<const Weight*>> blocks() const = 0;

  const Weight* find(const std::string& name) const;  // null when the file has no such tensor
  // A tensor's bytes in host memory: the file's mapping, or the resident copy (--expert-cache).
  const void* host_data(const std::string& name) const;
  // RoPE from the <arch>.rope.* keys (linear or YaRN scaling), of the given kind; the frequency factors
  // are rope_freqs() as each device holds it.
  Result<RopeParams> rope_params(RopeKind kind) const;
  // rope_freqs.weight (Llama 3.1's per-pair divisors), checked, or null.
  Result<const Weight*> rope_freqs() const;
  // <arch>.attention.scale, else 1/sqrt(head_dim_k).
  float attention_scale() const;
  // --expert-cache: each MoE layer's MoeWeights (layers[i].moe, gate_inp set) whose experts the cache
  // holds (not an offload device's) given the cache and the next such layer, whose experts it prefetches.
  // No-op without a cache.
  template <class Layer>
  void link_expert_cache(std::vector<Layer>& layers) const {
    if (!expert_cache_) return;
    decltype(Layer::moe)* prev = nullptr;
    for (Layer& l : layers) {
      if (!l.moe.gate_inp || !expert_layout_->find(int(l.moe.layer))) continue;
      l.moe.cache = expert_cache_.get();
      if (prev) prev->next = &l.moe;
      prev = &l.moe;
    }
  }
  // Norms and biases are read as f32 arrays by the ops; the message names the first that is not.
  Status require_f32(std::initializer_list<const Weight*> weights) const;

  HParams hp_;
  std::vector<KvLayerSpec> kv_layers_;

 private:
  Status bind();
  Status open_expert_cache(const ModelLoadOptions& options);
  // --expert-cache: every tensor but the experts and the offloaded ones read into resident_ (and locked
  // with --mlock). Not the
  // mapping: those bytes then stay in RAM under memory pressure (page cache would be evicted), and a
  // file truncated or replaced while running cannot fault them (a mapped page past the new end is
  // SIGBUS); the cache reads the experts and reports such a file as an error.
  Status read_resident(const ModelLoadOptions& options);
  // ModelLoadOptions::repack, once place() has bound every weight.
  Status repack_matrices();

  std::unique_ptr<gguf::GgufFile> file_;
  std::map<std::string, Weight, std::less<>> weights_;
  const Weight *tok_embd_ = nullptr, *output_norm_ = nullptr, *output_ = nullptr;
  bool tied_ = false;   // no output.weight: the output layer reads token_embd
  Weight tied_output_;  // the tied output matrix's home when it is not token_embd's device
  std::vector<Backend*> devices_;
  std::map<std::pair<const Weight*, const Backend*>, Weight> replicas_;
  std::unique_ptr<expert::ExpertLayout> expert_layout_;  // before the cache, which points to it
  std::unique_ptr<expert::ExpertCache> expert_cache_;
  struct FreeDeleter {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, FreeDeleter> resident_;
  std::map<std::string, const void*, std::less<>> resident_data_;
  std::vector<std::string> warnings_;
  bool repack_ = false;
  std::vector<const Weight*> repacked_;
  uint64_t repacked_bytes_ = 0, dropped_bytes_ = 0;
};

}  // namespace tandem::model
