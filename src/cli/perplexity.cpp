// tandem perplexity: llama-perplexity's perplexity over a text, and KL-divergence against base logits
// saved by either tool (the file format and the scoring are in src/eval/). Chunking follows llama.cpp's
// tools/perplexity/perplexity.cpp: the tokens are cut into chunks of -c, each chunk runs from an empty
// cache with its first token replaced by BOS (when the model adds BOS), and the second half of each
// chunk is scored.
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "core/file.h"
#include "eval/kld_file.h"
#include "eval/perplexity.h"

namespace tandem::cli {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Runs one chunk from an empty cache, -b tokens per decode, and returns the logits of positions
// n_ctx/2 .. n_ctx-2 (the ones that predict a scored token): [n_scored, n_vocab], valid until the next decode.
Result<const float*> run_chunk(Context& ctx, std::span<const int32_t> chunk, int32_t bos) {
  const int64_t n_ctx = int64_t(chunk.size());
  ctx.kv().clear();
  std::vector<int32_t> tokens(chunk.begin(), chunk.end());
  if (bos >= 0) tokens[0] = bos;
  TANDEM_TRY(ctx.prefill(0, tokens, 0, n_ctx / 2, n_ctx - 1));
  return ctx.logits(0).data();
}

void print_eta(double t_pass_s, int64_t n_chunk) {
  int total_s = int(t_pass_s * double(n_chunk));
  std::fprintf(stderr, "perplexity: %.2f seconds per pass - ETA ", t_pass_s);
  if (total_s >= 3600) {
    std::fprintf(stderr, "%d hours ", total_s / 3600);
    total_s %= 3600;
  }
  std::fprintf(stderr, "%.2f minutes\n", total_s / 60.0);
}

struct Run {
  Engine& e;
  int64_t n_ctx, n_chunk;
  int32_t bos;  // -1: the model adds no BOS
  expert::ExpertCacheStats cache0 = {};  // --expert-cache: the counters before the first chunk (warm-up excluded)
};

// --expert-cache: the cache's hit rate, disk bytes and read bandwidth over the chunks, as run prints them.
void report_expert_cache(const Run& r) {
  if (const expert::ExpertCache* c = r.e.model->expert_cache())
    std::fprintf(stderr, "perplexity: %s\n",
                 describe_expert_cache(c->stats().since(r.cache0), uint64_t(r.n_chunk * r.n_ctx)).c_str());
}

// Perplexity of the text's chunks; with `writer`, also the base-logits file.
Status perplexity(const Run& r, const std::vector<int32_t>& tokens, eval::BaseLogitsWriter* writer) {
  const int64_t n_vocab = r.e.context->n_vocab(), first = r.n_ctx / 2;
  const int64_t n_scored = eval::scored_per_chunk(r.n_ctx);
  std::vector<uint16_t> rows(writer ? size_t(n_scored * eval::base_row_u16(n_vocab)) : 0);
  eval::PerplexityStats stats;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t c = 0; c < r.n_chunk; ++c) {
    const auto t_chunk = std::chrono::steady_clock::now();
    const std::span<const int32_t> chunk(tokens.data() + c * r.n_ctx, size_t(r.n_ctx));
    TANDEM_ASSIGN(const float* logits, run_chunk(*r.e.context, chunk, r.bos));
    const auto nll = eval::score_positions(r.e.cpu->pool(), logits, n_vocab, chunk.subspan(size_t(first + 1)), rows);
    for (double v : nll) stats.add(v);
    if (writer) TANDEM_TRY(writer->write_chunk(rows));
    if (c == 0) print_eta(seconds_since(t_chunk), r.n_chunk);
    std::printf("[%lld]%.4f,", (long long)(c + 1), stats.ppl());
    std::fflush(stdout);
  }
  std::printf("\n");
  if (writer) TANDEM_TRY(writer->finish());
  std::printf("Final estimate: PPL = %.4f +/- %.5f\n", stats.ppl(), stats.ppl_error());
  std::fprintf(stderr, "perplexity: %lld chunks of %lld tokens, %lld scored, in %.2f s\n", (long long)r.n_chunk,
               (long long)r.n_ctx, (long long)stats.count, seconds_since(t0));
  report_expert_cache(r);
  return Status::ok();
}

void print_kld_summary(const eval::KldSummary& s) {
  const auto pm = [](const char* label, const eval::MeanAndError& v) {
    std::printf("%s: %10.6f ± %10.6f\n", label, v.mean, v.error);
  };
  std::printf("====== Perplexity statistics ======\n");
  pm("Mean PPL(Q)                   ", s.ppl);
  pm("Mean PPL(base)                ", s.ppl_base);
  std::printf("Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%\n", 100.0 * s.log_ppl_correlation);
  pm("Mean ln(PPL(Q)/PPL(base))     ", s.log_ppl_ratio);
  pm("Mean PPL(Q)/PPL(base)         ", s.ppl_ratio);
  pm("Mean PPL(Q)-PPL(base)         ", s.ppl_diff);
  std::printf("\n====== KL divergence statistics ======\n");
  pm("Mean    KLD", s.kld);
  const auto& k = s.kld_q;
  const std::pair<const char*, float> kld_rows[] = {
      {"Maximum KLD", k.max}, {"99.9%   KLD", k.p999}, {"99.0%   KLD", k.p990}, {"95.0%   KLD", k.p950},
      {"90.0%   KLD", k.p900}, {"Median  KLD", k.median}, {"10.0%   KLD", k.p100}, {" 5.0%   KLD", k.p050},
      {" 1.0%   KLD", k.p010}, {" 0.1%   KLD", k.p001}, {"Minimum KLD", k.min}};
  for (const auto& [label, v] : kld_rows) std::printf("%s: %10.6f\n", label, v);
  std::printf("\n====== Token probability statistics ======\n");
  std::printf("Mean    Δp: %6.3f ± %5.3f %%\n", 100.0 * s.p_diff.mean, 100.0 * s.p_diff.error);
  const auto& p = s.p_diff_q;
  const std::pair<const char*, float> p_rows[] = {
      {"Maximum Δp", p.max}, {"99.9%   Δp", p.p999}, {"99.0%   Δp", p.p990}, {"95.0%   Δp", p.p950},
      {"90.0%   Δp", p.p900}, {"75.0%   Δp", p.p750}, {"Median  Δp", p.median}, {"25.0%   Δp", p.p250},
      {"10.0%   Δp", p.p100}, {" 5.0%   Δp", p.p050}, {" 1.0%   Δp", p.p010}, {" 0.1%   Δp", p.p001},
      {"Minimum Δp", p.min}};
  for (const auto& [label, v] : p_rows) std::printf("%s: %6.3f%%\n", label, 100.0 * v);
  std::printf("RMS Δp    : %6.3f ± %5.3f %%\n", 100.0 * s.rms_p_diff.mean, 100.0 * s.rms_p_diff.error);
  std::printf("Same top p: %6.3f ± %5.3f %%\n", 100.0 * s.same_top.mean, 100.0 * s.same_top.error);
}

// KL-divergence of this model's next-token distributions from the base file's, over the file's tokens.
Status kl_divergence(const Run& r, const eval::BaseLogitsReader& base) {
  const int64_t n_vocab = r.e.context->n_vocab(), first = r.n_ctx / 2;
  std::vector<uint16_t> rows;
  std::vector<float> kld_values, p_diff_values;
  eval::KldStats stats;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t c = 0; c < r.n_chunk; ++c) {
    const auto t_chunk = std::chrono::steady_clock::now();
    const std::span<const int32_t> chunk(base.tokens().data() + c * r.n_ctx, size_t(r.n_ctx));
    TANDEM_ASSIGN(const float* logits, run_chunk(*r.e.context, chunk, r.bos));
    base.read_chunk(c, &rows);
    const auto points =
        eval::compare_positions(r.e.cpu->pool(), logits, n_vocab, chunk.subspan(size_t(first + 1)), rows);
    for (const auto& p : points) {
      stats.add(p);
      kld_values.push_back(float(p.kld));
      p_diff_values.push_back(p.p_diff);
    }
    if (c == 0) {
      print_eta(seconds_since(t_chunk), r.n_chunk);
      std::printf("\nchunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              "
                  "Δp RMS            Same top p\n");
    }
    const eval::KldRunning v = eval::running(stats);
    std::printf("%4lld    %9.4f ± %9.4f    %10.5f ± %10.5f    %10.5f ± %10.5f    %6.3f ± %6.3f %%"
                "    %6.3f ± %6.3f %%\n",
                (long long)(c + 1), v.ppl.mean, v.ppl.error, v.log_ppl_ratio.mean, v.log_ppl_ratio.error, v.kld.mean,
                v.kld.error, 100.0 * v.rms_p_diff.mean, 100.0 * v.rms_p_diff.error, 100.0 * v.same_top.mean,
                100.0 * v.same_top.error);
    std::fflush(stdout);
  }
  std::printf("\n");
  if (stats.count < 100)
    std::fprintf(stderr, "note: only %lld positions compared: the uncertainties below are rough "
                 "(llama-perplexity prints no statistics below 100)\n", (long long)stats.count);
  print_kld_summary(eval::summarize(stats, kld_values, p_diff_values));
  std::fprintf(stderr, "kl-divergence: %lld chunks of %lld tokens, %lld positions compared, in %.2f s\n",
               (long long)r.n_chunk, (long long)r.n_ctx, (long long)stats.count, seconds_since(t0));
  report_expert_cache(r);
  return Status::ok();
}

Result<std::string> read_text(const std::string& path) {
  TANDEM_ASSIGN(MappedFile f, MappedFile::open(path));
  std::string text(reinterpret_cast<const char*>(f.bytes().data()), f.bytes().size());
  if (!text.empty() && text.back() == '\n') text.pop_back();  // as llama.cpp's -f does
  return text;
}

Status perplexity_command(EngineFlags ef, const std::string& text_file, const std::string& base_file,
                          int64_t max_chunks, bool kld) {
  if (ef.ctx < 3) return invalid_argument("perplexity: -c must be at least 3 (got %lld)", (long long)ef.ctx);
  if (kld && base_file.empty())
    return invalid_argument("perplexity: --kl-divergence compares with base logits: give --kl-divergence-base FILE");
  std::optional<eval::BaseLogitsReader> base;
  if (kld) {
    if (!text_file.empty())
      std::fprintf(stderr, "note: -f %s is not read: the tokens come from %s\n", text_file.c_str(), base_file.c_str());
    TANDEM_ASSIGN(base, eval::BaseLogitsReader::open(base_file, ef.mmap));
    if (base->n_ctx() > ef.ctx)
      return invalid_argument("perplexity: %s was computed with a context of %d tokens, this run's is %lld: raise -c",
                              base_file.c_str(), base->n_ctx(), (long long)ef.ctx);
    if (base->n_ctx() < ef.ctx)
      std::fprintf(stderr, "note: %s was computed with a context of %d tokens: chunks use that\n", base_file.c_str(),
                   base->n_ctx());
    ef.ctx = base->n_ctx();
  } else if (text_file.empty() && !ef.list_devices) {
    return invalid_argument("perplexity: no text given (use -f FILE)");
  }
  ef.batch = std::min(ef.batch, ef.ctx);  // one chunk at a time: a larger batch buys nothing
  ef.n_outputs_max = ef.batch;            // logits at every position
  TANDEM_ASSIGN(auto engine, load_engine(ef));
  Engine& e = *engine;
  const auto& vocab = e.tokenizer->vocab();
  if (vocab.add_eos)
    return unsupported("perplexity: the model's tokenizer appends EOS, which llama-perplexity's scoring excludes");
  Run r{e, ef.ctx, 0, vocab.add_bos ? vocab.special.bos : -1};
  if (const expert::ExpertCache* c = e.model->expert_cache()) r.cache0 = c->stats();

  if (kld) {
    if (base->n_vocab() != e.context->n_vocab())
      return invalid_argument("perplexity: %s holds logits over %d tokens, but %s has %lld", base_file.c_str(),
                              base->n_vocab(), ef.model.c_str(), (long long)e.context->n_vocab());
    r.n_chunk = max_chunks < 0 ? base->n_chunk() : std::min<int64_t>(max_chunks, base->n_chunk());
    std::fprintf(stderr, "kl-divergence: computing over %lld chunks, n_ctx=%lld, batch_size=%lld\n",
                 (long long)r.n_chunk, (long long)r.n_ctx, (long long)ef.batch);
    return kl_divergence(r, *base);
  }

  TANDEM_ASSIGN(const std::string text, read_text(text_file));
  const auto t_tok = std::chrono::steady_clock::now();
  TANDEM_ASSIGN(const std::vector<int32_t> tokens, e.tokenizer->tokenize(text, true, false));
  std::fprintf(stderr, "perplexity: %zu bytes tokenized to %zu tokens in %.2f s\n", text.size(), tokens.size(),
               seconds_since(t_tok));
  if (int64_t(tokens.size()) < 2 * r.n_ctx)
    return invalid_argument("perplexity: %s tokenizes to only %zu tokens; a context of %lld needs at least %lld "
                            "(two chunks, as llama-perplexity requires)",
                            text_file.c_str(), tokens.size(), (long long)r.n_ctx, (long long)(2 * r.n_ctx));
  const int64_t n_chunk_max = int64_t(tokens.size()) / r.n_ctx;
  r.n_chunk = max_chunks < 0 ? n_chunk_max : std::min(max_chunks, n_chunk_max);
  std::optional<eval::BaseLogitsWriter> writer;
  if (!base_file.empty()) {
    TANDEM_ASSIGN(writer, eval::BaseLogitsWriter::create(
                              base_file, int32_t(r.n_ctx), int32_t(e.context->n_vocab()), int32_t(r.n_chunk),
                              std::span<const int32_t>(tokens.data(), size_t(r.n_chunk * r.n_ctx))));
    std::fprintf(stderr, "perplexity: saving base logits to %s (%.1f MiB)\n", base_file.c_str(),
                 double(eval::base_file_bytes(r.n_ctx, e.context->n_vocab(), r.n_chunk)) / (1024.0 * 1024.0));
  }
  std::fprintf(stderr, "perplexity: calculating perplexity over %lld chunks, n_ctx=%lld, batch_size=%lld\n",
               (long long)r.n_chunk, (long long)r.n_ctx, (long long)ef.batch);
  return perplexity(r, tokens, writer ? &*writer : nullptr);
}

}  // namespace

int perplexity_main(int argc, char** argv) {
  EngineFlags ef;
  ef.ctx = 512;  // llama-perplexity's default
  std::string text_file, base_file;
  int64_t chunks = -1;
  bool kld = false;
  ArgParser args("perplexity",
                 "tandem perplexity -m MODEL -f TEXT [-c 512] [--chunks N]\n"
                 "                         [--kl-divergence-base FILE [--kl-divergence]]",
                 "Perplexity of a text, computed as llama-perplexity does: the tokens are cut into chunks of -c\n"
                 "(default 512 here), each chunk starts from an empty cache with BOS as its first token, and the\n"
                 "second half of each chunk is scored. Prints the running value per chunk and the final estimate.\n\n"
                 "KL-divergence, in llama-perplexity's file format (either tool reads the other's file):\n"
                 "  --kl-divergence-base FILE                   the reference model: saves its log-probabilities\n"
                 "  --kl-divergence-base FILE --kl-divergence   the model under test: compares with FILE\n"
                 "                                              (no -f: the tokens come from FILE)");
  add_engine_flags(args, ef);
  args.string("-f,--file", "FILE", "the text to score (one trailing newline is dropped, as llama.cpp does)",
              &text_file);
  args.integer("--chunks", "N", "score at most N chunks (default -1; any negative: all)", &chunks, INT32_MIN, INT32_MAX);
  args.string("--kl-divergence-base,--save-all-logits", "FILE",
              "base log-probabilities: written, or read with --kl-divergence", &base_file);
  args.flag("--kl-divergence", "compare with --kl-divergence-base FILE: KLD, Δp, top-token agreement", &kld);
  if (auto done = parse_command_line(args, argc, argv)) return *done;
  if (Status s = perplexity_command(ef, text_file, base_file, chunks, kld); !s.is_ok()) return fail(s);
  return 0;
}

}  // namespace tandem::cli
