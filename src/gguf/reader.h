// GGUF parsing and validation of one byte image (a whole file or one split part).
// Every count and length is checked against the bytes left before anything is allocated;
// splitting and file access live in gguf_file.h.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "gguf/types.h"
#include "gguf/value.h"

namespace tandem::gguf {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint32_t kMaxDims = 4;         // GGML_MAX_DIMS
constexpr size_t kMaxNameBytes = 63;     // GGML_MAX_NAME minus its terminator: llama.cpp rejects longer
constexpr uint32_t kDefaultAlignment = 32;
constexpr int kMaxArrayDepth = 8;        // nested arrays deeper than this are refused, not recursed

struct TensorInfo {
  std::string name;
  // Outermost first, like C arrays: shape.back() is the contiguous row length.
  // GGUF stores dimensions innermost first; the reader reverses them once, here.
  std::vector<int64_t> shape;
  WeightType type = WeightType::F32;
  uint64_t offset = 0;      // from the start of the part's data section
  uint64_t size_bytes = 0;
  uint32_t part = 0;        // index of the split part that holds the data
  const uint8_t* data = nullptr;  // into that part's bytes; null until the part is attached

  int64_t n_elements() const;
  int64_t row_length() const { return shape.empty() ? 1 : shape.back(); }
  int64_t n_rows() const { return row_length() == 0 ? 0 : n_elements() / row_length(); }
  std::string shape_string() const;  // "[32000, 2048]"
};

struct Header {
  uint32_t version = 3;
  uint64_t alignment = kDefaultAlignment;
  Metadata metadata;
  std::vector<TensorInfo> tensors;
  uint64_t data_offset = 0;  // absolute file offset of the data section
};

// Parses and validates a whole GGUF image. `source` (a path) prefixes every error message.
// header_only: the image may end after the tensor table (a model's description without its data, for
// planning); tensors then have no data pointer.
Result<Header> parse(std::span<const uint8_t> bytes, const std::string& source, bool header_only = false);

}  // namespace tandem::gguf
