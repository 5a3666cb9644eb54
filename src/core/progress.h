// A progress bar on stderr for long work (loading, hashing, quantizing): redrawn in place on a
// terminal at most ten times a second; on a pipe or file, one line per 10% once the work has taken a
// second (quicker work: the final line only), so logs stay short.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace tandem {

class ProgressBar {
 public:
  // `bytes`: show done/total as sizes and a throughput; otherwise as counts.
  ProgressBar(std::string label, uint64_t total, bool bytes = true, bool enabled = true);
  ~ProgressBar() { finish(); }

  void update(uint64_t done);  // thread-safe
  void add(uint64_t delta);    // thread-safe
  void finish();               // final line; idempotent
  double seconds() const;

 private:
  void draw(bool final);

  std::string label_;
  uint64_t total_, done_ = 0;
  bool bytes_, enabled_, tty_, finished_ = false;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
  std::mutex mu_;
};

// "1.23 GB", "512.0 MB", "17 B" (decimal units, as disks are sold).
std::string human_bytes(uint64_t bytes);

}  // namespace tandem
