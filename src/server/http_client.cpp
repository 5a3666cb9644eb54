// http_get over cpp-httplib's client (server/http_client.h).
#include "server/http_client.h"

#include <httplib.h>

#include <nlohmann/json.hpp>

namespace tandem::server {

Result<std::string> http_get(const std::string& base_url, const std::string& path, const std::string& api_key,
                             int timeout_s) {
  if (base_url.rfind("http://", 0) != 0)
    return invalid_argument("'%s': give the server's address as http://HOST:PORT", base_url.c_str());
  std::string base = base_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  if (base.find('/', 7) != std::string::npos)
    return invalid_argument("'%s': give the server's address only (http://HOST:PORT), without a path", base_url.c_str());
  httplib::Client client(base);
  client.set_connection_timeout(timeout_s, 0);
  client.set_read_timeout(timeout_s, 0);
  httplib::Headers headers;
  if (!api_key.empty()) headers.emplace("Authorization", "Bearer " + api_key);
  auto res = client.Get(path, headers);
  if (!res) return io_error("cannot reach %s%s: %s", base.c_str(), path.c_str(), httplib::to_string(res.error()).c_str());
  if (res->status != 200) {
    // The server's errors are OpenAI's {"error": {"message": ...}}; anything else is shown as it is.
    auto j = nlohmann::json::parse(res->body, nullptr, false);
    std::string message = res->body.substr(0, 200);
    if (j.is_object() && j.contains("error") && j["error"].is_object() && j["error"].contains("message") &&
        j["error"]["message"].is_string())
      message = j["error"]["message"].get<std::string>();
    return io_error("%s%s answered %d: %s", base.c_str(), path.c_str(), res->status, message.c_str());
  }
  return res->body;
}

}  // namespace tandem::server
