// tandem serve: the HTTP server (src/server) with llama-server's flags, so a llama-server command
// line runs unchanged. The HTTP side answers /health with 503 while the model loads.
#include <csignal>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "chat/chat_template.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "cli/engine_flags.h"
#include "server/server.h"

namespace tandem::cli {
namespace {

Status read_api_keys(const std::string& file, std::vector<std::string>* keys) {
  std::ifstream in(file);
  if (!in) return not_found("--api-key-file: cannot read %s", file.c_str());
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) keys->push_back(line);
  }
  if (keys->empty()) return invalid_argument("--api-key-file %s: no keys in it", file.c_str());
  return Status::ok();
}

}  // namespace

int serve_main(int argc, char** argv) {
  EngineFlags ef;
  SamplingFlags sf;
  server::ServerOptions so;
  std::string api_key_file, log_level = "info", reasoning_format = "deepseek";
  int64_t reasoning_budget = -1;
  bool verbose = false, jinja = true, kv_unified = true;
  int64_t parallel = 4, port = 8080, timeout = 600, max_queue = 64;
  ArgParser args("serve", "tandem serve -m MODEL [--host H] [--port P] [-c CTX] [-np N] [flags]",
                 "An OpenAI- and llama-server-compatible HTTP server with continuous batching: -np slots share\n"
                 "every forward pass, and each slot reuses the cached prefix of its last prompt. Endpoints:\n"
                 "POST /v1/chat/completions /v1/completions /completion /tokenize /detokenize /apply-template;\n"
                 "GET /health /v1/models /props /slots /openapi.json /metrics /monitor/stats; pages: / (chat),\n"
                 "/monitor (live figures). llama-server's command lines work as they are.\n"
                 "--batch-invariant is on by default here: a greedy reply does not depend on its batch neighbours.");
  // Issue 11 item 4: a request's greedy output must not depend on its batch neighbours, so the server
  // runs the batch-invariant kernels unless told otherwise (--batch-invariant off).
  ef.batch_invariant = true;
  add_engine_flags(args, ef);
  args.custom("--max-seq-len", "N", "the same as -c (vLLM's name)", [&ef](std::string_view v) {
    TANDEM_ASSIGN(ef.ctx, parse_int(v, 0, 1 << 24));
    return Status::ok();
  });
  args.string("--host", "ADDR", "address to listen on (default 127.0.0.1; 0.0.0.0: every interface)", &so.host);
  args.integer("--port", "N", "port to listen on (default 8080; 0: any free port, printed at start)", &port, 0, 65535);
  args.integer("-np,--parallel", "N", "slots: requests generated at once, sharing each forward pass (default 4).\n"
               "The context (-c) is split evenly: each slot holds -c / -np tokens", &parallel, 1, 256);
  args.toggle("-cb,--cont-batching", "-nocb,--no-cont-batching",
              "continuous batching (default on): new requests join running ones at the next step. -nocb:\n"
              "they wait until every running one has finished, then start together (llama-server's meaning)",
              &so.cont_batching);
  args.custom("--api-key", "KEY", "require this key (Authorization: Bearer KEY); a comma-separated list allows\n"
              "several. /health stays open", [&so](std::string_view v) {
                for (size_t start = 0; start <= v.size();) {
                  const size_t comma = std::min(v.find(',', start), v.size());
                  if (comma > start) so.api_keys.emplace_back(v.substr(start, comma - start));
                  start = comma + 1;
                }
                return Status::ok();
              });
  args.string("--api-key-file", "FILE", "read keys from a file, one per line", &api_key_file);
  args.string("-a,--alias", "NAME", "the model's name in /v1/models and responses (default: the file name)", &so.alias);
  args.integer("-n,--n-predict,--predict", "N",
               "default tokens to generate per request when it gives no max_tokens (default -1: until\n"
               "end of generation or a full slot)", &so.defaults.n_predict, -1, INT32_MAX);
  args.flag("--jinja", "render chat templates with the Jinja engine (always on; accepted for llama-server's flags)",
            &jinja);
  args.string("--chat-template", "NAME|JINJA",
              "chat template instead of the model's: a built-in name (chatml, llama3, gemma, deepseek3,\n"
              "deepseek-r1) or Jinja source", &so.chat_template);
  args.string("--chat-template-file", "FILE", "chat template (Jinja) from a file", &so.chat_template_file);
  args.string("--reasoning-format", "none|deepseek",
              "deepseek (default): text between <think> and </think> at the start of a reply goes to\n"
              "message.reasoning_content (delta.reasoning_content when streaming); none: left in content",
              &reasoning_format);
  args.custom("--chat-template-kwargs", "JSON",
              "variables for every chat-template rendering, e.g. '{\"enable_thinking\": false}' (a request's\n"
              "chat_template_kwargs override them)", [&so](std::string_view v) {
                const auto j = nlohmann::json::parse(v, nullptr, false);
                if (!j.is_object()) return invalid_argument("--chat-template-kwargs: give a JSON object, not '%.*s'",
                                                            int(v.size()), v.data());
                so.chat_template_kwargs.update(j);
                return Status::ok();
              });
  args.integer("--reasoning-budget", "N", "-1 (default): think without limit; 0: no thinking (sets the template\n"
               "variable enable_thinking false: Qwen3's, SmolLM3's and GLM's templates read it)", &reasoning_budget, -1, 0);
  args.string("--log-level", "LEVEL", "debug (a line per request and per step, with timings), info (default),\n"
              "warn or error", &log_level);
  args.flag("-v,--verbose", "the same as --log-level debug", &verbose);
  args.flag("--metrics", "serve GET /metrics (Prometheus text: tandem_* and llama-server's llamacpp:* names);\n"
            "without it /metrics answers 501, as llama-server does. /monitor and /monitor/stats are always on",
            &so.metrics_endpoint);
  args.toggle("--slots", "--no-slots", "serve GET /slots (default on)", &so.slots_endpoint);
  args.integer("-to,--timeout", "S", "HTTP read/write timeout in seconds: a client silent this long is dropped\n"
               "(default 600)", &timeout, 1, 86400);
  args.integer("--max-queue", "N", "requests that may wait for a free slot; more get 503 (default 64)", &max_queue, 0,
               1 << 20);
  args.integer("--cache-reuse", "N", "past the common prefix, also keep runs of at least N cached tokens that the new\n"
               "prompt holds at the same positions (default 0: off). llama-server also moves chunks found\n"
               "at other positions by rotating their keys; Tandem does not. As there, a reused run was\n"
               "computed after other tokens, so a reply may differ from one decoded afresh",
               &so.cache_reuse, 0, INT32_MAX);
  args.toggle("--context-shift", "--no-context-shift",
              "when a slot's context is full, keep its first --keep tokens, drop half of the rest and go on\n"
              "generating (default off, as llama-server: a full slot ends the reply with finish_reason length).\n"
              "The kept newer half is decoded again at its new positions, not rotated in place", &so.context_shift);
  args.integer("--keep", "N", "prompt tokens (BOS not counted) kept when the context shifts (default 0; -1: the\n"
               "whole prompt); a request's n_keep overrides it", &so.defaults.n_keep, -1, INT32_MAX);
  args.flag("-kvu,--kv-unified", "one KV cache shared by all slots (always so in Tandem)", &kv_unified);
  args.custom("--swap-space", "GiB", "host RAM for KV cells, as vLLM's flag (default 0: none): a slot taken by a\n"
              "different prompt first copies its cells there, and a later prompt that continues them gets\n"
              "them back instead of decoding them again (usage's cached_tokens counts them). The least\n"
              "recently used go first when it is full", [&so](std::string_view v) {
                const std::string text(v);
                char* end = nullptr;
                const double gib = std::strtod(text.c_str(), &end);
                if (text.empty() || *end != '\0' || !(gib >= 0 && gib <= 1 << 20))
                  return invalid_argument("'%s' is not a size in GiB (0 to 1048576)", text.c_str());
                so.swap_bytes = size_t(gib * double(1 << 30));
                return Status::ok();
              });
  add_sampling_flags(args, sf);
  if (auto done = parse_command_line(args, argc, argv)) return *done;
  if (log_level != "debug" && log_level != "info" && log_level != "warn" && log_level != "error")
    return fail(invalid_argument("--log-level '%s': use debug, info, warn or error", log_level.c_str()));
  if (reasoning_format != "none" && reasoning_format != "deepseek")
    return fail(invalid_argument("--reasoning-format '%s': use none or deepseek", reasoning_format.c_str()));
  if (!api_key_file.empty())
    if (Status s = read_api_keys(api_key_file, &so.api_keys); !s.is_ok()) return fail(s);
  if (ef.list_devices) {  // as llama-server: print them and exit, with or without -m
    std::fputs(list_devices(ef).c_str(), stdout);
    return 0;
  }
  if (ef.model.empty()) return fail(invalid_argument("serve: no model given (use -m FILE)"));
  so.port = int(port);
  so.n_slots = int32_t(parallel);
  so.timeout_s = int(timeout);
  so.max_queue = max_queue;
  so.log_debug = verbose || log_level == "debug";
  so.reasoning_deepseek = reasoning_format == "deepseek";
  if (reasoning_budget == 0) so.chat_template_kwargs["enable_thinking"] = false;
  so.defaults.sampling = sf.params;
  ef.quiet = log_level == "warn" || log_level == "error";
  if (so.defaults.n_keep != 0 && !so.context_shift)
    std::fprintf(stderr, "note: --keep takes effect when the context shifts, and --context-shift is off (as in "
                 "llama-server): a full slot ends the reply\n");
  if (ef.ctx > 0 && ef.ctx < parallel * 2)
    return fail(invalid_argument("serve: -c %lld is too small for -np %lld slots (at least 2 tokens each)",
                                 (long long)ef.ctx, (long long)parallel));

  // SIGINT and SIGTERM end the server from a thread of their own; every other thread blocks them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client that left makes a write fail, not the process die

  // A template the user gave is checked before the model loads (minutes for a large model), not after.
  if (!so.chat_template.empty() || !so.chat_template_file.empty()) {
    auto chosen = chat::choose_chat_template(std::nullopt, so.chat_template, so.chat_template_file);
    if (!chosen) return fail(chosen.error());
    if (auto parsed = chat::Template::parse(chosen->source); !parsed)
      return fail(Status(parsed.error().code(), chosen->origin + ": " + parsed.error().message()));
  }

  server::Server srv(so);
  auto bound = srv.start();
  if (!bound) return fail(bound.error());
  std::thread([&srv, signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::fprintf(stderr, "\nserve: signal %d, stopping\n", sig);
    srv.stop();
  }).detach();
  std::fprintf(stderr, "serve: listening on http://%s:%d (loading the model; /health answers 503 until it is ready)\n",
               so.host.c_str(), *bound);

  auto engine = load_engine(ef);
  if (!engine) return fail(engine.error());
  const int64_t n_ctx = (*engine)->context->kv().n_cells();
  if (n_ctx < parallel * 2)
    return fail(invalid_argument("serve: a context of %lld tokens is too small for -np %lld slots", (long long)n_ctx,
                                 (long long)parallel));
  if (Status s = srv.attach(std::move(*engine)); !s.is_ok()) return fail(s);
  std::fprintf(stderr, "serve:   %d slots of %lld tokens each (-c %lld / -np %d), %s, context shift %s, queue %lld; "
               "default sampling: %s\n", so.n_slots, (long long)srv.n_ctx_slot(), (long long)n_ctx, so.n_slots,
               so.cont_batching ? "continuous batching" : "no continuous batching (-nocb)",
               so.context_shift ? "on" : "off", (long long)max_queue, describe_sampling(sf).c_str());
  if (so.swap_bytes > 0 || so.cache_reuse > 0)
    std::fprintf(stderr, "serve:   swap space %.2f GiB of host RAM for reassigned slots' cells; cache reuse %s\n",
                 double(so.swap_bytes) / double(1 << 30),
                 so.cache_reuse > 0 ? format("of runs >= %lld tokens", (long long)so.cache_reuse).c_str() : "off");
  std::fprintf(stderr, "serve:   ready on http://%s:%d%s\n", so.host.c_str(), *bound,
               so.api_keys.empty() ? "" : " (API key required)");
  srv.wait();
  return 0;
}

}  // namespace tandem::cli
