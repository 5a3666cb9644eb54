// cpu_matmul: reference path (dequantize a block of rows, f32 dots) until the kernel table is wired.
#include "backend/cpu/cpu_matmul.h"

#include "quant/quant.h"

namespace tandem::cpu {

void cpu_matmul(ThreadPool& pool, const Weight& w, const float* x, int64_t n_tokens, float* y,
                std::vector<uint8_t>& scratch) {
  (void)scratch;
  const int64_t n = w.row_length(), n_rows = w.n_rows();
  const auto* base = static_cast<const uint8_t*>(w.data);
  pool.parallel_for(n_rows, 8, [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(n));
    for (int64_t r = begin; r < end; ++r) {
      quant::dequantize_row(w.type, base + size_t(r) * w.row_stride, row.data(), n);
      for (int64_t t = 0; t < n_tokens; ++t) {
        const float* xt = x + t * n;
        float sum = 0;
        for (int64_t k = 0; k < n; ++k) sum += row[size_t(k)] * xt[k];
        y[t * n_rows + r] = sum;
      }
    }
  });
}

}  // namespace tandem::cpu
