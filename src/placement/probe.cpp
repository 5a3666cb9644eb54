// Measuring this machine (memory, matmul kernels, disk, sim links) and caching the figures as JSON.
#include "placement/probe.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernels.h"
#include "backend/sim/sim_backend.h"
#include "core/affinity.h"
#include "core/hash.h"
#include "quant/quant.h"

namespace tandem::placement {

const WeightType kProbeTypes[] = {WeightType::F32,  WeightType::F16,  WeightType::BF16, WeightType::Q8_0,
                                  WeightType::Q4_0, WeightType::Q4_1, WeightType::Q5_0, WeightType::Q5_1,
                                  WeightType::Q2_K, WeightType::Q3_K, WeightType::Q4_K, WeightType::Q5_K,
                                  WeightType::Q6_K, WeightType::IQ4_NL, WeightType::IQ4_XS};
const size_t kNumProbeTypes = sizeof(kProbeTypes) / sizeof(kProbeTypes[0]);

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  return "unknown CPU";
}

uint64_t total_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : 0;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::vector<int> thread_counts(int n) {
  std::vector<int> out;
  for (int t = 1; t < n; t *= 2) out.push_back(t);
  out.push_back(n);
  return out;
}

// The last-level cache this process's CPUs can fill: the sizes of the distinct L3 instances (sysfs cache/index3)
// their CPUs share. glibc's sysconf reports the whole package's L3 on AMD (256 MiB for an EPYC whose cores see
// 32 MiB each, even in a 2-core VM), which made the probe stream 1 GiB where 128 MiB is past any cache.
size_t last_level_cache_bytes() {
  std::vector<std::string> seen;
  size_t total = 0;
  for (int cpu : CpuTopology::detect().allowed) {
    const std::string dir = format("/sys/devices/system/cpu/cpu%d/cache/index3/", cpu);
    std::ifstream size_file(dir + "size"), shared_file(dir + "shared_cpu_list");
    std::string size, shared;
    if (!(size_file >> size) || !(shared_file >> shared)) continue;
    if (std::find(seen.begin(), seen.end(), shared) != seen.end()) continue;
    seen.push_back(shared);
    char* unit = nullptr;
    const unsigned long long n = std::strtoull(size.c_str(), &unit, 10);
    total += size_t(n) << (*unit == 'K' ? 10 : *unit == 'M' ? 20 : 0);
  }
  if (total > 0) return total;
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  return size_t(l3 > 0 ? l3 : 0);
}

// Bytes that no cache holds: four times the L3 (AMD's victim L3 keeps part of a buffer twice its size),
// at least 64 MiB, at most 1 GiB; the quick probe's too, since plan predicts decode from its figures.
size_t beyond_cache_bytes() {
  static const size_t bytes = std::clamp(last_level_cache_bytes() * 4, size_t(64) << 20, size_t(1) << 30);
  return bytes;
}

// The best time of `reps` runs of fn, after one untimed run (pages touched, tables built).
template <typename Fn>
double best_seconds(int reps, Fn&& fn) {
  fn();
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    fn();
    best = std::min(best, seconds_since(t0));
  }
  return best;
}

// The best times of `reps` runs of fa and of fb, taken in turn (after one untimed run of each): run one after the
// other, a shared machine's bandwidth moved between the two and a difference of them went negative under load.
template <typename Fa, typename Fb>
std::pair<double, double> best_seconds_in_turn(int reps, Fa&& fa, Fb&& fb) {
  fa();
  fb();
  double best_a = 1e30, best_b = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    fa();
    best_a = std::min(best_a, seconds_since(t0));
    t0 = Clock::now();
    fb();
    best_b = std::min(best_b, seconds_since(t0));
  }
  return {best_a, best_b};
}

// The routed experts' matmul as a MoE layer's prefill calls it (Backend::matmul_id: the picks grouped by
// expert, each pick's activations quantized, the results scattered back), flops per second: 128 tokens
// each picking tokens_per_expert / 8 of 16 experts at random, so each expert gets tokens_per_expert on
// average, as uniform routing would give it. A small call (4 GFLOP at most), like the dense prefill's,
// so that on a shared machine the best of a few catches a quiet moment. `data` holds rows of the type
// (probe_matmul's buffer), x 128 tokens' activations or more; y is resized to the output.
double probe_experts(cpu::CpuBackend& cpu, WeightType type, int64_t row_length, int64_t tokens_per_expert, bool quick,
                     const uint8_t* data, const float* x, std::vector<float>& y) {
  constexpr int64_t kExperts = 16, kTokens = 128;
  const int n_used = int(tokens_per_expert * kExperts / kTokens);
  const size_t row = row_bytes(type, row_length);
  // Experts of 512 rows (DeepSeek's have 1408-2048; the work items are 16-row panels either way), fewer
  // where 16 of them would not fit the buffer.
  const int64_t rows = std::min<int64_t>(512, int64_t(beyond_cache_bytes() / row / kExperts) / 16 * 16);
  Weight w;
  w.name = "probe_exps";
  w.type = type;
  w.shape = {kExperts, rows, row_length};
  w.data = const_cast<uint8_t*>(data);
  w.row_stride = row;
  w.backend = &cpu;
  w.size_bytes = row * size_t(rows * kExperts);
  std::mt19937 rng(5);
  std::vector<int32_t> ids(static_cast<size_t>(kTokens * n_used)), order(static_cast<size_t>(kExperts));
  for (int64_t t = 0; t < kTokens; ++t) {  // n_used distinct experts per token
    std::iota(order.begin(), order.end(), 0);
    for (int j = 0; j < n_used; ++j) {
      std::swap(order[size_t(j)], order[size_t(j) + rng() % size_t(kExperts - j)]);
      ids[size_t(t * n_used + j)] = order[size_t(j)];
    }
  }
  y.resize(std::max(y.size(), size_t(kTokens * n_used * rows)));
  // In the layout a model's experts have at run time (Model::repack_matrices), as probe_matmul's rates.
  const Result<size_t> packed = cpu.repack(w);
  const double seconds = best_seconds(quick ? 3 : 5, [&] { cpu.matmul_id(w, x, false, ids.data(), kTokens, n_used, y.data()); });
  if (packed.has_value() && *packed) cpu.release_repack(w);
  return 2.0 * double(rows) * double(row_length) * double(kTokens * n_used) / seconds;
}

// A row of n weights of `type` to time: x quantized (real blocks, finite scales), or for a lattice i-quant, which
// Tandem does not quantize, random codes under a scale of x's size.
void probe_row(WeightType type, const float* x, uint8_t* out, int64_t n) {
  if (quant::can_quantize(type))
    quant::quantize_row(type, x, out, n);
  else
    quant::random_lattice_row(type, 42, 0.01f, out, n);
}

// `data`: a buffer of beyond_cache_bytes() shared by every type (its pages are touched once).
MatmulRate probe_matmul(cpu::CpuBackend& cpu, WeightType type, int64_t row_length, bool quick, uint8_t* data) {
  const size_t row = row_bytes(type, row_length);
  // Decode streams the matrix from memory, as a model's weights are: a matrix well past the last-level
  // cache (a smaller one would time the cache, not decode).
  const int64_t decode_rows = int64_t(beyond_cache_bytes()) / int64_t(row);
  // Prefill at the default micro-batch: fewer tokens or rows time a less efficient kernel than a model's
  // (64 tokens x 256 rows read 169 GFLOP/s of Q5_0 where Gemma 3 270M's matrices ran at 300).
  const int64_t prefill_rows = quick ? 1024 : 2048, n_tokens = 512;
  std::vector<float> x(size_t(row_length * n_tokens)), y(size_t(std::max(decode_rows, prefill_rows * n_tokens)));
  std::mt19937 rng(42);
  std::normal_distribution<float> dist(0, 1);
  for (float& v : x) v = dist(rng);
  std::vector<uint8_t> first(row);
  probe_row(type, x.data(), first.data(), row_length);  // rows repeat it
  for (int64_t r = 0; r < decode_rows; ++r) std::memcpy(data + size_t(r) * row, first.data(), row);
  auto weight = [&](int64_t rows) {
    Weight w;
    w.name = "probe";
    w.type = type;
    w.shape = {rows, row_length};
    w.data = data;
    w.row_stride = row;
    w.backend = &cpu;
    w.size_bytes = row * size_t(rows);
    return w;
  };
  const Weight wd = weight(decode_rows), wp = weight(prefill_rows);
  const int reps = quick ? 2 : 5;
  MatmulRate m;
  m.type = type;
  m.row_length = row_length;
  // A model's matrices are small (0.1 to a few MiB): each call also pays waking the threads and the
  // streams' start from DRAM (Gemma 3 270M's 0.1-1 MiB matrices took 7-12 us more than bytes / rate).
  // Matrices of 128 rows, each read once in turn across the buffer: the time per call beyond bytes / rate.
  constexpr int64_t kSmallRows = 128;
  const int64_t n_small = decode_rows / kSmallRows;
  std::vector<Weight> small;
  for (int64_t i = 0; i < n_small; ++i) {
    small.push_back(weight(kSmallRows));
    small.back().data = data + size_t(i * kSmallRows) * row;
    small.back().size_bytes = row * size_t(kSmallRows);
  }
  // Four turns even when quick: with two, a burst of other load on the stream's turns left the small calls as fast
  // per byte and the cost at 0 (the test suite's parallel run, two cores).
  const auto [t_stream, t_calls] = best_seconds_in_turn(
      std::max(reps, 4), [&] { cpu.matmul(wd, x.data(), 1, y.data(), nullptr); },
      [&] {
        for (const Weight& w : small) cpu.matmul(w, x.data(), 1, y.data(), nullptr);
      });
  const double file_layout_bytes_per_s = double(wd.size_bytes) / t_stream, t_small = t_calls / double(n_small);
  m.decode_call_s = std::max(0.0, t_small - double(row * size_t(kSmallRows)) / file_layout_bytes_per_s);
  // The rates in the layout a model's matrices have at run time: repacked where the kernels repack the type
  // (Model::repack_matrices, on by default; AVX-512 without AMX), else the file's. wd and wp share their data,
  // which keys the backend's copy: one at a time.
  const auto repacked = [&](const Weight& w) {
    const Result<size_t> bytes = cpu.repack(w);
    return bytes.has_value() && *bytes > 0;
  };
  m.decode_bytes_per_s = file_layout_bytes_per_s;
  if (repacked(wd)) {
    m.decode_bytes_per_s =
        double(wd.size_bytes) / best_seconds(reps, [&] { cpu.matmul(wd, x.data(), 1, y.data(), nullptr); });
    cpu.release_repack(wd);
  }
  const bool prefill_packed = repacked(wp);
  m.prefill_tokens = n_tokens;
  m.prefill_flops_per_s = 2.0 * double(prefill_rows) * double(row_length) * double(n_tokens) /
                          best_seconds(quick ? 2 : 3, [&] { cpu.matmul(wp, x.data(), n_tokens, y.data(), nullptr); });
  constexpr int64_t kFewTokens = 64;
  m.prefill_few_flops_per_s = 2.0 * double(prefill_rows) * double(row_length) * double(kFewTokens) /
                              best_seconds(quick ? 2 : 3, [&] { cpu.matmul(wp, x.data(), kFewTokens, y.data(), nullptr); });
  if (prefill_packed) cpu.release_repack(wp);
  m.expert_few_flops_per_s = probe_experts(cpu, type, row_length, kExpertTokens[0], quick, data, x.data(), y);
  m.expert_flops_per_s = probe_experts(cpu, type, row_length, kExpertTokens[1], quick, data, x.data(), y);
  return m;
}

// The mean time of one call of fn over `calls` calls, best of `reps` such runs (after one untimed run).
template <typename Fn>
double per_call_seconds(int calls, int reps, Fn&& fn) {
  return best_seconds(reps, [&] {
           for (int i = 0; i < calls; ++i) fn();
         }) / calls;
}

// Attention of n_head query heads over n_head_kv KV heads; dim_v < dim_k: MLA, whose values are the
// first dim_v of each K row (no V of its own).
AttentionRate probe_attention(cpu::CpuBackend& cpu, int n_head, int n_head_kv, int dim_k, int dim_v, bool quick,
                              std::mt19937& rng) {
  constexpr int64_t kTokens = 512;
  const bool mla = dim_v != dim_k;
  std::normal_distribution<float> dist(0, 1);
  std::vector<float> row(static_cast<size_t>(n_head_kv * dim_k)), q(static_cast<size_t>(kTokens * n_head * dim_k));
  std::vector<float> out(static_cast<size_t>(kTokens * n_head * dim_v));
  for (float& e : q) e = dist(rng);
  std::vector<uint16_t> k(static_cast<size_t>(kTokens * n_head_kv * dim_k)), v(mla ? 0 : k.size());
  for (int64_t i = 0; i < kTokens; ++i) {
    for (float& e : row) e = dist(rng);
    quant::quantize_row(WeightType::F16, row.data(), k.data() + i * n_head_kv * dim_k, n_head_kv * dim_k);
    if (mla) continue;
    for (float& e : row) e = dist(rng);
    quant::quantize_row(WeightType::F16, row.data(), v.data() + i * n_head_kv * dim_k, n_head_kv * dim_k);
  }
  std::vector<int32_t> pos(static_cast<size_t>(kTokens)), seq(static_cast<size_t>(kTokens), 0);
  for (int64_t i = 0; i < kTokens; ++i) pos[size_t(i)] = int32_t(i);
  AttentionArgs a;
  a.out = out.data();
  a.n_head = n_head;
  a.n_head_kv = n_head_kv;
  a.head_dim_k = dim_k;
  a.head_dim_v = dim_v;
  a.scale = 1 / std::sqrt(float(dim_k));
  a.k = k.data();
  a.v = mla ? k.data() : v.data();
  if (mla) a.k_stride = a.v_stride = dim_k;
  a.cell_pos = pos.data();
  a.cell_seq = seq.data();
  a.token_seq = seq.data();
  a.flash = cpu::best_isa() >= cpu::Isa::Avx512;
  AttentionRate r;
  r.head_dim_k = dim_k;
  // Decode: the last of 64 cells, the depth of a short generation (bench's tg128 averages 64).
  a.q = q.data();
  a.n_tokens = 1;
  a.token_pos = pos.data() + 63;
  a.n_cells = 64;
  r.call_s = per_call_seconds(quick ? 50 : 200, quick ? 3 : 5, [&] { cpu.attention(a); });
  // Prefill: 512 tokens against themselves, causal: token i sees i + 1 cells.
  a.n_tokens = kTokens;
  a.token_pos = pos.data();
  a.n_cells = kTokens;
  const double flops = 2.0 * n_head * (dim_k + dim_v) * double(kTokens) * double(kTokens + 1) / 2;
  r.flops_per_s = flops / best_seconds(quick ? 2 : 3, [&] { cpu.attention(a); });
  return r;
}

OpCosts probe_ops(cpu::CpuBackend& cpu, bool quick) {
  OpCosts c;
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0, 1);
  // An elementwise op (SwiGLU, as a FFN's activation): its fixed cost on one token's 4096 values, and
  // its rate on a micro-batch's (512 tokens x 4096).
  {
    constexpr int64_t kWidth = 4096, kTokens = 512;
    std::vector<float> g(static_cast<size_t>(kWidth * kTokens)), u(g.size()), o(g.size());
    for (float& e : g) e = dist(rng);
    for (float& e : u) e = dist(rng);
    c.op_call_s = per_call_seconds(quick ? 200 : 1000, quick ? 3 : 5, [&] { cpu.swiglu(g.data(), u.data(), kWidth, o.data()); });
    c.elementwise_per_s = double(kWidth * kTokens) /
                          best_seconds(quick ? 2 : 5, [&] { cpu.swiglu(g.data(), u.data(), kWidth * kTokens, o.data()); });
    c.gelu_per_s = double(kWidth * kTokens) /
                   best_seconds(quick ? 2 : 5, [&] { cpu.geglu(g.data(), u.data(), kWidth * kTokens, o.data()); });
  }
  for (const auto& [n_head, n_head_kv, dim_k, dim_v] : {std::array<int, 4>{8, 2, 128, 128}, std::array<int, 4>{16, 1, 576, 512}})
    c.attention.push_back(probe_attention(cpu, n_head, n_head_kv, dim_k, dim_v, quick, rng));
  return c;
}

// The prefill shape on one thread through each level's own kernel (kernels.h matmul_f32, which also
// quantizes the activations, as the backend does once per call).
std::vector<IsaRate> probe_isa_levels(WeightType type, bool quick) {
  constexpr int64_t kRow = 4096;
  const int64_t kRows = quick ? 32 : 128, n_tokens = quick ? 16 : 64;  // the scalar kernels are slow
  const size_t row = row_bytes(type, kRow);
  std::vector<float> x(size_t(kRow * n_tokens)), y(size_t(kRows * n_tokens));
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0, 1);
  for (float& v : x) v = dist(rng);
  std::vector<uint8_t> w(row * size_t(kRows));
  probe_row(type, x.data(), w.data(), kRow);
  for (int64_t r = 1; r < kRows; ++r) std::memcpy(w.data() + size_t(r) * row, w.data(), row);
  std::vector<IsaRate> out;
  for (int i = 0; i <= int(cpu::best_isa()); ++i) {
    const auto isa = cpu::Isa(i);
    const cpu::CpuKernels& k = cpu::kernels_for(isa);
    const uint32_t id = uint32_t(type);
    if (!k.gemm[id] || k.gemm_isa[id] != isa) continue;
    const double s = best_seconds(quick ? 2 : 3, [&] {
      cpu::matmul_f32(isa, type, kRow, w.data(), row, kRows, x.data(), n_tokens, y.data(), size_t(kRows));
    });
    out.push_back({cpu::isa_name(isa), type, 2.0 * double(kRows) * double(kRow) * double(n_tokens) / s});
  }
  return out;
}

// Sequential and random 4 MiB reads of `path`, bypassing the page cache where the file system allows.
Result<DiskRate> probe_disk(const std::string& path, bool quick) {
  constexpr size_t kChunk = size_t(4) << 20;
  DiskRate d;
  d.path = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
  d.direct = fd >= 0;
  if (fd < 0) fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return io_error("--disk %s: cannot open (%s)", path.c_str(), std::strerror(errno));
  struct stat st{};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return invalid_argument("--disk %s: not a regular file (give the model file)", path.c_str());
  }
  const uint64_t n_chunks = uint64_t(st.st_size) / kChunk;
  if (n_chunks == 0) {
    ::close(fd);
    return invalid_argument("--disk %s: %lld bytes; at least 4 MiB are needed to time reads", path.c_str(),
                            (long long)st.st_size);
  }
  if (!d.direct) posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);  // drop cached pages: read from the disk
  void* raw = nullptr;
  if (posix_memalign(&raw, 4096, kChunk) != 0) {
    ::close(fd);
    return out_of_memory("--disk: 4 MiB buffer");
  }
  std::unique_ptr<void, decltype(&std::free)> buf(raw, &std::free);
  auto read_at = [&](uint64_t chunk) -> Status {
    const ssize_t n = ::pread(fd, buf.get(), kChunk, off_t(chunk * kChunk));
    if (n != ssize_t(kChunk)) return io_error("--disk %s: read at %llu failed (%s)", path.c_str(),
                                              (unsigned long long)(chunk * kChunk), n < 0 ? std::strerror(errno) : "short");
    d.bytes_read += kChunk;
    return Status::ok();
  };
  Status s = Status::ok();
  // Random reads first, over the whole file, then a sequential run from a different third of it, so
  // neither finds what the other read in a drive's or the OS's cache.
  const uint64_t n_random = std::min<uint64_t>(quick ? 4 : 64, n_chunks);
  std::mt19937_64 rng(7);
  auto t0 = Clock::now();
  for (uint64_t i = 0; i < n_random && s.is_ok(); ++i) s = read_at(rng() % n_chunks);
  d.random_bytes_per_s = double(n_random * kChunk) / seconds_since(t0);
  const uint64_t n_seq = std::min<uint64_t>(quick ? 8 : 256, n_chunks);
  const uint64_t start = n_chunks > 2 * n_seq ? n_chunks / 3 : 0;
  if (!d.direct) posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  t0 = Clock::now();
  for (uint64_t i = 0; i < n_seq && s.is_ok(); ++i) s = read_at(start + i);
  d.sequential_bytes_per_s = double(n_seq * kChunk) / seconds_since(t0);
  ::close(fd);
  if (!s.is_ok()) return s;
  return d;
}

}  // namespace

Result<SimProbe> probe_sim(size_t index, uint64_t budget, int n_threads, bool quick) {
  sim::SimOptions so{.name = "SIM" + std::to_string(index), .budget_bytes = size_t(budget), .n_threads = n_threads,
                     .link = {}};
  TANDEM_ASSIGN(auto dev, sim::SimBackend::create(so));
  const size_t big = std::min<size_t>(size_t(16) << 20, size_t(budget) / 2);
  TANDEM_ASSIGN(void* dst, dev->alloc(big));
  std::vector<uint8_t> src(big, 1);
  SimProbe p;
  p.name = so.name;
  p.memory_bytes = budget;
  Status s = Status::ok();
  // The bandwidth from the copies' own time on the device's thread: timed from the host, a loaded machine's
  // wake-ups (milliseconds under CFS) outweighed even a 64 MiB copy and it came out infinite.
  auto copy_seconds = [&](size_t bytes, int reps) {
    double best = 1e30;
    for (int i = 0; i < reps && s.is_ok(); ++i) {
      const double before = dev->stats().copy_seconds;
      dev->copy_from_host(dst, src.data(), bytes);
      s = dev->synchronize();
      best = std::min(best, dev->stats().copy_seconds - before);
    }
    return best;
  };
  const double t_big = copy_seconds(big, 3), t_small = copy_seconds(4096, 10);
  // The latency a caller sees: one copy, waited for (MoE routers wait for theirs).
  const double t_one = best_seconds(quick ? 5 : 20, [&] {
    dev->copy_from_host(dst, src.data(), 4096);
    if (s.is_ok()) s = dev->synchronize();
  });
  dev->free(dst);
  TANDEM_TRY(s);
  p.link_latency_s = t_one;
  // A sim copy never beats its link model (it sleeps the model's time); under load its spin's yields can make
  // a small copy outlast a big one, which would read as a link faster than the model.
  p.link_bytes_per_s = std::min(double(big - 4096) / std::max(t_big - t_small, 1e-9), so.link.bandwidth_bytes_per_s);
  // The hand-over: a forward pass queues a token's ops back to back and waits once, so the host thread
  // waits while they run (Gemma 3 270M: 363 ops a token, 30 us each on average). So: SwiGLU of 2^16
  // values (about that long), queued `calls` times and waited for, against the same calls of a CPU
  // backend of as many threads.
  constexpr int64_t kWidth = 1 << 16;
  const int calls = quick ? 100 : 400, reps = quick ? 3 : 5;
  std::vector<float> host(size_t(3 * kWidth), 0.5f);
  TANDEM_ASSIGN(void* buf, dev->alloc(host.size() * sizeof(float)));
  float* d = static_cast<float*>(buf);
  dev->copy_from_host(d, host.data(), host.size() * sizeof(float));
  const double t_sim = best_seconds(reps, [&] {
                         for (int i = 0; i < calls; ++i) dev->swiglu(d, d + kWidth, kWidth, d + 2 * kWidth);
                         if (s.is_ok()) s = dev->synchronize();
                       }) / calls;
  dev->free(buf);
  TANDEM_TRY(s);
  cpu::CpuBackend cpu(n_threads);
  float* h = host.data();
  const double t_cpu = per_call_seconds(calls, reps, [&] { cpu.swiglu(h, h + kWidth, kWidth, h + 2 * kWidth); });
  p.op_handover_s = std::max(0.0, t_sim - t_cpu);
  return p;
}

double measure_read_bandwidth(int n_threads, const std::vector<int>& cpus, size_t bytes_per_thread, int passes) {
  const size_t n_words = bytes_per_thread / 8;
  std::vector<std::unique_ptr<uint64_t[]>> bufs(static_cast<size_t>(n_threads));
  std::atomic<uint64_t> sink{0};
  std::atomic<int> ready{0};
  std::atomic<int> go{-1};  // the pass all threads should run; passes + 1: stop
  std::vector<double> seconds(size_t(passes), 0);
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < n_threads; ++t)
    threads.emplace_back([&, t] {
      if (!cpus.empty()) (void)set_thread_affinity(pthread_self(), {cpus[size_t(t) % cpus.size()]});
      // First touch by the pinned thread: the pages land on its node.
      bufs[size_t(t)].reset(new uint64_t[n_words]);
      std::memset(bufs[size_t(t)].get(), 1, n_words * 8);
      ++ready;
      for (int pass = 0; pass < passes; ++pass) {
        while (go.load() < pass) std::this_thread::yield();
        const uint64_t* p = bufs[size_t(t)].get();
        uint64_t acc[8] = {};
        for (size_t i = 0; i + 8 <= n_words; i += 8)
          for (int j = 0; j < 8; ++j) acc[j] += p[i + size_t(j)];
        sink += acc[0] ^ acc[1] ^ acc[2] ^ acc[3] ^ acc[4] ^ acc[5] ^ acc[6] ^ acc[7];
        ++done;
      }
    });
  while (ready.load() < n_threads) std::this_thread::yield();
  double best = 0;
  for (int pass = 0; pass < passes; ++pass) {
    const int target = (pass + 1) * n_threads;
    const auto t0 = Clock::now();
    go = pass;
    while (done.load() < target) std::this_thread::yield();
    best = std::max(best, double(bytes_per_thread) * n_threads / seconds_since(t0));
  }
  for (auto& th : threads) th.join();
  return best;
}

double Probe::read_bytes_per_s() const {
  double sum = 0;
  for (const NodeBandwidth& n : bandwidth) sum += n.bytes_per_s.empty() ? 0 : *std::max_element(n.bytes_per_s.begin(), n.bytes_per_s.end());
  return sum;
}

const MatmulRate* Probe::rate(WeightType t) const {
  const MatmulRate* best = nullptr;
  for (const MatmulRate& m : matmul)
    if (m.type == t && (!best || m.row_length > best->row_length)) best = &m;
  return best;
}

DeviceSpeed cpu_speed(const Probe& p) {
  DeviceSpeed d;
  d.bytes_per_s = p.read_bytes_per_s();
  for (const MatmulRate& m : p.matmul) {
    d.kernels[m.type].push_back({m.row_length, m.decode_bytes_per_s, m.decode_call_s, m.prefill_flops_per_s,
                                 m.prefill_few_flops_per_s, m.expert_few_flops_per_s, m.expert_flops_per_s});
    d.flops_per_s = d.flops_per_s == 0 ? m.prefill_flops_per_s : std::min(d.flops_per_s, m.prefill_flops_per_s);
  }
  for (auto& [type, rates] : d.kernels)
    std::sort(rates.begin(), rates.end(), [](const KernelRate& a, const KernelRate& b) { return a.row_length < b.row_length; });
  d.op_call_s = p.ops.op_call_s;
  d.elementwise_per_s = p.ops.elementwise_per_s;
  d.gelu_per_s = p.ops.gelu_per_s;
  d.attention = p.ops.attention;
  return d;
}

DeviceSpeed this_cpu_speed(int n_threads) {
  if (auto p = load_probe(probe_cache_path()); p && *p) return cpu_speed(**p);
  DeviceSpeed d;
  // 256 MiB in all (past the last-level cache), at least 4 MiB a thread.
  d.bytes_per_s = measure_read_bandwidth(n_threads, {}, std::max(size_t(4) << 20, (size_t(256) << 20) / size_t(n_threads)), 2);
  return d;
}

std::string hardware_description() {
  const CpuTopology topo = CpuTopology::detect();
  return format("%s, %d CPUs, %d cores, %.1f GiB, %s", cpu_model_name().c_str(), topo.n_configured,
                topo.physical_cores(topo.allowed), double(total_memory_bytes()) / double(1ull << 30),
                cpu::isa_name(cpu::best_isa()));
}

std::string hardware_hash(const std::string& description) {
  return hash_text(HashAlgorithm::Sha256, description).substr(0, 16);
}

Result<Probe> run_probe(const ProbeOptions& o, const std::function<void(const std::string&)>& progress) {
  auto say = [&](const std::string& s) {
    if (progress) progress(s);
  };
  Probe p;
  p.date = utc_now();
  p.hardware = hardware_description();
  p.hardware_hash = hardware_hash(p.hardware);
  p.quick = o.quick;
  const CpuTopology topo = CpuTopology::detect();
  // Each node's CPUs among those this process may use; one node (all of them) without NUMA.
  for (size_t node = 0; node < topo.nodes.size(); ++node) {
    std::vector<int> cpus;
    for (int c : topo.nodes[node])
      if (std::find(topo.allowed.begin(), topo.allowed.end(), c) != topo.allowed.end()) cpus.push_back(c);
    if (cpus.empty()) continue;
    NodeBandwidth nb;
    nb.node = int(node);
    const int n = int(cpus.size());
    // 1 GiB in all or more, past the last-level cache (quick: 128 MiB), at least 16 MiB (4 MiB) a thread.
    for (int t : thread_counts(n)) {
      const size_t total = o.quick ? size_t(128) << 20 : std::max(size_t(1) << 30, beyond_cache_bytes());
      const size_t per_thread = std::max(size_t(o.quick ? 4 : 16) << 20, total / size_t(t));
      say(format("memory: node %d, %d thread%s", int(node), t, t > 1 ? "s" : ""));
      nb.threads.push_back(t);
      nb.bytes_per_s.push_back(measure_read_bandwidth(t, cpus, per_thread, o.quick ? 2 : 4));
    }
    p.bandwidth.push_back(std::move(nb));
  }
  p.n_threads = topo.physical_cores(topo.allowed);  // run's and bench's default -t
  cpu::CpuBackend cpu(p.n_threads);
  std::vector<WeightType> types = o.types;
  if (types.empty()) types.assign(kProbeTypes, kProbeTypes + kNumProbeTypes);
  std::unique_ptr<uint8_t[]> weights(new uint8_t[beyond_cache_bytes()]);
  for (WeightType t : types) {
    if (!cpu::has_kernel(t) || !(quant::can_quantize(t) || quant::is_lattice_iquant(t))) continue;
    say(format("matmul: %s", type_name(t).data()));
    for (int64_t row_length : kProbeRowLengths) p.matmul.push_back(probe_matmul(cpu, t, row_length, o.quick, weights.get()));
    for (const IsaRate& r : probe_isa_levels(t, o.quick)) p.per_isa.push_back(r);
  }
  say("other ops: SwiGLU, GeGLU, attention");
  p.ops = probe_ops(cpu, o.quick);
  if (!o.disk_path.empty()) {
    say("disk: " + o.disk_path);
    TANDEM_ASSIGN(p.disk, probe_disk(o.disk_path, o.quick));
  }
  for (size_t i = 0; i < o.sim_devices.size(); ++i) {
    say(format("link: SIM%zu", i));
    TANDEM_ASSIGN(SimProbe s, probe_sim(i, o.sim_devices[i], p.n_threads, o.quick));
    p.sims.push_back(s);
  }
  return p;
}

std::string probe_cache_path() {
  if (const char* f = std::getenv("TANDEM_PROBE_FILE"); f && *f) return f;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/tandem/probe.json";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.cache/tandem/probe.json";
}

std::string probe_to_json(const Probe& p) {
  nlohmann::json j;
  j["date"] = p.date;
  j["hardware"] = p.hardware;
  j["hardware_hash"] = p.hardware_hash;
  j["quick"] = p.quick;
  j["n_threads"] = p.n_threads;
  j["bandwidth"] = nlohmann::json::array();
  for (const NodeBandwidth& n : p.bandwidth)
    j["bandwidth"].push_back({{"node", n.node}, {"threads", n.threads}, {"bytes_per_s", n.bytes_per_s}});
  j["matmul"] = nlohmann::json::array();
  for (const MatmulRate& m : p.matmul)
    j["matmul"].push_back({{"type", std::string(type_name(m.type))}, {"decode_bytes_per_s", m.decode_bytes_per_s},
                           {"prefill_flops_per_s", m.prefill_flops_per_s}, {"prefill_tokens", m.prefill_tokens},
                           {"prefill_few_flops_per_s", m.prefill_few_flops_per_s},
                           {"expert_tokens", kExpertTokens},
                           {"expert_flops_per_s", {m.expert_few_flops_per_s, m.expert_flops_per_s}},
                           {"decode_call_s", m.decode_call_s}, {"row_length", m.row_length}});
  j["ops"] = {{"op_call_s", p.ops.op_call_s}, {"elementwise_per_s", p.ops.elementwise_per_s},
              {"gelu_per_s", p.ops.gelu_per_s},
              {"attention", nlohmann::json::array()}};
  for (const AttentionRate& a : p.ops.attention)
    j["ops"]["attention"].push_back({{"head_dim_k", a.head_dim_k}, {"call_s", a.call_s}, {"flops_per_s", a.flops_per_s}});
  j["per_isa"] = nlohmann::json::array();
  for (const IsaRate& r : p.per_isa)
    j["per_isa"].push_back({{"isa", r.isa}, {"type", std::string(type_name(r.type))}, {"flops_per_s", r.flops_per_s}});
  if (p.disk)
    j["disk"] = {{"path", p.disk->path}, {"sequential_bytes_per_s", p.disk->sequential_bytes_per_s},
                 {"random_bytes_per_s", p.disk->random_bytes_per_s}, {"direct", p.disk->direct},
                 {"bytes_read", p.disk->bytes_read}};
  j["sims"] = nlohmann::json::array();
  for (const SimProbe& s : p.sims)
    j["sims"].push_back({{"name", s.name}, {"memory_bytes", s.memory_bytes}, {"link_bytes_per_s", s.link_bytes_per_s},
                         {"link_latency_s", s.link_latency_s}, {"op_handover_s", s.op_handover_s}});
  return j.dump(2);
}

Status save_probe(const Probe& p, const std::string& path) {
  // mkdir -p of the parent folders.
  for (size_t slash = path.find('/', 1); slash != std::string::npos; slash = path.find('/', slash + 1))
    if (::mkdir(path.substr(0, slash).c_str(), 0755) != 0 && errno != EEXIST)
      return io_error("%s: cannot create the folder (%s)", path.substr(0, slash).c_str(), std::strerror(errno));
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << probe_to_json(p) << "\n";
    if (!out) return io_error("%s: cannot write", tmp.c_str());
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return io_error("%s: cannot write (%s)", path.c_str(), std::strerror(errno));
  return Status::ok();
}

Result<std::optional<Probe>> load_probe(const std::string& path, std::string* why) {
  std::ifstream in(path);
  if (!in) {
    if (why) *why = "no probe at " + path + " (run tandem probe)";
    return std::optional<Probe>();
  }
  std::stringstream ss;
  ss << in.rdbuf();
  Probe p;
  try {
    const auto j = nlohmann::json::parse(ss.str());
    p.date = j.at("date").get<std::string>();
    p.hardware = j.at("hardware").get<std::string>();
    p.hardware_hash = j.at("hardware_hash").get<std::string>();
    p.quick = j.value("quick", false);
    p.n_threads = j.value("n_threads", 0);
    for (const auto& n : j.at("bandwidth"))
      p.bandwidth.push_back({n.at("node").get<int>(), n.at("threads").get<std::vector<int>>(),
                             n.at("bytes_per_s").get<std::vector<double>>()});
    for (const auto& m : j.at("matmul")) {
      const auto t = parse_weight_type(m.at("type").get<std::string>());
      if (!t) return corrupt("%s: unknown weight type '%s'", path.c_str(), m.at("type").get<std::string>().c_str());
      MatmulRate r{*t, m.at("decode_bytes_per_s").get<double>(), m.at("prefill_flops_per_s").get<double>(),
                   m.at("prefill_tokens").get<int64_t>(), m.value("prefill_few_flops_per_s", 0.0),
                   m.value("decode_call_s", 0.0), m.value("row_length", int64_t(4096))};
      // Expert figures at other token counts (another version's) are left out: predict interpolates by these.
      if (m.value("expert_tokens", std::vector<int64_t>()) == std::vector<int64_t>(std::begin(kExpertTokens), std::end(kExpertTokens))) {
        const auto e = m.at("expert_flops_per_s").get<std::vector<double>>();
        if (e.size() == 2) r.expert_few_flops_per_s = e[0], r.expert_flops_per_s = e[1];
      }
      p.matmul.push_back(r);
    }
    if (j.contains("ops")) {
      p.ops.op_call_s = j["ops"].at("op_call_s").get<double>();
      p.ops.elementwise_per_s = j["ops"].at("elementwise_per_s").get<double>();
      p.ops.gelu_per_s = j["ops"].value("gelu_per_s", 0.0);  // probes before it priced GeGLU as SwiGLU
      for (const auto& a : j["ops"].at("attention"))
        p.ops.attention.push_back({a.at("head_dim_k").get<int64_t>(), a.at("call_s").get<double>(),
                                   a.at("flops_per_s").get<double>()});
    }
    for (const auto& r : j.value("per_isa", nlohmann::json::array())) {
      const auto t = parse_weight_type(r.at("type").get<std::string>());
      if (!t) return corrupt("%s: unknown weight type '%s'", path.c_str(), r.at("type").get<std::string>().c_str());
      p.per_isa.push_back({r.at("isa").get<std::string>(), *t, r.at("flops_per_s").get<double>()});
    }
    if (j.contains("disk"))
      p.disk = DiskRate{j["disk"].at("path").get<std::string>(), j["disk"].at("sequential_bytes_per_s").get<double>(),
                        j["disk"].at("random_bytes_per_s").get<double>(), j["disk"].at("direct").get<bool>(),
                        j["disk"].at("bytes_read").get<uint64_t>()};
    for (const auto& s : j.at("sims"))
      p.sims.push_back({s.at("name").get<std::string>(), s.at("memory_bytes").get<uint64_t>(),
                        s.at("link_bytes_per_s").get<double>(), s.at("link_latency_s").get<double>(),
                        s.value("op_handover_s", -1.0)});
  } catch (const std::exception& e) {
    return corrupt("%s: not a probe file (%s); delete it or run tandem probe again", path.c_str(), e.what());
  }
  const std::string here = hardware_description();
  if (p.hardware_hash != hardware_hash(here)) {
    if (why) *why = format("the probe at %s was made on other hardware (%s; this is %s): run tandem probe again",
                           path.c_str(), p.hardware.c_str(), here.c_str());
    return std::optional<Probe>();
  }
  return std::optional<Probe>(std::move(p));
}

std::string format_probe(const Probe& p) {
  std::string out = format("probe of %s\n  hardware %s (hash %s)%s\n", p.date.c_str(), p.hardware.c_str(),
                           p.hardware_hash.c_str(), p.quick ? ", quick (small buffers)" : "");
  out += "memory read bandwidth (GB/s by threads):\n";
  for (const NodeBandwidth& n : p.bandwidth) {
    out += format("  node %d:", n.node);
    for (size_t i = 0; i < n.threads.size(); ++i) out += format("  %d: %.1f", n.threads[i], n.bytes_per_s[i] / 1e9);
    out += "\n";
  }
  out += format("matmul, %d threads:  %-8s %5s %22s %12s %24s %30s\n", p.n_threads, "type", "row", "decode (GB/s weights)",
                "+ us a call", "prefill (GFLOP/s)", "experts (GFLOP/s), per expert");
  for (const MatmulRate& m : p.matmul)
    out += format("                     %-8s %5lld %22.1f %12.1f %11.1f @ 64 %6.1f @ %lld %15.1f @ %lld %6.1f @ %lld\n",
                  type_name(m.type).data(), (long long)m.row_length, m.decode_bytes_per_s / 1e9, m.decode_call_s * 1e6,
                  m.prefill_few_flops_per_s / 1e9, m.prefill_flops_per_s / 1e9, (long long)m.prefill_tokens,
                  m.expert_few_flops_per_s / 1e9, (long long)kExpertTokens[0], m.expert_flops_per_s / 1e9,
                  (long long)kExpertTokens[1]);
  out += format("other ops: SwiGLU %.1f us a call, %.2f G values/s; GeGLU %.2f G values/s\n", p.ops.op_call_s * 1e6,
                p.ops.elementwise_per_s / 1e9, p.ops.gelu_per_s / 1e9);
  for (const AttentionRate& a : p.ops.attention)
    out += format("           attention, heads of %lld: %.1f us a call, %.1f GFLOP/s at 512 tokens\n",
                  (long long)a.head_dim_k, a.call_s * 1e6, a.flops_per_s / 1e9);
  if (!p.per_isa.empty()) {
    out += "prefill kernels by ISA level, one thread (GFLOP/s):\n";
    for (const MatmulRate& m : p.matmul) {
      if (&m != p.rate(m.type)) continue;  // a line per type
      std::string line;
      for (const IsaRate& r : p.per_isa)
        if (r.type == m.type) line += format("  %s %.1f", r.isa.c_str(), r.flops_per_s / 1e9);
      if (!line.empty()) out += format("  %-8s%s\n", type_name(m.type).data(), line.c_str());
    }
  }
  if (p.disk)
    out += format("disk: %s: sequential %.2f GB/s, 4 MiB random %.2f GB/s (%s, %.0f MiB read)\n", p.disk->path.c_str(),
                  p.disk->sequential_bytes_per_s / 1e9, p.disk->random_bytes_per_s / 1e9,
                  p.disk->direct ? "O_DIRECT" : "page cache dropped first", double(p.disk->bytes_read) / 1048576.0);
  for (const SimProbe& s : p.sims)
    out += format("%s: %.1f MiB, link %.1f GB/s, %.1f us per copy%s\n", s.name.c_str(), double(s.memory_bytes) / 1048576.0,
                  s.link_bytes_per_s / 1e9, s.link_latency_s * 1e6,
                  s.op_handover_s >= 0 ? format("; %.2f us per op queued", s.op_handover_s * 1e6).c_str() : "");
  return out;
}

}  // namespace tandem::placement
