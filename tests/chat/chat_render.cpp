// tandem_chat_render TEMPLATE CONTEXT_JSON: renders a template file with a context file, for
// scripts/fixtures/chat_diff.py's comparisons against jinja2 (strftime_now's clock fixed as there).
// Prints the output; on failure "PARSE_ERROR msg" (exit 2) or "RENDER_ERROR msg" (exit 3).
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>

#include "chat/template.h"

static std::string read_file(const char* path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: tandem_chat_render TEMPLATE CONTEXT_JSON\n");
    return 1;
  }
  auto tmpl = tandem::chat::Template::parse(read_file(argv[1]));
  if (!tmpl) {
    std::printf("PARSE_ERROR %s", tmpl.error().message().c_str());
    return 2;
  }
  auto context = tandem::chat::parse_json(read_file(argv[2]));
  if (!context) {
    std::fprintf(stderr, "error: %s\n", context.error().message().c_str());
    return 1;
  }
  std::tm now{};  // gen_chat.py's FIXED_NOW: 2026-01-15 09:05:07
  now.tm_year = 2026 - 1900;
  now.tm_mday = 15;
  now.tm_hour = 9;
  now.tm_min = 5;
  now.tm_sec = 7;
  timegm(&now);
  tandem::chat::RenderOptions options;
  options.now = now;
  auto out = tmpl->render(*context, options);
  if (!out) {
    std::printf("RENDER_ERROR %s", out.error().message().c_str());
    return 3;
  }
  std::fwrite(out->data(), 1, out->size(), stdout);
  return 0;
}
