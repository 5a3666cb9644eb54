// Metadata value accessors, conversions and rendering.
#include "gguf/value.h"

#include <cmath>
#include <limits>

#include "core/status.h"

namespace tandem::gguf {

const char* value_type_name(ValueType t) {
  switch (t) {
    case ValueType::U8: return "u8";
    case ValueType::I8: return "i8";
    case ValueType::U16: return "u16";
    case ValueType::I16: return "i16";
    case ValueType::U32: return "u32";
    case ValueType::I32: return "i32";
    case ValueType::F32: return "f32";
    case ValueType::Bool: return "bool";
    case ValueType::String: return "string";
    case ValueType::Array: return "array";
    case ValueType::U64: return "u64";
    case ValueType::I64: return "i64";
    case ValueType::F64: return "f64";
  }
  return "?";
}

size_t scalar_bytes(ValueType t) {
  switch (t) {
    case ValueType::U8: case ValueType::I8: case ValueType::Bool: return 1;
    case ValueType::U16: case ValueType::I16: return 2;
    case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
    case ValueType::U64: case ValueType::I64: case ValueType::F64: return 8;
    case ValueType::String: case ValueType::Array: return 0;
  }
  return 0;
}

bool is_integer(ValueType t) {
  switch (t) {
    case ValueType::U8: case ValueType::I8: case ValueType::U16: case ValueType::I16:
    case ValueType::U32: case ValueType::I32: case ValueType::U64: case ValueType::I64: return true;
    default: return false;
  }
}

namespace {

// Reads a little-endian scalar of type t at p as a signed/unsigned pair; false if not an integer.
bool read_integer(ValueType t, const uint8_t* p, int64_t* s, uint64_t* u, bool* is_signed) {
  auto load = [&](auto v) {
    std::memcpy(&v, p, sizeof(v));
    return v;
  };
  switch (t) {
    case ValueType::U8: *u = load(uint8_t{}); *is_signed = false; return true;
    case ValueType::U16: *u = load(uint16_t{}); *is_signed = false; return true;
    case ValueType::U32: *u = load(uint32_t{}); *is_signed = false; return true;
    case ValueType::U64: *u = load(uint64_t{}); *is_signed = false; return true;
    case ValueType::I8: *s = load(int8_t{}); *is_signed = true; return true;
    case ValueType::I16: *s = load(int16_t{}); *is_signed = true; return true;
    case ValueType::I32: *s = load(int32_t{}); *is_signed = true; return true;
    case ValueType::I64: *s = load(int64_t{}); *is_signed = true; return true;
    default: return false;
  }
}

std::optional<double> read_number(ValueType t, const uint8_t* p) {
  if (t == ValueType::F32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  if (t == ValueType::F64) {
    double d;
    std::memcpy(&d, p, 8);
    return d;
  }
  if (t == ValueType::Bool) return p[0] != 0;
  int64_t s = 0;
  uint64_t u = 0;
  bool is_signed = false;
  if (!read_integer(t, p, &s, &u, &is_signed)) return std::nullopt;
  return is_signed ? double(s) : double(u);
}

std::optional<int64_t> read_i64(ValueType t, const uint8_t* p) {
  int64_t s = 0;
  uint64_t u = 0;
  bool is_signed = false;
  if (!read_integer(t, p, &s, &u, &is_signed)) return std::nullopt;
  if (is_signed) return s;
  if (u > uint64_t(std::numeric_limits<int64_t>::max())) return std::nullopt;
  return int64_t(u);
}

}  // namespace

Value Value::string(std::string v) {
  Value out;
  out.type_ = ValueType::String;
  out.str_ = std::move(v);
  return out;
}

Value Value::array(Array a) {
  Value out;
  out.type_ = ValueType::Array;
  out.arr_ = std::make_shared<const Array>(std::move(a));
  return out;
}

Value Value::string_array(std::vector<std::string> items) {
  Array a;
  a.elem_type = ValueType::String;
  a.count = items.size();
  a.strings = std::move(items);
  return array(std::move(a));
}

std::optional<uint64_t> Value::as_u64() const {
  int64_t s = 0;
  uint64_t u = 0;
  bool is_signed = false;
  if (!read_integer(type_, raw_, &s, &u, &is_signed)) return std::nullopt;
  if (is_signed) return s < 0 ? std::nullopt : std::optional<uint64_t>(uint64_t(s));
  return u;
}

std::optional<int64_t> Value::as_i64() const { return read_i64(type_, raw_); }

std::optional<double> Value::as_f64() const {
  if (type_ == ValueType::String || type_ == ValueType::Array) return std::nullopt;
  return read_number(type_, raw_);
}

std::optional<bool> Value::as_bool() const {
  if (type_ != ValueType::Bool) return std::nullopt;
  return raw_[0] != 0;
}

std::optional<double> Value::array_f64(uint64_t i) const {
  if (!arr_ || i >= arr_->count || scalar_bytes(arr_->elem_type) == 0) return std::nullopt;
  return read_number(arr_->elem_type, arr_->packed.data() + i * scalar_bytes(arr_->elem_type));
}

std::optional<int64_t> Value::array_i64(uint64_t i) const {
  if (!arr_ || i >= arr_->count || scalar_bytes(arr_->elem_type) == 0) return std::nullopt;
  return read_i64(arr_->elem_type, arr_->packed.data() + i * scalar_bytes(arr_->elem_type));
}

namespace {

std::string quote(const std::string& s, size_t max_chars = 200) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < max_chars; ++i) {
    const unsigned char c = s[i];
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7f) {
      out += format("\\x%02x", c);
    } else {
      out += char(c);
    }
  }
  if (s.size() > max_chars) out += format("...\" (%zu bytes)", s.size());
  else out += '"';
  return out;
}

std::string number_string(ValueType t, const uint8_t* p) {
  if (t == ValueType::Bool) return p[0] ? "true" : "false";
  if (t == ValueType::F32 || t == ValueType::F64) return format("%g", *read_number(t, p));
  int64_t s = 0;
  uint64_t u = 0;
  bool is_signed = false;
  read_integer(t, p, &s, &u, &is_signed);
  return is_signed ? format("%lld", (long long)s) : format("%llu", (unsigned long long)u);
}

}  // namespace

std::string Value::to_string(size_t max_items) const {
  if (type_ == ValueType::String) return quote(str_);
  if (type_ != ValueType::Array) return number_string(type_, raw_);
  const Array& a = *arr_;
  std::string out = "[";
  const uint64_t shown = std::min<uint64_t>(a.count, max_items);
  for (uint64_t i = 0; i < shown; ++i) {
    if (i) out += ", ";
    if (a.elem_type == ValueType::String) out += quote(a.strings[i], 40);
    else if (a.elem_type == ValueType::Array) out += a.arrays[i].to_string(max_items);
    else out += number_string(a.elem_type, a.packed.data() + i * scalar_bytes(a.elem_type));
  }
  if (a.count > shown) out += format(", ... (%llu %s)", (unsigned long long)a.count, value_type_name(a.elem_type));
  return out + "]";
}

bool Metadata::add(std::string key, Value value) {
  if (index_.count(key)) return false;
  index_.emplace(key, entries_.size());
  entries_.emplace_back(std::move(key), std::move(value));
  return true;
}

void Metadata::set(const std::string& key, Value value) {
  auto it = index_.find(key);
  if (it != index_.end()) entries_[it->second].second = std::move(value);
  else add(key, std::move(value));
}

void Metadata::erase(const std::string& key) {
  auto it = index_.find(key);
  if (it == index_.end()) return;
  entries_.erase(entries_.begin() + it->second);
  index_.clear();
  for (size_t i = 0; i < entries_.size(); ++i) index_.emplace(entries_[i].first, i);
}

const Value* Metadata::find(std::string_view key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &entries_[it->second].second;
}

std::optional<uint64_t> Metadata::get_u64(std::string_view key) const {
  const Value* v = find(key);
  return v ? v->as_u64() : std::nullopt;
}

std::optional<double> Metadata::get_f64(std::string_view key) const {
  const Value* v = find(key);
  return v ? v->as_f64() : std::nullopt;
}

std::optional<bool> Metadata::get_bool(std::string_view key) const {
  const Value* v = find(key);
  return v ? v->as_bool() : std::nullopt;
}

std::optional<std::string> Metadata::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (!v || !v->as_string()) return std::nullopt;
  return *v->as_string();
}

}  // namespace tandem::gguf
