// The web pages tandem serve answers with (web/: the chat page at /, the live monitor at /monitor, and
// their scripts and styles), embedded into the binary at build time by cmake/embed_web.cmake, so the
// server needs no files beside it and the pages need nothing from outside the machine.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tandem::server {

struct WebFile {
  std::string_view name;  // file name in web/
  std::string_view body;
};

// Every file of web/ (generated: build/generated/web_assets.cpp).
std::span<const WebFile> embedded_web_files();

struct WebAsset {
  std::string url_path;          // "/" (index.html), "/monitor" (monitor.html), else "/<name>"
  std::string_view content_type; // from the file's extension
  std::string_view body;
};

std::vector<WebAsset> web_assets();
// The asset served at this path, or null.
const WebAsset* find_web_asset(std::string_view url_path);

}  // namespace tandem::server
