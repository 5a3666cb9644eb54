// A timeline of what each device did, as Chrome trace events (`--trace FILE`; open it in Perfetto or
// chrome://tracing): one lane per device queue (cpu, SIM0, SIM0 link, ...), a complete event per op or
// copy. Off unless started; then recording an event is a clock read and a locked push.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "core/status.h"

namespace tandem {

class Trace {
 public:
  // The process's trace, or null while tracing is off.
  static Trace* active() { return active_; }
  // Starts recording (once per process; later calls keep the first trace).
  static void start();
  static double now_us();

  // An event `name` on `lane` from t0 to t1 (microseconds of now_us()), with the bytes it moved (copies).
  void add(const char* name, const std::string& lane, double t0_us, double t1_us, uint64_t bytes = 0);
  // Writes the events recorded so far as a Chrome trace-event JSON array.
  Status write(const std::string& path) const;

 private:
  struct Event {
    const char* name;
    int lane;
    double t0, t1;
    uint64_t bytes;
  };
  static Trace* active_;
  mutable std::mutex mu_;
  std::vector<std::string> lanes_;
  std::vector<Event> events_;
};

// Records the enclosing scope as one event when tracing is on.
class TraceScope {
 public:
  TraceScope(const char* name, const std::string& lane) : trace_(Trace::active()), name_(name), lane_(lane) {
    if (trace_) t0_ = Trace::now_us();
  }
  ~TraceScope() {
    if (trace_) trace_->add(name_, lane_, t0_, Trace::now_us());
  }
  TraceScope(const TraceScope&) = delete;
  TraceScope& operator=(const TraceScope&) = delete;

 private:
  Trace* trace_;
  const char* name_;
  const std::string& lane_;
  double t0_ = 0;
};

}  // namespace tandem
