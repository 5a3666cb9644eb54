// URL paths and content types of the embedded web files (server/web_assets.h).
#include "server/web_assets.h"

namespace tandem::server {
namespace {

std::string_view content_type(std::string_view name) {
  auto ends = [&](std::string_view ext) { return name.size() >= ext.size() && name.substr(name.size() - ext.size()) == ext; };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  return "application/octet-stream";
}

}  // namespace

std::vector<WebAsset> web_assets() {
  std::vector<WebAsset> out;
  for (const WebFile& f : embedded_web_files()) {
    std::string path = f.name == "index.html" ? "/" : f.name == "monitor.html" ? "/monitor" : "/" + std::string(f.name);
    out.push_back({std::move(path), content_type(f.name), f.body});
  }
  return out;
}

const WebAsset* find_web_asset(std::string_view url_path) {
  static const std::vector<WebAsset> assets = web_assets();
  for (const WebAsset& a : assets)
    if (a.url_path == url_path) return &a;
  return nullptr;
}

}  // namespace tandem::server
