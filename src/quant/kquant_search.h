// Scale searches shared by the k-quant reference quantizers (internal to src/quant).
// Each mirrors one helper of llama.cpp's ggml-quants.c, named in its comment; float operations keep
// ggml's order so the chosen scales, and hence the blocks, are bit-identical.
#pragma once

#include <cstdint>

namespace tandem::quant {

// Symmetric scale for n values onto codes -nmax..nmax-1 (stored with +nmax in L). rmse_type 1 weighs
// by x^2 and tries 18 nearby scales for the least weighted error. Returns the scale; all-zero input
// (|x| < 1e-15) gives 0 and L = 0 (not +nmax). As make_qx_quants with qw == NULL.
float fit_symmetric_scale(int n, int nmax, const float* x, int8_t* L, int rmse_type);

// Symmetric scale for Q3_K: codes -nmax..nmax-1, refined by moving one code at a time while the
// x^2-weighted fit improves. Writes L with +nmax. As make_q3_quants with do_rmse.
float fit_q3_scale(int n, int nmax, const float* x, int8_t* L);

// Scale and min for codes 0..nmax: y = scale * L - the_min, the_min >= 0. Tries nstep+1 scales from
// (nmax + rmin) upward by rdelta, fitting scale and min by weighted least squares each time; keeps the
// least weighted squared (or absolute, use_mad) error. Laux is scratch of n. As make_qkx2_quants.
float fit_scale_min(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                    uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad);

}  // namespace tandem::quant
