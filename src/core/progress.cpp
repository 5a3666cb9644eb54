// ProgressBar rendering.
#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

#include "core/status.h"

namespace tandem {

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1000 && u < 4) {
    v /= 1000;
    ++u;
  }
  return u == 0 ? format("%llu B", (unsigned long long)bytes) : format("%.2f %s", v, units[u]);
}

ProgressBar::ProgressBar(std::string label, uint64_t total, bool bytes, bool enabled)
    : label_(std::move(label)), total_(total), bytes_(bytes), enabled_(enabled), tty_(isatty(STDERR_FILENO)) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

double ProgressBar::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressBar::add(uint64_t delta) {
  std::lock_guard lock(mu_);
  done_ += delta;
  draw(false);
}

void ProgressBar::update(uint64_t done) {
  std::lock_guard lock(mu_);
  done_ = done;
  draw(false);
}

void ProgressBar::finish() {
  std::lock_guard lock(mu_);
  if (finished_) return;
  finished_ = true;
  draw(true);
}

void ProgressBar::draw(bool final) {
  if (!enabled_ || (finished_ && !final)) return;
  const auto now = std::chrono::steady_clock::now();
  const double frac = total_ ? double(std::min(done_, total_)) / double(total_) : 1.0;
  if (!final) {
    if (tty_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    if (!tty_) {
      const int decile = int(frac * 10);
      // Work done within a second leaves its final line only (hashing a small model wrote eleven).
      if (decile == last_decile_ || decile == 10 || now - start_ < std::chrono::seconds(1)) return;
      last_decile_ = decile;
    }
  }
  last_draw_ = now;
  const double secs = std::chrono::duration<double>(now - start_).count();
  constexpr int kWidth = 30;
  const int filled = int(frac * kWidth);
  std::string bar(filled, '#');
  bar.resize(kWidth, '.');
  std::string amount;
  if (bytes_) {
    amount = format("%s / %s", human_bytes(done_).c_str(), human_bytes(total_).c_str());
    if (secs > 0.05) amount += format("  %.2f GB/s", double(done_) / secs / 1e9);  // too early to say before that
  } else {
    amount = format("%llu / %llu", (unsigned long long)done_, (unsigned long long)total_);
  }
  std::fprintf(stderr, "%s%s [%s] %3d%%  %s  %.1fs%s", tty_ ? "\r" : "", label_.c_str(), bar.c_str(),
               int(frac * 100), amount.c_str(), secs, tty_ && !final ? "\033[K" : "\n");
  std::fflush(stderr);
}

}  // namespace tandem
