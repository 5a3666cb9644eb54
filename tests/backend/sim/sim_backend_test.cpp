// The sim device against the CPU backend: the same ops give the same bits; its memory, budget, queue,
// pointer checks and link model behave as a GPU's would.
#include "backend/sim/sim_backend.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "backend/buffer.h"
#include "backend/cpu/cpu_backend.h"
#include "quant/quant.h"
#include "../cpu/ops_test_util.h"

namespace tandem::sim {
namespace {

using cpu::test::random_floats;

std::unique_ptr<SimBackend> make_sim(size_t budget = size_t(64) << 20, LinkModel link = {}, const char* name = "sim0") {
  SimOptions o;
  o.name = name;
  o.budget_bytes = budget;
  o.link = link;
  auto r = SimBackend::create(o);
  EXPECT_TRUE(r.has_value());
  return std::move(r.value());
}

DeviceBuffer upload(Backend& b, const std::vector<float>& host) {
  auto buf = DeviceBuffer::create(b, host.size() * sizeof(float));
  EXPECT_TRUE(buf.has_value());
  b.copy_from_host(buf->data(), host.data(), host.size() * sizeof(float));
  return std::move(buf.value());
}

std::vector<float> download(Backend& b, const DeviceBuffer& buf) {
  std::vector<float> host(buf.size_bytes() / sizeof(float));
  b.copy_to_host(host.data(), buf.data(), buf.size_bytes());
  EXPECT_TRUE(b.synchronize().is_ok());
  return host;
}

TEST(SimBackend, RefusesAnAllocationPastItsBudgetWithTheNumbers) {
  auto sim = make_sim(size_t(4) << 20);
  auto a = sim->alloc(size_t(3) << 20);
  ASSERT_TRUE(a.has_value());
  auto b = sim->alloc(size_t(2) << 20);
  ASSERT_FALSE(b.has_value());
  EXPECT_EQ(b.error().code(), StatusCode::OutOfMemory);
  EXPECT_NE(b.error().message().find("sim0: cannot allocate 2.0 MiB: 3.0 of its 4.0 MiB are in use"), std::string::npos)
      << b.error().message();
  EXPECT_EQ(sim->stats().bytes_in_use, size_t(3) << 20);
}

TEST(SimBackend, FreedMemoryCoalescesSoTheWholeBudgetCanBeTakenAgain) {
  auto sim = make_sim(size_t(1) << 20);
  std::vector<void*> ps;
  for (int i = 0; i < 4; ++i) ps.push_back(sim->alloc(size_t(256) << 10).value());
  EXPECT_FALSE(sim->alloc(1).has_value());
  for (int i : {1, 3, 0, 2}) sim->free(ps[size_t(i)]);  // out of order: both neighbours merge
  EXPECT_EQ(sim->stats().bytes_in_use, 0u);
  EXPECT_EQ(sim->stats().peak_bytes, size_t(1) << 20);
  EXPECT_TRUE(sim->alloc(size_t(1) << 20).has_value());
}

TEST(SimBackend, AnOpOnAHostPointerFailsAtSynchronizeNamingTheOpAndArgument) {
  auto sim = make_sim();
  auto x = upload(*sim, random_floats(64, 1));
  std::vector<float> host_y(64);
  sim->rms_norm(x.f32(), nullptr, 1, 64, 1e-6f, host_y.data());  // y on the host: a missing copy
  const Status s = sim->synchronize();
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("sim0: rms_norm: y"), std::string::npos) << s.message();
  // Sticky, as CUDA's errors are: later work is refused and the error stays.
  sim->scale(x.f32(), 64, 2.0f);
  EXPECT_FALSE(sim->synchronize().is_ok());
}

TEST(SimBackend, AnOpReachingPastItsBufferFails) {
  auto sim = make_sim();
  auto x = upload(*sim, random_floats(64, 1));
  sim->scale(x.f32(), 65, 2.0f);
  const Status s = sim->synchronize();
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("scale: x"), std::string::npos) << s.message();
}

TEST(SimBackend, AnotherDevicesPointerFails) {
  auto a = make_sim(size_t(8) << 20, {}, "sim0");
  auto b = make_sim(size_t(8) << 20, {}, "sim1");
  auto xa = upload(*a, random_floats(32, 2));
  b->scale(xa.f32(), 32, 2.0f);
  const Status s = b->synchronize();
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("sim1: scale: x"), std::string::npos) << s.message();
  EXPECT_TRUE(a->synchronize().is_ok());
}

TEST(SimBackend, KvStoreToACellOutsideTheCacheFails) {
  auto sim = make_sim();
  const int64_t row = 64, n_cells = 4;
  auto k = upload(*sim, random_floats(size_t(row), 3));
  auto cache_k = DeviceBuffer::create(*sim, size_t(n_cells * row) * 2).value();
  auto cache_v = DeviceBuffer::create(*sim, size_t(n_cells * row) * 2).value();
  const std::vector<int32_t> cell = {int32_t(n_cells)};  // one past the end
  auto cells = DeviceBuffer::create(*sim, sizeof(int32_t)).value();
  sim->copy_from_host(cells.data(), cell.data(), sizeof(int32_t));
  sim->kv_store(k.f32(), k.f32(), 1, row, row, static_cast<int32_t*>(cells.data()), WeightType::F16, WeightType::F16,
                cache_k.data(), cache_v.data());
  const Status s = sim->synchronize();
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("kv_store: cell 4 is outside the cache"), std::string::npos) << s.message();
}

// A weight in both homes: the CPU's in place, the sim's uploaded by place_weight.
struct TwoHomes {
  std::vector<uint8_t> bytes;
  Weight cpu, sim;
};

TwoHomes make_weight(Backend& sim, WeightType type, int64_t n_rows, int64_t n, uint32_t seed) {
  TwoHomes w;
  const auto values = random_floats(size_t(n_rows * n), seed);
  const size_t row = row_bytes(type, n);
  w.bytes.resize(row * size_t(n_rows));
  for (int64_t r = 0; r < n_rows; ++r) quant::quantize_row(type, values.data() + r * n, w.bytes.data() + size_t(r) * row, n);
  w.cpu.name = "w";
  w.cpu.type = type;
  w.cpu.shape = {n_rows, n};
  w.cpu.row_stride = row;
  w.cpu.size_bytes = w.bytes.size();
  w.cpu.data = w.bytes.data();
  w.sim = w.cpu;
  w.sim.data = sim.place_weight(w.bytes.data(), w.bytes.size()).value();
  return w;
}

// Norm, matmul, rope, KV store and attention on both backends: bit-identical (the same kernels).
TEST(SimBackend, ComputesTheSameBitsAsTheCpuBackend) {
  cpu::CpuBackend cpu(1);
  auto sim = make_sim();
  const int64_t n_tokens = 5, e = 128, n_head = 2, hd = 64, n_cells = 8;
  const auto wq = make_weight(*sim, WeightType::Q8_0, n_head * hd, e, 10);
  const auto wk = make_weight(*sim, WeightType::Q4_K, hd, 256, 11);  // one KV head; 256-wide K input below
  const auto x = random_floats(size_t(n_tokens * e), 12);
  const auto xk = random_floats(size_t(n_tokens * 256), 13);
  std::vector<int32_t> pos = {0, 1, 2, 3, 4}, seq(5, 0), cells = {0, 1, 2, 3, 4};
  std::vector<int32_t> cell_pos = {0, 1, 2, 3, 4, -1, -1, -1}, cell_seq(8, 0);
  RopeParams rope;
  rope.kind = RopeKind::Neox;
  rope.n_rot = int(hd);

  auto run = [&](Backend& b, const Weight& q_w, const Weight& k_w, bool on_device) {
    auto buf = [&](size_t bytes) { return DeviceBuffer::create(b, bytes).value(); };
    auto put = [&](const void* host, size_t bytes) {
      auto d = buf(bytes);
      b.copy_from_host(d.data(), host, bytes);
      return d;
    };
    auto dx = put(x.data(), x.size() * 4), dxk = put(xk.data(), xk.size() * 4);
    auto dpos = put(pos.data(), pos.size() * 4), dseq = put(seq.data(), seq.size() * 4);
    auto dcells = put(cells.data(), cells.size() * 4);
    auto dcell_pos = put(cell_pos.data(), cell_pos.size() * 4), dcell_seq = put(cell_seq.data(), cell_seq.size() * 4);
    auto norm = buf(x.size() * 4), q = buf(size_t(n_tokens * n_head * hd) * 4), k = buf(size_t(n_tokens * hd) * 4);
    auto cache_k = buf(size_t(n_cells * hd) * 2), cache_v = buf(size_t(n_cells * hd) * 2);
    auto out = buf(size_t(n_tokens * n_head * hd) * 4);
    b.rms_norm(dx.f32(), nullptr, n_tokens, e, 1e-6f, norm.f32());
    b.matmul(q_w, norm.f32(), n_tokens, q.f32());
    b.matmul(k_w, dxk.f32(), n_tokens, k.f32());
    b.rope(q.f32(), n_tokens, int(n_head), int(hd), static_cast<int32_t*>(dpos.data()), rope);
    b.rope(k.f32(), n_tokens, 1, int(hd), static_cast<int32_t*>(dpos.data()), rope);
    b.kv_store(k.f32(), k.f32(), n_tokens, hd, hd, static_cast<int32_t*>(dcells.data()), WeightType::F16,
               WeightType::F16, cache_k.data(), cache_v.data());
    AttentionArgs a;
    a.q = q.f32();
    a.out = out.f32();
    a.n_tokens = n_tokens;
    a.n_head = int(n_head);
    a.n_head_kv = 1;
    a.head_dim_k = a.head_dim_v = int(hd);
    a.scale = 0.125f;
    a.token_pos = static_cast<int32_t*>(dpos.data());
    a.token_seq = static_cast<int32_t*>(dseq.data());
    a.k = cache_k.data();
    a.v = cache_v.data();
    a.n_cells = n_cells;
    a.cell_pos = static_cast<int32_t*>(dcell_pos.data());
    a.cell_seq = static_cast<int32_t*>(dcell_seq.data());
    a.flash = true;
    b.attention(a);
    (void)on_device;
    return download(b, out);
  };
  const auto want = run(cpu, wq.cpu, wk.cpu, false);
  const auto got = run(*sim, wq.sim, wk.sim, true);
  ASSERT_EQ(want.size(), got.size());
  EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * 4), 0);
  EXPECT_GT(sim->stats().n_ops, 8u);
}

TEST(SimBackend, CopiesAreQueuedAndTakeTheLinksTime) {
  // 1 MB/s and 20 ms latency: 100 KB takes at least 120 ms.
  auto sim = make_sim(size_t(8) << 20, LinkModel{1e6, 0.02});
  const std::vector<float> src(25'000, 1.0f);
  auto d = DeviceBuffer::create(*sim, src.size() * 4).value();
  std::vector<float> back(src.size(), 0.0f);
  const auto t0 = std::chrono::steady_clock::now();
  sim->copy_from_host(d.data(), src.data(), src.size() * 4);
  sim->copy_to_host(back.data(), d.data(), src.size() * 4);
  const double t_call = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(sim->synchronize().is_ok());
  const double t_sync = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(t_call, 0.1);  // the calls only queue (a generous bound: 240 ms of link time is queued)
  EXPECT_GE(t_sync, 0.24);
  EXPECT_EQ(back, src);
  EXPECT_EQ(sim->stats().bytes_from_host, src.size() * 4);
  EXPECT_EQ(sim->stats().bytes_to_host, src.size() * 4);
}

TEST(SimBackend, ASynchronizeSleepsUntilTheQueueEmptiesNotOncePerOp) {
  // Woken after every op, a waiting synchronize() cost a context switch an op, and under CFS the woken
  // thread took a core from the kernels' (docs/plan.md: a sim's decode ran at 0.5-0.8x the CPU's).
  auto sim = make_sim();
  constexpr int64_t kValues = 1 << 16;  // tens of microseconds an op: the caller is asleep before the last
  const std::vector<float> host = random_floats(size_t(2 * kValues), 1);  // read by the queued upload
  const auto buf = upload(*sim, host);
  float* x = static_cast<float*>(buf.data());
  ASSERT_TRUE(sim->synchronize().is_ok());
  constexpr int kOps = 200;
  rusage before{}, after{};
  getrusage(RUSAGE_THREAD, &before);
  for (int i = 0; i < kOps; ++i) sim->swiglu(x, x, kValues, x + kValues);
  ASSERT_TRUE(sim->synchronize().is_ok());
  getrusage(RUSAGE_THREAD, &after);
  // This thread's sleeps: one, plus the odd wait for the queue's lock (before: one per op, ~190 of 200).
  EXPECT_LT(after.ru_nvcsw - before.ru_nvcsw, kOps / 4);
}

TEST(SimBackend, CopyBetweenTwoDevicesOrdersThroughAnEvent) {
  auto a = make_sim(size_t(8) << 20, LinkModel{1e9, 0.01}, "sim0");
  auto b = make_sim(size_t(8) << 20, LinkModel{1e9, 0.0}, "sim1");
  cpu::CpuBackend cpu(1);
  const auto src = random_floats(1000, 4);
  auto da = upload(*a, src);
  a->scale(da.f32(), 1000, 2.0f);  // queued on sim0: sim1 must not read da before it ran
  auto db = DeviceBuffer::create(*b, 4000).value();
  std::vector<float> staging(1000);
  copy_between(*a, da.data(), *b, db.data(), 4000, staging.data());
  std::vector<float> host(1000);
  copy_between(*b, db.data(), cpu, host.data(), 4000, nullptr);  // the host waits for sim1
  for (size_t i = 0; i < src.size(); ++i) ASSERT_EQ(host[i], src[i] * 2.0f) << i;
}

}  // namespace
}  // namespace tandem::sim
