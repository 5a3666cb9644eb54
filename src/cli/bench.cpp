// tandem bench: prompt-processing and generation speed, like llama-bench (mean ± stddev over -r
// repetitions, after a warm-up run unless --no-warmup), optionally at a depth of -d tokens of context.
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <nlohmann/json.hpp>

#include "backend/cpu/kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
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
  TANDEM_TRY(ctx.prefill(0, tokens, *pos));
  *pos += int32_t(tokens.size());
  return Status::ok();
}

// One measurement: tokens per second of the test (prompt, generation, or both timed together).
Result<double> run_once(Context& ctx, const Test& t, std::mt19937& rng) {
  ctx.kv().clear();
  int32_t pos = 0;
  const int64_t n_vocab = ctx.n_vocab();
  if (t.depth > 0) TANDEM_TRY(fill(ctx, random_tokens(t.depth, n_vocab, rng), &pos));
  const auto prompt = random_tokens(t.n_prompt, n_vocab, rng), tokens = random_tokens(t.n_gen, n_vocab, rng);
  const auto t0 = std::chrono::steady_clock::now();
  if (t.n_prompt > 0) TANDEM_TRY(fill(ctx, prompt, &pos));
  for (int32_t id : tokens) {
    Batch b;
    b.add(id, pos++, 0, true);
    TANDEM_TRY(ctx.decode(b));
  }
  return double(t.n_prompt + t.n_gen) / seconds_since(t0);  // a pp+tg test counts both, as llama-bench
}

// One row of the output: the engine settings of one point of the sweep and one test run at them.
struct Row {
  std::vector<std::string> axis_values;  // the value of each swept flag, in Axis order
  Test test;
  int threads = 0;
  std::string flash_attn;  // resolved: on or off
  std::string backend;     // CPU, or CPU+CUDA0+SIM0+... with offload devices
  // Bytes each offload device exchanged with the host per token processed (prompt and generated).
  std::vector<std::pair<std::string, double>> bytes_per_token;
  std::optional<expert::ExpertCacheStats> expert_cache;  // --expert-cache: its counters over the timed runs
};

// A flag llama-bench takes as a comma list; the sweep runs the cross product of every list, in
// llama-bench's loop order (get_cmd_params_instances), which is the order listed here.
struct Axis {
  const char* flag;
  const char* column;  // llama-bench's markdown column
  bool int_ranges;
  std::vector<std::string> items;  // empty: not given (the engine flag's default)
};

// The --expert-stats file (schema in docs/expert-stats.md): the MoE layers' expert hit counts.
Status write_expert_stats(const std::string& path, const std::string& model, const model::HParams& hp,
                          const model::ExpertStats& stats) {
  nlohmann::json layers = nlohmann::json::array();
  for (int64_t l = 0; l < stats.n_layer; ++l) {
    if (!stats.tokens[size_t(l)]) continue;  // a dense layer (or none of its tokens ran)
    const auto* row = stats.hits.data() + l * stats.n_expert;
    layers.push_back({{"layer", l}, {"tokens", stats.tokens[size_t(l)]},
                      {"hits", std::vector<uint64_t>(row, row + stats.n_expert)}});
  }
  const nlohmann::json head = {{"model", model}, {"arch", hp.arch}, {"n_layer", hp.n_layer},
                               {"n_expert", hp.n_expert}, {"n_expert_used", hp.n_expert_used}};
  // One line per layer: a 61-layer, 256-expert file stays readable.
  std::string text = head.dump(1);
  text.resize(text.size() - 2);  // "\n}"
  text += ",\n \"layers\": [\n";
  for (size_t i = 0; i < layers.size(); ++i) text += "  " + layers[i].dump() + (i + 1 < layers.size() ? ",\n" : "\n");
  text += " ]\n}\n";
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return io_error("bench: --expert-stats: cannot write '%s': %s", path.c_str(), std::strerror(errno));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) return io_error("bench: --expert-stats: cannot write '%s'", path.c_str());
  return Status::ok();
}

}  // namespace

int bench_main(int argc, char** argv) {
  EngineFlags ef;
  ef.quiet = true;
  int64_t reps = 5;
  std::string output = "md";
  std::vector<std::string> prompts, gens, depths, pgs;
  ArgParser args("bench",
                 "tandem bench -m MODEL [-p 512] [-n 128] [-pg PP,TG] [-d DEPTH] [-t T] [-r 5] [-o md|json|jsonl]",
                 "Measures prompt processing (ppN: N prompt tokens, -b at a time) and generation (tgN: N tokens one\n"
                 "at a time) in tokens per second, mean ± stddev over repetitions, like llama-bench. As there,\n"
                 "-p -n -d -b -ub -t -ngl -ctk -ctv -fa -lm --poll --cpu-strict -C take comma lists (numbers also\n"
                 "ranges: 1-8, 1-8+2, 1-16*2): every combination runs, one row each.");
  add_engine_flags(args, ef);
  // -p -n -d only check here; collect_list below keeps their items.
  const auto count = [](std::string_view v) { return parse_int(v, 0, 1 << 20).status(); };
  args.custom("-p,--n-prompt", "N", "prompt tokens for the pp test (default 512; 0: skip)", count);
  args.custom("-n,--n-gen", "N", "generated tokens for the tg test (default 128; 0: skip)", count);
  args.custom("-pg", "PP,TG", "a test of PP prompt tokens then TG generated ones, timed together (repeatable)",
              [&](std::string_view v) {
                TANDEM_ASSIGN(const std::vector<std::string> pair, split_list(v, false));
                if (pair.size() != 2) return invalid_argument("'%.*s' is not PP,TG", int(v.size()), v.data());
                for (const auto& n : pair) TANDEM_TRY(parse_int(n, 0, 1 << 20).status());
                pgs.push_back(std::string(v));
                return Status::ok();
              });
  args.custom("-d,--n-depth", "N", "tokens of context already in the cache before each test (default 0)",
              [](std::string_view v) { return parse_int(v, 0, 1 << 24).status(); });
  args.integer("-r,--repetitions", "N", "repetitions of each test (default 5)", &reps, 1, 1000);
  args.string("-o,--output", "md|json|jsonl", "output format (default md)", &output);
  std::string expert_stats_path;
  args.string("--expert-stats", "FILE", "MoE models: write how often each layer's router chose each expert over the "
              "timed runs, as JSON (docs/expert-stats.md)", &expert_stats_path);
  Axis axes[] = {{"-ngl", "ngl", true, {}},          {"-lm", "load_mode", false, {}}, {"-b", "n_batch", true, {}},
                 {"-ub", "n_ubatch", true, {}},      {"-ctk", "type_k", false, {}},   {"-ctv", "type_v", false, {}},
                 {"-fa", "fa", false, {}},           {"-t", "threads", true, {}},     {"-C", "cpu_mask", false, {}},
                 {"--cpu-strict", "cpu_strict", false, {}}, {"--poll", "poll", true, {}}};
  for (Axis& axis : axes) args.collect_list(axis.flag, axis.int_ranges, &axis.items);
  args.collect_list("-p", true, &prompts);
  args.collect_list("-n", true, &gens);
  args.collect_list("-d", true, &depths);
  if (auto done = parse_command_line(args, argc, argv)) return *done;
  if (output != "md" && output != "json" && output != "jsonl")
    return fail(invalid_argument("bench: -o: '%s' is not an output format (md, json, jsonl)", output.c_str()));
  if (prompts.empty()) prompts = {"512"};
  if (gens.empty()) gens = {"128"};
  if (depths.empty()) depths = {"0"};

  // Tests at each point of the sweep, in llama-bench's order: every -p, every -n, every -pg.
  std::vector<Test> tests_at_depth;
  int64_t longest = 0, deepest = 0;
  for (const auto& p : prompts)
    if (const int64_t n = std::stoll(p)) tests_at_depth.push_back({format("pp%lld", (long long)n), n, 0, 0, {}});
  for (const auto& g : gens)
    if (const int64_t n = std::stoll(g)) tests_at_depth.push_back({format("tg%lld", (long long)n), 0, n, 0, {}});
  for (const auto& pg : pgs) {
    const size_t comma = pg.find(',');
    const int64_t pp = std::stoll(pg.substr(0, comma)), tg = std::stoll(pg.substr(comma + 1));
    if (pp || tg) tests_at_depth.push_back({format("pp%lld+tg%lld", (long long)pp, (long long)tg), pp, tg, 0, {}});
  }
  if (tests_at_depth.empty()) return fail(invalid_argument("bench: nothing to measure (-p 0 -n 0)"));
  for (const Test& t : tests_at_depth) longest = std::max(longest, t.n_prompt + t.n_gen);
  for (const auto& d : depths) deepest = std::max<int64_t>(deepest, std::stoll(d));
  // The cache must hold depth + the test. A prompt longer than -b is fed in -b chunks, as llama-bench does.
  ef.ctx = std::max<int64_t>(ef.ctx == 4096 ? 0 : ef.ctx, deepest + longest + 1);

  // Every combination of the given lists; an axis not given keeps the engine flag's value.
  std::vector<size_t> pick(std::size(axes), 0);
  std::vector<Row> rows;
  std::string name;
  uint64_t size_bytes = 0, n_params = 0;
  const char* isa = "";
  // The setters write into ef: each point of the sweep starts from the parsed flags and applies its
  // items. Every item is checked first, so a bad one fails before anything is measured.
  const EngineFlags base = ef;
  model::ExpertStats expert_stats;  // over every combination of the sweep: they run one model
  model::HParams expert_hp;
  for (const Axis& axis : axes)
    for (const std::string& item : axis.items) {
      ef = base;
      if (Status s = args.set(axis.flag, item); !s.is_ok()) return fail(s);
    }
  for (bool more = true; more;) {
    ef = base;
    std::vector<std::string> values;
    for (size_t a = 0; a < std::size(axes); ++a) {
      if (axes[a].items.empty()) continue;
      values.push_back(axes[a].items[pick[a]]);
      if (Status s = args.set(axes[a].flag, values.back()); !s.is_ok()) return fail(s);
    }
    auto engine = load_engine(ef);
    if (!engine) return fail(engine.error());
    Engine& e = **engine;
    name = e.model->file().metadata().get_string("general.name").value_or(e.model->hparams().arch);
    size_bytes = e.model->weight_bytes();
    n_params = 0;
    for (const auto& t : e.model->file().tensors()) n_params += uint64_t(t.n_elements());
    isa = cpu::isa_name(cpu::kernels().isa);
    if (!expert_stats_path.empty() && expert_stats.n_layer == 0) {
      if (e.model->hparams().n_expert == 0)
        return fail(invalid_argument("bench: --expert-stats: %s has no experts (architecture %s)", ef.model.c_str(),
                                     e.model->hparams().arch.c_str()));
      expert_hp = e.model->hparams();
      expert_stats.reset(expert_hp.n_layer, expert_hp.n_expert);
    }
    std::mt19937 rng(1234);
    for (const auto& d : depths) {
      for (Test t : tests_at_depth) {
        t.depth = std::stoll(d);
        if (t.depth) t.name += format(" @ d%lld", (long long)t.depth);
        // llama-bench's warm-up: the whole prompt (its first run of a micro-batch of that size first-touches
        // that size's activation buffers: V2-Lite 4L's pp512 480 ms cold against 440 warm), a few generated tokens.
        if (ef.warmup) {
          Test warm = t;
          warm.n_gen = std::min<int64_t>(t.n_gen, 4);
          if (auto r = run_once(*e.context, warm, rng); !r) return fail(r.error());
        }
        // The timed runs only: not the warm-up above.
        if (!expert_stats_path.empty()) e.context->set_expert_stats(&expert_stats);
        std::vector<sim::SimStats> before;
        for (const auto& sim : e.sims) before.push_back(sim->stats());
        std::vector<cuda::LinkStats> gpu_before;
        for (const auto& gpu : e.gpus) gpu_before.push_back(cuda::link_stats(*gpu));
        const expert::ExpertCache* cache = e.model->expert_cache();
        const expert::ExpertCacheStats cache0 = cache ? cache->stats() : expert::ExpertCacheStats{};
        for (int64_t r = 0; r < reps; ++r) {
          auto tps = run_once(*e.context, t, rng);
          if (!tps) return fail(tps.error());
          t.tokens_per_s.push_back(*tps);
        }
        e.context->set_expert_stats(nullptr);
        Row row{values, t, e.cpu->pool().size(), e.context->options().flash_attn ? "on" : "off", "CPU", {}, {}};
        const double n_tokens = double(reps * (t.n_prompt + t.n_gen));
        if (cache) {
          row.expert_cache = cache->stats().since(cache0);
          std::fprintf(stderr, "%s: %s\n", t.name.c_str(), describe_expert_cache(*row.expert_cache, uint64_t(n_tokens)).c_str());
        }
        // The devices the placement put weights on (an offload device --fit left empty is not named).
        auto holds_weights = [&](const std::string& name) {
          for (size_t d = 1; d < e.plan.devices.size(); ++d)
            if (e.plan.devices[d].name == name) return e.plan.weight_bytes[d] > 0;
          return false;
        };
        for (size_t i = 0; i < e.gpus.size(); ++i) {
          const cuda::LinkStats now = cuda::link_stats(*e.gpus[i]);
          if (holds_weights(e.gpus[i]->name())) row.backend += "+" + e.gpus[i]->name();
          row.bytes_per_token.emplace_back(e.gpus[i]->name(), double(now.bytes_from_host + now.bytes_to_host -
                                                                     gpu_before[i].bytes_from_host -
                                                                     gpu_before[i].bytes_to_host) / n_tokens);
        }
        for (size_t i = 0; i < e.sims.size(); ++i) {
          const sim::SimStats now = e.sims[i]->stats();
          if (holds_weights(e.sims[i]->name())) row.backend += "+" + e.sims[i]->name();
          row.bytes_per_token.emplace_back(e.sims[i]->name(), double(now.bytes_from_host + now.bytes_to_host -
                                                                     before[i].bytes_from_host - before[i].bytes_to_host) / n_tokens);
        }
        rows.push_back(std::move(row));
      }
    }
    // Next combination: the last given axis turns fastest, as llama-bench's innermost loop.
    more = false;
    for (size_t a = std::size(axes); a-- > 0;) {
      if (axes[a].items.empty()) continue;
      if (++pick[a] < axes[a].items.size()) {
        more = true;
        break;
      }
      pick[a] = 0;
    }
  }

  if (!expert_stats_path.empty())
    if (Status st = write_expert_stats(expert_stats_path, base.model, expert_hp, expert_stats); !st.is_ok())
      return fail(st);
  auto stats = [](const std::vector<double>& v) {
    double mean = 0;
    for (double x : v) mean += x;
    mean /= double(v.size());
    double var = 0;
    for (double x : v) var += (x - mean) * (x - mean);
    return std::pair<double, double>(mean, v.size() > 1 ? std::sqrt(var / double(v.size() - 1)) : 0.0);
  };
  std::vector<const Axis*> given;
  for (const Axis& axis : axes)
    if (!axis.items.empty()) given.push_back(&axis);
  if (output == "json" || output == "jsonl") {
    nlohmann::json out = nlohmann::json::array();
    for (const Row& row : rows) {
      const Test& t = row.test;
      auto [mean, sd] = stats(t.tokens_per_s);
      nlohmann::json j = {{"model", ef.model}, {"name", name},
                          {"size_bytes", size_bytes}, {"n_params", n_params}, {"backend", row.backend}, {"isa", isa},
                          {"threads", row.threads}, {"flash_attn", row.flash_attn}, {"n_prompt", t.n_prompt},
                          {"n_gen", t.n_gen}, {"n_depth", t.depth}, {"test", t.name}, {"avg_ts", mean},
                          {"stddev_ts", sd}, {"samples_ts", t.tokens_per_s}};
      for (const auto& [dev, bytes] : row.bytes_per_token) j["bytes_per_token"][dev] = bytes;
      if (const auto& c = row.expert_cache) {
        const double n_tokens = double(t.tokens_per_s.size()) * double(t.n_prompt + t.n_gen);
        j["expert_cache"] = {{"hit_rate", c->hit_rate()}, {"hits", c->hits}, {"late", c->late}, {"misses", c->misses},
                             {"disk_bytes_per_token", double(c->bytes_read) / n_tokens},
                             {"disk_read_s", double(c->read_us) / 1e6}, {"disk_gbs", c->bandwidth_gbs()},
                             {"wait_s", double(c->wait_us) / 1e6}, {"guess_hit_rate", c->guess_hit_rate()}};
      }
      for (size_t a = 0; a < given.size(); ++a) {
        if (std::string_view(given[a]->flag) == "-t") continue;  // "threads" above: the count that ran
        const std::string& v = row.axis_values[a];
        const auto number = parse_int(v, INT64_MIN, INT64_MAX);
        if (given[a]->int_ranges && number) j[given[a]->column] = *number;
        else j[given[a]->column] = v;
      }
      out.push_back(j);
    }
    if (output == "json") std::printf("%s\n", out.dump(2).c_str());
    else for (const auto& j : out) std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::string head = "| model | size | params | backend | threads |", rule = "| --- | ---: | ---: | --- | ---: |";
  for (const Axis* axis : given) {
    if (std::string_view(axis->flag) == "-t") continue;  // the threads column is always there
    head += format(" %s |", axis->column);
    rule += " ---: |";
  }
  const bool offload = !rows.empty() && !rows.front().bytes_per_token.empty();
  std::printf("%s test | t/s |%s\n%s ---: | ---: |%s\n", head.c_str(), offload ? " host link / token |" : "",
              rule.c_str(), offload ? " ---: |" : "");
  for (const Row& row : rows) {
    auto [mean, sd] = stats(row.test.tokens_per_s);
    std::string extra, link;
    for (size_t a = 0; a < given.size(); ++a)
      if (std::string_view(given[a]->flag) != "-t") extra += format(" %s |", row.axis_values[a].c_str());
    for (const auto& [dev, bytes] : row.bytes_per_token)
      link += format("%s%s %.1f KiB", link.empty() ? " " : ", ", dev.c_str(), bytes / 1024.0);
    std::printf("| %s | %.2f MiB | %.2f M | %s (%s) | %d |%s %s | %.2f ± %.2f |%s\n", name.c_str(),
                double(size_bytes) / (1024.0 * 1024.0), double(n_params) / 1e6, row.backend.c_str(), isa, row.threads,
                extra.c_str(), row.test.name.c_str(), mean, sd, offload ? (link + " |").c_str() : "");
  }
  return 0;
}

}  // namespace tandem::cli
