// The HTTP layer the server's routes are written against, small enough to swap the library behind it
// (http_httplib.cpp wraps Debian's cpp-httplib). Routes see a request and fill a response; a streamed
// response is a function that writes chunks until done or until the client is gone.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "core/status.h"

namespace tandem::server {

struct HttpRequest {
  std::string method, path, body;
  std::map<std::string, std::string> headers;  // names lower-cased
  // True once the client has closed its connection (a poll, no wait). Callable only while the
  // handler runs; a handler that waits long for a non-streamed reply checks it to stop early.
  std::function<bool()> client_gone = [] { return false; };
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? "" : it->second;
  }
};

// Writes one chunk to the client; false once the client has gone (then stop writing).
using ChunkWriter = std::function<bool(std::string_view)>;

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  // Set for a streamed body (server-sent events): runs on the connection's thread after the handler
  // returns, writing chunks; `body` is then ignored.
  std::function<void(const ChunkWriter& write)> stream;
};

using HttpHandler = std::function<void(const HttpRequest&, HttpResponse&)>;

struct HttpServerOptions {
  int n_threads = 8;             // connections served at once; more wait for a free thread
  int read_timeout_s = 600;      // a client silent this long while sending its request is dropped
  int write_timeout_s = 600;
  size_t max_body_bytes = 8u << 20;  // larger request bodies get 413
  // The body of an error the library itself produces (404, 405, 413, a malformed request).
  std::function<std::string(int status, const std::string& message)> error_body;
  // Runs before routing; returning true means the response is final (e.g. 401 for a missing key).
  std::function<bool(const HttpRequest&, HttpResponse&)> before_route;
};

class HttpServer {
 public:
  virtual ~HttpServer() = default;
  // method: "GET" or "POST". A path registered for another method answers 405 for this one.
  virtual void route(const std::string& method, const std::string& path, HttpHandler handler) = 0;
  // Binds host:port (port 0: any free port); returns the port bound.
  virtual Result<int> bind(const std::string& host, int port) = 0;
  // Serves until stop() (from any thread).
  virtual void run() = 0;
  virtual void stop() = 0;
};

std::unique_ptr<HttpServer> make_http_server(const HttpServerOptions& options);

}  // namespace tandem::server
