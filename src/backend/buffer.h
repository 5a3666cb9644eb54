// Device memory with an owner, and the one way data crosses between devices.
#pragma once

#include <cstddef>

#include "backend/backend.h"

namespace tandem {

// Bytes on one backend, released with it (move-only). The host may dereference data() only where
// backend().host_accessible().
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static Result<DeviceBuffer> create(Backend& backend, size_t bytes);
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { reset(); }

  void reset();
  Backend& backend() const { return *backend_; }
  void* data() const { return data_; }
  float* f32() const { return static_cast<float*>(data_); }
  size_t size_bytes() const { return bytes_; }
  bool empty() const { return data_ == nullptr; }

 private:
  Backend* backend_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Queues a copy of `bytes` from src (memory of `from`) to dst (memory of `to`), ordered after
// everything queued on `from` and before what is queued on `to` next; neither side blocks unless
// it is the host. Between two devices the host cannot read, the bytes pass through `staging` (host
// memory of at least `bytes`, pinned where the device needs it; unused otherwise), which must stay
// untouched until `to` has run the copy.
void copy_between(Backend& from, const void* src, Backend& to, void* dst, size_t bytes, void* staging);

}  // namespace tandem
