// Model loading: open the GGUF, read hyperparameters, check every tensor the architecture needs,
// and bind weights to their device (zero copy on the CPU: weights point into the mapping).
#include "model/model.h"

#include <cmath>

namespace tandem::model {

const Weight* Model::find(const std::string& name) const {
  auto it = weights_.find(name);
  return it == weights_.end() ? nullptr : &it->second;
}

Result<std::unique_ptr<Model>> Model::load(const std::string& path, const ModelLoadOptions& options, Backend& backend) {
  auto m = std::make_unique<Model>();
  TANDEM_ASSIGN(m->file_, gguf::GgufFile::open(path, {.use_mmap = options.use_mmap, .mlock = options.mlock,
                                                      .on_progress = options.on_progress}));
  const std::string arch = m->file_->architecture();
  if (!is_supported_architecture(arch))
    return unsupported("%s: architecture '%s' is not supported (supported: %s)", path.c_str(),
                       arch.empty() ? "(none: no general.architecture key)" : arch.c_str(),
                       supported_architectures().c_str());
  TANDEM_ASSIGN(m->hp_, read_hparams(m->file_->metadata(), path));
  TANDEM_ASSIGN(auto specs, required_tensors(m->hp_));
  for (const TensorSpec& s : specs) {
    const gguf::TensorInfo* t = m->file_->find(s.name);
    if (!t && !s.optional) return corrupt("%s: tensor '%s' is missing (%s needs it)", path.c_str(), s.name.c_str(),
                                          m->hp_.arch.c_str());
    if (t && t->shape != s.shape) {
      gguf::TensorInfo want;
      want.shape = s.shape;
      return corrupt("%s: tensor '%s' has shape %s, expected %s", path.c_str(), s.name.c_str(),
                     t->shape_string().c_str(), want.shape_string().c_str());
    }
  }
  TANDEM_TRY(m->bind(backend));
  return m;
}

Status Model::bind(Backend& backend) {
  for (const gguf::TensorInfo& t : file_->tensors()) {
    Weight w;
    w.name = t.name;
    w.type = t.type;
    w.shape = t.shape;
    w.data = t.data;
    w.row_stride = row_bytes(t.type, t.row_length());
    w.size_bytes = t.size_bytes;
    w.backend = &backend;
    weights_.emplace(t.name, std::move(w));
  }
  tok_embd_ = find("token_embd.weight");
  output_norm_ = find("output_norm.weight");
  output_ = find("output.weight");
  if (!output_) output_ = tok_embd_;  // tied embeddings
  rope_freqs_ = find("rope_freqs.weight");
  const auto& meta = file_->metadata();
  const std::string a = hp_.arch + ".";

  RopeParams rope;
  rope.kind = hp_.arch == "llama" ? RopeKind::Normal : RopeKind::Neox;
  rope.n_rot = int(hp_.n_rot);
  rope.freq_base = float(hp_.rope_freq_base);
  rope.n_ctx_orig = int(meta.get_u64(a + "rope.scaling.original_context_length").value_or(uint64_t(hp_.n_ctx_train)));
  const std::string scaling = meta.get_string(a + "rope.scaling.type").value_or("none");
  if (auto f = meta.get_f64(a + "rope.scaling.factor"); f && *f > 0 && scaling != "none") rope.freq_scale = float(1 / *f);
  if (scaling == "yarn") {
    rope.ext_factor = 1;
    rope.attn_factor = float(meta.get_f64(a + "rope.scaling.attn_factor").value_or(1.0));
  } else if (scaling != "none" && scaling != "linear") {
    return unsupported("%s: rope scaling type '%s' is not supported (none, linear, yarn are)", file_->path().c_str(),
                       scaling.c_str());
  }
  if (rope_freqs_) rope.freq_factors = static_cast<const float*>(rope_freqs_->data);

  attn_scale_ = float(1 / std::sqrt(double(hp_.head_dim_k)));
  if (auto s = meta.get_f64(a + "attention.scale")) attn_scale_ = float(*s);
  final_softcap_ = float(meta.get_f64(a + "final_logit_softcapping").value_or(0));
  if (gemma()) embd_scale_ = std::sqrt(float(hp_.n_embd));

  // Gemma 3: five sliding-window layers, then one global layer (pattern 6), local rope base 10000.
  const int64_t swa_pattern = int64_t(meta.get_u64(a + "attention.sliding_window_pattern").value_or(6));
  const float rope_base_swa = float(meta.get_f64(a + "rope.freq_base_swa").value_or(10000.0));

  layers_.resize(size_t(hp_.n_layer));
  for (int64_t i = 0; i < hp_.n_layer; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    LayerWeights& l = layers_[size_t(i)];
    l.attn_norm = find(b + "attn_norm.weight");
    l.wq = find(b + "attn_q.weight");
    l.wk = find(b + "attn_k.weight");
    l.wv = find(b + "attn_v.weight");
    l.wo = find(b + "attn_output.weight");
    l.bq = find(b + "attn_q.bias");
    l.bk = find(b + "attn_k.bias");
    l.bv = find(b + "attn_v.bias");
    l.q_norm = find(b + "attn_q_norm.weight");
    l.k_norm = find(b + "attn_k_norm.weight");
    l.post_attn_norm = find(b + "post_attention_norm.weight");
    l.ffn_norm = find(b + "ffn_norm.weight");
    l.gate = find(b + "ffn_gate.weight");
    l.up = find(b + "ffn_up.weight");
    l.down = find(b + "ffn_down.weight");
    l.post_ffn_norm = find(b + "post_ffw_norm.weight");
    l.backend = &backend;
    l.rope = rope;
    if (gemma() && hp_.sliding_window > 0) {
      l.sliding = swa_pattern == 0 || (i % swa_pattern) < swa_pattern - 1;
      if (l.sliding) {
        l.rope.freq_base = rope_base_swa;
        l.rope.freq_scale = 1;
      }
    }
    for (const Weight* w : {l.attn_norm, l.q_norm, l.k_norm, l.post_attn_norm, l.ffn_norm, l.post_ffn_norm, l.bq, l.bk, l.bv})
      if (w && w->type != WeightType::F32)
        return unsupported("%s: %s is %s; norms and biases must be F32", file_->path().c_str(), w->name.c_str(),
                           type_name(w->type).data());
  }
  if (output_norm_->type != WeightType::F32)
    return unsupported("%s: output_norm.weight must be F32", file_->path().c_str());
  if (rope_freqs_ && (rope_freqs_->type != WeightType::F32 || rope_freqs_->n_rows() * rope_freqs_->row_length() < hp_.n_rot / 2))
    return corrupt("%s: rope_freqs.weight must be F32 with %lld values", file_->path().c_str(), (long long)hp_.n_rot / 2);
  return Status::ok();
}

uint64_t Model::weight_bytes() const {
  uint64_t n = 0;
  for (const auto& [name, w] : weights_) n += w.size_bytes;
  return n;
}

std::map<std::string, uint64_t> Model::bytes_by_device() const {
  std::map<std::string, uint64_t> out;
  for (const auto& [name, w] : weights_) out[w.backend->name()] += w.size_bytes;
  return out;
}

}  // namespace tandem::model
