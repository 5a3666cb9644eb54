// Portable activation quantizers, one row of n floats each. Q8_0 / Q8_K call src/quant's reference;
// Q8_1 follows ggml's quantize_row_q8_1_ref (ggml-quants.c), which has no counterpart in src/quant.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/kernel_table.h"
#include "quant/formats.h"
#include "quant/fp16.h"

namespace tandem::cpu::generic {

using namespace tandem::quant;

void quantize_act_q8_0(const float* x, void* out, int64_t n) {
  quantize_row_q8_0(x, static_cast<BlockQ8_0*>(out), n);
}

void quantize_act_q8_K(const float* x, void* out, int64_t n) {
  quantize_row_q8_K(x, static_cast<BlockQ8_K*>(out), n);
}

void quantize_act_q8_1(const float* x, void* out, int64_t n) {
  auto* y = static_cast<BlockQ8_1*>(out);
  for (int64_t i = 0; i < n / 32; ++i, x += 32) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      y[i].qs[j] = int8_t(std::round(x[j] * id));  // roundf: half away from zero, as ggml's reference
      sum += y[i].qs[j];
    }
    y[i].d = f32_to_fp16(d);
    y[i].s = f32_to_fp16(float(sum) * d);
  }
}

void quantize_act_f32(const float* x, void* out, int64_t n) { std::memcpy(out, x, size_t(n) * sizeof(float)); }

void quantize_act_f16(const float* x, void* out, int64_t n) {
  auto* h = static_cast<uint16_t*>(out);
  for (int64_t i = 0; i < n; ++i) h[i] = f32_to_fp16(x[i]);
}

void quantize_act_bf16(const float* x, void* out, int64_t n) {
  auto* h = static_cast<uint16_t*>(out);
  for (int64_t i = 0; i < n; ++i) h[i] = f32_to_bf16(x[i]);
}

}  // namespace tandem::cpu::generic
