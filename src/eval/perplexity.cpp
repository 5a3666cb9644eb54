// Log-softmax scoring, the 16-bit base rows, KL-divergence per position, and the summary statistics.
#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/status.h"
#include "eval/kld_file.h"

namespace tandem::eval {
namespace {

// The floor of a base row: log-probabilities more than this below the best are not told apart.
constexpr float kLogProbRange = 16.f;
constexpr float kLevels = 65535.f;  // the 16-bit grid

struct Softmax {
  float max_logit;
  int64_t argmax;     // first index of the maximum
  float log_sum_exp;  // log sum exp(logit - max_logit)
};

Softmax softmax_of(std::span<const float> logits) {
  Softmax s{logits[0], 0, 0.f};
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > s.max_logit) {
      s.max_logit = logits[i];
      s.argmax = int64_t(i);
    }
  double sum = 0;  // double: 262144 terms of a few ulps each
  for (float l : logits) sum += std::exp(l - s.max_logit);
  s.log_sum_exp = float(std::log(sum));
  return s;
}

void store_f32(uint16_t* dst, float v) { std::memcpy(dst, &v, sizeof v); }
float load_f32(const uint16_t* src) {
  float v;
  std::memcpy(&v, src, sizeof v);
  return v;
}

}  // namespace

double token_nll(std::span<const float> logits, int32_t token) {
  const Softmax s = softmax_of(logits);
  return double(s.max_logit) + double(s.log_sum_exp) - double(logits[size_t(token)]);
}

double encode_base_row(std::span<const float> logits, int32_t token, std::span<uint16_t> row) {
  const int64_t n_vocab = int64_t(logits.size());
  TANDEM_CHECK(int64_t(row.size()) == base_row_u16(n_vocab));
  const Softmax s = softmax_of(logits);
  float min_logit = *std::min_element(logits.begin(), logits.end());
  min_logit = std::max(min_logit, s.max_logit - kLogProbRange);
  const float scale = (s.max_logit - min_logit) / kLevels;
  store_f32(row.data(), scale);
  store_f32(row.data() + 2, min_logit - s.max_logit - s.log_sum_exp);
  uint16_t* q = row.data() + 4;
  std::fill(q, row.data() + row.size(), uint16_t(0));  // also the padding of an odd vocabulary
  if (scale > 0) {
    const float inv_scale = 1 / scale;
    // Round to nearest, ties to even: llama.cpp's nearest_int does the same through a float add.
    for (int64_t i = 0; i < n_vocab; ++i)
      if (logits[size_t(i)] > min_logit) q[i] = uint16_t(std::lrintf(inv_scale * (logits[size_t(i)] - min_logit)));
  }
  return double(s.max_logit + s.log_sum_exp - logits[size_t(token)]);
}

float base_log_prob(std::span<const uint16_t> row, int64_t i) {
  return load_f32(row.data()) * float(row[size_t(4 + i)]) + load_f32(row.data() + 2);
}

KldPoint compare_with_base(std::span<const float> logits, std::span<const uint16_t> base_row, int32_t token) {
  const int64_t n_vocab = int64_t(logits.size());
  TANDEM_CHECK(int64_t(base_row.size()) == base_row_u16(n_vocab));
  const Softmax s = softmax_of(logits);
  const float scale = load_f32(base_row.data()), min_log_prob = load_f32(base_row.data() + 2);
  const uint16_t* q = base_row.data() + 4;
  KldPoint p;
  p.nll = s.max_logit + s.log_sum_exp - logits[size_t(token)];
  p.nll_base = -(scale * float(q[token]) + min_log_prob);
  const float log_norm = s.max_logit + s.log_sum_exp;  // log q(i) = logits[i] - log_norm
  double kld = 0;
  int64_t argmax_base = 0;
  float best_base = 0;
  for (int64_t i = 0; i < n_vocab; ++i) {
    const float log_p = scale * float(q[i]) + min_log_prob;
    if (i == 0 || log_p > best_base) {
      best_base = log_p;
      argmax_base = i;
    }
    if (log_p > -kLogProbRange) kld += std::exp(log_p) * (log_p - logits[size_t(i)] + log_norm);
  }
  p.kld = kld;
  p.same_top = argmax_base == s.argmax;
  p.p_diff = std::exp(-p.nll) - std::exp(-p.nll_base);
  return p;
}

std::vector<double> score_positions(ThreadPool& pool, const float* logits, int64_t n_vocab,
                                    std::span<const int32_t> targets, std::span<uint16_t> rows) {
  const int64_t n = int64_t(targets.size()), row_u16 = base_row_u16(n_vocab);
  TANDEM_CHECK(rows.empty() || int64_t(rows.size()) == n * row_u16);
  std::vector<double> nll(static_cast<size_t>(n));
  pool.parallel_for(n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const std::span<const float> l(logits + i * n_vocab, size_t(n_vocab));
      const int32_t t = targets[size_t(i)];
      nll[size_t(i)] = rows.empty() ? token_nll(l, t)
                                    : encode_base_row(l, t, rows.subspan(size_t(i * row_u16), size_t(row_u16)));
    }
  });
  return nll;
}

std::vector<KldPoint> compare_positions(ThreadPool& pool, const float* logits, int64_t n_vocab,
                                        std::span<const int32_t> targets, std::span<const uint16_t> base_rows) {
  const int64_t n = int64_t(targets.size()), row_u16 = base_row_u16(n_vocab);
  TANDEM_CHECK(int64_t(base_rows.size()) == n * row_u16);
  std::vector<KldPoint> out(static_cast<size_t>(n));
  pool.parallel_for(n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      out[size_t(i)] = compare_with_base({logits + i * n_vocab, size_t(n_vocab)},
                                         base_rows.subspan(size_t(i * row_u16), size_t(row_u16)), targets[size_t(i)]);
  });
  return out;
}

MeanAndError mean_and_error(double sum, double sum2, int64_t count) {
  if (count < 1) return {};
  const double mean = sum / double(count);
  const double var = sum2 / double(count) - mean * mean;
  return {mean, var > 0 && count > 10 ? std::sqrt(var / double(count - 1)) : 0.0};
}

double PerplexityStats::ppl() const { return count ? std::exp(sum_nll / double(count)) : 0.0; }

double PerplexityStats::ppl_error() const {
  if (count < 2) return 0;
  const double mean = sum_nll / double(count);
  const double var = sum_nll2 / double(count) - mean * mean;
  return var > 0 ? std::sqrt(var / double(count - 1)) * std::exp(mean) : 0.0;
}

void KldStats::add(const KldPoint& p) {
  sum_nll += p.nll;
  sum_nll2 += double(p.nll) * p.nll;
  sum_nll_base += p.nll_base;
  sum_nll_base2 += double(p.nll_base) * p.nll_base;
  sum_nll_nll_base += double(p.nll) * p.nll_base;
  sum_kld += p.kld;
  sum_kld2 += p.kld * p.kld;
  const double d2 = double(p.p_diff) * p.p_diff;
  sum_p_diff += p.p_diff;
  sum_p_diff2 += d2;
  sum_p_diff4 += d2 * d2;
  max_abs_p_diff = std::max(max_abs_p_diff, std::fabs(p.p_diff));
  n_same_top += p.same_top;
  ++count;
}

namespace {

// Covariance of the two sample means (0 below 10 samples, as llama-perplexity).
double mean_covariance(double sum_a, double sum_b, double sum_ab, int64_t count) {
  if (count < 10) return 0;
  const double n = double(count);
  return (sum_ab / n - (sum_a / n) * (sum_b / n)) / (n - 1);
}

MeanAndError log_ratio(const KldStats& s, const MeanAndError& log_ppl, const MeanAndError& log_ppl_base) {
  const double cov = mean_covariance(s.sum_nll, s.sum_nll_base, s.sum_nll_nll_base, s.count);
  const double var = log_ppl.error * log_ppl.error + log_ppl_base.error * log_ppl_base.error - 2 * cov;
  return {log_ppl.mean - log_ppl_base.mean, std::sqrt(std::max(var, 0.0))};
}

MeanAndError rms_of(const KldStats& s) {
  const MeanAndError mse = mean_and_error(s.sum_p_diff2, s.sum_p_diff4, s.count);
  const double rms = std::sqrt(mse.mean);
  return {rms, rms > 0 ? 0.5 / rms * mse.error : 0.0};
}

MeanAndError fraction_of(int64_t hits, int64_t count) {
  if (count < 1) return {};
  const double f = double(hits) / double(count);
  return {f, count > 1 ? std::sqrt(f * (1 - f) / double(count - 1)) : 0.0};
}

}  // namespace

KldRunning running(const KldStats& s) {
  KldRunning r;
  const MeanAndError log_ppl = mean_and_error(s.sum_nll, s.sum_nll2, s.count);
  const MeanAndError log_ppl_base = mean_and_error(s.sum_nll_base, s.sum_nll_base2, s.count);
  r.ppl.mean = std::exp(log_ppl.mean);
  r.ppl.error = r.ppl.mean * log_ppl.error;
  r.log_ppl_ratio = log_ratio(s, log_ppl, log_ppl_base);
  r.kld = mean_and_error(s.sum_kld, s.sum_kld2, s.count);
  r.rms_p_diff = rms_of(s);
  r.same_top = fraction_of(s.n_same_top, s.count);
  return r;
}

float percentile(const std::vector<float>& sorted, float fraction) {
  if (sorted.empty()) return 0;
  if (fraction <= 0) return sorted.front();
  if (fraction >= 1) return sorted.back();
  float p = fraction * float(sorted.size() - 1);
  const size_t ip = size_t(p);
  p -= float(ip);
  return (1 - p) * sorted[ip] + p * sorted[std::min(ip + 1, sorted.size() - 1)];
}

Quantiles quantiles(std::vector<float> v) {
  Quantiles q;
  if (v.empty()) return q;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  q.min = v.front();
  q.max = v.back();
  q.median = n % 2 == 0 ? 0.5f * (v[n / 2] + v[n / 2 - 1]) : v[n / 2];
  q.p001 = percentile(v, 0.001f);
  q.p010 = percentile(v, 0.010f);
  q.p050 = percentile(v, 0.050f);
  q.p100 = percentile(v, 0.100f);
  q.p250 = percentile(v, 0.250f);
  q.p750 = percentile(v, 0.750f);
  q.p900 = percentile(v, 0.900f);
  q.p950 = percentile(v, 0.950f);
  q.p990 = percentile(v, 0.990f);
  q.p999 = percentile(v, 0.999f);
  return q;
}

KldSummary summarize(const KldStats& s, const std::vector<float>& kld_values, const std::vector<float>& p_diff_values) {
  KldSummary r;
  r.count = s.count;
  const MeanAndError log_ppl = mean_and_error(s.sum_nll, s.sum_nll2, s.count);
  const MeanAndError log_ppl_base = mean_and_error(s.sum_nll_base, s.sum_nll_base2, s.count);
  r.ppl.mean = std::exp(log_ppl.mean);
  r.ppl.error = r.ppl.mean * log_ppl.error;
  r.ppl_base.mean = std::exp(log_ppl_base.mean);
  r.ppl_base.error = r.ppl_base.mean * log_ppl_base.error;
  const double cov = mean_covariance(s.sum_nll, s.sum_nll_base, s.sum_nll_nll_base, s.count);
  const double err_product = log_ppl.error * log_ppl_base.error;
  r.log_ppl_correlation = err_product > 0 ? cov / err_product : 0.0;
  r.log_ppl_ratio = log_ratio(s, log_ppl, log_ppl_base);
  r.ppl_ratio.mean = std::exp(r.log_ppl_ratio.mean);
  r.ppl_ratio.error = r.ppl_ratio.mean * r.log_ppl_ratio.error;
  const double ppl_cov = r.ppl.mean * r.ppl_base.mean * cov;
  r.ppl_diff.mean = r.ppl.mean - r.ppl_base.mean;
  r.ppl_diff.error = std::sqrt(std::max(
      r.ppl.error * r.ppl.error + r.ppl_base.error * r.ppl_base.error - 2 * ppl_cov, 0.0));
  r.kld = mean_and_error(s.sum_kld, s.sum_kld2, s.count);
  r.p_diff = mean_and_error(s.sum_p_diff, s.sum_p_diff2, s.count);
  r.rms_p_diff = rms_of(s);
  r.same_top = fraction_of(s.n_same_top, s.count);
  r.kld_q = quantiles(kld_values);
  r.p_diff_q = quantiles(p_diff_values);
  return r;
}

}  // namespace tandem::eval
