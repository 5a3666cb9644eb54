// MappedFile: mmap or read(), with mlock and a precise message when the kernel refuses it.
#include "core/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>

namespace tandem {

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this == &other) return *this;
  release();
  path_ = std::move(other.path_);
  data_ = other.data_;
  size_ = other.size_;
  mapped_ = other.mapped_;
  locked_ = other.locked_;
  owned_ = std::move(other.owned_);
  warning_ = std::move(other.warning_);
  other.data_ = nullptr;
  other.size_ = 0;
  other.mapped_ = false;
  other.locked_ = false;
  return *this;
}

MappedFile::~MappedFile() { release(); }

void MappedFile::release() {
  if (locked_ && data_) munlock(data_, size_);
  if (mapped_ && data_) munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
  mapped_ = locked_ = false;
  owned_.clear();
  owned_.shrink_to_fit();
}

namespace {

std::string mlock_refusal(const std::string& path, uint64_t size, int err) {
  rlimit lim{};
  getrlimit(RLIMIT_MEMLOCK, &lim);
  auto show = [](rlim_t v) {
    return v == RLIM_INFINITY ? std::string("unlimited") : format("%llu bytes", (unsigned long long)v);
  };
  return format(
      "%s: --mlock could not lock %llu bytes (%s); RLIMIT_MEMLOCK is %s (hard %s): raise it with "
      "'ulimit -l unlimited' or memlock in /etc/security/limits.conf; continuing unlocked",
      path.c_str(), (unsigned long long)size, std::strerror(err), show(lim.rlim_cur).c_str(),
      show(lim.rlim_max).c_str());
}

}  // namespace

Result<MappedFile> MappedFile::open(const std::string& path, const FileLoadOptions& options) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return not_found("%s: no such file", path.c_str());
    return io_error("%s: cannot open: %s", path.c_str(), std::strerror(errno));
  }
  struct stat st{};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return io_error("%s: not a regular file", path.c_str());
  }
  MappedFile out;
  out.path_ = path;
  out.size_ = uint64_t(st.st_size);
  if (out.size_ == 0) {
    ::close(fd);
    return out;
  }
  if (options.use_mmap) {
    void* p = mmap(nullptr, out.size_, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return io_error("%s: mmap of %llu bytes failed: %s (try --no-mmap)", path.c_str(),
                      (unsigned long long)out.size_, std::strerror(err));
    }
    out.data_ = static_cast<const uint8_t*>(p);
    out.mapped_ = true;
  } else {
    try {
      out.owned_.resize(out.size_);
    } catch (const std::bad_alloc&) {
      ::close(fd);
      return out_of_memory("%s: cannot allocate %llu bytes to read the file (--no-mmap); use mmap",
                           path.c_str(), (unsigned long long)out.size_);
    }
    uint64_t done = 0;
    constexpr uint64_t kChunk = 64ull << 20;
    while (done < out.size_) {
      const ssize_t n = ::pread(fd, out.owned_.data() + done, std::min(kChunk, out.size_ - done), off_t(done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = errno;
        ::close(fd);
        return io_error("%s: read failed at byte %llu: %s", path.c_str(), (unsigned long long)done,
                        n == 0 ? "unexpected end of file" : std::strerror(err));
      }
      done += uint64_t(n);
      if (options.on_progress) options.on_progress(done, out.size_);
    }
    out.data_ = out.owned_.data();
  }
  ::close(fd);
  if (options.mlock) {
    if (mlock(out.data_, out.size_) == 0) out.locked_ = true;
    else out.warning_ = mlock_refusal(path, out.size_, errno);
  }
  return out;
}

Result<uint64_t> file_size(const std::string& path) {
  struct stat st{};
  if (stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return not_found("%s: no such file", path.c_str());
    return io_error("%s: %s", path.c_str(), std::strerror(errno));
  }
  return uint64_t(st.st_size);
}

bool file_exists(const std::string& path) {
  struct stat st{};
  return stat(path.c_str(), &st) == 0;
}

size_t MappedFile::drop_pages(const void* p, size_t n) const {
  const auto* b = static_cast<const uint8_t*>(p);
  if (!mapped_ || b < data_ || b + n > data_ + size_) return 0;
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (uintptr_t(b) + page - 1) & ~(page - 1), hi = (uintptr_t(b) + n) & ~(page - 1);
  if (lo >= hi) return 0;
  if (locked_) munlock(reinterpret_cast<void*>(lo), hi - lo);
  // Advice only: a kernel that declines leaves the pages resident, which is what happened before.
  return madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED) == 0 ? hi - lo : 0;
}

}  // namespace tandem
