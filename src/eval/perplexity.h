// Perplexity and KL-divergence scoring of next-token logits, and the statistics llama-perplexity
// prints. The arithmetic follows llama.cpp's tools/perplexity/perplexity.cpp (float logits, sums of
// expf in double, the base row's 16-bit log-probabilities) so the two tools agree to print precision.
// The base-logits file itself is eval/kld_file.h; chunking and the model run are in cli/perplexity.cpp.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/thread_pool.h"

namespace tandem::eval {

// -log p(token) under softmax(logits).
double token_nll(std::span<const float> logits, int32_t token);

// Fills one base-logits row (layout in eval/kld_file.h) from these logits: log-probabilities within 16
// of the best, on a 16-bit grid; lower ones are stored as the floor. Returns -log p(token).
// row.size() must be base_row_u16(logits.size()).
double encode_base_row(std::span<const float> logits, int32_t token, std::span<uint16_t> row);
// log p(i) as a base row stores it.
float base_log_prob(std::span<const uint16_t> row, int64_t i);

// One position scored against its base row.
struct KldPoint {
  float nll = 0;       // -log q(token), q: these logits
  float nll_base = 0;  // -log p(token), p: the base row
  double kld = 0;      // KL(p || q), over the tokens with log p > -16 (as llama-perplexity sums it)
  float p_diff = 0;    // q(token) - p(token)
  bool same_top = false;  // argmax q == argmax p (first index on ties)
};
KldPoint compare_with_base(std::span<const float> logits, std::span<const uint16_t> base_row, int32_t token);

// Multi-threaded over positions, each written to its own slot (results do not depend on the thread
// count). logits: [n, n_vocab]; targets[i]: the token following position i.
// score_positions: -log p per position; rows (empty, or [n, base_row_u16(n_vocab)]) is filled as well.
std::vector<double> score_positions(ThreadPool& pool, const float* logits, int64_t n_vocab,
                                    std::span<const int32_t> targets, std::span<uint16_t> rows);
std::vector<KldPoint> compare_positions(ThreadPool& pool, const float* logits, int64_t n_vocab,
                                        std::span<const int32_t> targets, std::span<const uint16_t> base_rows);

struct MeanAndError {
  double mean = 0, error = 0;
};
// Mean of the samples and the standard error of that mean; the error is 0 for 10 samples or fewer
// (llama-perplexity's rule, so short runs print the same figures).
MeanAndError mean_and_error(double sum, double sum2, int64_t count);

// Running perplexity: exp(mean nll) with the error llama-perplexity's "Final estimate" prints.
struct PerplexityStats {
  double sum_nll = 0, sum_nll2 = 0;
  int64_t count = 0;

  void add(double nll) {
    sum_nll += nll;
    sum_nll2 += nll * nll;
    ++count;
  }
  double ppl() const;
  double ppl_error() const;  // exp(mean) * stddev(nll) / sqrt(count - 1); 0 below 2 samples
};

// Running sums over compared positions.
struct KldStats {
  double sum_nll = 0, sum_nll2 = 0, sum_nll_base = 0, sum_nll_base2 = 0, sum_nll_nll_base = 0;
  double sum_kld = 0, sum_kld2 = 0, sum_p_diff = 0, sum_p_diff2 = 0, sum_p_diff4 = 0;
  float max_abs_p_diff = 0;
  int64_t n_same_top = 0, count = 0;

  void add(const KldPoint& p);
};

// The running figures of one chunk line, as llama-perplexity's KL-divergence table shows them.
struct KldRunning {
  MeanAndError ppl, log_ppl_ratio, kld, rms_p_diff, same_top;  // same_top and rms_p_diff as fractions
};
KldRunning running(const KldStats& s);

// Sorted-sample quantiles (linear interpolation between neighbours).
struct Quantiles {
  float min = 0, p001 = 0, p010 = 0, p050 = 0, p100 = 0, p250 = 0, median = 0, p750 = 0, p900 = 0, p950 = 0,
        p990 = 0, p999 = 0, max = 0;
};
Quantiles quantiles(std::vector<float> values);  // values: any order; none: all zero
float percentile(const std::vector<float>& sorted, float fraction);

// Everything the final KL-divergence report prints.
struct KldSummary {
  int64_t count = 0;
  MeanAndError ppl, ppl_base, log_ppl_ratio, ppl_ratio, ppl_diff;
  double log_ppl_correlation = 0;
  MeanAndError kld, p_diff, rms_p_diff, same_top;
  Quantiles kld_q, p_diff_q;
};
// kld_values, p_diff_values: every compared position's KldPoint::kld and p_diff.
KldSummary summarize(const KldStats& s, const std::vector<float>& kld_values, const std::vector<float>& p_diff_values);

}  // namespace tandem::eval
