// Attention on the CPU: the plain path (ggml's non-flash roundings) and flash attention, over every
// KV cache type, at every ISA level this host has, against a double-precision reference.
//
// Tolerances, and why:
// - kv_to_f32: bit-exact with quant::dequantize_row, except Q4_1/Q5_1 (d*q + m may fuse into one
//   FMA in the vector code: |diff| <= 2^-22 (|d*q| + |m|)).
// - plain attention: the reference keeps ggml's roundings (q as the activation of K's type;
//   probabilities through f16 for an f16 V) and does the rest in double. |out - ref| <= 2e-3 * max_j
//   p_j * max|v| + 1e-5 * sum_j p_j |v_j|: the first term is a rare 1-ulp f16 flip of one probability
//   (the float score differs from double by summation order), the second float accumulation.
// - flash attention: q rounded as in the plain path, no rounding of probabilities. |out - ref| <= 2e-5 * sum_j p_j |v_j| + 1e-6 * max|v|: float scores, expf within
//   2 ulp, float accumulation with online rescaling.
// - flash vs plain on the same cache: within the sum of both bounds (checked through the reference).
// Masked cells hold V = 1000, so a cell that leaks through the masks (sequence, future, sliding
// window, empty) is off by orders of magnitude.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/ops.h"
#include "ops_test_util.h"
#include "quant/fp16.h"
#include "quant/quant.h"

namespace tandem::cpu {
namespace {

using test::isas;
using test::random_floats;

const WeightType kKvTypes[] = {WeightType::F32,  WeightType::F16,  WeightType::BF16, WeightType::Q8_0, WeightType::Q4_0,
                               WeightType::Q4_1, WeightType::Q5_0, WeightType::Q5_1, WeightType::IQ4_NL};

// Rows of n floats encoded in `type` (bytes) and decoded back (what the cache holds).
void encode_rows(WeightType type, const std::vector<float>& x, int64_t n, std::vector<uint8_t>* bytes,
                 std::vector<float>* decoded) {
  const int64_t rows = int64_t(x.size()) / n;
  const size_t rb = row_bytes(type, n);
  bytes->assign(rb * size_t(rows), 0);
  decoded->resize(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    quant::quantize_row(type, x.data() + r * n, bytes->data() + size_t(r) * rb, n);
    quant::dequantize_row(type, bytes->data() + size_t(r) * rb, decoded->data() + r * n, n);
  }
}

// q as the K dot product reads it: through f16 / bf16 / Q8_0 by K's type (ggml's matmul activation in
// the plain path, and what ggml's flash path does outside its tiled f16 prefill).
std::vector<float> rounded_q(WeightType k_type, const float* q, int dk) {
  std::vector<float> out(q, q + dk);
  if (k_type == WeightType::F32) return out;
  const WeightType via = k_type == WeightType::F16 || k_type == WeightType::BF16 ? k_type : WeightType::Q8_0;
  std::vector<uint8_t> tmp(row_bytes(via, dk));
  quant::quantize_row(via, q, tmp.data(), dk);
  quant::dequantize_row(via, tmp.data(), out.data(), dk);
  return out;
}

// A KV cache and a batch for attention, with masked cells holding V = 1000.
struct AttnProblem {
  int n_head = 0, n_head_kv = 0, dk = 0, dv = 0, window = 0;
  float softcap = 0;
  int64_t n_cells = 0;
  std::vector<int32_t> cell_pos, cell_seq, token_pos, token_seq;
  std::vector<float> kf, vf;  // values before encoding [n_cells, n_head_kv * d]
  std::vector<float> q;       // [n_tokens, n_head, dk]
  WeightType k_type = WeightType::F16, v_type = WeightType::F16;
  std::vector<uint8_t> k, v;  // the cache
  std::vector<float> kd, vd;  // what the cache holds, decoded

  void encode(WeightType kt, WeightType vt) {
    k_type = kt;
    v_type = vt;
    encode_rows(kt, kf, int64_t(n_head_kv) * dk, &k, &kd);
    encode_rows(vt, vf, int64_t(n_head_kv) * dv, &v, &vd);
  }
};

AttnProblem make_attn(int n_head, int n_head_kv, int dk, int dv, int window, float softcap, int64_t n_cells,
                      const std::vector<int32_t>& tpos, const std::vector<int32_t>& tseq, uint32_t seed) {
  AttnProblem a;
  a.n_head = n_head;
  a.n_head_kv = n_head_kv;
  a.dk = dk;
  a.dv = dv;
  a.window = window;
  a.softcap = softcap;
  a.n_cells = n_cells;
  a.token_pos = tpos;
  a.token_seq = tseq;
  std::mt19937 rng(seed);
  // Two sequences interleaved over the cells, positions from 5000 on, a few empty cells.
  int32_t next[2] = {5000, 5000};
  for (int64_t c = 0; c < n_cells; ++c) {
    const int s = int(rng() % 2);
    if (rng() % 17 == 0) {
      a.cell_pos.push_back(-1);
      a.cell_seq.push_back(-1);
      continue;
    }
    a.cell_pos.push_back(next[s]++);
    a.cell_seq.push_back(s);
  }
  a.kf = random_floats(size_t(n_cells * n_head_kv * dk), seed + 1);
  a.vf = random_floats(size_t(n_cells * n_head_kv * dv), seed + 2);
  a.q = random_floats(tpos.size() * size_t(n_head * dk), seed + 3, 0.5f);
  a.encode(WeightType::F16, WeightType::F16);
  return a;
}

bool visible(const AttnProblem& a, int64_t c, int32_t p, int32_t s) {
  const int32_t cp = a.cell_pos[size_t(c)];
  if (cp < 0 || a.cell_seq[size_t(c)] != s || cp > p) return false;
  return !(a.window > 0 && p - cp >= a.window);
}

void poison_masked(AttnProblem& a) {
  for (int64_t c = 0; c < a.n_cells; ++c) {
    bool any = false;
    for (size_t t = 0; t < a.token_pos.size(); ++t) any |= visible(a, c, a.token_pos[t], a.token_seq[t]);
    if (!any)
      for (int64_t i = 0; i < int64_t(a.n_head_kv) * a.dv; ++i) a.vf[size_t(c * a.n_head_kv * a.dv + i)] = 1000.0f;
  }
  a.encode(a.k_type, a.v_type);
}

// Checks out ([n_tokens, n_head, dv]) against the reference for every token and head.
void check_attention(const AttnProblem& a, float scale, const std::vector<float>& out, bool flash, const char* what) {
  const int group = a.n_head / a.n_head_kv;
  const int64_t rk = int64_t(a.n_head_kv) * a.dk, rv = int64_t(a.n_head_kv) * a.dv;
  const bool round_p = !flash && (a.v_type == WeightType::F16 || a.v_type == WeightType::BF16);
  for (size_t t = 0; t < a.token_pos.size(); ++t) {
    for (int h = 0; h < a.n_head; ++h) {
      const int g = h / group;
      std::vector<int64_t> cells;
      for (int64_t c = 0; c < a.n_cells; ++c)
        if (visible(a, c, a.token_pos[t], a.token_seq[t])) cells.push_back(c);
      std::vector<double> s(cells.size());
      const std::vector<float> q =
          rounded_q(a.k_type, a.q.data() + (t * size_t(a.n_head) + size_t(h)) * size_t(a.dk), a.dk);
      for (size_t j = 0; j < cells.size(); ++j) {
        double dot = 0;
        for (int i = 0; i < a.dk; ++i) dot += double(q[size_t(i)]) * a.kd[size_t(cells[j] * rk + g * a.dk + i)];
        s[j] = dot * scale;
        if (a.softcap > 0) s[j] = a.softcap * std::tanh(s[j] / a.softcap);
      }
      const double mx = cells.empty() ? 0 : *std::max_element(s.begin(), s.end());
      double sum = 0;
      for (double& x : s) sum += (x = std::exp(x - mx));
      double pmax = 0;
      std::vector<double> p(cells.size());
      for (size_t j = 0; j < cells.size(); ++j) {
        p[j] = s[j] / sum;
        if (round_p)
          p[j] = a.v_type == WeightType::F16 ? quant::fp16_to_f32(quant::f32_to_fp16(float(p[j])))
                                             : quant::bf16_to_f32(quant::f32_to_bf16(float(p[j])));
        pmax = std::max(pmax, p[j]);
      }
      for (int i = 0; i < a.dv; ++i) {
        double ref = 0, mag = 0, vmax = 0;
        for (size_t j = 0; j < cells.size(); ++j) {
          const double vv = a.vd[size_t(cells[j] * rv + g * a.dv + i)];
          ref += p[j] * vv;
          mag += p[j] * std::fabs(vv);
          vmax = std::max(vmax, std::fabs(vv));
        }
        const float got = out[(t * size_t(a.n_head) + size_t(h)) * size_t(a.dv) + size_t(i)];
        const double tol = flash ? 2e-5 * mag + 1e-6 * vmax + 1e-7
                                 : (a.v_type == WeightType::BF16 ? 1.6e-2 : 2e-3) * pmax * vmax + 1e-5 * mag + 1e-7;
        ASSERT_NEAR(got, ref, tol) << what << " K " << type_name(a.k_type) << " V " << type_name(a.v_type) << " token "
                                   << t << " head " << h << " dim " << i << " dk " << a.dk << " cells " << cells.size();
      }
    }
  }
}

TEST(Attention, KvToF32MatchesDequantize) {
  for (Isa isa : isas()) {
    for (WeightType type : kKvTypes) {
      for (int64_t n : {32, 64, 256, 96}) {
        auto x = random_floats(size_t(n), uint32_t(n) + uint32_t(type), 2.0f);
        x[3] = 0;
        std::vector<uint8_t> bytes;
        std::vector<float> ref;
        encode_rows(type, x, n, &bytes, &ref);
        std::vector<float> got(size_t(n), -1.0f);
        ops_for(isa).kv_to_f32(type, bytes.data(), got.data(), n);
        const bool fused = type == WeightType::Q4_1 || type == WeightType::Q5_1;
        for (int64_t i = 0; i < n; ++i) {
          if (!fused) {
            ASSERT_EQ(got[size_t(i)], ref[size_t(i)]) << isa_name(isa) << " " << type_name(type) << " i " << i;
          } else {
            // d and m are the block's first halves; |d*q| + |m| bounds both roundings.
            uint16_t hd, hm;
            const size_t rb = row_bytes(type, 32);
            std::memcpy(&hd, bytes.data() + size_t(i / 32) * rb, 2);
            std::memcpy(&hm, bytes.data() + size_t(i / 32) * rb + 2, 2);
            const double m = quant::fp16_to_f32(hm), bound = std::fabs(double(ref[size_t(i)]) - m) + std::fabs(m);
            ASSERT_NEAR(got[size_t(i)], ref[size_t(i)], 0x1p-22 * bound) << isa_name(isa) << " " << type_name(type);
          }
        }
      }
    }
  }
}

TEST(Attention, PlainKernelsF16) {
  // The table entries directly, n_q 1..6 query heads per task (the 4-head tiles and the rest).
  for (Isa isa : isas()) {
    for (int d : {64, 128, 256, 80}) {
      for (int nq : {1, 2, 3, 4, 5, 6}) {
        AttnProblem a = make_attn(nq, 1, d, d, 0, nq == 3 ? 30.0f : 0.0f, 333, {5100}, {0}, uint32_t(d * 10 + nq));
        std::vector<int32_t> cells;
        for (int64_t c = 0; c < a.n_cells; ++c)
          if (visible(a, c, 5100, 0)) cells.push_back(int32_t(c));
        std::vector<float> out(size_t(nq * d), -1.0f), scratch(size_t(nq * (d + cells.size()) + 2 * d + 16));
        AttnTask t;
        t.q = a.q.data();
        t.out = out.data();
        t.n_q = nq;
        t.dk = t.dv = d;
        t.scale = 1.0f / std::sqrt(float(d));
        t.softcap = a.softcap;
        t.k = a.k.data();
        t.v = a.v.data();
        t.k_stride = t.v_stride = d;
        t.cells = cells.data();
        t.n_cells = int64_t(cells.size());
        t.scratch = scratch.data();
        ops_for(isa).attention(t);
        check_attention(a, t.scale, out, false, isa_name(isa));
      }
    }
  }
}

TEST(Attention, FlashTileMatchesGeneric) {
  // One tile at every level against the generic entry: rows 1..9, cells 1..70, a few masked cells,
  // and a second tile so the online rescaling runs.
  const auto& ref_ops = ops_for(Isa::Generic);
  for (Isa isa : isas()) {
    for (int dk : {64, 80, 256}) {
      for (int rows : {1, 3, 4, 9}) {
        for (int nc : {1, 5, 64, 70}) {
          const int dv = dk == 80 ? 48 : dk;
          const auto q = random_floats(size_t(rows * dk), uint32_t(rows + dk), 0.3f);
          const int rpb = rows == 9 ? 3 : 1;
          std::vector<float> m[2], l[2], o[2];
          for (int which = 0; which < 2; ++which) {
            m[which].assign(size_t(rows), -INFINITY);
            l[which].assign(size_t(rows), 0.0f);
            o[which].assign(size_t(rows * dv), 0.0f);
          }
          for (int tile = 0; tile < 2; ++tile) {
            const auto k = random_floats(size_t(nc * dk), uint32_t(nc * 7 + tile));
            const auto v = random_floats(size_t(nc * dv), uint32_t(nc * 11 + tile));
            std::vector<float> bias(size_t(rows / rpb * nc), 0.0f);
            for (size_t i = 0; i < bias.size(); ++i)
              if (i % 7 == 3) bias[i] = -INFINITY;
            for (int which = 0; which < 2; ++which) {
              std::vector<float> s(size_t(rows * nc));
              FlashTile t;
              t.q = q.data();
              t.k = k.data();
              t.v = v.data();
              t.bias = bias.data();
              t.n_rows = rows;
              t.rows_per_bias = rpb;
              t.n_cells = nc;
              t.dk = dk;
              t.dv = dv;
              t.scale = 0.125f;
              t.softcap = dk == 80 ? 20.0f : 0.0f;
              t.m = m[which].data();
              t.l = l[which].data();
              t.o = o[which].data();
              t.s = s.data();
              (which == 0 ? ref_ops : ops_for(isa)).flash_tile(t);
            }
          }
          for (int r = 0; r < rows; ++r) {
            if (m[0][size_t(r)] == -INFINITY) ASSERT_EQ(m[1][size_t(r)], -INFINITY) << isa_name(isa);
            else ASSERT_NEAR(m[1][size_t(r)], m[0][size_t(r)], 1e-5 * (1 + std::fabs(m[0][size_t(r)]))) << isa_name(isa);
            ASSERT_NEAR(l[1][size_t(r)], l[0][size_t(r)], 1e-5 * l[0][size_t(r)]) << isa_name(isa);
            for (int i = 0; i < dv; ++i)
              ASSERT_NEAR(o[1][size_t(r * dv + i)], o[0][size_t(r * dv + i)], 2e-5 * (1 + l[0][size_t(r)]))
                  << isa_name(isa) << " dk " << dk << " rows " << rows << " cells " << nc << " r " << r << " i " << i;
          }
        }
      }
    }
  }
}

struct Case {
  int n_head, n_head_kv, d, window;
  float softcap;
  std::vector<int32_t> pos, seq;
};

// Through CpuBackend (best level, 2 threads): GQA groups, sliding window, two sequences in one batch,
// prefill and decode, positions past 4096.
const Case kCases[] = {
    {4, 1, 256, 0, 0, {5150}, {0}},                                        // Gemma 3 270M decode
    {4, 1, 256, 64, 0, {5100, 5101, 5102, 5150, 5040}, {0, 0, 0, 1, 1}},  // sliding layer, 2 sequences
    {32, 8, 64, 0, 0, {5120}, {1}},                                        // Llama 3.2 1B decode
    {32, 8, 64, 0, 0, {5000, 5050, 5100, 5130, 5001}, {0, 0, 0, 1, 1}},
    {8, 8, 128, 0, 50.0f, {5010, 5125}, {1, 0}},  // no GQA, softcap
    {16, 2, 128, 32, 0, {5060, 5061}, {0, 1}},    // group 8
};

void run_backend(CpuBackend& be, const AttnProblem& a, const Case& c, bool flash, std::vector<float>* out) {
  out->assign(c.pos.size() * size_t(c.n_head * c.d), -1.0f);
  AttentionArgs args;
  args.q = a.q.data();
  args.out = out->data();
  args.n_tokens = int64_t(c.pos.size());
  args.n_head = c.n_head;
  args.n_head_kv = c.n_head_kv;
  args.head_dim_k = args.head_dim_v = c.d;
  args.scale = 1.0f / std::sqrt(float(c.d));
  args.softcap = c.softcap;
  args.sliding_window = c.window;
  args.token_pos = a.token_pos.data();
  args.token_seq = a.token_seq.data();
  args.k_type = a.k_type;
  args.v_type = a.v_type;
  args.k = a.k.data();
  args.v = a.v.data();
  args.n_cells = a.n_cells;
  args.cell_pos = a.cell_pos.data();
  args.cell_seq = a.cell_seq.data();
  args.flash = flash;
  be.attention(args);
}

TEST(Attention, BackendEveryKvTypeBothPaths) {
  CpuBackend be(2);
  for (const Case& c : kCases) {
    AttnProblem a = make_attn(c.n_head, c.n_head_kv, c.d, c.d, c.window, c.softcap, 300, c.pos, c.seq,
                              uint32_t(c.d + c.n_head));
    for (WeightType kt : kKvTypes) {
      for (WeightType vt : {kt, WeightType::F16}) {
        a.encode(kt, vt);
        poison_masked(a);
        std::vector<float> out;
        for (bool flash : {false, true}) {
          run_backend(be, a, c, flash, &out);
          check_attention(a, 1.0f / std::sqrt(float(c.d)), out, flash, flash ? "flash" : "plain");
        }
      }
    }
  }
}

TEST(Attention, F16CacheOfHeadWidthsBetweenVectors) {
  // Heads of 40 and 72 values: the F16 gather's last conversion of a row is a partial vector.
  CpuBackend be(2);
  for (const Case& c : {Case{4, 2, 40, 0, 0, {5120, 5001}, {0, 1}}, Case{6, 3, 72, 0, 0, {5120}, {1}}}) {
    AttnProblem a = make_attn(c.n_head, c.n_head_kv, c.d, c.d, c.window, c.softcap, 300, c.pos, c.seq, 11);
    a.encode(WeightType::F16, WeightType::F16);
    poison_masked(a);
    std::vector<float> out;
    for (bool flash : {false, true}) {
      run_backend(be, a, c, flash, &out);
      check_attention(a, 1.0f / std::sqrt(float(c.d)), out, flash, flash ? "flash" : "plain");
    }
  }
}

TEST(Attention, FlashLongContextSplitsAndPrefillBlocks) {
  // Decode over 5000 cells (the cells are split across threads and merged) and a 40-token prefill
  // of one sequence (blocks of 32 tokens; causal tiles) against the reference, q8_0 and f16 caches.
  CpuBackend be(2);
  for (WeightType kt : {WeightType::F16, WeightType::Q8_0}) {
    std::vector<int32_t> pos, seq;
    for (int i = 0; i < 40; ++i) {
      pos.push_back(4960 + i);
      seq.push_back(0);
    }
    for (const Case& c : {Case{4, 1, 256, 0, 0, {9990}, {0}}, Case{8, 2, 64, 0, 0, pos, seq},
                          Case{8, 2, 64, 300, 0, pos, seq}}) {
      AttnProblem a = make_attn(c.n_head, c.n_head_kv, c.d, c.d, c.window, 0, 5000, c.pos, c.seq, 77);
      // Cells hold sequence 0 only, positions 0.. in order (what one long conversation looks like).
      for (int64_t i = 0; i < a.n_cells; ++i) {
        a.cell_pos[size_t(i)] = int32_t(i);
        a.cell_seq[size_t(i)] = 0;
      }
      a.encode(kt, kt);
      poison_masked(a);
      std::vector<float> out;
      run_backend(be, a, c, true, &out);
      check_attention(a, 1.0f / std::sqrt(float(c.d)), out, true, "flash long");
    }
  }
}

// Batch invariance (issue 11): each token's output has the same bits computed alone (its cells split
// across threads and merged) as in a batch with a 40-token prefill block of one sequence and decode
// tokens of another (no split), on 1, 2 or 3 threads, and after the cache's cells were permuted
// (attention takes them by position, not by cell index). Sliding window on and off, both paths.
TEST(Attention, TokenOutputDoesNotDependOnTheBatch) {
  std::vector<int32_t> pos(43), seq(43, 0);
  seq[40] = seq[41] = seq[42] = 1;
  for (int window : {0, 100}) {
    AttnProblem a = make_attn(8, 2, 64, 64, window, 0, 700, pos, seq, 41);
    // Sequence 0's block sees its last 40 positions (a prefill), sequence 1's tokens its last three.
    int32_t last[2] = {-1, -1};
    for (int64_t c = 0; c < a.n_cells; ++c)
      if (a.cell_seq[size_t(c)] >= 0) last[a.cell_seq[size_t(c)]] = std::max(last[a.cell_seq[size_t(c)]], a.cell_pos[size_t(c)]);
    for (int t = 0; t < 40; ++t) a.token_pos[size_t(t)] = last[0] - 39 + t;
    for (int t = 40; t < 43; ++t) a.token_pos[size_t(t)] = last[1] - 42 + t;
    // The same cache with its cells in reverse order.
    AttnProblem r = a;
    std::reverse(r.cell_pos.begin(), r.cell_pos.end());
    std::reverse(r.cell_seq.begin(), r.cell_seq.end());
    const int64_t rk = int64_t(a.n_head_kv) * a.dk;
    for (int64_t c = 0; c < a.n_cells; ++c)
      for (int64_t i = 0; i < rk; ++i) {
        r.kf[size_t((a.n_cells - 1 - c) * rk + i)] = a.kf[size_t(c * rk + i)];
        r.vf[size_t((a.n_cells - 1 - c) * rk + i)] = a.vf[size_t(c * rk + i)];
      }
    const Case all{8, 2, 64, window, 0, a.token_pos, a.token_seq};
    for (WeightType kt : {WeightType::F16, WeightType::Q8_0}) {
      a.encode(kt, kt);
      r.encode(kt, kt);
      for (bool flash : {false, true}) {
        CpuBackend be2(2);
        std::vector<float> batch, permuted, alone;
        run_backend(be2, a, all, flash, &batch);
        run_backend(be2, r, all, flash, &permuted);
        EXPECT_EQ(std::memcmp(batch.data(), permuted.data(), batch.size() * 4), 0)
            << (flash ? "flash" : "plain") << " window " << window << " " << type_name(kt) << ": cell order";
        const size_t row = size_t(a.n_head) * size_t(a.dv);
        for (int threads : {1, 2, 3}) {
          CpuBackend be(threads);
          for (size_t t = 0; t < pos.size(); ++t) {
            AttnProblem one = a;
            one.token_pos = {a.token_pos[t]};
            one.token_seq = {a.token_seq[t]};
            one.q.assign(a.q.begin() + std::ptrdiff_t(t * size_t(a.n_head * a.dk)),
                         a.q.begin() + std::ptrdiff_t((t + 1) * size_t(a.n_head * a.dk)));
            run_backend(be, one, Case{8, 2, 64, window, 0, one.token_pos, one.token_seq}, flash, &alone);
            EXPECT_EQ(std::memcmp(alone.data(), batch.data() + t * row, row * 4), 0)
                << (flash ? "flash" : "plain") << " window " << window << " " << type_name(kt) << " token " << t
                << " on " << threads << " threads";
          }
        }
      }
    }
  }
}

TEST(Attention, HadamardIsTheOrthonormalSylvesterMatrix) {
  // Against H[i][j] = (-1)^popcount(i & j) / sqrt(n) applied in double; twice = identity.
  CpuBackend be(2);
  for (int block : {64, 128, 256}) {
    const int64_t n = 512, rows = 3;
    const auto x = random_floats(size_t(rows * n), uint32_t(block));
    std::vector<float> y = x;
    be.hadamard(y.data(), rows, n, block);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t b0 = 0; b0 < n; b0 += block)
        for (int i = 0; i < block; ++i) {
          double ref = 0;
          for (int j = 0; j < block; ++j)
            ref += (__builtin_popcount(unsigned(i & j)) % 2 ? -1.0 : 1.0) * x[size_t(r * n + b0 + j)];
          ref /= std::sqrt(double(block));
          ASSERT_NEAR(y[size_t(r * n + b0 + i)], ref, 1e-5 * (1 + std::fabs(ref))) << block;
        }
    be.hadamard(y.data(), rows, n, block);
    for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], x[i], 1e-5 * (1 + std::fabs(x[i])));
  }
}

}  // namespace
}  // namespace tandem::cpu
