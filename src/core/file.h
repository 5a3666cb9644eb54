// Read-only views of whole files: memory-mapped (default) or read into RAM (--no-mmap),
// optionally locked in memory (--mlock). Also sizes and existence checks.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"

namespace tandem {

struct FileLoadOptions {
  bool use_mmap = true;
  // GGUF: read the header and tensor table only; the data may be absent (tandem plan on a description).
  bool header_only = false;
  bool mlock = false;
  // Called with bytes read so far while a --no-mmap load reads the file (for progress bars).
  std::function<void(uint64_t done, uint64_t total)> on_progress;
};

class MappedFile {
 public:
  MappedFile() = default;
  MappedFile(MappedFile&& other) noexcept { *this = std::move(other); }
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  // Opens `path` whole. A refused mlock is not an error: it leaves a message in warning().
  static Result<MappedFile> open(const std::string& path, const FileLoadOptions& options = {});

  std::span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }
  bool is_mapped() const { return mapped_; }
  // Lets the kernel take back the resident pages wholly inside [p, p + n) of a mapping (unlocked first under
  // --mlock); a later read pages them in from the file again. Nothing for storage read into RAM (--no-mmap),
  // whose bytes could not be read back, or for a range outside this file. Returns the bytes let go.
  size_t drop_pages(const void* p, size_t n) const;
  const std::string& warning() const { return warning_; }

 private:
  void release();

  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;
  bool locked_ = false;
  std::vector<uint8_t> owned_;  // --no-mmap storage
  std::string warning_;
};

Result<uint64_t> file_size(const std::string& path);
bool file_exists(const std::string& path);

}  // namespace tandem
