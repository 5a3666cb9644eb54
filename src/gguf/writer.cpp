// GgufWriter: header serialization, split planning and streamed tensor data.
#include "gguf/writer.h"

#include <cerrno>
#include <cstring>

#include "gguf/gguf_file.h"

namespace tandem::gguf {
namespace {

void append(std::vector<uint8_t>& out, const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  out.insert(out.end(), b, b + n);
}
template <typename T>
void append_pod(std::vector<uint8_t>& out, T v) {
  append(out, &v, sizeof(v));
}
void append_string(std::vector<uint8_t>& out, const std::string& s) {
  append_pod<uint64_t>(out, s.size());
  append(out, s.data(), s.size());
}

void append_array_body(std::vector<uint8_t>& out, const Array& a) {
  append_pod<uint32_t>(out, uint32_t(a.elem_type));
  append_pod<uint64_t>(out, a.count);
  if (a.elem_type == ValueType::String) {
    for (const auto& s : a.strings) append_string(out, s);
  } else if (a.elem_type == ValueType::Array) {
    for (const auto& v : a.arrays) append_array_body(out, *v.as_array());
  } else {
    append(out, a.packed.data(), a.packed.size());
  }
}

void append_value(std::vector<uint8_t>& out, const Value& v) {
  if (v.type() == ValueType::String) append_string(out, *v.as_string());
  else if (v.type() == ValueType::Array) append_array_body(out, *v.as_array());
  else append(out, v.scalar_data(), scalar_bytes(v.type()));
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

uint64_t encoded_value_bytes(const Value& v) {
  std::vector<uint8_t> tmp;
  append_value(tmp, v);
  return tmp.size();
}

GgufWriter::~GgufWriter() {
  if (out_) std::fclose(out_);
}

Status GgufWriter::add_tensor(const std::string& name, WeightType type, const std::vector<int64_t>& shape) {
  if (opened_) return invalid_argument("gguf writer: tensor '%s' declared after open()", name.c_str());
  if (name.empty() || name.size() > kMaxNameBytes)
    return invalid_argument("gguf writer: tensor name '%s' must be 1 to %zu bytes", name.c_str(), kMaxNameBytes);
  if (shape.empty() || shape.size() > kMaxDims)
    return invalid_argument("gguf writer: tensor '%s' has %zu dimensions", name.c_str(), shape.size());
  for (const auto& t : tensors_)
    if (t.name == name) return invalid_argument("gguf writer: duplicate tensor '%s'", name.c_str());
  TensorInfo t;
  t.name = name;
  t.type = type;
  t.shape = shape;
  if (t.row_length() % block_size(type) != 0)
    return invalid_argument("gguf writer: tensor '%s' row length %lld is not a multiple of the %s block size %u",
                            name.c_str(), (long long)t.row_length(), type_name(type).data(), block_size(type));
  t.size_bytes = uint64_t(t.n_elements() / block_size(type)) * block_bytes(type);
  tensors_.push_back(std::move(t));
  return Status::ok();
}

Status GgufWriter::open(const std::string& path) {
  if (opened_) return invalid_argument("gguf writer: open() called twice");
  opened_ = true;
  // Plan parts: a new part starts when the current one would exceed either limit.
  part_first_.push_back(0);
  uint64_t bytes = 0, count = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const uint64_t padded = align_up(tensors_[i].size_bytes, options_.alignment);
    const bool over_bytes = options_.split_max_bytes && bytes + padded > options_.split_max_bytes;
    const bool over_count = options_.split_max_tensors && count + 1 > options_.split_max_tensors;
    if (count > 0 && (over_bytes || over_count)) {
      part_first_.push_back(i);
      bytes = count = 0;
    }
    tensors_[i].part = uint32_t(part_first_.size() - 1);
    tensors_[i].offset = bytes;
    bytes += padded;
    ++count;
  }
  const size_t n_parts = part_first_.size();
  if (n_parts > 99999) return invalid_argument("gguf writer: %zu split parts (at most 99999)", n_parts);
  if (n_parts == 1 && !options_.split_max_bytes && !options_.split_max_tensors) {
    part_paths_.push_back(path);
  } else {
    std::string stem = path;
    if (stem.size() > 5 && stem.compare(stem.size() - 5, 5, ".gguf") == 0) stem.resize(stem.size() - 5);
    for (size_t i = 0; i < n_parts; ++i) part_paths_.push_back(split_path(stem, int(i), int(n_parts)));
    metadata_.set(kSplitNo, Value::u16(0));
    metadata_.set(kSplitCount, Value::u16(uint16_t(n_parts)));
    metadata_.set(kSplitTensorsCount, Value::i32(int32_t(tensors_.size())));
  }
  if (options_.alignment != kDefaultAlignment) metadata_.set("general.alignment", Value::u32(options_.alignment));
  if (options_.alignment == 0 || (options_.alignment & (options_.alignment - 1)))
    return invalid_argument("gguf writer: alignment %u is not a power of two", options_.alignment);
  return write_header(0);
}

Status GgufWriter::write_header(size_t part) {
  if (out_) {
    std::fclose(out_);
    out_ = nullptr;
  }
  part_ = part;
  const std::string& path = part_paths_[part];
  out_ = std::fopen(path.c_str(), "wb");
  if (!out_) return io_error("%s: cannot create: %s", path.c_str(), std::strerror(errno));
  file_pos_ = 0;

  const size_t first = part_first_[part];
  const size_t end = part + 1 < part_first_.size() ? part_first_[part + 1] : tensors_.size();
  // Later parts carry only the split keys (and alignment), as llama.cpp's gguf-split writes them.
  Metadata part_meta;
  const Metadata* meta = &metadata_;
  if (part > 0) {
    part_meta.set(kSplitNo, Value::u16(uint16_t(part)));
    part_meta.set(kSplitCount, *metadata_.find(kSplitCount));
    part_meta.set(kSplitTensorsCount, *metadata_.find(kSplitTensorsCount));
    if (const Value* a = metadata_.find("general.alignment")) part_meta.set("general.alignment", *a);
    meta = &part_meta;
  }
  std::vector<uint8_t> h;
  append_pod<uint32_t>(h, kMagic);
  append_pod<uint32_t>(h, 3);
  append_pod<uint64_t>(h, end - first);
  append_pod<uint64_t>(h, meta->size());
  for (const auto& [key, value] : meta->entries()) {
    append_string(h, key);
    append_pod<uint32_t>(h, uint32_t(value.type()));
    append_value(h, value);
  }
  for (size_t i = first; i < end; ++i) {
    const TensorInfo& t = tensors_[i];
    append_string(h, t.name);
    append_pod<uint32_t>(h, uint32_t(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) append_pod<int64_t>(h, *it);
    append_pod<uint32_t>(h, uint32_t(t.type));
    append_pod<uint64_t>(h, t.offset);
  }
  TANDEM_TRY(put(h.data(), h.size()));
  TANDEM_TRY(pad_to_alignment());
  tensor_ = first;
  tensor_written_ = 0;
  return Status::ok();
}

Status GgufWriter::put(const void* data, size_t n) {
  if (n && std::fwrite(data, 1, n, out_) != n)
    return io_error("%s: write failed: %s", part_paths_[part_].c_str(), std::strerror(errno));
  file_pos_ += n;
  return Status::ok();
}

Status GgufWriter::pad_to_alignment() {
  static const uint8_t zeros[256] = {};
  uint64_t pad = align_up(file_pos_, options_.alignment) - file_pos_;
  while (pad > 0) {
    const size_t n = std::min<uint64_t>(pad, sizeof(zeros));
    TANDEM_TRY(put(zeros, n));
    pad -= n;
  }
  return Status::ok();
}

Status GgufWriter::write(const void* data, size_t n) {
  if (!out_) return invalid_argument("gguf writer: write() before open() or after finish()");
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    TANDEM_TRY(skip_empty_tensors());
    if (tensor_ >= tensors_.size())
      return invalid_argument("gguf writer: %zu bytes written past the last tensor", n);
    const TensorInfo& t = tensors_[tensor_];
    const size_t take = std::min<uint64_t>(n, t.size_bytes - tensor_written_);
    TANDEM_TRY(put(p, take));
    p += take;
    n -= take;
    tensor_written_ += take;
    if (tensor_written_ == t.size_bytes) TANDEM_TRY(next_tensor());
  }
  return Status::ok();
}

Status GgufWriter::next_tensor() {
  TANDEM_TRY(pad_to_alignment());
  ++tensor_;
  tensor_written_ = 0;
  if (tensor_ < tensors_.size() && tensors_[tensor_].part != part_) TANDEM_TRY(write_header(part_ + 1));
  return Status::ok();
}

Status GgufWriter::skip_empty_tensors() {
  while (tensor_ < tensors_.size() && tensors_[tensor_].size_bytes == 0) TANDEM_TRY(next_tensor());
  return Status::ok();
}

Status GgufWriter::finish() {
  if (!opened_) return invalid_argument("gguf writer: finish() before open()");
  if (out_) TANDEM_TRY(skip_empty_tensors());  // zero-byte tensors need no write() call
  if (tensor_ < tensors_.size())
    return invalid_argument("gguf writer: tensor '%s' and %zu after it were not written",
                            tensors_[tensor_].name.c_str(), tensors_.size() - tensor_ - 1);
  if (out_) {
    const bool ok = std::fclose(out_) == 0;
    out_ = nullptr;
    if (!ok) return io_error("%s: close failed: %s", part_paths_[part_].c_str(), std::strerror(errno));
  }
  return Status::ok();
}

}  // namespace tandem::gguf
