// tandem run: generate text from a prompt, or chat interactively, streaming tokens as they come.
// Flags follow llama.cpp's llama-cli / llama-completion where they mean the same thing.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "chat/chat_template.h"
#include "cli/engine_flags.h"
#include "engine/scheduler.h"
#include "sampling/json_schema.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

namespace tandem::cli {
namespace {

std::string token_text(const tokenizer::Tokenizer& tok, tokenizer::TokenId id) {
  return id == tokenizer::kNoToken ? "" : tok.token_to_piece(id, true);
}

struct Generation {
  int64_t n_prompt = 0, n_generated = 0, n_decoded = 0;  // n_decoded: generated tokens fed back (all but each reply's last)
  double t_prompt_s = 0, t_generate_s = 0;
};

// One reply through the engine's scheduler (the server's loop, one slot, driven on this thread):
// the slot reuses the cells it shares with `prompt`, and each piece is printed as it comes.
Status generate(Scheduler& scheduler, const tokenizer::Tokenizer& tok, std::shared_ptr<sampling::Sampler> sampler,
                std::vector<int32_t> prompt, int64_t n_predict, bool ignore_eos, Generation* stats,
                std::string* reply) {
  TANDEM_TRY(scheduler.check_prompt(prompt.size()));
  tokenizer::StreamDecoder decoder(tok, false, false);
  const auto emit = [&](const std::string& piece) {
    std::fputs(piece.c_str(), stdout);
    std::fflush(stdout);
    if (reply) *reply += piece;
  };
  FinishReason reason = FinishReason::Error;
  GenerationStats done;
  Status status;
  auto task = std::make_shared<GenerationTask>();
  task->prompt = std::move(prompt);
  task->sampler = std::move(sampler);
  task->n_predict = n_predict < 0 ? -1 : n_predict;  // -2 (llama.cpp: until the context is full) is -1 here
  task->ignore_eos = ignore_eos;
  task->on_token = [&](const GeneratedToken& t) {
    emit(decoder.push(t.id));
    return true;
  };
  task->on_done = [&](FinishReason r, const GenerationStats& s, const Status& st) {
    reason = r;
    done = s;
    status = st;
  };
  TANDEM_CHECK(scheduler.submit(task));  // the queue is empty between replies
  scheduler.run_until_idle();
  emit(decoder.flush());
  if (reason == FinishReason::Error) return status;
  stats->n_prompt += done.n_prompt - done.n_cached;
  stats->n_generated += done.n_generated;
  stats->n_decoded += std::max<int64_t>(0, done.n_generated - 1);
  stats->t_prompt_s += done.t_prompt_ms / 1e3;
  stats->t_generate_s += done.t_generate_ms / 1e3;
  if (reason == FinishReason::Length && (n_predict < 0 || done.n_generated < n_predict))
    std::fprintf(stderr, "\n[stopped: the context of %lld tokens is full; raise -c]\n",
                 (long long)scheduler.options().n_ctx_slot);
  return Status::ok();
}

// The prompt's time runs to its logits; the generation's from there: sampling every token and
// decoding all but the last, so its speed is counted over the tokens decoded.
// The --expert-trace file: {"model", "n_layer", "n_expert", "n_expert_used", "keys": [...]}.
Status write_expert_trace(const std::string& path, const std::string& model, const model::HParams& hp,
                          model::ExpertStats& routing) {
  routing.flush_trace();
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return io_error("run: --expert-trace: cannot write '%s': %s", path.c_str(), std::strerror(errno));
  std::string keys;
  for (int32_t k : routing.trace) keys += (keys.empty() ? "" : ",") + std::to_string(k);
  const bool ok = std::fprintf(f, "{\"model\": %s, \"n_layer\": %lld, \"n_expert\": %lld, \"n_expert_used\": %lld, "
                               "\"keys\": [%s]}\n", nlohmann::json(model).dump().c_str(), (long long)hp.n_layer,
                               (long long)hp.n_expert, (long long)hp.n_expert_used, keys.c_str()) > 0;
  if (std::fclose(f) != 0 || !ok) return io_error("run: --expert-trace: cannot write '%s'", path.c_str());
  return Status::ok();
}

// cache0: the expert cache's counters before the first prompt (the warm-up's reads are load time).
void print_stats(const Generation& g, const Engine& e, const expert::ExpertCacheStats& cache0) {
  const double t_load_s = e.t_load_s;
  std::fprintf(stderr, "\n\nload: %.2f s | prompt: %lld tokens, %.2f s, %.2f tokens/s | generation: %lld tokens, "
               "%lld decoded in %.2f s, %.2f tokens/s\n",
               t_load_s, (long long)g.n_prompt, g.t_prompt_s, g.t_prompt_s > 0 ? double(g.n_prompt) / g.t_prompt_s : 0.0,
               (long long)g.n_generated, (long long)g.n_decoded, g.t_generate_s,
               g.t_generate_s > 0 ? double(g.n_decoded) / g.t_generate_s : 0.0);
  if (const expert::ExpertCache* c = e.model->expert_cache())
    std::fprintf(stderr, "%s\n",
                 describe_expert_cache(c->stats().since(cache0), uint64_t(g.n_prompt + g.n_decoded)).c_str());
}

}  // namespace

int run_main(int argc, char** argv) {
  EngineFlags ef;
  SamplingFlags sf;
  std::string prompt, prompt_file, system_prompt, chat_template, chat_template_file;
  int64_t n_predict = -1;
  bool conversation = false, no_conversation = false, ignore_eos = false, display_prompt = true;
  ArgParser args("run", "tandem run -m MODEL [-p PROMPT | -f FILE] [-n N] [-c CTX] [-t T] [sampling flags]",
                 "Generates text from a prompt and streams it, or chats interactively (no prompt, or -cnv)\n"
                 "using the model's chat template. Prints prompt and generation speed at the end.");
  add_engine_flags(args, ef);
  args.string("-p,--prompt", "TEXT", "prompt to continue", &prompt);
  args.string("-f,--file", "FILE", "read the prompt from a file", &prompt_file);
  std::string expert_trace_path;
  args.string("--expert-trace", "FILE", "MoE models: write the routers' choices for the prompt and the reply, token by\n"
              "token, as JSON keys layer * n_expert + expert (the access stream an expert cache sees;\n"
              "docs/expert-tier.md replays such traces through the eviction policies)", &expert_trace_path);
  args.integer("-n,--n-predict,--predict", "N",
               "tokens to generate (default -1: until end of text or a full context; -2, llama.cpp's\n"
               "'until the context is full', is the same here: there is no context shift)",
               &n_predict, -2, INT32_MAX);
  args.flag("-cnv,--conversation", "chat interactively with the model's chat template", &conversation);
  args.flag("-no-cnv,--no-conversation", "never chat: continue the prompt (llama-completion behaviour)",
            &no_conversation);
  args.string("-sys,--system-prompt", "TEXT", "system message that opens the chat (-cnv)", &system_prompt);
  args.string("--chat-template", "NAME|JINJA",
              "chat template instead of the model's: a built-in name (chatml, llama3, gemma, deepseek3,\n"
              "deepseek-r1) or Jinja source", &chat_template);
  args.string("--chat-template-file", "FILE", "chat template (Jinja) from a file", &chat_template_file);
  bool jinja = true;
  args.flag("--jinja", "render chat templates with the Jinja engine (always on; accepted for llama.cpp's flags)",
            &jinja);
  args.flag("--ignore-eos", "keep generating past end-of-text tokens", &ignore_eos);
  args.toggle("--display-prompt", "--no-display-prompt", "echo the prompt before the generated text (default)",
              &display_prompt);
  add_sampling_flags(args, sf);
  std::string grammar, grammar_file, json_schema, json_schema_file;
  args.string("--grammar", "GBNF", "the output must match this grammar (llama.cpp's GBNF, from the rule 'root')", &grammar);
  args.string("--grammar-file", "FILE", "the grammar from a file", &grammar_file);
  args.string("-j,--json-schema", "SCHEMA",
              "the output must be JSON valid under this JSON Schema (e.g. {} for any JSON value); it stops\n"
              "where -n ends it even when unfinished: then it is a valid prefix", &json_schema);
  args.string("--json-schema-file", "FILE", "the JSON Schema from a file", &json_schema_file);
  if (auto done = parse_command_line(args, argc, argv)) return *done;
  if (int(!grammar.empty()) + int(!grammar_file.empty()) + int(!json_schema.empty()) + int(!json_schema_file.empty()) > 1)
    return fail(invalid_argument("run: give one of --grammar, --grammar-file, -j and --json-schema-file"));
  for (auto [file, text] : {std::pair{&grammar_file, &grammar}, std::pair{&json_schema_file, &json_schema}}) {
    if (file->empty()) continue;
    std::ifstream in(*file, std::ios::binary);
    if (!in) return fail(not_found("run: cannot read %s", file->c_str()));
    std::stringstream ss;
    ss << in.rdbuf();
    *text = ss.str();
    if (text->empty()) return fail(invalid_argument("run: %s is empty", file->c_str()));
  }
  if (!json_schema.empty()) {
    auto converted = sampling::json_schema_to_grammar(std::string_view(json_schema));
    if (!converted) return fail(Status(converted.error().code(), "run: " + converted.error().message()));
    grammar = std::move(*converted);
  }
  if (!prompt.empty() && !prompt_file.empty()) return fail(invalid_argument("run: give -p or -f, not both"));
  if (!prompt_file.empty()) {
    std::ifstream in(prompt_file, std::ios::binary);
    if (!in) return fail(not_found("run: cannot read prompt file %s", prompt_file.c_str()));
    std::stringstream ss;
    ss << in.rdbuf();
    prompt = ss.str();
  }
  const bool chat = !no_conversation && (conversation || (prompt.empty() && prompt_file.empty()));
  // A template the user gave is checked before the model loads (minutes for a large one), as serve does.
  if (chat && (!chat_template.empty() || !chat_template_file.empty())) {
    auto chosen = chat::choose_chat_template(std::nullopt, chat_template, chat_template_file);
    if (!chosen) return fail(Status(chosen.error().code(), "run: " + chosen.error().message()));
    if (auto parsed = chat::Template::parse(chosen->source); !parsed)
      return fail(Status(parsed.error().code(), "run: " + chosen->origin + ": " + parsed.error().message()));
  }

  auto engine = load_engine(ef);
  if (!engine) return fail(engine.error());
  Engine& e = **engine;
  auto made = make_sampler(sf, int32_t(e.tokenizer->n_tokens()));
  if (!made) return fail(made.error());
  if (!grammar.empty()) {
    sampling::SamplerParams p = made->params();
    p.grammar = grammar;
    made = sampling::Sampler::create(p, int32_t(e.tokenizer->n_tokens()),
                                     sampling::GrammarVocab::from_tokenizer(*e.tokenizer));
    if (!made) return fail(Status(made.error().code(), "run: " + made.error().message()));
  }
  auto sampler = std::make_shared<sampling::Sampler>(std::move(*made));
  std::fprintf(stderr, "sampling: seed %u, %s\n\n", sampler->seed(), describe_sampling(sf).c_str());

  SchedulerOptions so;
  so.n_ctx_slot = e.context->kv().n_cells();
  so.n_prefill_chunk = e.context->options().n_batch;
  so.own_thread = false;
  Scheduler scheduler(*e.context, e.tokenizer->vocab(), so);
  Generation stats;
  model::ExpertStats routing;
  if (!expert_trace_path.empty()) {
    const auto& hp = e.model->hparams();
    if (hp.n_expert == 0)
      return fail(invalid_argument("run: --expert-trace: %s has no experts (architecture %s)", ef.model.c_str(),
                                   hp.arch.c_str()));
    routing.reset(hp.n_layer, hp.n_expert);
    routing.record_trace = true;
    e.context->set_expert_stats(&routing);
  }
  const expert::ExpertCacheStats cache0 = e.model->expert_cache() ? e.model->expert_cache()->stats() : expert::ExpertCacheStats{};
  if (!chat) {
    auto tokens = e.tokenizer->tokenize(prompt, true, true);
    if (!tokens) return fail(tokens.error());
    if (tokens->empty()) return fail(invalid_argument("run: the prompt is empty"));
    if (display_prompt) std::fputs(prompt.c_str(), stdout);
    if (Status s = generate(scheduler, *e.tokenizer, sampler, std::move(*tokens), n_predict, ignore_eos, &stats, nullptr);
        !s.is_ok())
      return fail(s);
    // -n (or a full context, or a grammar the vocabulary cannot finish) may end the text early.
    if (sampler->grammar() && !sampler->grammar()->is_complete())
      std::fprintf(stderr, "\n[stopped before the grammar was complete: the output is a valid prefix%s]\n",
                   stats.n_generated == n_predict ? "; raise -n" : "");
    print_stats(stats, e, cache0);
    if (!expert_trace_path.empty())
      if (Status st = write_expert_trace(expert_trace_path, ef.model, e.model->hparams(), routing); !st.is_ok())
        return fail(st);
    return 0;
  }

  // The template as llama-server picks it (chat/chat_template.h), parsed once.
  const auto gguf_template = e.model->file().metadata().get_string("tokenizer.chat_template");
  auto chosen = chat::template_for_model(gguf_template, chat_template, chat_template_file, [&](std::string_view t) {
    return e.tokenizer->vocab().find(t) != tokenizer::kNoToken;
  });
  if (!chosen) return fail(Status(chosen.error().code(), "run: " + chosen.error().message() + "; or use -p PROMPT -no-cnv"));
  if (chosen->guessed)
    std::fprintf(stderr, "note: the model has no chat template: the %s (its turn tokens', else llama-server's "
                         "fallback; --chat-template NAME picks another)\n", chosen->origin.c_str());
  auto tmpl = chat::Template::parse(chosen->source);
  if (!tmpl) return fail(Status(tmpl.error().code(), "run: " + chosen->origin + ": " + tmpl.error().message()));
  const std::string bos = token_text(*e.tokenizer, e.tokenizer->vocab().special.bos);
  const std::string eos = token_text(*e.tokenizer, e.tokenizer->vocab().special.eos);
  std::fprintf(stderr, "chat (template: %s): type a message, an empty line or Ctrl-D ends\n", chosen->origin.c_str());

  std::vector<chat::ChatMessage> messages;
  if (!system_prompt.empty()) messages.push_back({"system", system_prompt});
  if (!prompt.empty()) std::fprintf(stderr, "> %s\n", prompt.c_str());
  for (;;) {
    std::string line = prompt;
    prompt.clear();
    if (line.empty()) {
      std::fprintf(stderr, "> ");
      if (!std::getline(std::cin, line) || line.empty()) break;
    }
    messages.push_back({"user", line});
    auto text = chat::apply_chat_template(*tmpl, messages, true, bos, eos);
    if (!text) return fail(Status(text.error().code(), "run: chat template: " + text.error().message()));
    auto tokenized = e.tokenizer->tokenize(*text, true, true);
    if (!tokenized) return fail(tokenized.error());
    std::vector<int32_t> tokens = std::move(*tokenized);
    // The template writes BOS itself when it wants one; tokenize() may have added a second.
    const auto bos_id = e.tokenizer->vocab().special.bos;
    if (tokens.size() >= 2 && tokens[0] == bos_id && tokens[1] == bos_id) tokens.erase(tokens.begin());
    if (tokens.empty()) return fail(invalid_argument("run: the chat template rendered an empty prompt"));
    // The whole conversation is rendered each turn; the slot decodes only what differs from its
    // cells (a template may rewrite earlier turns, e.g. drop an R1 answer's reasoning).
    std::string reply;
    sampler->reset_grammar();  // each reply is held to the grammar on its own
    if (Status s = generate(scheduler, *e.tokenizer, sampler, std::move(tokens), n_predict, false, &stats, &reply);
        !s.is_ok())
      return fail(s);
    std::fputs("\n", stdout);
    messages.push_back({"assistant", reply});
  }
  print_stats(stats, e, cache0);
  return 0;
}

}  // namespace tandem::cli
