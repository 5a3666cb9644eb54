#include "core/trace.h"

#include <fstream>

#include <nlohmann/json.hpp>

namespace tandem {

Trace* Trace::active_ = nullptr;

void Trace::start() {
  static Trace trace;
  active_ = &trace;
}

double Trace::now_us() {
  static const auto t0 = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
}

void Trace::add(const char* name, const std::string& lane, double t0_us, double t1_us, uint64_t bytes) {
  std::lock_guard lock(mu_);
  int id = 0;
  while (id < int(lanes_.size()) && lanes_[size_t(id)] != lane) ++id;
  if (id == int(lanes_.size())) lanes_.push_back(lane);
  events_.push_back({name, id, t0_us, t1_us, bytes});
}

Status Trace::write(const std::string& path) const {
  std::lock_guard lock(mu_);
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < lanes_.size(); ++i)
    out.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", 1}, {"tid", i}, {"args", {{"name", lanes_[i]}}}});
  for (const Event& e : events_) {
    nlohmann::json j = {{"name", e.name}, {"ph", "X"}, {"pid", 1}, {"tid", e.lane}, {"ts", e.t0}, {"dur", e.t1 - e.t0}};
    if (e.bytes) j["args"] = {{"bytes", e.bytes}};
    out.push_back(std::move(j));
  }
  std::ofstream f(path);
  if (!f) return io_error("--trace %s: cannot open the file for writing", path.c_str());
  f << out.dump() << "\n";
  if (!f) return io_error("--trace %s: write failed", path.c_str());
  return Status::ok();
}

}  // namespace tandem
