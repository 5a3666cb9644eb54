// The Jinja engine against Python's jinja2: every feature case and every real template x
// conversation in tests/fixtures/chat, byte for byte (expected outputs from scripts/fixtures/gen_chat.py).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "chat/template.h"

namespace tandem::chat {
namespace {

const std::string kDir = std::string(TANDEM_SOURCE_DIR) + "/tests/fixtures/chat/";

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The generator's fixed strftime_now clock: 2026-01-15 09:05:07.
RenderOptions fixed_clock() {
  std::tm tm{};
  tm.tm_year = 2026 - 1900;
  tm.tm_mon = 0;
  tm.tm_mday = 15;
  tm.tm_hour = 9;
  tm.tm_min = 5;
  tm.tm_sec = 7;
  timegm(&tm);  // fills in the weekday and day of the year
  RenderOptions o;
  o.now = tm;
  return o;
}

struct Outcome {
  bool ok = false;
  std::string text;  // output, or the error message
};

// Renders `source` with `context` (JSON text) and checks the result against jinja2's `expected`.
// Returns true when identical (or failing as jinja2 fails).
bool check(const std::string& source, const std::string& context_json, const nlohmann::ordered_json& expected, std::string* why) {
  auto t = Template::parse(source);
  if (expected.value("at", "") == "parse") {
    if (t) *why = "jinja2 refuses this template at parse time; Tandem parsed it";
    return !t;
  }
  Outcome got;
  if (!t) {
    got.text = t.error().message();
  } else {
    auto context = parse_json(context_json);
    if (!context) {
      *why = context.error().message();
      return false;
    }
    auto r = t->render(*context, fixed_clock());
    got.ok = r.has_value();
    got.text = r ? *r : r.error().message();
  }
  if (expected.contains("output")) {
    const std::string want = expected["output"];
    if (got.ok && got.text == want) return true;
    *why = got.ok ? "output differs:\n--- jinja2\n" + want + "\n--- tandem\n" + got.text : "failed: " + got.text;
    return false;
  }
  // jinja2 failed: so must Tandem; raise_exception's message must come back verbatim.
  if (got.ok) {
    *why = "jinja2 failed (" + expected["error"].get<std::string>() + ") but Tandem rendered:\n" + got.text;
    return false;
  }
  if (expected.value("raised", false) && got.text != expected["error"].get<std::string>()) {
    *why = "raise_exception message differs: " + got.text;
    return false;
  }
  return true;
}

TEST(ChatTemplate, FeaturesRenderAsJinja2) {
  const auto fixture = nlohmann::ordered_json::parse(read_file(kDir + "features.json"));
  int n_ok = 0, n = 0;
  for (const auto& c : fixture["cases"]) {
    std::string why;
    ++n;
    if (check(c["template"], c["context"].dump(), c, &why)) ++n_ok;
    else ADD_FAILURE() << "feature '" << c["name"].get<std::string>() << "': " << why;
  }
  std::printf("chat features identical to jinja2: %d / %d\n", n_ok, n);
  EXPECT_GT(n, 100);
}

TEST(ChatTemplate, RealTemplatesRenderAsJinja2) {
  const auto fixture = nlohmann::ordered_json::parse(read_file(kDir + "expected_templates.json"));
  int n_ok = 0, n = 0;
  for (const auto& [name, conversations] : fixture["expected"].items()) {
    const std::string source = read_file(kDir + "templates/" + name + ".jinja");
    ASSERT_FALSE(source.empty()) << name;
    for (const auto& [conv, expected] : conversations.items()) {
      auto context = nlohmann::ordered_json::parse(read_file(kDir + "conversations/" + conv + ".json"));
      context["bos_token"] = fixture["tokens"][name][0];
      context["eos_token"] = fixture["tokens"][name][1];
      std::string why;
      ++n;
      if (check(source, context.dump(), expected, &why)) ++n_ok;
      else ADD_FAILURE() << name << " x " << conv << ": " << why;
    }
  }
  std::printf("template x conversation pairs identical to jinja2: %d / %d\n", n_ok, n);
  EXPECT_EQ(n, 20 * 15);  // every template in templates/ x every conversation in conversations/
}

}  // namespace
}  // namespace tandem::chat
