// The GGUF parser: header, metadata, tensor table, then whole-file checks (bounds, overlap).
// Layout per the GGUF spec (ggml docs/gguf.md); checks modelled on what llama.cpp's gguf.cpp
// refuses, so a file we accept is one llama.cpp accepts too.
#include "gguf/reader.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <unordered_set>

namespace tandem::gguf {

int64_t TensorInfo::n_elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::shape_string() const {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += format(i ? ", %lld" : "%lld", (long long)shape[i]);
  return out + "]";
}

namespace {

class Cursor {
 public:
  Cursor(std::span<const uint8_t> bytes, const std::string& source) : bytes_(bytes), source_(source) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return bytes_.size() - pos_; }

  template <typename... Args>
  Status corrupt_at(uint64_t at, const char* fmt, Args... args) const {
    std::string msg;
    if constexpr (sizeof...(Args) == 0) msg = fmt;
    else msg = format(fmt, args...);
    return corrupt("%s: offset %llu: %s", source_.c_str(), (unsigned long long)at, msg.c_str());
  }
  template <typename... Args>
  Status error(const char* fmt, Args... args) const {
    return corrupt_at(pos_, fmt, args...);
  }

  template <typename T>
  Status read(T* out, const char* what) {
    if (remaining() < sizeof(T))
      return error("truncated: %s needs %zu bytes, %llu left", what, sizeof(T), (unsigned long long)remaining());
    std::memcpy(out, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::ok();
  }

  Status read_string(std::string* out, const char* what, uint64_t max_bytes) {
    uint64_t len = 0;
    const uint64_t at = pos_;
    TANDEM_TRY(read(&len, what));
    if (len > remaining())
      return corrupt_at(at, "%s claims %llu bytes but only %llu remain in the file", what,
                        (unsigned long long)len, (unsigned long long)remaining());
    if (len > max_bytes)
      return corrupt_at(at, "%s is %llu bytes (at most %llu)", what, (unsigned long long)len,
                        (unsigned long long)max_bytes);
    out->assign(reinterpret_cast<const char*>(bytes_.data() + pos_), len);
    pos_ += len;
    return Status::ok();
  }

  // Copies n bytes the caller has already checked are there.
  void copy_out(void* dst, uint64_t n) {
    if (n == 0) return;  // dst may be an empty vector's null data()
    std::memcpy(dst, bytes_.data() + pos_, n);
    pos_ += n;
  }

 private:
  std::span<const uint8_t> bytes_;
  const std::string& source_;
  uint64_t pos_ = 0;
};

constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

Status read_value(Cursor& in, ValueType type, Value* out, int depth, const std::string& key);

// Smallest number of bytes an element of this type occupies on disk: bounds array counts.
uint64_t min_element_bytes(ValueType t) {
  if (t == ValueType::String) return 8;
  if (t == ValueType::Array) return 12;
  return scalar_bytes(t);
}

Status read_value_type(Cursor& in, ValueType* out, const std::string& key, const char* what) {
  uint32_t raw = 0;
  const uint64_t at = in.pos();
  TANDEM_TRY(in.read(&raw, what));
  if (raw >= kValueTypeLimit) return in.corrupt_at(at, "key '%s': unknown value type %u", key.c_str(), raw);
  *out = ValueType(raw);
  return Status::ok();
}

Status read_array(Cursor& in, Value* out, int depth, const std::string& key) {
  if (depth >= kMaxArrayDepth)
    return in.error("key '%s': arrays nested more than %d deep", key.c_str(), kMaxArrayDepth);
  Array a;
  TANDEM_TRY(read_value_type(in, &a.elem_type, key, "array element type"));
  const uint64_t at = in.pos();
  TANDEM_TRY(in.read(&a.count, "array length"));
  const uint64_t min_bytes = min_element_bytes(a.elem_type);
  if (a.count > in.remaining() / min_bytes)
    return in.corrupt_at(at, "key '%s': array of %llu %s elements cannot fit in the %llu bytes left",
                         key.c_str(), (unsigned long long)a.count, value_type_name(a.elem_type),
                         (unsigned long long)in.remaining());
  if (a.elem_type == ValueType::String) {
    a.strings.resize(a.count);
    for (auto& s : a.strings) TANDEM_TRY(in.read_string(&s, "array string length", kNoLimit));
  } else if (a.elem_type == ValueType::Array) {
    a.arrays.resize(a.count);
    for (auto& v : a.arrays) TANDEM_TRY(read_array(in, &v, depth + 1, key));
  } else {
    a.packed.resize(a.count * min_bytes);
    in.copy_out(a.packed.data(), a.packed.size());
  }
  *out = Value::array(std::move(a));
  return Status::ok();
}

Status read_value(Cursor& in, ValueType type, Value* out, int depth, const std::string& key) {
  switch (type) {
    case ValueType::String: {
      std::string s;
      TANDEM_TRY(in.read_string(&s, "string value length", kNoLimit));
      *out = Value::string(std::move(s));
      return Status::ok();
    }
    case ValueType::Array: return read_array(in, out, depth, key);
    default: break;
  }
  uint64_t raw = 0;
  const size_t n = scalar_bytes(type);
  if (in.remaining() < n) return in.error("truncated: value of key '%s' needs %zu bytes", key.c_str(), n);
  in.copy_out(&raw, n);
  switch (type) {
    case ValueType::U8: *out = Value::u8(uint8_t(raw)); break;
    case ValueType::I8: *out = Value::i8(int8_t(raw)); break;
    case ValueType::U16: *out = Value::u16(uint16_t(raw)); break;
    case ValueType::I16: *out = Value::i16(int16_t(raw)); break;
    case ValueType::U32: *out = Value::u32(uint32_t(raw)); break;
    case ValueType::I32: *out = Value::i32(int32_t(raw)); break;
    case ValueType::U64: *out = Value::u64(raw); break;
    case ValueType::I64: *out = Value::i64(int64_t(raw)); break;
    case ValueType::Bool: *out = Value::boolean(raw != 0); break;
    case ValueType::F32: {
      float f;
      std::memcpy(&f, &raw, 4);
      *out = Value::f32(f);
      break;
    }
    case ValueType::F64: {
      double d;
      std::memcpy(&d, &raw, 8);
      *out = Value::f64(d);
      break;
    }
    default: break;
  }
  return Status::ok();
}

Status read_tensor_info(Cursor& in, TensorInfo* t) {
  const uint64_t at = in.pos();
  TANDEM_TRY(in.read_string(&t->name, "tensor name length", kNoLimit));
  if (t->name.size() > kMaxNameBytes)
    return in.corrupt_at(at, "tensor name '%.40s...' is %zu bytes (llama.cpp allows at most %zu)",
                         t->name.c_str(), t->name.size(), kMaxNameBytes);
  if (t->name.empty()) return in.corrupt_at(at, "tensor with an empty name");
  uint32_t n_dims = 0;
  TANDEM_TRY(in.read(&n_dims, "tensor dimension count"));
  if (n_dims == 0 || n_dims > kMaxDims)
    return in.error("tensor '%s' has %u dimensions (1 to %u allowed)", t->name.c_str(), n_dims, kMaxDims);
  std::vector<int64_t> innermost_first(n_dims);
  int64_t n_elements = 1;
  for (uint32_t i = 0; i < n_dims; ++i) {
    TANDEM_TRY(in.read(&innermost_first[i], "tensor dimension"));
    const int64_t d = innermost_first[i];
    if (d < 0) return in.error("tensor '%s' dimension %u is negative (%lld)", t->name.c_str(), i, (long long)d);
    if (d != 0 && n_elements > std::numeric_limits<int64_t>::max() / d)
      return in.error("tensor '%s' element count overflows 64 bits", t->name.c_str());
    n_elements *= d;
  }
  t->shape.assign(innermost_first.rbegin(), innermost_first.rend());
  uint32_t type_id = 0;
  const uint64_t type_at = in.pos();
  TANDEM_TRY(in.read(&type_id, "tensor type"));
  const auto traits = weight_type_traits(type_id);
  if (!traits) return in.corrupt_at(type_at, "tensor '%s' has unknown type id %u", t->name.c_str(), type_id);
  t->type = WeightType(type_id);
  if (innermost_first[0] % traits->block_size != 0)
    return in.corrupt_at(type_at, "tensor '%s': row length %lld is not a multiple of the %s block size %u",
                         t->name.c_str(), (long long)innermost_first[0], traits->name.data(), traits->block_size);
  // Bytes = blocks * block_bytes; n_elements < 2^63 and block_bytes <= 292, so check before multiplying.
  const uint64_t n_blocks = uint64_t(n_elements) / traits->block_size;
  if (n_blocks > std::numeric_limits<uint64_t>::max() / traits->block_bytes)
    return in.error("tensor '%s' byte size overflows 64 bits", t->name.c_str());
  t->size_bytes = n_blocks * traits->block_bytes;
  TANDEM_TRY(in.read(&t->offset, "tensor data offset"));
  return Status::ok();
}

}  // namespace

Result<Header> parse(std::span<const uint8_t> bytes, const std::string& source, bool header_only) {
  Cursor in(bytes, source);
  if (bytes.empty()) return corrupt("%s: empty file (0 bytes), not a GGUF model", source.c_str());
  uint32_t magic = 0;
  TANDEM_TRY(in.read(&magic, "magic"));
  if (magic != kMagic) {
    char shown[5] = {};
    std::memcpy(shown, &magic, 4);
    for (char& c : shown) if (c && (c < 0x20 || c > 0x7e)) c = '?';
    return corrupt("%s: not a GGUF file (magic '%s', expected 'GGUF')", source.c_str(), shown);
  }
  Header h;
  TANDEM_TRY(in.read(&h.version, "version"));
  if (h.version == 1) return unsupported("%s: GGUF version 1 is obsolete; convert the file again", source.c_str());
  if ((h.version & 0xffff) == 0 && h.version != 0)
    return unsupported("%s: big-endian GGUF (version bytes 0x%08x) is not supported", source.c_str(), h.version);
  if (h.version != 2 && h.version != 3)
    return unsupported("%s: GGUF version %u is not supported (2 and 3 are)", source.c_str(), h.version);

  uint64_t n_tensors = 0, n_kv = 0;
  TANDEM_TRY(in.read(&n_tensors, "tensor count"));
  TANDEM_TRY(in.read(&n_kv, "metadata count"));
  constexpr uint64_t kMinKvBytes = 8 + 4 + 1;          // key length, value type, smallest value
  constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // name, n_dims, one dim, type, offset
  if (n_kv > in.remaining() / kMinKvBytes)
    return in.error("metadata count %llu cannot fit in the %llu bytes left", (unsigned long long)n_kv,
                    (unsigned long long)in.remaining());
  if (n_tensors > in.remaining() / kMinTensorInfoBytes)
    return in.error("tensor count %llu cannot fit in the %llu bytes left", (unsigned long long)n_tensors,
                    (unsigned long long)in.remaining());

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key;
    const uint64_t at = in.pos();
    TANDEM_TRY(in.read_string(&key, "metadata key length", kNoLimit));
    if (key.empty()) return in.corrupt_at(at, "metadata key %llu is empty", (unsigned long long)i);
    ValueType type;
    TANDEM_TRY(read_value_type(in, &type, key, "value type"));
    Value v;
    TANDEM_TRY(read_value(in, type, &v, 0, key));
    if (!h.metadata.add(key, std::move(v))) return in.corrupt_at(at, "duplicate metadata key '%s'", key.c_str());
  }

  if (const Value* a = h.metadata.find("general.alignment")) {
    const auto n = a->as_u64();
    if (a->type() != ValueType::U32 || !n || *n == 0 || (*n & (*n - 1)) != 0)
      return corrupt("%s: general.alignment must be a power-of-two u32, got %s %s", source.c_str(),
                     value_type_name(a->type()), a->to_string().c_str());
    h.alignment = *n;
  }

  std::unordered_set<std::string_view> names;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorInfo t;
    TANDEM_TRY(read_tensor_info(in, &t));
    h.tensors.push_back(std::move(t));
  }
  for (size_t i = 0; i < h.tensors.size(); ++i) {
    if (!names.insert(h.tensors[i].name).second)
      return corrupt("%s: duplicate tensor name '%s'", source.c_str(), h.tensors[i].name.c_str());
    if (h.tensors[i].offset % h.alignment != 0)
      return corrupt("%s: tensor '%s' offset %llu is not a multiple of the alignment %llu", source.c_str(),
                     h.tensors[i].name.c_str(), (unsigned long long)h.tensors[i].offset,
                     (unsigned long long)h.alignment);
  }

  // The data section starts at the next alignment boundary after the tensor table.
  const uint64_t header_end = in.pos();
  h.data_offset = (header_end + h.alignment - 1) / h.alignment * h.alignment;
  const uint64_t file_size = header_only ? UINT64_MAX : bytes.size();
  if (!h.tensors.empty() && h.data_offset >= file_size)
    return corrupt("%s: no tensor data after the tensor table (the data section would start at %llu; the file has "
                   "%llu bytes): a header-only description (tandem synth --header-only), which tandem plan and "
                   "tandem info read, or a file truncated at its header's end",
                   source.c_str(), (unsigned long long)h.data_offset, (unsigned long long)file_size);
  const uint64_t data_bytes = h.tensors.empty() ? 0 : file_size - h.data_offset;
  for (const TensorInfo& t : h.tensors) {
    if (t.offset > data_bytes || t.size_bytes > data_bytes - t.offset)
      return corrupt("%s: tensor '%s' (%llu bytes at data offset %llu) extends past the end of the file "
                     "(data section holds %llu bytes): truncated or corrupt",
                     source.c_str(), t.name.c_str(), (unsigned long long)t.size_bytes,
                     (unsigned long long)t.offset, (unsigned long long)data_bytes);
  }
  std::vector<size_t> order(h.tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return h.tensors[a].offset < h.tensors[b].offset; });
  for (size_t i = 1; i < order.size(); ++i) {
    const TensorInfo& prev = h.tensors[order[i - 1]];
    const TensorInfo& cur = h.tensors[order[i]];
    if (prev.offset + prev.size_bytes > cur.offset)
      return corrupt("%s: tensors '%s' (bytes %llu..%llu) and '%s' (from %llu) overlap", source.c_str(),
                     prev.name.c_str(), (unsigned long long)prev.offset,
                     (unsigned long long)(prev.offset + prev.size_bytes), cur.name.c_str(),
                     (unsigned long long)cur.offset);
  }
  if (!header_only)
    for (TensorInfo& t : h.tensors) t.data = bytes.data() + h.data_offset + t.offset;
  return h;
}

}  // namespace tandem::gguf
