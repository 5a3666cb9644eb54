// tandem serve: llama-server's and OpenAI's HTTP API over the engine's scheduler. The HTTP side comes
// up first (GET /health answers 503 while the model loads); attach() hands it the loaded engine.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/scheduler.h"
#include "server/http.h"
#include "server/request.h"

namespace tandem::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;
  int32_t n_slots = 4;
  std::vector<std::string> api_keys;  // empty: no key needed
  std::string alias;                  // the model name /v1/models reports (default: the file's name)
  RequestDefaults defaults;
  std::string chat_template, chat_template_file;  // as `run`'s flags
  bool reasoning_deepseek = true;     // --reasoning-format deepseek: <think>...</think> -> reasoning_content
  // Variables every chat-template rendering sees (--chat-template-kwargs; --reasoning-budget 0 sets
  // enable_thinking false); a request's chat_template_kwargs override them.
  nlohmann::ordered_json chat_template_kwargs = nlohmann::ordered_json::object();
  int timeout_s = 600;                // -to: HTTP read/write timeout
  int64_t max_queue = 64;
  int n_http_threads = 0;             // 0: slots + queue room, so queued streams keep their connections
  size_t max_body_bytes = 8u << 20;
  bool log_debug = false;
  bool slots_endpoint = true;
  bool metrics_endpoint = false;      // --metrics: GET /metrics (without it 501, as llama-server answers)
  bool cont_batching = true;   // -nocb: false
  bool context_shift = false;  // --context-shift: a full slot drops half its tokens after n_keep and goes on
  size_t swap_bytes = 0;       // --swap-space
  int64_t cache_reuse = 0;     // --cache-reuse N
};

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  // Binds and starts serving in a background thread; returns the bound port.
  Result<int> start();
  // Makes the model available: builds the scheduler, picks the chat template; /health turns 200.
  Status attach(std::unique_ptr<Engine> engine);
  // Blocks until stop() (e.g. from a signal-handling thread).
  void wait();
  void stop();
  const ServerOptions& options() const { return options_; }
  int64_t n_ctx_slot() const;

 private:
  struct State;
  void add_routes();
  ServerOptions options_;
  std::unique_ptr<State> state_;
  std::unique_ptr<HttpServer> http_;
};

// OpenAI's error body: {"error": {"message", "type", "code"}}.
std::string error_json(int status, const std::string& message);

}  // namespace tandem::server
