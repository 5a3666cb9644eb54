// Status helpers: code names and printf-style message formatting.
#include "core/status.h"

#include <cstdarg>

namespace tandem {

const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::Ok: return "ok";
    case StatusCode::InvalidArgument: return "invalid argument";
    case StatusCode::Corrupt: return "corrupt";
    case StatusCode::Unsupported: return "unsupported";
    case StatusCode::NotFound: return "not found";
    case StatusCode::IoError: return "I/O error";
    case StatusCode::OutOfMemory: return "out of memory";
  }
  return "unknown";
}

std::string format(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  std::string out(n > 0 ? size_t(n) : 0, '\0');
  if (n > 0) std::vsnprintf(out.data(), out.size() + 1, fmt, args);
  va_end(args);
  return out;
}

}  // namespace tandem
