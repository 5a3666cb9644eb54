// Model loading: open the GGUF, read hyperparameters, check every tensor the architecture needs,
// and bind weights to their device (zero copy on the CPU: weights point into the mapping); then the
// architecture binds its layers. Also the settings several architectures read alike (RoPE, scale).
#include "model/model.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/memory.h"
#include "model/registry.h"
#include "quant/quant.h"

namespace tandem::model {

const Weight* Model::find(const std::string& name) const {
  auto it = weights_.find(name);
  return it == weights_.end() ? nullptr : &it->second;
}

namespace {

// The weight types Tandem computes, for error messages: "F32, F16, ...".
std::string supported_weight_types() {
  std::string out;
  for (uint32_t id = 0; id < kWeightTypeIdLimit; ++id)
    if (weight_type_traits(id) && quant::can_dequantize(WeightType(id)) && WeightType(id) != WeightType::Q8_K)
      out += (out.empty() ? "" : ", ") + std::string(type_name(WeightType(id)));
  return out;
}

}  // namespace

Result<std::unique_ptr<Model>> Model::open(const std::string& path, const ModelLoadOptions& options) {
  const bool cached = options.expert_cache_bytes > 0 && !options.header_only;
  if (cached && !options.use_mmap)
    return invalid_argument("%s: --expert-cache reads the experts itself and maps the rest of the file; it cannot "
                            "be combined with --no-mmap", path.c_str());
  // With an expert cache, --mlock locks the resident tensors below, never the experts' bytes.
  TANDEM_ASSIGN(auto file, gguf::GgufFile::open(path, {.use_mmap = options.use_mmap, .header_only = options.header_only,
                                                        .mlock = options.mlock && !cached,
                                                        .on_progress = options.on_progress}));
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
    // A format without a dequantizer has no kernel either (TQ1_0, TQ2_0, MXFP4, NVFP4, Q1_0):
    // refused here rather than at its first multiplication.
    if (t && !quant::can_dequantize(t->type))
      return unsupported("%s: tensor '%s' is stored as %s, a weight type Tandem cannot compute yet (it computes %s); "
                         "use a file quantized to one of those", path.c_str(), s.name.c_str(),
                         std::string(type_name(t->type)).c_str(), supported_weight_types().c_str());
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
  // Read into RAM (--no-mmap), the file's bytes cannot be let go (views and the tied output's rows read them
  // again), and a locked model (--mlock) would hold its copies unlocked: both keep the file's layout rather than
  // hold the matrices twice or unlocked.
  m->repack_ = options.repack && options.use_mmap && !options.mlock;
  TANDEM_TRY(m->bind());
  if (cached) TANDEM_TRY(m->open_expert_cache(options));
  TANDEM_TRY(m->bind_layers());
  return m;
}

Status Model::open_expert_cache(const ModelLoadOptions& options) {
  TANDEM_ASSIGN(expert::ExpertLayout layout, expert::ExpertLayout::from_gguf(*file_, options.offloaded));
  if (layout.layers().empty())
    return invalid_argument("%s: --expert-cache: the model has no routed experts (%s)", file_->path().c_str(),
                            hp_.arch.c_str());
  expert_layout_ = std::make_unique<expert::ExpertLayout>(std::move(layout));
  expert::ExpertCacheOptions co;
  co.budget_bytes = options.expert_cache_bytes;
  co.mlock = options.mlock;
  auto cache = expert::ExpertCache::open(*expert_layout_, co);
  if (!cache) return Status(cache.status().code(), "--expert-cache: " + cache.status().message());
  expert_cache_ = std::move(*cache);
  if (!expert_cache_->warning().empty()) warnings_.push_back(expert_cache_->warning());
  return read_resident(options);
}

Status Model::read_resident(const ModelLoadOptions& options) {
  const bool lock = options.mlock;
  std::vector<const gguf::TensorInfo*> resident;
  uint64_t total = 0;
  for (const gguf::TensorInfo& t : file_->tensors())
    if (!expert_layout_->is_expert_tensor(t.name) && !options.offloaded.contains(t.name)) {
      resident.push_back(&t);
      total += (t.size_bytes + 63) / 64 * 64;  // each tensor 64-byte aligned, as in the file
    }
  resident_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, std::max<uint64_t>(total, 64))));
  if (!resident_)
    return out_of_memory("%s: --expert-cache: cannot allocate %llu bytes for the resident tensors",
                         file_->path().c_str(), (unsigned long long)total);
  std::vector<int> fds;
  for (const auto& part : file_->parts()) {
    fds.push_back(::open(part.file.path().c_str(), O_RDONLY | O_CLOEXEC));
    if (fds.back() < 0) {
      const int err = errno;
      for (int fd : fds) if (fd >= 0) ::close(fd);
      return io_error("%s: cannot open: %s", part.file.path().c_str(), std::strerror(err));
    }
  }
  Status st;
  uint8_t* dst = resident_.get();
  for (const gguf::TensorInfo* t : resident) {
    const auto& part = file_->parts()[t->part];
    const uint64_t offset = part.header.data_offset + t->offset;
    for (uint64_t done = 0; done < t->size_bytes && st.is_ok();) {
      const ssize_t n = pread(fds[t->part], dst + done, t->size_bytes - done, off_t(offset + done));
      if (n <= 0)
        st = io_error("%s: reading tensor '%s' (%llu bytes at offset %llu): %s", part.file.path().c_str(),
                      t->name.c_str(), (unsigned long long)t->size_bytes, (unsigned long long)offset,
                      n < 0 ? std::strerror(errno) : "the file ends first (truncated?)");
      else done += uint64_t(n);
    }
    if (!st.is_ok()) break;
    resident_data_.emplace(t->name, dst);
    weights_.find(t->name)->second.data = dst;
    dst += (t->size_bytes + 63) / 64 * 64;
  }
  for (int fd : fds) {
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);  // the copy above is what runs: no second one in page cache
    ::close(fd);
  }
  TANDEM_TRY(st);
  if (lock && mlock(resident_.get(), total) != 0)
    warnings_.push_back(format("%s: --mlock could not lock the %llu bytes of resident tensors (%s; raise "
                               "RLIMIT_MEMLOCK with 'ulimit -l'); continuing unlocked", file_->path().c_str(),
                               (unsigned long long)total, std::strerror(errno)));
  return Status::ok();
}

const void* Model::host_data(const std::string& name) const {
  auto it = resident_data_.find(name);
  return it != resident_data_.end() ? it->second : file_->find(name)->data;
}

std::vector<std::string> Model::warnings() const {
  std::vector<std::string> out = file_->warnings();
  out.insert(out.end(), warnings_.begin(), warnings_.end());
  return out;
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
  // Before any upload: an expert placed elsewhere would be read whole, which the cache is there to avoid.
  for (size_t i = 0; i < tensors.size() && expert_layout_; ++i) {
    const Backend& b = *p.devices[size_t(p.plan.tensor_device[i])];
    if (expert_layout_->is_expert_tensor(tensors[i].name) && !b.host_accessible())
      return invalid_argument("%s: --expert-cache runs the routed experts on the CPU, but the plan puts %s on %s "
                              "(keep them on the CPU: -ot exps=CPU)", file_->path().c_str(), tensors[i].name.c_str(),
                              b.name().c_str());
  }
  devices_ = p.devices;
  for (size_t i = 0; i < tensors.size(); ++i) {
    Weight& w = weights_.find(tensors[i].name)->second;
    Backend& b = *p.devices[size_t(p.plan.tensor_device[i])];
    w.backend = &b;
    TANDEM_ASSIGN(w.data, b.place_weight(host_data(tensors[i].name), w.size_bytes));
  }
  for (size_t il = 0; il < kv_layers_.size(); ++il) kv_layers_[il].backend = p.devices[size_t(p.plan.kv_device[il])];
  // The tied output matrix: a second home when the plan put it elsewhere than token_embd.
  Backend& out_dev = tied ? *p.devices[size_t(p.plan.tensor_device.back())] : *output_->backend;
  if (tied && tok_embd_->backend != &out_dev) {
    tied_output_ = *tok_embd_;
    tied_output_.backend = &out_dev;
    TANDEM_ASSIGN(tied_output_.data, out_dev.place_weight(host_data(tok_embd_->name), tied_output_.size_bytes));
    output_ = &tied_output_;
  }
  if (repack_) TANDEM_TRY(repack_matrices());
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
      TANDEM_ASSIGN(r.data, b->place_weight(host_data(name), w.size_bytes));
      replicas_.emplace(std::pair<const Weight*, const Backend*>{&w, b}, std::move(r));
    }
  }
  return Status::ok();
}

Model::~Model() {
  for (const Weight* w : repacked_) w->backend->release_repack(*w);
}

Status Model::repack_matrices() {
  // The routed experts too, unless the expert cache reads them itself or the file would not stay in RAM: a copy
  // is memory of the process's own, where the mapping's pages could be let go and read again (models larger
  // than memory run from the page cache). Other 3-D weights (MLA's per-head attn_k_b, attn_v_b) always.
  const bool experts = !expert_cache_ && file_->total_bytes() < available_memory().bytes;
  std::vector<const Weight*> matrices;
  for (const auto& [name, w] : weights_)
    if ((w.shape.size() == 2 || (w.shape.size() == 3 && (experts || !expert::is_routed_expert_name(name)))) &&
        (&w != tok_embd_ || output_ == tok_embd_))
      matrices.push_back(&w);  // token_embd: rows only
  if (output_ == &tied_output_) matrices.push_back(&tied_output_);
  for (const Weight* w : matrices) {
    TANDEM_ASSIGN(const size_t bytes, w->backend->repack(*w));
    if (!bytes) continue;
    repacked_.push_back(w);
    repacked_bytes_ += bytes;
    // The copy serves every matmul; the mapping's pages are read again only by other ops (the tied output's
    // get_rows), a few rows at a time.
    if (w->backend->host_accessible()) dropped_bytes_ += file_->drop_pages(w->data, w->size_bytes);
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
