// ProgressBar on a pipe or file (as under ctest): what a log gets.
#include "core/progress.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <string>

namespace tandem {
namespace {

TEST(ProgressBar, QuickWorkLeavesItsFinalLineOnlyInALog) {
  if (isatty(STDERR_FILENO)) GTEST_SKIP() << "stderr is a terminal: the bar redraws in place";
  testing::internal::CaptureStderr();
  {
    ProgressBar bar("hash", 1000);
    for (int i = 0; i < 100; ++i) bar.add(10);
  }
  const std::string out = testing::internal::GetCapturedStderr();
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_NE(out.find("100%"), std::string::npos) << out;
  EXPECT_NE(out.find("1.00 kB / 1.00 kB"), std::string::npos) << out;
}

TEST(ProgressBar, NoRateBeforeThereIsOneToSay) {
  if (isatty(STDERR_FILENO)) GTEST_SKIP() << "stderr is a terminal";
  testing::internal::CaptureStderr();
  ProgressBar("load", 10).finish();  // done at once
  const std::string out = testing::internal::GetCapturedStderr();
  EXPECT_EQ(out.find("GB/s"), std::string::npos) << out;
}

}  // namespace
}  // namespace tandem
