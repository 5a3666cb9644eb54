// RMS norm and RoPE (normal, NeoX, YaRN, per-pair frequency factors). Both mirror the CPU backend's
// arithmetic (cpu_backend.cpp): the squares summed in double as ggml does, and theta iterated pair by
// pair (theta *= theta_scale in float) rather than powf, so angles match the CPU's bits before cos/sin.
#include <algorithm>
#include <cmath>

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.h"

namespace tandem::cuda {
namespace {

constexpr int kNormThreads = 256;

// A block per row.
__global__ void rms_norm_kernel(const float* x, const float* w, int64_t n, float eps, float* y) {
  __shared__ double partial[kWarp];
  const float* xr = x + int64_t(blockIdx.x) * n;
  float* yr = y + int64_t(blockIdx.x) * n;
  double sum = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum += double(xr[i] * xr[i]);
  sum = block_sum(sum, partial);
  const float s = 1.0f / sqrtf(float(sum / double(n)) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = w ? (xr[i] * s) * w[i] : xr[i] * s;
}

struct RopeArgs {
  int n_head, head_dim, n_dims;
  bool neox;
  float theta_scale, freq_scale, ext_factor, attn_factor, corr_low, corr_high;
  const float* freq_factors;
};

// A thread per (token, head, pair).
__global__ void rope_kernel(float* x, int64_t n_tokens, const int32_t* pos, RopeArgs a) {
  const int half = a.n_dims / 2;
  const int64_t n = n_tokens * a.n_head * half;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < n; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t th = idx / half;  // token * n_head + head
    const int i = int(idx % half), i0 = 2 * i;
    float theta_extrap = float(pos[th / a.n_head]);
    for (int k = 0; k < i; ++k) theta_extrap *= a.theta_scale;
    const float ff = a.freq_factors ? a.freq_factors[i] : 1.0f;
    const float te = theta_extrap / ff;
    float theta = a.freq_scale * te;
    float mscale = a.attn_factor;
    if (a.ext_factor != 0) {
      const float y = (float(i0 / 2) - a.corr_low) / fmaxf(0.001f, a.corr_high - a.corr_low);
      const float mix = (1 - fminf(1.0f, fmaxf(0.0f, y))) * a.ext_factor;
      theta = theta * (1 - mix) + te * mix;
      mscale *= 1.0f + 0.1f * logf(1.0f / a.freq_scale);
    }
    const float c = cosf(theta) * mscale, s = sinf(theta) * mscale;
    float* v = x + th * a.head_dim;
    const int ia = a.neox ? i : i0, ib = a.neox ? i + half : i0 + 1;
    const float x0 = v[ia], x1 = v[ib];
    v[ia] = x0 * c - x1 * s;
    v[ib] = x0 * s + x1 * c;
  }
}

}  // namespace

void launch_rms_norm(cudaStream_t s, const float* x, const float* w, int64_t n_rows, int64_t n, float eps, float* y) {
  if (n_rows > 0) rms_norm_kernel<<<unsigned(n_rows), kNormThreads, 0, s>>>(x, w, n, eps, y);
}

void launch_rope(cudaStream_t s, float* x, int64_t n_tokens, int n_head, int head_dim, const int32_t* pos,
                 const RopeParams& p) {
  RopeArgs a{};
  a.n_head = n_head;
  a.head_dim = head_dim;
  a.n_dims = p.n_rot;
  a.neox = p.kind == RopeKind::Neox;
  a.theta_scale = std::pow(p.freq_base, -2.0f / float(p.n_rot));
  a.freq_scale = p.freq_scale;
  a.ext_factor = p.ext_factor;
  a.attn_factor = p.attn_factor;
  a.freq_factors = p.freq_factors;
  if (p.ext_factor != 0) {  // YaRN's correction range, as ggml_rope_yarn_corr_dims (and the CPU's yarn_corr_dims)
    auto corr_dim = [&](float n_rot) {
      return float(p.n_rot) * std::log(float(p.n_ctx_orig) / (n_rot * 2 * float(M_PI))) / (2 * std::log(p.freq_base));
    };
    a.corr_low = std::max(0.0f, std::floor(corr_dim(p.beta_fast)));
    a.corr_high = std::min(float(p.n_rot - 1), std::ceil(corr_dim(p.beta_slow)));
  }
  const int64_t n = n_tokens * n_head * (p.n_rot / 2);
  if (n > 0) rope_kernel<<<grid_for(n, 256), 256, 0, s>>>(x, n_tokens, pos, a);
}

}  // namespace tandem::cuda
