// hash_file: double-buffered read + EVP digests.
#include "core/hash.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

namespace tandem {

const char* hash_name(HashAlgorithm a) { return a == HashAlgorithm::Sha256 ? "sha256" : "md5"; }
size_t hash_hex_length(HashAlgorithm a) { return a == HashAlgorithm::Sha256 ? 64 : 32; }

namespace {

constexpr size_t kChunkBytes = 16u << 20;  // large enough for NVMe queue depth, small enough for L3 misses not to matter

struct Buffer {
  std::unique_ptr<uint8_t[]> data{new uint8_t[kChunkBytes]};
  size_t size = 0;
  bool full = false;  // filled by the reader, not yet hashed
  bool last = false;  // end of file (or error) after this buffer
};

}  // namespace

Result<std::vector<std::string>> hash_file(const std::string& path, const std::vector<HashAlgorithm>& algorithms,
                                           const std::function<void(uint64_t)>& on_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error("%s: cannot open: %s", path.c_str(), std::strerror(errno));
  posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  // Only a file that could not stay cached anyway is dropped behind us; a smaller one stays warm
  // for the run that usually follows a verify.
  struct stat st{};
  const long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
  const bool drop_behind = fstat(fd, &st) == 0 && pages > 0 && uint64_t(st.st_size) > uint64_t(pages) * uint64_t(page_size) / 2;

  std::vector<EVP_MD_CTX*> contexts;
  for (HashAlgorithm a : algorithms) {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, a == HashAlgorithm::Sha256 ? EVP_sha256() : EVP_md5(), nullptr);
    contexts.push_back(ctx);
  }

  Buffer buffers[2];
  std::mutex mu;
  std::condition_variable cv;
  int read_error = 0;
  uint64_t read_at_error = 0;

  std::thread reader([&] {
    uint64_t offset = 0;
    for (int i = 0;; i ^= 1) {
      Buffer& b = buffers[i];
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return !b.full; });
      }
      size_t got = 0;
      int err = 0;
      while (got < kChunkBytes) {
        const ssize_t n = ::pread(fd, b.data.get() + got, kChunkBytes - got, off_t(offset + got));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) err = errno;
        if (n <= 0) break;
        got += size_t(n);
      }
      const bool last = got < kChunkBytes;
      {
        std::lock_guard lock(mu);
        b.size = got;
        b.last = last;
        b.full = true;
        if (err) {
          read_error = err;
          read_at_error = offset + got;
        }
      }
      cv.notify_all();
      offset += got;
      if (last) return;
    }
  });

  uint64_t hashed = 0;
  for (int i = 0;; i ^= 1) {
    Buffer& b = buffers[i];
    {
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return b.full; });
    }
    for (EVP_MD_CTX* ctx : contexts) EVP_DigestUpdate(ctx, b.data.get(), b.size);
    if (drop_behind && b.size) posix_fadvise(fd, off_t(hashed), off_t(b.size), POSIX_FADV_DONTNEED);
    hashed += b.size;
    if (on_bytes) on_bytes(b.size);
    const bool last = b.last;
    {
      std::lock_guard lock(mu);
      b.full = false;
    }
    cv.notify_all();
    if (last) break;
  }
  reader.join();
  ::close(fd);

  std::vector<std::string> out;
  for (EVP_MD_CTX* ctx : contexts) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx, digest, &len);
    EVP_MD_CTX_free(ctx);
    std::string hex;
    for (unsigned int i = 0; i < len; ++i) hex += format("%02x", digest[i]);
    out.push_back(hex);
  }
  if (read_error)
    return io_error("%s: read failed at byte %llu: %s", path.c_str(), (unsigned long long)read_at_error,
                    std::strerror(read_error));
  return out;
}

std::string hash_text(HashAlgorithm a, std::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(text.data(), text.size(), digest, &len, a == HashAlgorithm::Sha256 ? EVP_sha256() : EVP_md5(), nullptr);
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) hex += format("%02x", digest[i]);
  return hex;
}

}  // namespace tandem
