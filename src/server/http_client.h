// A plain HTTP GET for Tandem's own clients (tandem top reading /monitor/stats), over the library the
// server uses (cpp-httplib), so nothing else needs an HTTP stack.
#pragma once

#include <string>

#include "core/status.h"

namespace tandem::server {

// GET base_url + path, e.g. ("http://127.0.0.1:8080", "/monitor/stats"). base_url: http://HOST[:PORT]
// (https is refused: the library is built without TLS here). api_key, when set, goes in a Bearer
// header. IoError when the server cannot be reached; a non-200 answer is an error naming the status
// and the server's message.
Result<std::string> http_get(const std::string& base_url, const std::string& path, const std::string& api_key,
                             int timeout_s);

}  // namespace tandem::server
