// GGUF writing, streamed: declare tensors, write the header(s), then pour each tensor's bytes in
// declaration order. Holds no tensor data, so multi-GB models are written with little memory.
// Optional split output in llama.cpp's gguf-split layout (NAME-00001-of-00003.gguf).
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "gguf/reader.h"

namespace tandem::gguf {

struct WriterOptions {
  uint32_t alignment = kDefaultAlignment;
  uint64_t split_max_bytes = 0;    // 0: no limit; a part holds at least one tensor
  uint64_t split_max_tensors = 0;  // 0: no limit
};

class GgufWriter {
 public:
  explicit GgufWriter(WriterOptions options = {}) : options_(options) {}
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;
  ~GgufWriter();

  Metadata& metadata() { return metadata_; }
  // Declares the next tensor. `shape` is outermost first (shape.back() is the row length).
  Status add_tensor(const std::string& name, WeightType type, const std::vector<int64_t>& shape);

  // Plans the parts, creates the file(s) and writes their headers. With splitting, `path` ending in
  // ".gguf" is the name stem: out.gguf -> out-00001-of-00003.gguf, ...
  Status open(const std::string& path);
  // Appends bytes of the current tensor (any number of calls per tensor, in declaration order).
  Status write(const void* data, size_t n);
  // Checks every declared byte was written, pads and closes all parts.
  Status finish();

  const std::vector<std::string>& part_paths() const { return part_paths_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

 private:
  Status write_header(size_t part);
  Status put(const void* data, size_t n);
  Status pad_to_alignment();
  Status next_tensor();
  Status skip_empty_tensors();

  WriterOptions options_;
  Metadata metadata_;
  std::vector<TensorInfo> tensors_;
  std::vector<std::string> part_paths_;
  std::vector<size_t> part_first_;  // index of each part's first tensor
  std::FILE* out_ = nullptr;
  size_t part_ = 0;
  size_t tensor_ = 0;           // tensor being written
  uint64_t tensor_written_ = 0;  // bytes of it so far
  uint64_t file_pos_ = 0;
  bool opened_ = false;
};

// Serialized size of a metadata value (used to plan and by tests).
uint64_t encoded_value_bytes(const Value& v);

}  // namespace tandem::gguf
