// Builds GGUF byte images by hand for tests: a valid file to damage on purpose, field by field.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace tandem::testing {

class GgufBytes {
 public:
  template <typename T>
  GgufBytes& pod(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof(T));
    return *this;
  }
  GgufBytes& u32(uint32_t v) { return pod(v); }
  GgufBytes& u64(uint64_t v) { return pod(v); }
  GgufBytes& i64(int64_t v) { return pod(v); }
  GgufBytes& str(const std::string& s) {
    u64(s.size());
    bytes.insert(bytes.end(), s.begin(), s.end());
    return *this;
  }
  GgufBytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    return u32(0x46554747).u32(version).u64(n_tensors).u64(n_kv);
  }
  GgufBytes& kv_u32(const std::string& key, uint32_t v) { return str(key).u32(4).u32(v); }
  GgufBytes& kv_str(const std::string& key, const std::string& v) { return str(key).u32(8).str(v); }
  // Tensor info; dims innermost first, as on disk.
  GgufBytes& tensor(const std::string& name, std::vector<int64_t> dims, uint32_t type, uint64_t offset) {
    str(name).u32(uint32_t(dims.size()));
    for (int64_t d : dims) i64(d);
    return u32(type).u64(offset);
  }
  GgufBytes& pad_to(size_t alignment) {
    while (bytes.size() % alignment) bytes.push_back(0);
    return *this;
  }
  GgufBytes& zeros(size_t n) {
    bytes.resize(bytes.size() + n, 0);
    return *this;
  }

  std::vector<uint8_t> bytes;
};

// A small valid file: 2 metadata keys, two F32 tensors [4] and [2, 8].
inline std::vector<uint8_t> valid_gguf() {
  GgufBytes b;
  b.header(2, 2).kv_str("general.architecture", "test").kv_u32("test.value", 7);
  b.tensor("a", {4}, 0, 0).tensor("b", {8, 2}, 0, 32);
  b.pad_to(32);
  for (int i = 0; i < 4; ++i) b.pod(float(i));
  b.zeros(16);
  for (int i = 0; i < 16; ++i) b.pod(float(100 + i));
  return b.bytes;
}

}  // namespace tandem::testing
