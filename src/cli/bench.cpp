// tandem bench: prompt-processing and generation speed, like llama-bench (mean ± stddev over -r
// repetitions, after a warm-up run unless --no-warmup), optionally at a depth of -d tokens of context.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <nlohmann/json.hpp>

#include "backend/cpu/kernels.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/engine_setup.h"
#include "core/progress.h"

namespace tandem::cli {
namespace {

struct Test {
  std::string name;  // "pp512", "tg128", "tg128 @ d4096"
  int64_t n_prompt = 0, n_gen = 0, depth = 0;
  std::vector<double> tokens_per_s;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Random tokens, as llama-bench uses: speed must not depend on the text.
std::vector<int32_t> random_tokens(int64_t n, int64_t n_vocab, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> pick(0, int32_t(n_vocab - 1));
  std::vector<int32_t> out(static_cast<size_t>(n));
  for (auto& t : out) t = pick(rng);
  return out;
}

Status fill(Context& ctx, const std::vector<int32_t>& tokens, int32_t* pos) {
  const int64_t n_batch = ctx.options().n_batch;
  for (size_t start = 0; start < tokens.size(); start += size_t(n_batch)) {
    Batch b;
    const size_t end = std::min(tokens.size(), start + size_t(n_batch));
    for (size_t i = start; i < end; ++i) b.add(tokens[i], (*pos)++, 0, i + 1 == end);
    TANDEM_TRY(ctx.decode(b));
  }
  return Status::ok();
}

// One measurement: tokens per second of the test's phase (prompt or generation).
Result<double> run_once(Context& ctx, const Test& t, std::mt19937& rng) {
  ctx.kv().clear();
  int32_t pos = 0;
  const int64_t n_vocab = ctx.n_vocab();
  if (t.depth > 0) TANDEM_TRY(fill(ctx, random_tokens(t.depth, n_vocab, rng), &pos));
  if (t.n_prompt > 0) {
    const auto tokens = random_tokens(t.n_prompt, n_vocab, rng);
    const auto t0 = std::chrono::steady_clock::now();
    TANDEM_TRY(fill(ctx, tokens, &pos));
    return double(t.n_prompt) / seconds_since(t0);
  }
  const auto tokens = random_tokens(t.n_gen, n_vocab, rng);
  const auto t0 = std::chrono::steady_clock::now();
  for (int32_t id : tokens) {
    Batch b;
    b.add(id, pos++, 0, true);
    TANDEM_TRY(ctx.decode(b));
  }
  return double(t.n_gen) / seconds_since(t0);
}

}  // namespace

int bench_main(int argc, char** argv) {
  EngineFlags ef;
  ef.quiet = true;
  int64_t n_prompt = 512, n_gen = 128, reps = 5, depth = 0;
  std::string output = "md";
  ArgParser args("bench", "tandem bench -m MODEL [-p 512] [-n 128] [-d DEPTH] [-t T] [-r 5] [-o md|json]",
                 "Measures prompt processing (ppN: N prompt tokens, -b at a time) and generation (tgN: N tokens one\n"
                 "at a time) in tokens per second, mean ± stddev over repetitions, like llama-bench.");
  add_engine_flags(args, ef);
  args.integer("-p,--n-prompt", "N", "prompt tokens for the pp test (default 512; 0: skip)", &n_prompt, 0, 1 << 20);
  args.integer("-n,--n-gen", "N", "generated tokens for the tg test (default 128; 0: skip)", &n_gen, 0, 1 << 20);
  args.integer("-d,--n-depth", "N", "tokens of context already in the cache before each test (default 0)", &depth, 0,
               1 << 24);
  args.integer("-r,--repetitions", "N", "repetitions of each test (default 5)", &reps, 1, 1000);
  args.string("-o,--output", "md|json", "output format (default md)", &output);
  if (auto done = parse_command_line(args, argc, argv)) return *done;
  if (output != "md" && output != "json") return fail(invalid_argument("bench: -o must be md or json"));
  if (n_prompt == 0 && n_gen == 0) return fail(invalid_argument("bench: nothing to measure (-p 0 -n 0)"));
  // The cache must hold depth + the test. A prompt longer than -b is fed in -b chunks, as llama-bench does.
  ef.ctx = std::max<int64_t>(ef.ctx == 4096 ? 0 : ef.ctx, depth + std::max(n_prompt, n_gen) + 1);
  auto engine = load_engine(ef);
  if (!engine) return fail(engine.error());
  Engine& e = **engine;

  std::vector<Test> tests;
  const std::string at = depth ? format(" @ d%lld", (long long)depth) : "";
  if (n_prompt) tests.push_back({format("pp%lld", (long long)n_prompt) + at, n_prompt, 0, depth, {}});
  if (n_gen) tests.push_back({format("tg%lld", (long long)n_gen) + at, 0, n_gen, depth, {}});
  std::mt19937 rng(1234);
  for (Test& t : tests) {
    if (!ef.no_warmup) {  // llama-bench's warm-up: the test itself, shortened
      Test warm = t;
      warm.n_prompt = std::min<int64_t>(t.n_prompt, 32);
      warm.n_gen = std::min<int64_t>(t.n_gen, 4);
      if (auto r = run_once(*e.context, warm, rng); !r) return fail(r.error());
    }
    for (int64_t r = 0; r < reps; ++r) {
      auto tps = run_once(*e.context, t, rng);
      if (!tps) return fail(tps.error());
      t.tokens_per_s.push_back(*tps);
    }
  }

  const auto& hp = e.model->hparams();
  uint64_t n_params = 0;
  for (const auto& t : e.model->file().tensors()) n_params += uint64_t(t.n_elements());
  const std::string name = e.model->file().metadata().get_string("general.name").value_or(hp.arch);
  const int threads = e.cpu->pool().size();
  const char* isa = cpu::isa_name(cpu::kernels().isa);
  auto stats = [](const std::vector<double>& v) {
    double mean = 0;
    for (double x : v) mean += x;
    mean /= double(v.size());
    double var = 0;
    for (double x : v) var += (x - mean) * (x - mean);
    return std::pair<double, double>(mean, v.size() > 1 ? std::sqrt(var / double(v.size() - 1)) : 0.0);
  };
  if (output == "json") {
    nlohmann::json out = nlohmann::json::array();
    for (const Test& t : tests) {
      auto [mean, sd] = stats(t.tokens_per_s);
      out.push_back({{"model", ef.model}, {"name", name}, {"size_bytes", e.model->weight_bytes()},
                     {"n_params", n_params}, {"backend", "CPU"}, {"isa", isa}, {"threads", threads},
                     {"n_prompt", t.n_prompt}, {"n_gen", t.n_gen}, {"n_depth", t.depth}, {"test", t.name},
                     {"avg_ts", mean}, {"stddev_ts", sd}, {"samples_ts", t.tokens_per_s}});
    }
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("| model | size | params | backend | threads | test | t/s |\n");
  std::printf("| --- | ---: | ---: | --- | ---: | ---: | ---: |\n");
  for (const Test& t : tests) {
    auto [mean, sd] = stats(t.tokens_per_s);
    std::printf("| %s | %.2f MiB | %.2f M | CPU (%s) | %d | %s | %.2f ± %.2f |\n", name.c_str(),
                double(e.model->weight_bytes()) / (1024.0 * 1024.0), double(n_params) / 1e6, isa, threads,
                t.name.c_str(), mean, sd);
  }
  return 0;
}

}  // namespace tandem::cli
