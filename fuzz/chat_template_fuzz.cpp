// libFuzzer target: a chat template and its context from arbitrary bytes (source, a NUL, then the
// context JSON; without a NUL, a default conversation), parsed and rendered under small bounds, then
// the output fed to the reasoning splitter and every tool-call parser. Nothing may crash or hang:
// every failure must come back as a Status.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "chat/reasoning.h"
#include "chat/template.h"
#include "chat/tool_calls.h"

namespace {

constexpr std::string_view kDefaultContext =
    R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Hi <think>"},
        {"role": "assistant", "content": "<think>r</think>a", "tool_calls": [{"id": "c1", "type": "function",
        "function": {"name": "f", "arguments": {"x": [1, 2.5, null, true]}}}]}, {"role": "tool", "content": "ok"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>"})";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view source = input.substr(0, nul);
  const std::string_view context_text = nul == std::string_view::npos ? kDefaultContext : input.substr(nul + 1);

  auto tmpl = tandem::chat::Template::parse(source);
  if (!tmpl) return 0;
  auto context = tandem::chat::parse_json(context_text);
  if (!context) return 0;
  tandem::chat::RenderOptions options;
  options.max_steps = 200000;  // a hang is a bug; a slow input only wastes fuzzing time
  options.max_output_bytes = 1u << 20;
  options.max_call_depth = 40;
  std::tm fixed{};
  fixed.tm_year = 126;
  fixed.tm_mday = 1;
  options.now = fixed;
  auto out = tmpl->render(*context, options);
  if (!out) return 0;
  if (out->size() > options.max_output_bytes + (1u << 20)) std::abort();  // the bound must hold

  (void)tandem::chat::split_reasoning(*out, false);
  (void)tandem::chat::split_reasoning(*out, true);
  using tandem::chat::ToolCallFormat;
  for (ToolCallFormat f : {ToolCallFormat::Hermes, ToolCallFormat::Llama3, ToolCallFormat::DeepSeek,
                           ToolCallFormat::Mistral, ToolCallFormat::KimiK2}) {
    (void)tandem::chat::parse_tool_calls(*out, f);
    (void)tandem::chat::tool_call_start(*out, f);
    // Streamed in two pieces, the calls are those of the whole-text parse (when it gives any).
    tandem::chat::ToolCallStream stream(f);
    size_t n_streamed = stream.push(std::string_view(*out).substr(0, out->size() / 2)).size();
    n_streamed += stream.push(*out).size();
    const size_t n_whole = tandem::chat::complete_tool_calls(*out, f).size();
    if (n_whole > 0 && n_whole != n_streamed) std::abort();
  }
  return 0;
}
