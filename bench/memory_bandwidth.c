// Streaming read bandwidth (the roofline for token generation): T threads sum 1 GiB with AVX-512
// (or AVX2) loads, 5 passes. Build and run: gcc -O2 -march=native -pthread bench/memory_bandwidth.c -o /tmp/bw && /tmp/bw 2
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define kBytes (1ull << 30)
#define kPasses 5

static char* buf;
static int n_threads;

static void* sum_share(void* arg) {
  const long id = (long)arg;
  const size_t share = kBytes / (size_t)n_threads;
  static volatile long long sink;
#ifdef __AVX512F__
  __m512i acc = _mm512_setzero_si512();
  for (int pass = 0; pass < kPasses; ++pass)
    for (size_t i = (size_t)id * share; i < (size_t)(id + 1) * share; i += 64)
      acc = _mm512_add_epi64(acc, _mm512_load_si512(buf + i));
  sink = _mm512_reduce_add_epi64(acc);  // keeps the loads
#else  // AVX2 machines: two 32-byte loads per cache line
  __m256i acc = _mm256_setzero_si256();
  for (int pass = 0; pass < kPasses; ++pass)
    for (size_t i = (size_t)id * share; i < (size_t)(id + 1) * share; i += 64)
      acc = _mm256_add_epi64(acc, _mm256_add_epi64(_mm256_load_si256((const __m256i*)(buf + i)),
                                                   _mm256_load_si256((const __m256i*)(buf + i + 32))));
  sink = _mm256_extract_epi64(acc, 0) + _mm256_extract_epi64(acc, 3);
#endif
  return 0;
}

int main(int argc, char** argv) {
  n_threads = argc > 1 ? atoi(argv[1]) : 1;
  if (n_threads < 1 || n_threads > 64) return 1;
  // In 2 MiB pages where the kernel gives them (THP "madvise"), as the engine's weights are (the page cache's
  // large folios of a mapped file, the repacked copies): with 4 KiB pages TLB misses held this at 28-32 GB/s
  // on two Zen 4 threads while decode read its weights at 45.
  buf = aligned_alloc(2u << 20, kBytes);
  madvise(buf, kBytes, MADV_HUGEPAGE);
  for (size_t i = 0; i < kBytes; i += 4096) buf[i] = 1;  // fault every page in before timing
  struct timespec t0, t1;
  pthread_t threads[64];
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long i = 0; i < n_threads; ++i) pthread_create(&threads[i], 0, sum_share, (void*)i);
  for (int i = 0; i < n_threads; ++i) pthread_join(threads[i], 0);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("%d threads: %.1f GB/s read\n", n_threads, (double)kPasses * (double)kBytes / s / 1e9);
  return 0;
}
