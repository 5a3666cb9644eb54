// A Jinja chat template: parsed once (Template::parse), rendered many times, byte for byte as Python's
// jinja2 renders it in Hugging Face transformers (ImmutableSandboxedEnvironment with trim_blocks,
// lstrip_blocks and loopcontrols; transformers' tojson, raise_exception and strftime_now).
// Constructs outside that language fail at parse time with their line and column, never later.
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "chat/value.h"
#include "core/status.h"

namespace tandem::chat {

// Bounds that keep a hostile template from hanging or exhausting memory; each breach is an error
// naming the bound.
struct RenderOptions {
  int64_t max_steps = 20'000'000;          // expression evaluations and loop iterations
  size_t max_output_bytes = 64u << 20;     // the rendered text, and any one string or list built
  int max_call_depth = 100;                // macro and recursive-loop nesting
  std::optional<std::tm> now;  // strftime_now's local time (tests fix it); unset: the real clock
};

struct Program;  // the parsed statements (ast.h)

class Template {
 public:
  // Errors: "chat template: line L, column C: <what>" for syntax errors and unsupported constructs.
  static Result<Template> parse(std::string_view source);

  // `context` is a dict of the template's variables (messages, tools, add_generation_prompt,
  // bos_token...). raise_exception(msg) in the template returns InvalidArgument whose message is
  // exactly msg; other failures name the line and column. Thread-safe: the program is read only.
  Result<std::string> render(const Value& context, const RenderOptions& options = {}) const;

 private:
  std::shared_ptr<const Program> program_;
};

}  // namespace tandem::chat
