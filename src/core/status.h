// Status and Result<T>: how every input problem travels back to the caller, as a value.
// Programmer errors use TANDEM_CHECK (abort with file:line); input can never reach one.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace tandem {

enum class StatusCode { Ok, InvalidArgument, Corrupt, Unsupported, NotFound, IoError, OutOfMemory };

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok() { return {}; }
  bool is_ok() const { return code_ == StatusCode::Ok; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  StatusCode code_ = StatusCode::Ok;
  std::string message_;
};

// printf-style constructors: Status invalid_argument("flag -n: '%s' is not a number", s)
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
#define TANDEM_DECLARE_STATUS_MAKER(fn, code)                                                    \
  template <typename... Args>                                                                    \
  Status fn(const char* fmt, Args... args) {                                                     \
    if constexpr (sizeof...(Args) == 0) return Status(StatusCode::code, fmt);                    \
    else return Status(StatusCode::code, format(fmt, args...));                                  \
  }
TANDEM_DECLARE_STATUS_MAKER(invalid_argument, InvalidArgument)
TANDEM_DECLARE_STATUS_MAKER(corrupt, Corrupt)
TANDEM_DECLARE_STATUS_MAKER(unsupported, Unsupported)
TANDEM_DECLARE_STATUS_MAKER(not_found, NotFound)
TANDEM_DECLARE_STATUS_MAKER(io_error, IoError)
TANDEM_DECLARE_STATUS_MAKER(out_of_memory, OutOfMemory)
#undef TANDEM_DECLARE_STATUS_MAKER

// A value or a Status; shaped like C++23 std::expected so it can be swapped later.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit, like expected
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    if (std::get<Status>(v_).is_ok()) std::abort();  // an ok Status carries no value
  }

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &std::get<T>(v_); }
  const T* operator->() const { return &std::get<T>(v_); }
  const Status& error() const { return std::get<Status>(v_); }
  Status status() const { return has_value() ? Status() : error(); }

 private:
  std::variant<T, Status> v_;
};

namespace detail {
inline Status to_status(const Status& s) { return s; }
template <typename T>
Status to_status(const Result<T>& r) { return r.status(); }
}  // namespace detail

}  // namespace tandem

#define TANDEM_CONCAT_INNER(a, b) a##b
#define TANDEM_CONCAT(a, b) TANDEM_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function if `expr` (a Status or Result) failed.
#define TANDEM_TRY(expr)                                                   \
  do {                                                                     \
    ::tandem::Status tandem_try_ = ::tandem::detail::to_status(expr);      \
    if (!tandem_try_.is_ok()) return tandem_try_;                          \
  } while (0)

// TANDEM_ASSIGN(auto x, make_x()); declares x from a Result or returns its Status.
#define TANDEM_ASSIGN(decl, expr) TANDEM_ASSIGN_IMPL(TANDEM_CONCAT(tandem_r_, __LINE__), decl, expr)
#define TANDEM_ASSIGN_IMPL(tmp, decl, expr) \
  auto tmp = (expr);                        \
  if (!tmp.has_value()) return tmp.error(); \
  decl = std::move(tmp).value()

#define TANDEM_CHECK(cond)                                                              \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);     \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)
