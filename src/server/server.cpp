// The routes of tandem serve and the OpenAI / llama-server JSON they answer with.
#include "server/server.h"

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>

#include "chat/chat_template.h"
#include "chat/reasoning.h"
#include "chat/tool_calls.h"
#include "chat/value.h"
#include "sampling/grammar.h"
#include "server/generation.h"
#include "server/monitor.h"
#include "server/openapi.h"
#include "server/web_assets.h"

namespace tandem::server {
namespace {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

const char* error_type(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 500: return "server_error";
    case 501: return "not_supported_error";
    case 503: return "unavailable_error";
    default: return "invalid_request_error";
  }
}

int http_status(const Status& s) {
  switch (s.code()) {
    case StatusCode::InvalidArgument: case StatusCode::Unsupported: return 400;
    case StatusCode::NotFound: return 404;
    default: return 500;
  }
}

void reply(HttpResponse& res, const json& body, int status = 200) {
  res.status = status;
  res.body = dump(body);
}

void reply_error(HttpResponse& res, int status, const std::string& message) {
  res.status = status;
  res.body = error_json(status, message);
}

void reply_error(HttpResponse& res, const Status& s) { reply_error(res, http_status(s), s.message()); }

json bytes_of(const std::string& s) {
  json out = json::array();
  for (unsigned char c : s) out.push_back(int(c));
  return out;
}

double per_second(int64_t n, double ms) { return ms > 0 ? 1e3 * double(n) / ms : 0.0; }

json timings(const GenerationStats& s) {
  return {{"cache_n", s.n_cached}, {"prompt_n", s.n_prompt - s.n_cached}, {"prompt_ms", s.t_prompt_ms},
          {"prompt_per_second", per_second(s.n_prompt - s.n_cached, s.t_prompt_ms)},
          {"predicted_n", s.n_generated}, {"predicted_ms", s.t_generate_ms},
          {"predicted_per_second", per_second(s.n_generated, s.t_generate_ms)}};
}

}  // namespace

std::string error_json(int status, const std::string& message) {
  return dump({{"error", {{"message", message}, {"type", error_type(status)}, {"code", status}}}});
}

namespace {

// Everything one generation request needs after parsing: its prompts as tokens and the exchange.
struct Job {
  ParsedRequest req;
  std::vector<std::vector<int32_t>> prompts;  // per choice
  std::vector<size_t> prompt_of;              // choice -> index into prompts
  std::string rendered;                       // Chat: the templated prompt
  bool starts_in_reasoning = false, use_tools = false;
  std::shared_ptr<Exchange> exchange;
  std::string id, model;
  int64_t created = 0;
};

json logprob_entry(const tokenizer::Tokenizer& tok, const TokenRecord& r, bool native) {
  json top = json::array();
  for (const auto& t : r.token.top) {
    const std::string piece = tok.token_to_piece(t.id, false);
    json e = {{"token", piece}, {"logprob", t.logprob}, {"bytes", bytes_of(piece)}};
    if (native) e["id"] = t.id;
    top.push_back(std::move(e));
  }
  json e = {{"token", r.piece}, {"logprob", r.token.logprob}, {"bytes", bytes_of(r.piece)}, {"top_logprobs", top}};
  if (native) e["id"] = r.token.id;
  return e;
}

// /v1/completions' older logprobs shape. With `prompt` (echo), the prompt's tokens come first, as
// OpenAI's legacy API gives them: the first has null for its log-probability and alternatives, each
// other is scored given the tokens before it (prompt_scored).
json completion_logprobs(const tokenizer::Tokenizer& tok, const std::vector<TokenRecord>& records, size_t offset,
                         const std::vector<int32_t>* prompt = nullptr,
                         const std::vector<TokenRecord>* prompt_scored = nullptr) {
  json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  if (prompt) {
    size_t at = 0;
    const std::string first = tok.token_to_piece((*prompt)[0], false);
    tokens.push_back(first);
    lps.push_back(nullptr);
    tops.push_back(nullptr);
    offsets.push_back(at);
    at += first.size();
    for (const auto& r : *prompt_scored) {
      tokens.push_back(r.piece);
      lps.push_back(r.token.logprob);
      json top = json::object();
      for (const auto& t : r.token.top) top[tok.token_to_piece(t.id, false)] = t.logprob;
      tops.push_back(std::move(top));
      offsets.push_back(at);
      at += r.piece.size();
    }
  }
  for (const auto& r : records) {
    tokens.push_back(r.piece);
    lps.push_back(r.token.logprob);
    json top = json::object();
    for (const auto& t : r.token.top) top[tok.token_to_piece(t.id, false)] = t.logprob;
    tops.push_back(std::move(top));
    offsets.push_back(offset);
    offset += r.piece.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

const char* finish_name(const ChoiceState& c, bool tool_calls) {
  if (c.reason == FinishReason::Length) return "length";
  return tool_calls ? "tool_calls" : "stop";
}

json usage(const Job& job, const std::vector<ChoiceState>& choices) {
  int64_t n_prompt = 0, n_cached = 0, n_gen = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    n_gen += choices[i].stats.n_generated;
    // Each distinct prompt counts once (n > 1 repeats it).
    if (i == 0 || job.prompt_of[i] != job.prompt_of[i - 1]) {
      n_prompt += int64_t(job.prompts[job.prompt_of[i]].size());
      n_cached += choices[i].stats.n_cached;
    }
  }
  return {{"prompt_tokens", n_prompt}, {"completion_tokens", n_gen}, {"total_tokens", n_prompt + n_gen},
          {"prompt_tokens_details", {{"cached_tokens", n_cached}}}};
}

// A call's id: the model's own where it writes one (Mistral, Kimi-K2), else one unique to this server
// run (the parser numbers calls from call_0 in every reply; clients match results by id across turns).
// Whether a template reads text given as a content-part list (llama.cpp probes its templates alike).
bool renders_content_parts(const chat::Template& tmpl) {
  static const char* kProbe = "tandem-content-part-probe";
  auto msgs = chat::parse_json(std::string(R"([{"role": "user", "content": [{"type": "text", "text": ")") + kProbe +
                               "\"}]}]");
  auto text = chat::apply_chat_template(tmpl, *msgs, true, "", "", chat::Value());
  // A template that prints the list itself (its repr) does not read parts.
  return text && text->find(kProbe) != std::string::npos && text->find("'type'") == std::string::npos &&
         text->find("\"type\"") == std::string::npos;
}

json tool_call_json(const Job& job, size_t choice, size_t k, const chat::ToolCall& c) {
  std::string id = c.id;
  if (id == "call_" + std::to_string(k)) id = "call_" + job.id.substr(job.id.find('-') + 1) + "_" + std::to_string(choice) + "_" + id.substr(5);
  return {{"id", id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}};
}

// The final message of a chat choice: reasoning split off, tool calls parsed. A reply `cut` by max_tokens
// or a full slot keeps the calls it completed (those a stream has sent already) and drops the partial one.
json chat_message(const Job& job, size_t choice, const std::string& text, bool reasoning, chat::ToolCallFormat fmt,
                  bool cut, bool* has_calls) {
  json msg = {{"role", "assistant"}};
  std::string content = text;
  if (reasoning) {
    const auto parts = chat::split_reasoning(text, job.starts_in_reasoning);
    content = parts.content;
    if (!parts.reasoning.empty()) msg["reasoning_content"] = parts.reasoning;
  }
  *has_calls = false;
  if (job.use_tools) {
    auto parsed = chat::parse_tool_calls(content, fmt);
    if (parsed.tool_calls.empty() && cut) {
      parsed.tool_calls = chat::complete_tool_calls(content, fmt);
      parsed.content = content.substr(0, std::min(content.size(), chat::tool_call_start(content, fmt)));
    }
    if (!parsed.tool_calls.empty()) {
      *has_calls = true;
      content = parsed.content;
      json calls = json::array();
      for (size_t k = 0; k < parsed.tool_calls.size(); ++k) calls.push_back(tool_call_json(job, choice, k, parsed.tool_calls[k]));
      msg["tool_calls"] = calls;
    }
  }
  // OpenAI: a reply of tool calls alone has null content.
  msg["content"] = *has_calls && content.empty() ? json(nullptr) : json(content);
  return msg;
}

}  // namespace

struct Server::State {
  std::atomic<bool> ready{false};
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Scheduler> scheduler;
  std::unique_ptr<Monitor> monitor;  // reads the scheduler: destroyed before it
  std::optional<chat::Template> tmpl;
  std::string template_source, template_origin, bos, eos, model_name, model_path;
  chat::ToolCallFormat tool_format = chat::ToolCallFormat::None;
  // The template renders content given as a list of parts (Kimi-K2's, GLM's, Mistral Small's do): lists
  // are passed to it as they came, as Hugging Face does; other templates get the parts joined.
  bool typed_content = false;
  std::shared_ptr<const sampling::GrammarVocab> grammar_vocab;  // for requests with a grammar or JSON schema
  std::thread http_thread;
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stopped = false;
  std::atomic<uint64_t> next_id{0};

  std::string new_id(const char* prefix) { return prefix + std::to_string(std::time(nullptr)) + "-" + std::to_string(next_id++); }
  const tokenizer::Tokenizer& tok() const { return *engine->tokenizer; }

  // The chat prompt of a request's messages (already checked by parse_request), with its tools and the
  // template variables of --chat-template-kwargs / --reasoning-budget 0 and its chat_template_kwargs.
  // A last assistant message (no tool calls) is continued: the prompt is the rendering of the turns
  // before it with the assistant's turn opened, then its text, so the reply extends it (llama-server's
  // prefill; templates have no common way to leave a turn open).
  Result<std::string> render(const ParsedRequest& r, const ordered_json& server_kwargs) const {
    ordered_json messages = r.messages;
    if (!typed_content) join_content_parts(&messages);
    std::string prefill;
    const ordered_json& last = messages.back();
    if (last["role"] == "assistant" && !last.contains("tool_calls") && last["content"].is_string()) {
      prefill = last["content"].get<std::string>();
      messages.erase(messages.size() - 1);
    }
    TANDEM_ASSIGN(chat::Value msgs, chat::parse_json(messages.dump()));
    ordered_json vars = server_kwargs;
    vars.update(r.template_kwargs);
    if (!r.tools.is_null()) vars["tools"] = r.tools;
    TANDEM_ASSIGN(chat::Value extra, chat::parse_json(vars.dump()));
    auto text = chat::apply_chat_template(*tmpl, msgs, r.add_generation_prompt || !prefill.empty(), bos, eos, extra);
    if (!text) return Status(text.error().code() == StatusCode::InvalidArgument ? StatusCode::InvalidArgument
                                                                                : StatusCode::Unsupported,
                             text.error().message());
    return *text + prefill;
  }

  Result<std::vector<int32_t>> tokenize_prompt(const std::string& text) const {
    TANDEM_ASSIGN(std::vector<int32_t> tokens, tok().tokenize(text, true, true));
    // A template that writes BOS itself gets a second one from tokenize(): drop it, as `run` does.
    const auto bos_id = tok().vocab().special.bos;
    if (tokens.size() >= 2 && tokens[0] == bos_id && tokens[1] == bos_id) tokens.erase(tokens.begin());
    return tokens;
  }

  // Completions' echo: choice i's prompt as the request gave it, token ids as text.
  std::string echo_text(const Job& job, size_t i) const {
    std::string text;
    for (const PromptPart& part : job.req.prompts[job.prompt_of[i]])
      text += part.is_tokens ? tok().detokenize(part.tokens, true, false) : part.text;
    return text;
  }

  void generate(const HttpRequest& http, HttpResponse& res, Endpoint endpoint, const ServerOptions& o);
  Result<Job> prepare(const HttpRequest& http, Endpoint endpoint, const ServerOptions& o);
  json final_body(const Job& job, const std::vector<ChoiceState>& choices, const ServerOptions& o);
  void stream(const Job& job, const ChunkWriter& write, const ServerOptions& o);
};

Server::Server(ServerOptions options) : options_(std::move(options)), state_(std::make_unique<State>()) {
  HttpServerOptions ho;
  // Idle and slow connections hold a thread each until -to drops them: room for many beside every
  // slot and queued stream (threads waiting on a socket cost memory only).
  ho.n_threads = options_.n_http_threads > 0 ? options_.n_http_threads
                                             : int(options_.n_slots + std::min<int64_t>(options_.max_queue, 64) + 256);
  ho.read_timeout_s = ho.write_timeout_s = options_.timeout_s;
  ho.max_body_bytes = options_.max_body_bytes;
  ho.error_body = error_json;
  ho.before_route = [this](const HttpRequest& req, HttpResponse& res) {
    // Before routing the body is not read yet: its announced length.
    if (options_.log_debug)
      std::fprintf(stderr, "request: %s %s (content-length %s)\n", req.method.c_str(), req.path.c_str(),
                   req.header("content-length").empty() ? "0" : req.header("content-length").c_str());
    // The pages are public (they ask for the key themselves); what they fetch is not.
    if (options_.api_keys.empty() || req.path == "/health" || req.path == "/v1/health" ||
        (req.method == "GET" && find_web_asset(req.path)))
      return false;
    std::string key = req.header("x-api-key");
    const std::string auth = req.header("authorization");
    if (auth.rfind("Bearer ", 0) == 0) key = auth.substr(7);
    for (const auto& k : options_.api_keys)
      if (!key.empty() && key == k) return false;
    reply_error(res, 401, key.empty() ? "an API key is required (Authorization: Bearer KEY)" : "invalid API key");
    return true;
  };
  http_ = make_http_server(ho);
  add_routes();
}

Server::~Server() {
  stop();
  if (state_->http_thread.joinable()) state_->http_thread.join();
  state_->monitor.reset();
  state_->scheduler.reset();  // before the engine it drives
}

int64_t Server::n_ctx_slot() const { return state_->scheduler ? state_->scheduler->options().n_ctx_slot : 0; }

Result<int> Server::start() {
  TANDEM_ASSIGN(const int port, http_->bind(options_.host, options_.port));
  state_->http_thread = std::thread([this] { http_->run(); });
  return port;
}

void Server::stop() {
  {
    std::lock_guard<std::mutex> lock(state_->stop_mu);
    if (state_->stopped) return;
    state_->stopped = true;
  }
  http_->stop();
  state_->stop_cv.notify_all();
}

void Server::wait() {
  std::unique_lock<std::mutex> lock(state_->stop_mu);
  state_->stop_cv.wait(lock, [&] { return state_->stopped; });
}

Status Server::attach(std::unique_ptr<Engine> engine) {
  State& st = *state_;
  st.engine = std::move(engine);
  const auto& tok = *st.engine->tokenizer;
  auto piece = [&](tokenizer::TokenId id) { return id == tokenizer::kNoToken ? "" : tok.token_to_piece(id, true); };
  st.bos = piece(tok.vocab().special.bos);
  st.eos = piece(tok.vocab().special.eos);
  const auto gguf_template = st.engine->model->file().metadata().get_string("tokenizer.chat_template");
  auto chosen = chat::template_for_model(gguf_template, options_.chat_template, options_.chat_template_file,
                                         [&](std::string_view t) { return tok.vocab().find(t) != tokenizer::kNoToken; });
  if (!chosen) return chosen.error();
  if (chosen->guessed)
    std::fprintf(stderr, "note: the model has no chat template: /v1/chat/completions renders with the %s (its turn "
                         "tokens', else llama-server's fallback; --chat-template NAME picks another)\n",
                 chosen->origin.c_str());
  auto parsed = chat::Template::parse(chosen->source);
  if (!parsed) return Status(parsed.error().code(), chosen->origin + ": " + parsed.error().message());
  st.tmpl.emplace(std::move(*parsed));
  st.template_source = chosen->source;
  st.template_origin = chosen->origin;
  st.tool_format = chat::detect_tool_call_format(chosen->source);
  st.typed_content = renders_content_parts(*st.tmpl);
  const std::string& path = st.engine->model->file().path();
  st.model_path = path;
  st.model_name = !options_.alias.empty() ? options_.alias : path.substr(path.find_last_of('/') + 1);
  SchedulerOptions so;
  so.n_slots = options_.n_slots;
  so.n_ctx_slot = st.engine->context->kv().n_cells() / options_.n_slots;
  so.max_queue = options_.max_queue;
  so.n_prefill_chunk = st.engine->context->options().n_ubatch;
  so.log_steps = options_.log_debug;
  so.cont_batching = options_.cont_batching;
  so.context_shift = options_.context_shift;
  so.swap_bytes = options_.swap_bytes;
  so.cache_reuse = options_.cache_reuse;
  st.grammar_vocab = sampling::GrammarVocab::from_tokenizer(tok);
  st.scheduler = std::make_unique<Scheduler>(*st.engine->context, tok.vocab(), so, st.grammar_vocab);
  st.monitor = std::make_unique<Monitor>(*st.engine, *st.scheduler, st.model_name);
  st.ready = true;
  return Status::ok();
}

Result<Job> Server::State::prepare(const HttpRequest& http, Endpoint endpoint, const ServerOptions& o) {
  Job job;
  TANDEM_ASSIGN(job.req, parse_request(http.body, endpoint, o.defaults));
  const ParsedRequest& r = job.req;
  const int64_t n_vocab = int64_t(tok().n_tokens());
  if (r.id_slot >= scheduler->options().n_slots)
    return invalid_argument("'id_slot' %d: this server has %d slots (0..%d)", r.id_slot, scheduler->options().n_slots,
                            scheduler->options().n_slots - 1);
  if (endpoint == Endpoint::Chat) {
    TANDEM_ASSIGN(job.rendered, render(r, o.chat_template_kwargs));
    TANDEM_ASSIGN(auto tokens, tokenize_prompt(job.rendered));
    job.prompts.push_back(std::move(tokens));
    job.starts_in_reasoning = chat::prompt_opens_reasoning(job.rendered);
    job.use_tools = !r.tools.is_null() && !r.tools.empty() && tool_format != chat::ToolCallFormat::None &&
                    r.tool_choice != ToolChoice::None;
    if (r.tool_choice == ToolChoice::Required) {
      if (tool_format == chat::ToolCallFormat::None)
        return invalid_argument("tool_choice asks for a tool call, but the chat template (%s) has no tool-call format",
                                template_origin.c_str());
      if (!r.sampling.grammar.empty())
        return invalid_argument("tool_choice \"required\" or a named function cannot go with a grammar or response_format");
      TANDEM_ASSIGN(job.req.sampling.grammar, chat::tool_call_grammar(tool_format, template_source, r.tools,
                                                                       r.tool_choice_name, r.parallel_tool_calls,
                                                                       job.starts_in_reasoning));
    }
  } else {
    for (const Prompt& p : r.prompts) {
      // Text parts after the first get no BOS (llama-server's tokenize_mixed).
      std::vector<int32_t> tokens;
      for (size_t k = 0; k < p.size(); ++k) {
        if (p[k].is_tokens) {
          for (int32_t t : p[k].tokens)
            if (t >= n_vocab) return invalid_argument("'prompt': token id %d is outside the vocabulary (%lld tokens)",
                                                       t, (long long)n_vocab);
          tokens.insert(tokens.end(), p[k].tokens.begin(), p[k].tokens.end());
          continue;
        }
        TANDEM_ASSIGN(auto part, k == 0 ? tokenize_prompt(p[k].text) : tok().tokenize(p[k].text, false, true));
        tokens.insert(tokens.end(), part.begin(), part.end());
      }
      job.prompts.push_back(std::move(tokens));
    }
  }
  for (const auto& p : job.prompts) TANDEM_TRY(scheduler->check_prompt(p.size()));
  // The sampler's own checks (logit-bias ids within the vocabulary, ranges) before anything is queued.
  if (auto s = sampling::Sampler::create(r.sampling, int32_t(n_vocab), grammar_vocab); !s) return s.error();
  for (size_t p = 0; p < job.prompts.size(); ++p)
    for (int32_t i = 0; i < r.n_choices; ++i) job.prompt_of.push_back(p);
  // Each choice waits in the queue while the slots are busy: more than it holds could never all wait.
  const int64_t max_queue = scheduler->options().max_queue;
  if (int64_t(job.prompt_of.size()) > std::max<int64_t>(1, max_queue))
    return invalid_argument("the request asks for %zu generations (%zu prompts, n = %d), more than the %lld that may "
                            "wait for a slot (--max-queue)", job.prompt_of.size(), job.prompts.size(), r.n_choices,
                            (long long)max_queue);
  job.exchange = std::make_shared<Exchange>(tok(), r.stop, job.prompt_of.size());
  job.id = new_id(endpoint == Endpoint::Chat ? "chatcmpl-" : "cmpl-");
  job.model = r.model.empty() ? model_name : r.model;
  job.created = int64_t(std::time(nullptr));
  return job;
}

void Server::State::generate(const HttpRequest& http, HttpResponse& res, Endpoint endpoint, const ServerOptions& o) {
  if (!ready) return reply_error(res, 503, "Loading model");
  auto prepared = prepare(http, endpoint, o);
  if (!prepared) return reply_error(res, prepared.error());
  auto job = std::make_shared<Job>(std::move(*prepared));
  const ParsedRequest& r = job->req;
  for (size_t i = 0; i < job->prompt_of.size(); ++i) {
    // echo with logprobs scores the prompt too (OpenAI's legacy completions): a full prefill, every row's logits.
    auto task = job->exchange->make_task(i, endpoint == Endpoint::Completions && r.echo && r.logprobs);
    task->prompt = job->prompts[job->prompt_of[i]];
    task->sampling = r.sampling;
    // Each of n choices draws differently from a fixed seed; greedy choices are equal anyway.
    if (r.sampling.seed != sampling::kDefaultSeed) task->sampling.seed = r.sampling.seed + uint32_t(i);
    task->n_predict = r.n_predict;
    task->ignore_eos = r.ignore_eos;
    task->want_logprobs = r.logprobs;
    task->n_probs = r.n_probs;
    task->cache_prompt = r.cache_prompt;
    task->id_slot = r.id_slot;
    task->n_keep = r.n_keep;
    if (!scheduler->submit(task)) {
      job->exchange->cancel_all();
      return reply_error(res, 503, format("the server is busy: %zu requests are waiting for a slot (the queue holds %lld)",
                                          scheduler->n_queued(), (long long)o.max_queue));
    }
  }
  if (r.stream) {
    res.content_type = "text/event-stream";
    res.stream = [this, job, &o](const ChunkWriter& write) { stream(*job, write, o); };
    return;
  }
  // The wait wakes at every token: a client that left is noticed within a step, and its choices are
  // cancelled (their slots free at the scheduler's next step), as a failed write does for a stream.
  std::vector<ChoiceState> choices;
  for (bool done = false; !done;) {
    job->exchange->wait(250, [&](const std::vector<ChoiceState>& c, bool all_done) {
      if (all_done) choices = c, done = true;
    });
    if (!done && http.client_gone()) {
      job->exchange->cancel_all();
      if (o.log_debug) std::fprintf(stderr, "request: the client left; %s cancelled\n", job->id.c_str());
      return;
    }
  }
  for (const auto& c : choices)
    if (c.reason == FinishReason::Error) return reply_error(res, 500, "generation failed: " + c.error.message());
  reply(res, final_body(*job, choices, o));
}

json Server::State::final_body(const Job& job, const std::vector<ChoiceState>& choices, const ServerOptions& o) {
  const ParsedRequest& r = job.req;
  if (r.endpoint == Endpoint::Native) {
    const ChoiceState& c = choices[0];
    json body = {{"index", 0}, {"content", c.text}, {"id_slot", c.stats.id_slot}, {"stop", true}, {"model", job.model},
                 {"tokens_predicted", c.stats.n_generated}, {"tokens_evaluated", c.stats.n_prompt},
                 {"tokens_cached", c.stats.n_cached}, {"truncated", c.stats.n_shifts > 0},
                 {"stop_type", c.stopped_by_word ? "word" : c.reason == FinishReason::Length ? "limit" : "eos"},
                 {"stopping_word", c.stopping_word}, {"timings", timings(c.stats)}};
    if (r.return_tokens) {
      json ids = json::array();
      for (const auto& t : c.tokens) ids.push_back(t.token.id);
      body["tokens"] = ids;
    }
    if (r.n_probs > 0) {
      json probs = json::array();
      for (const auto& t : c.tokens) probs.push_back(logprob_entry(tok(), t, true));
      body["completion_probabilities"] = probs;
    }
    return body;
  }
  json out = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceState& c = choices[i];
    json choice = {{"index", i}};
    if (r.endpoint == Endpoint::Chat) {
      bool calls = false;
      choice["message"] = chat_message(job, i, c.text, r.reasoning_deepseek.value_or(o.reasoning_deepseek), tool_format, c.reason == FinishReason::Length, &calls);
      choice["finish_reason"] = finish_name(c, calls);
      if (r.logprobs) {
        json content = json::array();
        for (const auto& t : c.tokens) content.push_back(logprob_entry(tok(), t, false));
        choice["logprobs"] = {{"content", content}};
      } else {
        choice["logprobs"] = nullptr;
      }
    } else {
      const std::string echo = r.echo ? echo_text(job, i) : "";
      choice["text"] = echo + c.text;
      choice["finish_reason"] = finish_name(c, false);
      choice["logprobs"] = !r.logprobs ? json(nullptr)
                           : r.echo  ? completion_logprobs(tok(), c.tokens, echo.size(), &job.prompts[job.prompt_of[i]],
                                                           &c.prompt_tokens)
                                     : completion_logprobs(tok(), c.tokens, 0);
    }
    out.push_back(std::move(choice));
  }
  return {{"id", job.id}, {"object", r.endpoint == Endpoint::Chat ? "chat.completion" : "text_completion"},
          {"created", job.created}, {"model", job.model}, {"system_fingerprint", "tandem"},
          {"choices", out}, {"usage", usage(job, choices)}, {"timings", timings(choices[0].stats)}};
}

// Server-sent events: one chunk per batch of new text of each choice, the finish chunk of each, the
// usage chunk when asked, and data: [DONE] (OpenAI endpoints). A failed write means the client left:
// every choice is cancelled and the slots free at the scheduler's next step.
void Server::State::stream(const Job& job, const ChunkWriter& write, const ServerOptions& o) {
  const ParsedRequest& r = job.req;
  const size_t n = job.prompt_of.size();
  struct Progress {
    size_t sent = 0, tokens_sent = 0, calls_sent = 0;
    std::string content_sent;  // chat: the content deltas so far
    bool role_sent = false, finished = false, echoed = false;
    std::unique_ptr<chat::ReasoningSplitter> reasoning;
    std::unique_ptr<chat::ToolCallStream> calls;  // with tools: the calls closed so far
  };
  std::vector<Progress> progress(n);
  const bool split = r.endpoint == Endpoint::Chat && r.reasoning_deepseek.value_or(o.reasoning_deepseek);
  for (auto& p : progress) {
    if (split) p.reasoning = std::make_unique<chat::ReasoningSplitter>(job.starts_in_reasoning);
    if (job.use_tools) p.calls = std::make_unique<chat::ToolCallStream>(tool_format);
  }
  auto event = [](const json& j) { return "data: " + dump(j) + "\n\n"; };
  auto chunk = [&](json choices) {
    return json{{"id", job.id}, {"object", r.endpoint == Endpoint::Chat ? "chat.completion.chunk" : "text_completion"},
                {"created", job.created}, {"model", job.model}, {"system_fingerprint", "tandem"},
                {"choices", std::move(choices)}};
  };
  std::vector<ChoiceState> final_state;
  for (bool all_done = false; !all_done;) {
    std::vector<std::string> out;
    job.exchange->wait(1000, [&](const std::vector<ChoiceState>& choices, bool done) {
      for (size_t i = 0; i < n; ++i) {
        const ChoiceState& c = choices[i];
        Progress& p = progress[i];
        if (p.finished) continue;
        if (c.done && c.reason == FinishReason::Error) {
          out.push_back(event({{"error", {{"message", "generation failed: " + c.error.message()}, {"type", "server_error"},
                                          {"code", 500}}}}));
          p.finished = true;
          continue;
        }
        size_t limit = job.exchange->sendable(c);
        // Tool calls are sent whole at the end: hold the text from where one starts.
        if (job.use_tools) limit = std::min(limit, c.done ? c.text.size() : chat::tool_call_start(c.text, tool_format));
        std::string delta = limit > p.sent ? c.text.substr(p.sent, limit - p.sent) : "";
        p.sent = std::max(p.sent, limit);
        const size_t n_tokens = c.tokens.size();
        if (r.endpoint == Endpoint::Native) {
          if (!delta.empty()) {
            json j = {{"index", i}, {"content", delta}, {"stop", false}, {"id_slot", c.stats.id_slot}};
            if (r.return_tokens) {
              json ids = json::array();
              for (size_t t = p.tokens_sent; t < n_tokens; ++t) ids.push_back(c.tokens[t].token.id);
              j["tokens"] = ids;
            }
            if (r.n_probs > 0) {
              json probs = json::array();
              for (size_t t = p.tokens_sent; t < n_tokens; ++t) probs.push_back(logprob_entry(tok(), c.tokens[t], true));
              j["completion_probabilities"] = probs;
            }
            p.tokens_sent = n_tokens;
            out.push_back(event(j));
          }
        } else if (r.endpoint == Endpoint::Chat) {
          json d = json::object();
          if (!p.role_sent) d["role"] = "assistant", p.role_sent = true;
          chat::ReasoningDelta parts{"", delta};
          if (p.reasoning) {
            parts = p.reasoning->push(delta);
            if (c.done) {
              auto rest = p.reasoning->flush();
              parts.reasoning += rest.reasoning;
              parts.content += rest.content;
            }
          }
          // Each tool call goes out once it is whole (the rest, and Llama 3 / Mistral calls, at the end).
          bool calls = false;
          if (job.use_tools) {
            json fresh = json::array();
            if (c.done) {
              const json message =
                  chat_message(job, i, c.text, r.reasoning_deepseek.value_or(o.reasoning_deepseek), tool_format, c.reason == FinishReason::Length, &calls);
              if (calls) {
                const json& all = message["tool_calls"];
                for (size_t k = p.calls_sent; k < all.size(); ++k) fresh.push_back(all[k]), fresh.back()["index"] = k;
                // The text after the calls: what the whole message's content adds to what was sent.
                const std::string final = message["content"].is_string() ? message["content"].get<std::string>() : "";
                parts.content = final.compare(0, p.content_sent.size(), p.content_sent) == 0
                                    ? final.substr(std::min(final.size(), p.content_sent.size()))
                                    : "";
              }
            } else {
              for (const chat::ToolCall& call : p.calls->push(c.text)) {
                const size_t k = p.calls_sent + fresh.size();
                fresh.push_back(tool_call_json(job, i, k, call));
                fresh.back()["index"] = k;
              }
            }
            if (!fresh.empty()) {
              p.calls_sent += fresh.size();
              d["tool_calls"] = std::move(fresh);
            }
            calls = calls || p.calls_sent > 0;
          }
          if (!parts.reasoning.empty()) d["reasoning_content"] = parts.reasoning;
          if (!parts.content.empty() || d.contains("role")) d["content"] = parts.content;
          p.content_sent += parts.content;
          json lp = nullptr;
          if (r.logprobs && n_tokens > p.tokens_sent) {
            json content = json::array();
            for (size_t t = p.tokens_sent; t < n_tokens; ++t) content.push_back(logprob_entry(tok(), c.tokens[t], false));
            lp = {{"content", content}};
            p.tokens_sent = n_tokens;
          }
          if (d.size() > 0 && (d.contains("content") || d.contains("reasoning_content") || d.contains("tool_calls")))
            out.push_back(event(chunk(json::array({{{"index", i}, {"delta", d}, {"logprobs", lp}, {"finish_reason", nullptr}}}))));
          if (c.done) out.push_back(event(chunk(json::array({{{"index", i}, {"delta", json::object()},
                                                               {"logprobs", nullptr}, {"finish_reason", finish_name(c, calls)}}}))));
        } else {
          // echo: the prompt leads the first chunk, sent once the prompt is decoded (and scored).
          const bool echo_now = r.echo && !p.echoed && (n_tokens > 0 || c.done);
          const std::string echo = echo_now ? echo_text(job, i) : "";
          if (!delta.empty() || echo_now) {
            const std::vector<TokenRecord> fresh(c.tokens.begin() + long(p.tokens_sent), c.tokens.end());
            json lp = nullptr;
            if (r.logprobs)
              lp = echo_now ? completion_logprobs(tok(), fresh, echo.size(), &job.prompts[job.prompt_of[i]],
                                                                 &c.prompt_tokens)
                                          : completion_logprobs(tok(), fresh, 0);
            p.tokens_sent = n_tokens;
            p.echoed = p.echoed || echo_now;
            out.push_back(event(chunk(json::array({{{"index", i}, {"text", echo + delta}, {"logprobs", lp}, {"finish_reason", nullptr}}}))));
          }
          if (c.done) out.push_back(event(chunk(json::array({{{"index", i}, {"text", ""}, {"logprobs", nullptr},
                                                               {"finish_reason", finish_name(c, false)}}}))));
        }
        if (c.done) p.finished = true;
      }
      if (done) final_state = choices, all_done = true;
    });
    for (const auto& e : out)
      if (!write(e)) return job.exchange->cancel_all();
  }
  if (r.endpoint == Endpoint::Native) {
    json last = final_body(job, final_state, o);
    last["content"] = "";
    last.erase("completion_probabilities");
    last.erase("tokens");
    write(event(last));
    return;
  }
  if (r.include_usage) {
    json u = chunk(json::array());
    u["usage"] = usage(job, final_state);
    if (!write(event(u))) return;
  }
  write("data: [DONE]\n\n");
}

void Server::add_routes() {
  State& st = *state_;
  const ServerOptions& o = options_;
  auto not_ready = [&st](HttpResponse& res) {
    if (st.ready) return false;
    reply_error(res, 503, "Loading model");
    return true;
  };
  for (const char* path : {"/health", "/v1/health"})
    http_->route("GET", path, [&st](const HttpRequest&, HttpResponse& res) {
      if (!st.ready) return reply_error(res, 503, "Loading model");
      reply(res, {{"status", "ok"}});
    });
  for (const char* path : {"/v1/chat/completions", "/chat/completions"})
    http_->route("POST", path, [&st, &o](const HttpRequest& req, HttpResponse& res) { st.generate(req, res, Endpoint::Chat, o); });
  for (const char* path : {"/v1/completions", "/completions"})
    http_->route("POST", path, [&st, &o](const HttpRequest& req, HttpResponse& res) {
      st.generate(req, res, Endpoint::Completions, o);
    });
  http_->route("POST", "/completion", [&st, &o](const HttpRequest& req, HttpResponse& res) {
    st.generate(req, res, Endpoint::Native, o);
  });
  for (const char* path : {"/v1/models", "/models"})
    http_->route("GET", path, [&st, not_ready](const HttpRequest&, HttpResponse& res) {
      if (not_ready(res)) return;
      const auto& hp = st.engine->model->hparams();
      reply(res, {{"object", "list"},
                  {"data", json::array({{{"id", st.model_name}, {"object", "model"}, {"created", std::time(nullptr)},
                                         {"owned_by", "tandem"},
                                         {"meta", {{"n_ctx_train", hp.n_ctx_train}, {"n_vocab", hp.n_vocab},
                                                   {"n_embd", hp.n_embd}}}}})}});
    });
  http_->route("GET", "/props", [&st, &o, not_ready](const HttpRequest&, HttpResponse& res) {
    if (not_ready(res)) return;
    const auto& p = o.defaults.sampling;
    reply(res, {{"default_generation_settings",
                 {{"n_ctx", st.scheduler->options().n_ctx_slot},
                  {"params", {{"n_predict", o.defaults.n_predict}, {"temperature", p.temp}, {"top_k", p.top_k},
                              {"top_p", p.top_p}, {"min_p", p.min_p}, {"repeat_penalty", p.repeat_penalty},
                              {"seed", p.seed}}}}},
                {"total_slots", o.n_slots}, {"model_path", st.model_path}, {"model_alias", st.model_name},
                {"chat_template", st.template_source}, {"chat_template_origin", st.template_origin},
                {"bos_token", st.bos}, {"eos_token", st.eos},
                {"modalities", {{"vision", false}, {"audio", false}}}, {"build_info", "tandem"}});
  });
  http_->route("GET", "/slots", [&st, &o, not_ready](const HttpRequest&, HttpResponse& res) {
    if (!o.slots_endpoint) return reply_error(res, 501, "the /slots endpoint is off (--no-slots)");
    if (not_ready(res)) return;
    json out = json::array();
    for (const auto& s : st.scheduler->slots())
      out.push_back({{"id", s.id}, {"n_ctx", st.scheduler->options().n_ctx_slot}, {"is_processing", s.busy},
                     {"n_past", s.n_past}, {"n_prompt_tokens", s.n_prompt}, {"n_decoded", s.n_generated}});
    reply(res, out);
  });
  http_->route("POST", "/tokenize", [&st, not_ready](const HttpRequest& req, HttpResponse& res) {
    if (not_ready(res)) return;
    auto j = parse_object(req.body);
    if (!j) return reply_error(res, j.error());
    if (!j->contains("content") || !(*j)["content"].is_string()) return reply_error(res, 400, "'content' must be a string");
    bool add_special = false, with_pieces = false;
    for (auto [name, out] : {std::pair{"add_special", &add_special}, std::pair{"with_pieces", &with_pieces}}) {
      const auto it = j->find(name);
      if (it == j->end() || it->is_null()) continue;
      if (!it->is_boolean()) return reply_error(res, 400, format("'%s' must be true or false", name));
      *out = it->get<bool>();
    }
    auto tokens = st.tok().tokenize((*j)["content"].get<std::string>(), add_special, true);
    if (!tokens) return reply_error(res, tokens.error());
    json out = json::array();
    for (int32_t t : *tokens) {
      if (!with_pieces) out.push_back(t);
      else out.push_back({{"id", t}, {"piece", st.tok().token_to_piece(t, true)}});
    }
    reply(res, {{"tokens", out}});
  });
  http_->route("POST", "/detokenize", [&st, not_ready](const HttpRequest& req, HttpResponse& res) {
    if (not_ready(res)) return;
    auto j = parse_object(req.body);
    if (!j) return reply_error(res, j.error());
    std::vector<int32_t> ids;
    const auto it = j->find("tokens");
    if (it == j->end() || !it->is_array()) return reply_error(res, 400, "'tokens' must be a list of token ids");
    for (const auto& t : *it) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= int64_t(st.tok().n_tokens()))
        return reply_error(res, 400, format("'tokens': each must be a token id below %zu", st.tok().n_tokens()));
      ids.push_back(int32_t(t.get<int64_t>()));
    }
    reply(res, {{"content", st.tok().detokenize(ids, false, true)}});
  });
  http_->route("POST", "/apply-template", [&st, &o, not_ready](const HttpRequest& req, HttpResponse& res) {
    if (not_ready(res)) return;
    auto parsed = parse_request(req.body, Endpoint::Chat, o.defaults);
    if (!parsed) return reply_error(res, parsed.error());
    auto text = st.render(*parsed, o.chat_template_kwargs);
    if (!text) return reply_error(res, text.error());
    reply(res, {{"prompt", *text}});
  });
  for (const char* path : {"/v1/embeddings", "/embeddings", "/embedding"})
    http_->route("POST", path, [](const HttpRequest&, HttpResponse& res) {
      reply_error(res, 501, "embeddings are not supported by this server (generation models only)");
    });
  http_->route("GET", "/openapi.json", [](const HttpRequest&, HttpResponse& res) { res.body = openapi_json(); });
  http_->route("GET", "/metrics", [&st, &o, not_ready](const HttpRequest&, HttpResponse& res) {
    // llama-server's answer without --metrics (tools/server/server-context.cpp, get_metrics).
    if (!o.metrics_endpoint)
      return reply_error(res, 501, "This server does not support metrics endpoint. Start it with `--metrics`");
    if (not_ready(res)) return;
    res.content_type = "text/plain; version=0.0.4; charset=utf-8";
    res.body = prometheus_text(st.monitor->scrape());
  });
  http_->route("GET", "/monitor/stats", [&st, not_ready](const HttpRequest&, HttpResponse& res) {
    if (not_ready(res)) return;
    reply(res, monitor_json(st.monitor->snapshot()));
  });
  for (const WebAsset& a : web_assets())
    http_->route("GET", a.url_path, [a](const HttpRequest&, HttpResponse& res) {
      res.content_type = std::string(a.content_type);
      res.body = std::string(a.body);
    });
}

}  // namespace tandem::server
