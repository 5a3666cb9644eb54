// The CPU matmul driver: quantizes activations once, then splits weight rows across threads.
#pragma once

#include <vector>

#include "backend/backend.h"
#include "core/thread_pool.h"

namespace tandem::cpu {

// y[t, r] = sum_k W[r, k] x[t, k]; x: [n_tokens, row_length], y: [n_tokens, n_rows].
// `scratch` holds the quantized activations between calls (grown as needed).
void cpu_matmul(ThreadPool& pool, const Weight& w, const float* x, int64_t n_tokens, float* y,
                std::vector<uint8_t>& scratch);

}  // namespace tandem::cpu
