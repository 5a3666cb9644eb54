// The OpenAPI 3 description of tandem serve's endpoints, served at GET /openapi.json (and read by the
// schemathesis test, which sends generated requests to every operation).
#pragma once

#include <string>

namespace tandem::server {

const std::string& openapi_json();

}  // namespace tandem::server
