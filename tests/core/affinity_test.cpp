// CPU-set parsing (llama.cpp's --cpu-mask / --cpu-range spellings) and the placement plan on made-up
// machines: one node, two nodes, a process bound by taskset, hyper-threads.
#include "core/affinity.h"

#include <gtest/gtest.h>

namespace tandem {
namespace {

CpuSet range(int lo, int hi) {
  CpuSet s;
  for (int c = lo; c <= hi; ++c) s.push_back(c);
  return s;
}

// n CPUs, one core each unless `smt` (then CPUs c and c + n/2 share a core, as Linux numbers them).
CpuTopology machine(int n, int n_nodes = 1, bool smt = false) {
  CpuTopology t;
  t.n_configured = n;
  t.allowed = range(0, n - 1);
  for (int c = 0; c < n; ++c) t.core_of_cpu.push_back(smt ? c % (n / 2) : c);
  for (int node = 0; node < n_nodes; ++node) t.nodes.push_back(range(node * n / n_nodes, (node + 1) * n / n_nodes - 1));
  return t;
}

TEST(CpuMask, ParsesHexWithTheRightmostDigitForCpus0To3) {
  EXPECT_EQ(parse_cpu_mask("0x3").value(), (CpuSet{0, 1}));
  EXPECT_EQ(parse_cpu_mask("f0").value(), (CpuSet{4, 5, 6, 7}));
  EXPECT_EQ(parse_cpu_mask("0X1A").value(), (CpuSet{1, 3, 4}));
  EXPECT_EQ(parse_cpu_mask("100000000").value(), (CpuSet{32}));
  EXPECT_EQ(parse_cpu_mask("000001").value(), (CpuSet{0}));
}

TEST(CpuMask, RejectsJunkAndEmptyMasks) {
  auto bad = parse_cpu_mask("0xfg");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message().find("'g' is not a hex digit"), std::string::npos) << bad.error().message();
  EXPECT_FALSE(parse_cpu_mask("").has_value());
  EXPECT_FALSE(parse_cpu_mask("0x").has_value());
  auto zero = parse_cpu_mask("0x00");
  ASSERT_FALSE(zero.has_value());
  EXPECT_NE(zero.error().message().find("selects no CPU"), std::string::npos);
  EXPECT_FALSE(parse_cpu_mask(std::string(2000, 'f')).has_value());
}

TEST(CpuRange, ParsesClosedAndOpenRanges) {
  EXPECT_EQ(parse_cpu_range("0-3", 8).value(), range(0, 3));
  EXPECT_EQ(parse_cpu_range("5-", 8).value(), range(5, 7));
  EXPECT_EQ(parse_cpu_range("-2", 8).value(), range(0, 2));
  EXPECT_EQ(parse_cpu_range("6", 8).value(), (CpuSet{6}));
  EXPECT_EQ(parse_cpu_range("7-7", 8).value(), (CpuSet{7}));
}

TEST(CpuRange, RejectsBackwardsMissingAndMalformedRanges) {
  auto backwards = parse_cpu_range("3-1", 8);
  ASSERT_FALSE(backwards.has_value());
  EXPECT_NE(backwards.error().message().find("ends before it starts"), std::string::npos);
  auto missing = parse_cpu_range("0-8", 8);
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.error().message().find("CPU 8 does not exist (this machine has CPUs 0-7)"), std::string::npos)
      << missing.error().message();
  for (const char* s : {"", "-", "a-b", "1-2-3", "0x1", " 1", "99999999"})
    EXPECT_FALSE(parse_cpu_range(s, 8).has_value()) << s;
}

TEST(CpuList, FormatsRuns) {
  EXPECT_EQ(format_cpu_list({}), "none");
  EXPECT_EQ(format_cpu_list({0}), "0");
  EXPECT_EQ(format_cpu_list({0, 1, 2, 3, 8, 10, 11}), "0-3,8,10-11");
}

TEST(Placement, DefaultsToPhysicalCoresOfTheAllowedCpusUnpinned) {
  auto t = machine(8, 1, /*smt=*/true);  // 4 cores, 2 threads each
  auto p = plan_placement({}, t).value();
  EXPECT_EQ(p.n_threads, 4);
  EXPECT_TRUE(p.thread_cpus.empty());
  EXPECT_NE(p.description.find("not pinned"), std::string::npos);
  EXPECT_NE(p.description.find("numa: 1 node"), std::string::npos);

  t.allowed = {0, 4};  // taskset -c 0,4: one core's two hyper-threads
  p = plan_placement({}, t).value();
  EXPECT_EQ(p.n_threads, 1);
  EXPECT_TRUE(p.thread_cpus.empty());
  EXPECT_NE(p.description.find("process bound to CPUs 0,4"), std::string::npos) << p.description;
}

TEST(Placement, MaskPinsEveryThreadToTheWholeMask) {
  auto p = plan_placement({.n_threads = 3, .mask = {2, 3}}, machine(8)).value();
  ASSERT_EQ(p.thread_cpus.size(), 3u);
  for (const auto& cpus : p.thread_cpus) EXPECT_EQ(cpus, (CpuSet{2, 3}));
  EXPECT_EQ(p.usable, (CpuSet{2, 3}));
  ASSERT_EQ(p.warnings.size(), 1u);  // 3 threads on 2 CPUs
  EXPECT_NE(p.warnings[0].find("3 threads on 2 CPUs"), std::string::npos);
  // Default thread count under a mask: the mask's cores.
  EXPECT_EQ(plan_placement({.mask = {2, 3, 4}}, machine(8)).value().n_threads, 3);
}

TEST(Placement, StrictGivesWorkersTheFirstCpusAndTheCallerTheNext) {
  // ggml_threadpool_new_impl: workers 1..n-1 take CPUs in order, the main thread (index 0) last.
  auto p = plan_placement({.n_threads = 3, .mask = {4, 5, 6, 7}, .strict = true}, machine(8)).value();
  EXPECT_EQ(p.thread_cpus, (std::vector<CpuSet>{{6}, {4}, {5}}));
  // Without a mask, strict takes the allowed CPUs; more threads than CPUs wrap around.
  auto t = machine(4);
  t.allowed = {1, 2};
  p = plan_placement({.n_threads = 3, .mask = {}, .strict = true}, t).value();
  EXPECT_EQ(p.thread_cpus, (std::vector<CpuSet>{{1}, {1}, {2}}));
}

TEST(Placement, RefusesCpusThatDoNotExistOrAreNotAllowed) {
  auto t = machine(4);
  auto missing = plan_placement({.mask = {1, 9}}, t);
  ASSERT_FALSE(missing.has_value());
  EXPECT_NE(missing.error().message().find("CPU 9 does not exist (this machine has CPUs 0-3)"), std::string::npos);
  t.allowed = {0, 1};
  auto outside = plan_placement({.mask = {2}}, t);
  ASSERT_FALSE(outside.has_value());
  EXPECT_NE(outside.error().message().find("CPU 2 is outside the CPUs this process may use (0-1"), std::string::npos)
      << outside.error().message();
}

TEST(Placement, NumaOnOneNodeChangesNothing) {
  for (NumaMode m : {NumaMode::Distribute, NumaMode::Isolate, NumaMode::Numactl}) {
    auto p = plan_placement({.n_threads = 0, .mask = {}, .strict = false, .numa = m}, machine(4)).value();
    EXPECT_TRUE(p.thread_cpus.empty());
    EXPECT_NE(p.description.find("numa: 1 node, so --numa"), std::string::npos) << p.description;
  }
}

TEST(Placement, NumaDistributeAlternatesNodes) {
  auto p =
      plan_placement({.n_threads = 4, .mask = {}, .strict = false, .numa = NumaMode::Distribute}, machine(8, 2)).value();
  EXPECT_EQ(p.thread_cpus, (std::vector<CpuSet>{range(0, 3), range(4, 7), range(0, 3), range(4, 7)}));
  // numactl --cpunodebind=1: node 0 has no allowed CPU, so every thread stays on node 1.
  auto t = machine(8, 2);
  t.allowed = range(4, 7);
  p = plan_placement({.n_threads = 2, .mask = {}, .strict = false, .numa = NumaMode::Distribute}, t).value();
  EXPECT_EQ(p.thread_cpus, (std::vector<CpuSet>{range(4, 7), range(4, 7)}));
}

TEST(Placement, NumaIsolateStaysOnTheStartNode) {
  auto t = machine(8, 2);
  t.start_node = 1;
  auto p = plan_placement({.n_threads = 0, .mask = {}, .strict = false, .numa = NumaMode::Isolate}, t).value();
  EXPECT_EQ(p.n_threads, 4);  // node 1's cores
  for (const auto& cpus : p.thread_cpus) EXPECT_EQ(cpus, range(4, 7));
  auto none = plan_placement({.n_threads = 0, .mask = {0}, .strict = false, .numa = NumaMode::Isolate}, t);
  EXPECT_FALSE(none.has_value());
}

TEST(Placement, NumactlKeepsTheAllowedSet) {
  auto t = machine(8, 2);
  t.allowed = range(0, 3);  // numactl --cpunodebind=0
  auto p = plan_placement({.n_threads = 0, .mask = {}, .strict = false, .numa = NumaMode::Numactl}, t).value();
  EXPECT_EQ(p.n_threads, 4);
  for (const auto& cpus : p.thread_cpus) EXPECT_EQ(cpus, range(0, 3));
}

TEST(NumaMode, ParsesLlamaCppNames) {
  EXPECT_EQ(parse_numa_mode("distribute").value(), NumaMode::Distribute);
  EXPECT_EQ(parse_numa_mode("isolate").value(), NumaMode::Isolate);
  EXPECT_EQ(parse_numa_mode("numactl").value(), NumaMode::Numactl);
  EXPECT_FALSE(parse_numa_mode("mirror").has_value());
}

TEST(CpuTopology, DetectsThisMachine) {
  const auto t = CpuTopology::detect();
  ASSERT_GE(t.n_configured, 1);
  ASSERT_FALSE(t.allowed.empty());
  EXPECT_LT(t.allowed.back(), t.n_configured);
  ASSERT_FALSE(t.nodes.empty());
  EXPECT_LT(size_t(t.start_node), t.nodes.size());
  EXPECT_GE(t.physical_cores(t.allowed), 1);
  EXPECT_LE(t.physical_cores(t.allowed), int(t.allowed.size()));
}

}  // namespace
}  // namespace tandem
