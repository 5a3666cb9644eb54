#include "backend/sim/sim_backend.h"

#include <sys/mman.h>
#include <sys/prctl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iterator>
#include <optional>

#include "core/trace.h"
#include "gguf/types.h"

namespace tandem::sim {
namespace {

// As cudaMalloc's: every allocation starts on a 256-byte boundary.
constexpr size_t kAlign = 256;

size_t round_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

double mib(size_t bytes) { return double(bytes) / (1024.0 * 1024.0); }

size_t f32_bytes(int64_t n) { return size_t(std::max<int64_t>(n, 0)) * sizeof(float); }
size_t i32_bytes(int64_t n) { return size_t(std::max<int64_t>(n, 0)) * sizeof(int32_t); }

}  // namespace

Result<std::unique_ptr<SimBackend>> SimBackend::create(const SimOptions& options) {
  if (options.budget_bytes == 0) return invalid_argument("%s: a sim device needs memory (budget 0 bytes)", options.name.c_str());
  if (options.link.bandwidth_bytes_per_s <= 0 || options.link.latency_s < 0)
    return invalid_argument("%s: link bandwidth must be positive and latency not negative", options.name.c_str());
  void* p = mmap(nullptr, options.budget_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    return out_of_memory("%s: cannot reserve %.0f MiB of address space for the device's memory",
                         options.name.c_str(), mib(options.budget_bytes));
  return std::unique_ptr<SimBackend>(new SimBackend(options, static_cast<uint8_t*>(p)));
}

SimBackend::SimBackend(const SimOptions& options, uint8_t* arena)
    : options_(options), arena_(arena), cpu_(std::make_unique<cpu::CpuBackend>(options.n_threads, options.name)),
      link_lane_(options.name + " link") {
  free_[0] = options_.budget_bytes;
  thread_ = std::thread([this] { run_queue(); });
}

SimBackend::~SimBackend() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  thread_.join();
  munmap(arena_, options_.budget_bytes);
}

SimStats SimBackend::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void SimBackend::run_queue() {
  // A copy sleeps out the long part of the link's time; the default 50 us of timer slack would add to it.
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  for (;;) {
    Task task;
    bool skip;
    {
      std::unique_lock lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
      skip = failed_ && !task.always;  // after a failure only events still fire, so no waiter hangs
    }
    if (!skip) task.fn();
    bool idle;
    {
      std::lock_guard lock(mu_);
      idle = --n_pending_ == 0;
    }
    // drain() waits for an empty queue, not for each op: waking it after every op cost a context switch
    // per op, which under CFS preempts one of the kernels' threads (Gemma 3 270M's decode on a sim
    // device ran at 0.5-0.7x the CPU's on 2 cores; docs/plan.md).
    if (idle) idle_cv_.notify_all();
  }
}

void SimBackend::fail(Status s) {
  std::lock_guard lock(mu_);
  if (failed_) return;
  failed_ = true;
  std::fprintf(stderr, "error: %s\n", s.message().c_str());  // loud at once: the caller may sync much later
  error_ = std::move(s);
}

bool SimBackend::inside(const void* base, const void* p, size_t bytes) const {
  const auto *b = static_cast<const uint8_t*>(base), *q = static_cast<const uint8_t*>(p);
  if (b < arena_ || b >= arena_ + options_.budget_bytes || q < b) return false;
  auto it = live_.upper_bound(size_t(b - arena_));
  if (it == live_.begin()) return false;
  --it;
  return size_t(q - arena_) + bytes <= it->first + it->second;
}

void SimBackend::submit(const char* op, std::initializer_list<Arg> args, std::function<void()> fn) {
  std::unique_lock lock(mu_);
  if (failed_) return;
  for (const Arg& a : args) {
    if (a.p == nullptr || inside(a.p, a.p, a.bytes)) continue;
    lock.unlock();
    fail(invalid_argument("%s: %s: %s (%p, %zu bytes) is not memory of this device: a host pointer or another "
                          "device's, or past the end of its buffer (a missing copy?)",
                          options_.name.c_str(), op, a.what, a.p, a.bytes));
    return;
  }
  ++stats_.n_ops;
  ++n_pending_;
  queue_.push_back({std::move(fn), false});
  lock.unlock();
  work_cv_.notify_one();
}

Result<void*> SimBackend::alloc(size_t bytes) {
  const size_t need = round_up(std::max<size_t>(bytes, 1));
  std::lock_guard lock(mu_);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < need) continue;
    const size_t off = it->first, left = it->second - need;
    free_.erase(it);
    if (left) free_[off + need] = left;
    live_[off] = need;
    stats_.bytes_in_use += need;
    stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.bytes_in_use);
    return static_cast<void*>(arena_ + off);
  }
  return out_of_memory("%s: cannot allocate %.1f MiB: %.1f of its %.1f MiB are in use", options_.name.c_str(),
                       mib(bytes), mib(stats_.bytes_in_use), mib(options_.budget_bytes));
}

void SimBackend::drain() {
  std::unique_lock lock(mu_);
  idle_cv_.wait(lock, [&] { return n_pending_ == 0; });
}

void SimBackend::free(void* p) {
  if (!p) return;
  drain();
  std::lock_guard lock(mu_);
  const auto* b = static_cast<const uint8_t*>(p);
  auto it = b >= arena_ ? live_.find(size_t(b - arena_)) : live_.end();
  if (it == live_.end()) {
    std::fprintf(stderr, "error: %s: free(%p): not an allocation of this device\n", options_.name.c_str(), p);
    std::abort();  // a double free or a foreign pointer: a programmer error, as in CONVENTIONS.md
  }
  size_t off = it->first, bytes = it->second;
  live_.erase(it);
  stats_.bytes_in_use -= bytes;
  // Coalesce with the free neighbours on both sides.
  auto next = free_.lower_bound(off);
  if (next != free_.end() && off + bytes == next->first) {
    bytes += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == off) {
      prev->second += bytes;
      return;
    }
  }
  free_[off] = bytes;
}

std::chrono::steady_clock::time_point SimBackend::link_done(size_t bytes) const {
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
             std::chrono::duration<double>(options_.link.latency_s + double(bytes) / options_.link.bandwidth_bytes_per_s));
}

void SimBackend::wait_link(std::chrono::steady_clock::time_point done) {
  // The last 100 us spinning (yielding): a thread woken from a sleep runs tens of microseconds late (a
  // 10 us copy took 25-60 on the 2-core Zen 4 VM), a delay no copy engine adds to a transfer.
  constexpr auto kSpin = std::chrono::microseconds(100);
  if (std::chrono::steady_clock::now() < done - kSpin) std::this_thread::sleep_until(done - kSpin);
  while (std::chrono::steady_clock::now() < done) std::this_thread::yield();
}

void SimBackend::copy_from_host(void* dst, const void* src, size_t bytes) {
  submit("copy_from_host", {{"dst", dst, bytes}}, [this, dst, src, bytes] {
    const double t0 = Trace::now_us();
    const auto done = link_done(bytes);  // the memcpy runs within the link's time, not before it
    std::memcpy(dst, src, bytes);
    wait_link(done);
    const double t1 = Trace::now_us();
    if (Trace* t = Trace::active()) t->add("host to device", link_lane_, t0, t1, bytes);
    std::lock_guard lock(mu_);
    stats_.bytes_from_host += bytes;
    ++stats_.n_copies;
    stats_.copy_seconds += (t1 - t0) * 1e-6;
  });
}

void SimBackend::copy_to_host(void* dst, const void* src, size_t bytes) {
  submit("copy_to_host", {{"src", src, bytes}}, [this, dst, src, bytes] {
    const double t0 = Trace::now_us();
    const auto done = link_done(bytes);  // the memcpy runs within the link's time, not before it
    std::memcpy(dst, src, bytes);
    wait_link(done);
    const double t1 = Trace::now_us();
    if (Trace* t = Trace::active()) t->add("device to host", link_lane_, t0, t1, bytes);
    std::lock_guard lock(mu_);
    stats_.bytes_to_host += bytes;
    ++stats_.n_copies;
    stats_.copy_seconds += (t1 - t0) * 1e-6;
  });
}

Result<const void*> SimBackend::place_weight(const void* host, size_t bytes) {
  TANDEM_ASSIGN(void* p, alloc(bytes));
  copy_from_host(p, host, bytes);
  TANDEM_TRY(synchronize());  // the host bytes (a file mapping) need not outlive the upload
  return static_cast<const void*>(p);
}

std::shared_ptr<Event> SimBackend::record() {
  auto e = std::make_shared<Event>();
  {
    std::lock_guard lock(mu_);
    ++n_pending_;
    queue_.push_back({[e] { e->signal(); }, true});
  }
  work_cv_.notify_one();
  return e;
}

void SimBackend::wait(const std::shared_ptr<Event>& e) {
  submit("wait", {}, [e] { e->wait_host(); });
}

Status SimBackend::synchronize() {
  drain();
  std::lock_guard lock(mu_);
  return error_;
}

void SimBackend::set_batch_invariant(bool on) {
  // In queue order: the ops queued before it keep the setting they were queued under.
  submit("set_batch_invariant", {}, [this, on] { cpu_->set_batch_invariant(on); });
}

void SimBackend::matmul(const Weight& w, const float* x, int64_t n_tokens, float* y, const Weight* bias) {
  const int64_t n_rows = w.n_rows(), n = w.row_length();
  submit("matmul", {{"weight", w.data, w.size_bytes}, {"x", x, f32_bytes(n_tokens * n)},
                    {"y", y, f32_bytes(n_tokens * n_rows)}, {"bias", bias ? bias->data : nullptr, f32_bytes(n_rows)}},
         [this, w, x, n_tokens, y, bias = bias ? std::optional<Weight>(*bias) : std::nullopt] {
           cpu_->matmul(w, x, n_tokens, y, bias ? &*bias : nullptr);
         });
}

void SimBackend::matmul_id(const Weight& w, const float* x, bool x_per_slot, const int32_t* ids, int64_t n_tokens,
                           int n_used, float* y) {
  const int64_t n_slots = n_tokens * n_used, n = w.row_length();
  submit("matmul_id", {{"weight", w.data, w.size_bytes}, {"x", x, f32_bytes((x_per_slot ? n_slots : n_tokens) * n)},
                       {"ids", ids, i32_bytes(n_slots)}, {"y", y, f32_bytes(n_slots * w.expert_rows())}},
         [this, w, x, x_per_slot, ids, n_tokens, n_used, y, n_slots] {
           for (int64_t i = 0; i < n_slots; ++i)  // device memory, so checked where it is read
             if (ids[i] < 0 || ids[i] >= w.n_expert()) {
               fail(invalid_argument("%s: matmul_id: expert id %d outside %s's %lld experts", options_.name.c_str(),
                                     ids[i], w.name.c_str(), (long long)w.n_expert()));
               return;
             }
           cpu_->matmul_id(w, x, x_per_slot, ids, n_tokens, n_used, y);
         });
}

void SimBackend::matmul_id_swiglu(const Weight& gate, const Weight* up, const float* x, const int32_t* ids,
                                  int64_t n_tokens, int n_used, float* y) {
  const int64_t n_slots = n_tokens * n_used, n_ff = up ? gate.expert_rows() : gate.expert_rows() / 2;
  submit("matmul_id_swiglu",
         {{"gate", gate.data, gate.size_bytes}, {"up", up ? up->data : nullptr, up ? up->size_bytes : 0},
          {"x", x, f32_bytes(n_tokens * gate.row_length())}, {"ids", ids, i32_bytes(n_slots)},
          {"y", y, f32_bytes(n_slots * n_ff)}},
         [this, gate, up = up ? std::optional<Weight>(*up) : std::nullopt, x, ids, n_tokens, n_used, y, n_slots] {
           for (int64_t i = 0; i < n_slots; ++i)  // device memory, so checked where it is read
             if (ids[i] < 0 || ids[i] >= gate.n_expert()) {
               fail(invalid_argument("%s: matmul_id_swiglu: expert id %d outside %s's %lld experts",
                                     options_.name.c_str(), ids[i], gate.name.c_str(), (long long)gate.n_expert()));
               return;
             }
           cpu_->matmul_id_swiglu(gate, up ? &*up : nullptr, x, ids, n_tokens, n_used, y);
         });
}

void SimBackend::get_rows(const Weight& table, std::span<const int32_t> ids, float* out) {
  submit("get_rows", {{"table", table.data, table.size_bytes}, {"ids", ids.data(), i32_bytes(int64_t(ids.size()))},
                      {"out", out, f32_bytes(int64_t(ids.size()) * table.row_length())}},
         [this, table, ids, out] {
           for (int32_t id : ids)  // device memory, so checked where it is read, as a kernel would
             if (id < 0 || id >= table.n_rows()) {
               fail(invalid_argument("%s: get_rows: id %d outside %s's %lld rows", options_.name.c_str(), id,
                                     table.name.c_str(), (long long)table.n_rows()));
               return;
             }
           cpu_->get_rows(table, ids, out);
         });
}

void SimBackend::rms_norm(const float* x, const Weight* weight, int64_t n_rows, int64_t n, float eps, float* y) {
  submit("rms_norm", {{"x", x, f32_bytes(n_rows * n)}, {"weight", weight ? weight->data : nullptr, f32_bytes(n)},
                      {"y", y, f32_bytes(n_rows * n)}},
         [this, x, weight = weight ? std::optional<Weight>(*weight) : std::nullopt, n_rows, n, eps, y] {
           cpu_->rms_norm(x, weight ? &*weight : nullptr, n_rows, n, eps, y);
         });
}

void SimBackend::rope(float* x, int64_t n_tokens, int n_head, int head_dim, const int32_t* pos, const RopeParams& p) {
  submit("rope", {{"x", x, f32_bytes(n_tokens * n_head * head_dim)}, {"pos", pos, i32_bytes(n_tokens)},
                  {"freq_factors", p.freq_factors, f32_bytes(p.n_rot / 2)}},
         [this, x, n_tokens, n_head, head_dim, pos, p] { cpu_->rope(x, n_tokens, n_head, head_dim, pos, p); });
}

void SimBackend::attention(const AttentionArgs& a) {
  // The last cell's row ends one row of heads past its start, whatever the stride between rows.
  auto span = [&](WeightType type, int64_t stride, int64_t row) {
    return a.n_cells > 0 ? row_bytes(type, (stride ? stride : row) * (a.n_cells - 1) + row) : 0;
  };
  const size_t k_bytes = span(a.k_type, a.k_stride, int64_t(a.n_head_kv) * a.head_dim_k);
  const size_t v_bytes = span(a.v_type, a.v_stride, int64_t(a.n_head_kv) * a.head_dim_v);
  submit("attention", {{"q", a.q, f32_bytes(a.n_tokens * a.n_head * a.head_dim_k)},
                       {"out", a.out, f32_bytes(a.n_tokens * a.n_head * a.head_dim_v)},
                       {"token_pos", a.token_pos, i32_bytes(a.n_tokens)},
                       {"token_seq", a.token_seq, i32_bytes(a.n_tokens)},
                       {"k", a.k, k_bytes},
                       {"v", a.v, v_bytes},
                       {"cell_pos", a.cell_pos, i32_bytes(a.n_cells)},
                       {"cell_seq", a.cell_seq, i32_bytes(a.n_cells)}},
         [this, a] { cpu_->attention(a); });
}

void SimBackend::kv_store(const float* k, const float* v, int64_t n_tokens, int64_t row_k, int64_t row_v,
                          const int32_t* cells, WeightType k_type, WeightType v_type, void* cache_k, void* cache_v) {
  submit("kv_store", {{"k", k, f32_bytes(n_tokens * row_k)}, {"v", v, f32_bytes(n_tokens * row_v)},
                      {"cells", cells, i32_bytes(n_tokens)}, {"cache_k", cache_k, 1}, {"cache_v", cache_v, 1}},
         [=, this] {
           const size_t k_row = row_bytes(k_type, row_k), v_row = row_bytes(v_type, row_v);
           std::unique_lock lock(mu_);
           for (int64_t t = 0; t < n_tokens; ++t)  // the cells are device data: checked where they are read
             if (cells[t] < 0 || !inside(cache_k, static_cast<uint8_t*>(cache_k) + size_t(cells[t]) * k_row, k_row) ||
                 (row_v > 0 && !inside(cache_v, static_cast<uint8_t*>(cache_v) + size_t(cells[t]) * v_row, v_row))) {
               lock.unlock();
               fail(invalid_argument("%s: kv_store: cell %d is outside the cache", options_.name.c_str(), cells[t]));
               return;
             }
           lock.unlock();
           cpu_->kv_store(k, v, n_tokens, row_k, row_v, cells, k_type, v_type, cache_k, cache_v);
         });
}

void SimBackend::swiglu(const float* gate, const float* up, int64_t n, float* out) {
  submit("swiglu", {{"gate", gate, f32_bytes(n)}, {"up", up, f32_bytes(n)}, {"out", out, f32_bytes(n)}},
         [=, this] { cpu_->swiglu(gate, up, n, out); });
}

void SimBackend::geglu(const float* gate, const float* up, int64_t n, float* out) {
  submit("geglu", {{"gate", gate, f32_bytes(n)}, {"up", up, f32_bytes(n)}, {"out", out, f32_bytes(n)}},
         [=, this] { cpu_->geglu(gate, up, n, out); });
}

void SimBackend::add(const float* a, const float* b, int64_t n, float* out) {
  submit("add", {{"a", a, f32_bytes(n)}, {"b", b, f32_bytes(n)}, {"out", out, f32_bytes(n)}},
         [=, this] { cpu_->add(a, b, n, out); });
}

void SimBackend::copy_2d(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t n_rows,
                         int64_t width) {
  const int64_t last = n_rows > 0 ? width : 0;  // the last row ends `width` past its start
  submit("copy_2d", {{"src", src, f32_bytes((n_rows - 1) * src_stride + last)},
                     {"dst", dst, f32_bytes((n_rows - 1) * dst_stride + last)}},
         [=, this] { cpu_->copy_2d(src, src_stride, dst, dst_stride, n_rows, width); });
}

void SimBackend::weighted_sum(const float* x, const float* w, int64_t n_rows, int n_terms, int64_t n, float* out) {
  submit("weighted_sum", {{"x", x, f32_bytes(n_rows * n_terms * n)}, {"w", w, f32_bytes(n_rows * n_terms)},
                          {"out", out, f32_bytes(n_rows * n)}},
         [=, this] { cpu_->weighted_sum(x, w, n_rows, n_terms, n, out); });
}

void SimBackend::hadamard(float* x, int64_t n_rows, int64_t n, int block) {
  submit("hadamard", {{"x", x, f32_bytes(n_rows * n)}}, [=, this] { cpu_->hadamard(x, n_rows, n, block); });
}

void SimBackend::scale(float* x, int64_t n, float s) {
  submit("scale", {{"x", x, f32_bytes(n)}}, [=, this] { cpu_->scale(x, n, s); });
}

void SimBackend::softcap(float* x, int64_t n, float cap) {
  submit("softcap", {{"x", x, f32_bytes(n)}}, [=, this] { cpu_->softcap(x, n, cap); });
}

}  // namespace tandem::sim
