// /proc/stat parsing and CPU shares (monitor/system.h), on texts in the kernel's format (proc(5)).
#include "monitor/system.h"

#include <gtest/gtest.h>

#include "engine/stats.h"

namespace tandem::monitor {
namespace {

TEST(ProcStat, ReadsTheAggregateCpuLine) {
  auto t = parse_proc_stat("cpu  4705 356 584 3699176 23060 0 277 5 0 0\ncpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0\n");
  ASSERT_TRUE(t.has_value()) << t.error().message();
  EXPECT_EQ(t->user, 4705u);
  EXPECT_EQ(t->idle, 3699176u);
  EXPECT_EQ(t->iowait, 23060u);
  EXPECT_EQ(t->softirq, 277u);
  EXPECT_EQ(t->steal, 5u);
  EXPECT_EQ(t->total(), 4705u + 356 + 584 + 3699176 + 23060 + 0 + 277 + 5);
}

TEST(ProcStat, OldKernelsWithoutStealParse) {
  auto t = parse_proc_stat("cpu  1 2 3 4 5 6 7\n");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->softirq, 7u);
  EXPECT_EQ(t->steal, 0u);
}

TEST(ProcStat, RejectsOtherText) {
  for (const char* text : {"", "intr 1 2 3\n", "cpu  1 2 3\n", "cpu  1 2 x 4 5 6 7\n"}) {
    auto t = parse_proc_stat(text);
    ASSERT_FALSE(t.has_value()) << text;
    EXPECT_NE(t.error().message().find("/proc/stat"), std::string::npos);
  }
}

TEST(ProcStat, ReadsThisMachine) {
  auto t = read_cpu_times();
  ASSERT_TRUE(t.has_value()) << t.error().message();
  EXPECT_GT(t->total(), 0u);
  EXPECT_GT(process_rss_bytes(), 0u);
}

TEST(CpuShares, SharesOfTheTicksBetweenTwoReadings) {
  CpuTimes a{100, 0, 50, 1000, 10, 0, 5, 0};
  CpuTimes b = a;
  // 200 ticks: 100 user, 20 system, 40 idle, 20 iowait, 20 softirq.
  b.user += 100, b.system += 20, b.idle += 40, b.iowait += 20, b.softirq += 20;
  const CpuShares s = cpu_shares(a, b);
  EXPECT_DOUBLE_EQ(s.busy, 140.0 / 200);  // user + system + softirq
  EXPECT_DOUBLE_EQ(s.softirq, 0.1);
  EXPECT_DOUBLE_EQ(s.iowait, 0.1);
  const CpuShares none = cpu_shares(b, b);
  EXPECT_EQ(none.busy, 0);
  EXPECT_EQ(cpu_shares(b, a).busy, 0);  // a reading going back gives zeros, not a wrapped count
}

TEST(Histogram, CountsAreCumulativeLikePrometheus) {
  Histogram h({0.1, 1, 10});
  for (double v : {0.05, 0.1, 0.5, 20.0}) h.observe(v);
  EXPECT_EQ(h.counts, (std::vector<uint64_t>{2, 3, 3}));
  EXPECT_EQ(h.count, 4u);
  EXPECT_DOUBLE_EQ(h.sum, 20.65);
}

}  // namespace
}  // namespace tandem::monitor
