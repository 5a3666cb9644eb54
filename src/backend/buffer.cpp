#include "backend/buffer.h"

#include <cstring>

namespace tandem {

Result<DeviceBuffer> DeviceBuffer::create(Backend& backend, size_t bytes) {
  DeviceBuffer b;
  TANDEM_ASSIGN(b.data_, backend.alloc(bytes));
  b.backend_ = &backend;
  b.bytes_ = bytes;
  return b;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    reset();
    backend_ = o.backend_;
    data_ = o.data_;
    bytes_ = o.bytes_;
    o.backend_ = nullptr;
    o.data_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

void DeviceBuffer::reset() {
  if (data_) backend_->free(data_);
  backend_ = nullptr;
  data_ = nullptr;
  bytes_ = 0;
}

void copy_between(Backend& from, const void* src, Backend& to, void* dst, size_t bytes, void* staging) {
  if (&from == &to && from.host_accessible()) {
    std::memmove(dst, src, bytes);
  } else if (from.host_accessible()) {
    to.copy_from_host(dst, src, bytes);
  } else if (to.host_accessible()) {
    from.copy_to_host(dst, src, bytes);
    to.wait(from.record());
  } else {
    from.wait(to.record());  // `to` may still be reading `staging` for an earlier copy
    from.copy_to_host(staging, src, bytes);
    to.wait(from.record());
    to.copy_from_host(dst, staging, bytes);
  }
}

}  // namespace tandem
