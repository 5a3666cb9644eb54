// HttpServer over cpp-httplib (Debian's libcpp-httplib-dev, the library's compiled form): routes,
// chunked streaming, the body-size limit (413), 404 versus 405, and timeouts that free the
// connection of a slow or half-closed client.
#include <arpa/inet.h>
#include <dirent.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <set>

#include "server/http.h"

namespace tandem::server {
namespace {

// The port and address of a socket's end, or -1.
int port_of(const sockaddr_storage& a, std::string* address) {
  char text[INET6_ADDRSTRLEN] = "";
  if (a.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(a);
    inet_ntop(AF_INET, &in.sin_addr, text, sizeof text);
    *address = text;
    return ntohs(in.sin_port);
  }
  if (a.ss_family == AF_INET6) {
    const auto& in = reinterpret_cast<const sockaddr_in6&>(a);
    inet_ntop(AF_INET6, &in.sin6_addr, text, sizeof text);
    *address = text;
    return ntohs(in.sin6_port);
  }
  return -1;
}

// Debian's cpp-httplib (0.11) shows a handler neither its socket nor whether the client is still
// there (later versions have Request::is_connection_closed). The connection's socket is the
// descriptor whose two ends are the request's: found among this process's descriptors. It stays
// open, so the number cannot be reused, while the handler runs on the connection's thread.
int connection_socket(const httplib::Request& req) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  while (const dirent* e = readdir(dir)) {
    const int fd = std::atoi(e->d_name);
    sockaddr_storage local{}, peer{};
    socklen_t n_local = sizeof local, n_peer = sizeof peer;
    if (e->d_name[0] < '0' || e->d_name[0] > '9' || getsockname(fd, reinterpret_cast<sockaddr*>(&local), &n_local) != 0 ||
        getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &n_peer) != 0)
      continue;
    std::string local_addr, peer_addr;
    if (port_of(local, &local_addr) == req.local_port && port_of(peer, &peer_addr) == req.remote_port &&
        peer_addr == req.remote_addr) {
      found = fd;
      break;
    }
  }
  closedir(dir);
  return found;
}

// The client closed (or reset) the connection: readable with nothing to read. Bytes waiting (a
// pipelined request) mean it is still there.
bool peer_closed(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLERR | POLLHUP)) return true;
  char c;
  return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

// cpp-httplib (0.11, and 0.58 still) reads the body of a POST, PUT or PATCH that announces neither a
// length nor chunks until the client closes or the read timeout (-to) passes; RFC 9112 gives such a
// request no body, but an answer after ten minutes helps nobody. Such requests get 411 at once.
bool reads_body_until_close(const httplib::Request& req) {
  static const std::set<std::string> kMethods = {"POST", "PUT", "PATCH"};
  if (!kMethods.count(req.method) || req.has_header("Content-Length")) return false;
  std::string encoding = req.get_header_value("Transfer-Encoding");
  std::transform(encoding.begin(), encoding.end(), encoding.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return encoding.find("chunked") == std::string::npos;
}

class HttplibServer : public HttpServer {
 public:
  explicit HttplibServer(const HttpServerOptions& o) : options_(o) {
    const int n_threads = std::max(1, o.n_threads);
    svr_.new_task_queue = [n_threads] { return new httplib::ThreadPool(size_t(n_threads)); };
    svr_.set_read_timeout(o.read_timeout_s, 0);
    svr_.set_write_timeout(o.write_timeout_s, 0);
    svr_.set_payload_max_length(o.max_body_bytes);
    svr_.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
      // httplib calls this for every status >= 400, routes' own errors too: keep their bodies.
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      std::string message;
      if (res.status == 404 && paths_.count(req.path)) {
        res.status = 405;
        message = "method " + req.method + " is not allowed on " + req.path;
      } else if (res.status == 404) {
        message = "no route " + req.method + " " + req.path;
      } else if (res.status == 413) {
        message = "the request body exceeds the limit of " + std::to_string(options_.max_body_bytes) + " bytes";
      } else {
        message = "malformed HTTP request (status " + std::to_string(res.status) + ")";
      }
      res.set_content(options_.error_body ? options_.error_body(res.status, message) : message, "application/json");
      return httplib::Server::HandlerResponse::Handled;
    }));
    svr_.set_exception_handler([this](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
      res.status = 500;
      res.set_content(options_.error_body ? options_.error_body(500, "internal error") : "internal error",
                      "application/json");
    });
    // One server per port: the library's default also sets SO_REUSEPORT, with which a second server
    // binds the same port and the kernel splits the connections between the two.
    svr_.set_socket_options([](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    // CORS as llama-server answers it: browsers on other origins (chat front ends) may call the API;
    // a preflight OPTIONS is answered before any key check.
    svr_.Options(R"(.*)", [](const httplib::Request& req, httplib::Response& res) {
      res.status = 204;
      res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      const std::string asked = req.get_header_value("Access-Control-Request-Headers");
      res.set_header("Access-Control-Allow-Headers", asked.empty() ? "*" : asked);
      res.set_header("Access-Control-Max-Age", "86400");
    });
    svr_.set_post_routing_handler([](const httplib::Request& req, httplib::Response& res) {
      if (req.has_header("Origin")) {
        res.set_header("Access-Control-Allow-Origin", req.get_header_value("Origin"));
        res.set_header("Access-Control-Allow-Credentials", "true");
        res.set_header("Vary", "Origin");
      }
    });
    // Runs before the library reads the body.
    svr_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (req.method == "OPTIONS") return httplib::Server::HandlerResponse::Unhandled;
      if (reads_body_until_close(req)) {
        res.status = 411;
        const std::string message = req.method + " " + req.path +
                                    ": the request gives neither Content-Length nor Transfer-Encoding: chunked";
        res.set_content(options_.error_body ? options_.error_body(411, message) : message, "application/json");
        res.set_header("Connection", "close");  // whatever the client sends next is no request
        return httplib::Server::HandlerResponse::Handled;
      }
      if (!options_.before_route) return httplib::Server::HandlerResponse::Unhandled;
      HttpResponse out;
      if (!options_.before_route(convert(req), out)) return httplib::Server::HandlerResponse::Unhandled;
      res.status = out.status;
      res.set_content(out.body, out.content_type);
      return httplib::Server::HandlerResponse::Handled;
    });
  }

  void route(const std::string& method, const std::string& path, HttpHandler handler) override {
    paths_.insert(path);
    auto h = [handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
      HttpResponse out;
      HttpRequest in = convert(req);
      in.client_gone = [&req, fd = -2]() mutable {
        if (fd == -2) fd = connection_socket(req);  // looked up on first use: most handlers never ask
        return fd >= 0 && peer_closed(fd);
      };
      handler(in, out);
      res.status = out.status;
      if (!out.stream) {
        res.set_content(out.body, out.content_type);
        return;
      }
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(out.content_type, [stream = std::move(out.stream)](size_t, httplib::DataSink& sink) {
        bool alive = true;
        stream([&](std::string_view chunk) {
          alive = alive && sink.write(chunk.data(), chunk.size());
          return alive;
        });
        if (alive) sink.done();
        return alive;
      });
    };
    if (method == "GET") svr_.Get(path, h);
    else svr_.Post(path, h);
  }

  Result<int> bind(const std::string& host, int port) override {
    const int bound = port == 0 ? svr_.bind_to_any_port(host) : (svr_.bind_to_port(host, port) ? port : -1);
    if (bound <= 0) return io_error("cannot listen on %s:%d (address in use, or not an address of this machine)",
                                    host.c_str(), port);
    return bound;
  }
  void run() override { svr_.listen_after_bind(); }
  void stop() override { svr_.stop(); }

 private:
  static HttpRequest convert(const httplib::Request& req) {
    HttpRequest r{req.method, req.path, req.body, {}};
    for (const auto& [name, value] : req.headers) {
      std::string lower = name;
      std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return char(std::tolower(c)); });
      r.headers[lower] = value;
    }
    return r;
  }

  HttpServerOptions options_;
  httplib::Server svr_;
  std::set<std::string> paths_;
};

}  // namespace

std::unique_ptr<HttpServer> make_http_server(const HttpServerOptions& options) {
  return std::make_unique<HttplibServer>(options);
}

}  // namespace tandem::server
