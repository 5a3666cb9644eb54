// A GGUF model on disk: one file or all parts of a split model (name-00001-of-00003.gguf),
// mapped or read into RAM, with one tensor table across parts.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/file.h"
#include "gguf/reader.h"

namespace tandem::gguf {

// Split-model metadata keys (llama.cpp's gguf-split).
inline constexpr const char* kSplitNo = "split.no";
inline constexpr const char* kSplitCount = "split.count";
inline constexpr const char* kSplitTensorsCount = "split.tensors.count";

// "dir/name-00002-of-00005.gguf" for (prefix "dir/name", part index 1, count 5).
std::string split_path(const std::string& prefix, int index, int count);
// Recognizes a split file name; returns false for an ordinary name.
bool parse_split_path(const std::string& path, std::string* prefix, int* index, int* count);

class GgufFile {
 public:
  struct Part {
    MappedFile file;
    Header header;  // its tensors hold their own data pointers; tensors() below merges them
  };

  // Opens a model and, if it is the first part of a split model, every other part, checking that
  // they belong together. Pass the first part; a later part is refused with the name to use.
  static Result<std::unique_ptr<GgufFile>> open(const std::string& path, const FileLoadOptions& options = {});
  // A single in-memory image (tests, fuzzing); `bytes` must outlive the result.
  static Result<std::unique_ptr<GgufFile>> from_bytes(std::span<const uint8_t> bytes, const std::string& name);

  const std::string& path() const { return path_; }
  uint32_t version() const { return parts_[0].header.version; }
  const Metadata& metadata() const { return parts_[0].header.metadata; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(std::string_view name) const;
  const std::vector<Part>& parts() const { return parts_; }
  uint64_t total_bytes() const;             // all parts, on disk
  uint64_t tensor_bytes() const;            // sum of tensor data
  std::vector<std::string> warnings() const;  // e.g. a refused --mlock, one per part
  // MappedFile::drop_pages on the part holding [p, p + n): the bytes let go.
  size_t drop_pages(const void* p, size_t n) const {
    size_t dropped = 0;
    for (const Part& part : parts_) dropped += part.file.drop_pages(p, n);
    return dropped;
  }
  std::string architecture() const { return metadata().get_string("general.architecture").value_or(""); }

 private:
  Status index_tensors();

  std::string path_;
  std::vector<Part> parts_;
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string_view, size_t> by_name_;
};

}  // namespace tandem::gguf
