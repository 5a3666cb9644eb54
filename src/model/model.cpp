// Model loading: open the GGUF, read hyperparameters, check every tensor the architecture needs,
// and bind weights to their device (zero copy on the CPU: weights point into the mapping); then the
// architecture binds its layers. Also the settings several architectures read alike (RoPE, scale).
#include "model/model.h"

#include <cmath>
#include <cstdlib>

#include "model/registry.h"

namespace tandem::model {

const Weight* Model::find(const std::string& name) const {
  auto it = weights_.find(name);
  return it == weights_.end() ? nullptr : &it->second;
}

Result<std::unique_ptr<Model>> Model::open(const std::string& path, const ModelLoadOptions& options) {
  TANDEM_ASSIGN(auto file, gguf::GgufFile::open(path, {.use_mmap = options.use_mmap, .header_only = options.header_only,
                                                        .mlock = options.mlock, .on_progress = options.on_progress}));
  const std::string arch_name = file->architecture();
  const Architecture* arch = find_architecture(arch_name);
  if (!arch)
    return unsupported("%s: architecture '%s' is not supported (supported: %s)", path.c_str(),
                       arch_name.empty() ? "(none: no general.architecture key)" : arch_name.c_str(),
                       supported_architectures().c_str());
  TANDEM_ASSIGN(HParams hp, read_hparams(file->metadata(), path));
  TANDEM_ASSIGN(auto specs, arch->tensors(hp, file->metadata(), path));
  for (const TensorSpec& s : specs) {
    const gguf::TensorInfo* t = file->find(s.name);
    if (!t && !s.optional && (s.instead.empty() || !file->find(s.instead)))
      return corrupt("%s: tensor '%s' is missing (%s needs it%s%s)", path.c_str(), s.name.c_str(), hp.arch.c_str(),
                     s.instead.empty() ? "" : ", or ", s.instead.c_str());
    if (t && t->shape != s.shape) {
      gguf::TensorInfo want;
      want.shape = s.shape;
      return corrupt("%s: tensor '%s' has shape %s, expected %s", path.c_str(), s.name.c_str(),
                     t->shape_string().c_str(), want.shape_string().c_str());
    }
  }
  std::unique_ptr<Model> m = arch->create();
  m->file_ = std::move(file);
  m->hp_ = std::move(hp);
  TANDEM_TRY(m->bind());
  TANDEM_TRY(m->bind_layers());
  return m;
}

Result<std::unique_ptr<Model>> Model::load(const std::string& path, const ModelLoadOptions& options, Backend& backend) {
  TANDEM_ASSIGN(auto m, open(path, options));
  Placement p;
  p.devices = {&backend};
  p.plan.devices = {{backend.name(), 0}};
  p.plan.tensor_device.assign(m->tensor_infos().size(), 0);
  p.plan.kv_device.assign(m->kv_layers_.size(), 0);
  TANDEM_TRY(m->place(p));
  return m;
}

std::vector<size_t> Model::kv_bytes_per_cell(WeightType type_k, WeightType type_v) const {
  std::vector<size_t> out;
  for (const KvLayerSpec& l : kv_layers_) out.push_back(row_bytes(type_k, l.row_k) + row_bytes(type_v, l.row_v));
  return out;
}

std::vector<placement::TensorInfo> Model::tensor_infos() const {
  std::vector<placement::TensorInfo> out;
  for (const gguf::TensorInfo& t : file_->tensors()) {
    int layer = -1;
    if (t.name.rfind("blk.", 0) == 0) layer = std::atoi(t.name.c_str() + 4);
    else if (t.name.rfind("output", 0) == 0) layer = int(hp_.n_layer);
    out.push_back({t.name, t.size_bytes, layer, "", t.type, t.shape});
  }
  // A tied output matrix is token_embd read a second time by the output layer: the plan places it
  // as a tensor of its own (a second copy where the output layer is not on token_embd's device).
  if (tied_)
    out.push_back({"output.weight", tok_embd_->size_bytes, int(hp_.n_layer), "token_embd.weight", tok_embd_->type,
                   tok_embd_->shape});
  return out;
}

Status Model::place(const Placement& p) {
  const auto& tensors = file_->tensors();
  if (!tensors.empty() && !tensors.front().data)
    return invalid_argument("%s holds no tensor data (a header-only description): it can be planned "
                            "(tandem plan), not run", file_->path().c_str());
  const bool tied = tied_;
  if (p.plan.tensor_device.size() != tensors.size() + (tied ? 1 : 0) || p.plan.kv_device.size() != kv_layers_.size())
    return invalid_argument("%s: the placement plan covers %zu tensors and %zu KV layers; the model has %zu and %zu",
                            file_->path().c_str(), p.plan.tensor_device.size(), p.plan.kv_device.size(),
                            tensors.size() + (tied ? 1 : 0), kv_layers_.size());
  devices_ = p.devices;
  for (size_t i = 0; i < tensors.size(); ++i) {
    Weight& w = weights_.find(tensors[i].name)->second;
    Backend& b = *p.devices[size_t(p.plan.tensor_device[i])];
    w.backend = &b;
    TANDEM_ASSIGN(w.data, b.place_weight(tensors[i].data, w.size_bytes));
  }
  for (size_t il = 0; il < kv_layers_.size(); ++il) kv_layers_[il].backend = p.devices[size_t(p.plan.kv_device[il])];
  // The tied output matrix: a second home when the plan put it elsewhere than token_embd.
  Backend& out_dev = tied ? *p.devices[size_t(p.plan.tensor_device.back())] : *output_->backend;
  if (tied && tok_embd_->backend != &out_dev) {
    tied_output_ = *tok_embd_;
    tied_output_.backend = &out_dev;
    TANDEM_ASSIGN(tied_output_.data, out_dev.place_weight(file_->find(tok_embd_->name)->data, tied_output_.size_bytes));
    output_ = &tied_output_;
  }
  for (const auto& group : blocks()) {
    for (const Weight* w : group)
      if (w && w->backend != group.front()->backend)
        return invalid_argument("%s: %s is on %s but %s, which runs in the same block, is on %s: place them together "
                                "(-ot)", file_->path().c_str(), w->name.c_str(), w->backend->name().c_str(),
                                group.front()->name.c_str(), group.front()->backend->name().c_str());
  }
  // Small F32 weights on every device, so a block can read a norm wherever it runs.
  for (const auto& [name, w] : weights_) {
    if (w.type != WeightType::F32 || w.shape.size() != 1) continue;
    for (Backend* b : p.devices) {
      if (b == w.backend) continue;
      Weight r = w;
      r.backend = b;
      TANDEM_ASSIGN(r.data, b->place_weight(file_->find(name)->data, w.size_bytes));
      replicas_.emplace(std::pair<const Weight*, const Backend*>{&w, b}, std::move(r));
    }
  }
  return Status::ok();
}

const Weight& Model::on(const Weight& w, Backend& b) const {
  if (w.backend == &b) return w;
  auto it = replicas_.find({&w, &b});
  TANDEM_CHECK(it != replicas_.end());  // place() replicates every small weight on every device
  return it->second;
}

Status Model::bind() {
  for (const gguf::TensorInfo& t : file_->tensors()) {
    Weight w;
    w.name = t.name;
    w.type = t.type;
    w.shape = t.shape;
    w.data = t.data;
    w.row_stride = row_bytes(t.type, t.row_length());
    w.size_bytes = t.size_bytes;
    weights_.emplace(t.name, std::move(w));
  }
  tok_embd_ = find("token_embd.weight");
  output_norm_ = find("output_norm.weight");
  output_ = find("output.weight");
  tied_ = output_ == nullptr;
  if (tied_) output_ = tok_embd_;  // tied embeddings
  if (output_norm_->type != WeightType::F32)
    return unsupported("%s: output_norm.weight must be F32", file_->path().c_str());
  return Status::ok();
}

Result<RopeParams> Model::rope_params(RopeKind kind) const {
  const auto& meta = file_->metadata();
  const std::string a = hp_.arch + ".";
  RopeParams rope;
  rope.kind = kind;
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
  return rope;
}

Result<const Weight*> Model::rope_freqs() const {
  const Weight* f = find("rope_freqs.weight");
  if (f && (f->type != WeightType::F32 || f->shape.size() != 1 || f->row_length() < hp_.n_rot / 2))
    return corrupt("%s: rope_freqs.weight must be F32 with %lld values", file_->path().c_str(),
                   (long long)hp_.n_rot / 2);
  return f;
}

float Model::attention_scale() const {
  const auto s = file_->metadata().get_f64(hp_.arch + ".attention.scale");
  return s ? float(*s) : float(1 / std::sqrt(double(hp_.head_dim_k)));
}

Status Model::require_f32(std::initializer_list<const Weight*> weights) const {
  for (const Weight* w : weights)
    if (w && w->type != WeightType::F32)
      return unsupported("%s: %s is %s; norms and biases must be F32", file_->path().c_str(), w->name.c_str(),
                         type_name(w->type).data());
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
