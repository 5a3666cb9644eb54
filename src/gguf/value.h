// GGUF metadata values: scalars, strings and (nested) arrays, as read from or written to a file.
// Arrays of numbers are kept packed (one allocation), so a 262k-entry score array costs 1 MB, not 20.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::gguf {

enum class ValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7,
  String = 8, Array = 9, U64 = 10, I64 = 11, F64 = 12,
};
constexpr uint32_t kValueTypeLimit = 13;

const char* value_type_name(ValueType t);
// Bytes of one scalar on disk; 0 for String and Array.
size_t scalar_bytes(ValueType t);
bool is_integer(ValueType t);

class Value;

struct Array {
  ValueType elem_type = ValueType::U8;
  uint64_t count = 0;
  std::vector<uint8_t> packed;       // count * scalar_bytes(elem_type), little-endian, for scalars
  std::vector<std::string> strings;  // for String elements
  std::vector<Value> arrays;         // for nested Array elements
};

class Value {
 public:
  Value() = default;
  static Value u8(uint8_t v) { return scalar(ValueType::U8, v); }
  static Value i8(int8_t v) { return scalar(ValueType::I8, v); }
  static Value u16(uint16_t v) { return scalar(ValueType::U16, v); }
  static Value i16(int16_t v) { return scalar(ValueType::I16, v); }
  static Value u32(uint32_t v) { return scalar(ValueType::U32, v); }
  static Value i32(int32_t v) { return scalar(ValueType::I32, v); }
  static Value u64(uint64_t v) { return scalar(ValueType::U64, v); }
  static Value i64(int64_t v) { return scalar(ValueType::I64, v); }
  static Value f32(float v) { return scalar(ValueType::F32, v); }
  static Value f64(double v) { return scalar(ValueType::F64, v); }
  static Value boolean(bool v) { return scalar(ValueType::Bool, uint8_t(v)); }
  static Value string(std::string v);
  static Value array(Array a);
  // Packs a vector of scalars: Value::array_of(ValueType::F32, scores).
  template <typename T>
  static Value array_of(ValueType elem, std::span<const T> items) {
    Array a;
    a.elem_type = elem;
    a.count = items.size();
    a.packed.resize(items.size_bytes());
    if (!items.empty()) std::memcpy(a.packed.data(), items.data(), items.size_bytes());
    return array(std::move(a));
  }
  static Value string_array(std::vector<std::string> items);

  ValueType type() const { return type_; }
  bool is_array() const { return type_ == ValueType::Array; }

  // Numeric accessors convert between integer widths when the value fits; nullopt otherwise.
  std::optional<uint64_t> as_u64() const;
  std::optional<int64_t> as_i64() const;
  std::optional<double> as_f64() const;  // any numeric type
  std::optional<bool> as_bool() const;
  const std::string* as_string() const { return type_ == ValueType::String ? &str_ : nullptr; }
  const Array* as_array() const { return arr_.get(); }

  // Scalar element i of a packed array, converted like the accessors above.
  std::optional<double> array_f64(uint64_t i) const;
  std::optional<int64_t> array_i64(uint64_t i) const;

  // Human-readable rendering; long arrays are summarized after `max_items`.
  std::string to_string(size_t max_items = 8) const;

  // Raw little-endian bytes of a scalar (not String/Array).
  const uint8_t* scalar_data() const { return raw_; }

 private:
  template <typename T>
  static Value scalar(ValueType t, T v) {
    Value out;
    out.type_ = t;
    std::memcpy(out.raw_, &v, sizeof(T));
    return out;
  }

  ValueType type_ = ValueType::U8;
  alignas(8) uint8_t raw_[8] = {};
  std::string str_;
  std::shared_ptr<const Array> arr_;  // shared: metadata is copied around, arrays are large
};

// Ordered key/value metadata (file order is kept for display and for rewriting files).
class Metadata {
 public:
  // Returns false if the key already exists.
  bool add(std::string key, Value value);
  void set(const std::string& key, Value value);  // replaces or appends
  void erase(const std::string& key);
  const Value* find(std::string_view key) const;
  size_t size() const { return entries_.size(); }
  const std::vector<std::pair<std::string, Value>>& entries() const { return entries_; }

  std::optional<uint64_t> get_u64(std::string_view key) const;
  std::optional<double> get_f64(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;

 private:
  std::vector<std::pair<std::string, Value>> entries_;
  std::map<std::string, size_t, std::less<>> index_;
};

}  // namespace tandem::gguf
