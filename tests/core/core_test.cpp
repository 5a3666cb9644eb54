// Core utilities: the thread pool's coverage and reuse, and hashing against published test vectors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <vector>

#include "core/hash.h"
#include "core/thread_pool.h"

namespace tandem {
namespace {

TEST(ThreadPool, ParallelForCoversEveryIndexOnce) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 5, 1000, 100003}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      pool.parallel_for(n, 7, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) hits[size_t(i)].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[size_t(i)].load(), 1) << "n " << n << " index " << i;
    }
  }
}

TEST(ThreadPool, RunsManyShortJobsBackToBack) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  for (int job = 0; job < 20000; ++job)
    pool.run([&](int index, int n) { sum.fetch_add(index + 1 + n * 0); });
  // Every job runs fn on both threads (indices 0 and 1) unless a worker was skipped by design;
  // at least the caller's share always runs.
  EXPECT_GE(sum.load(), 20000);
  EXPECT_LE(sum.load(), 20000 * 3);
}

TEST(Hash, MatchesPublishedDigests) {
  const std::string path = ::testing::TempDir() + "/tandem_hash_" + std::to_string(getpid());
  std::ofstream(path, std::ios::binary) << "abc";
  auto d = hash_file(path, {HashAlgorithm::Sha256, HashAlgorithm::Md5});
  ASSERT_TRUE(d.has_value()) << d.error().message();
  EXPECT_EQ((*d)[0], "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");  // FIPS 180-2
  EXPECT_EQ((*d)[1], "900150983cd24fb0d6963f7d28e17f72");                                  // RFC 1321
  EXPECT_EQ(hash_text(HashAlgorithm::Sha256, "abc"), (*d)[0]);
  EXPECT_EQ(hash_text(HashAlgorithm::Md5, "abc"), (*d)[1]);
  // Larger than one 16 MiB read chunk, so both buffers and the hand-over are used.
  {
    std::ofstream big(path, std::ios::binary);
    std::string block(1 << 20, 'a');
    for (int i = 0; i < 40; ++i) big << block;
  }
  uint64_t reported = 0;
  auto big = hash_file(path, {HashAlgorithm::Sha256}, [&](uint64_t n) { reported += n; });
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(reported, 40u << 20);
  std::remove(path.c_str());
  EXPECT_FALSE(hash_file(path, {HashAlgorithm::Sha256}).has_value());
}

}  // namespace
}  // namespace tandem
