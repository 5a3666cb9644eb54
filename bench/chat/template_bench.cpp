// Chat-template rendering speed: a 20-turn conversation (system prompt, 10 user and 10 assistant
// turns, tools where the template takes them) through real templates, parsed once outside the loop
// as the server does at load. Reports renderings/s and rendered MB/s; the issue's target is well
// under a millisecond per rendering.
//   tandem_chat_bench --benchmark_min_time=0.5s
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include <benchmark/benchmark.h>

#include "chat/template.h"

namespace tandem::chat {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Value conversation() {
  std::string json = R"({"bos_token": "<s>", "eos_token": "</s>", "add_generation_prompt": true,
    "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
      "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City"}},
      "required": ["city"]}}}],
    "messages": [{"role": "system", "content": "You are a helpful assistant."})";
  for (int i = 0; i < 10; ++i) {
    json += R"(, {"role": "user", "content": "Question number )" + std::to_string(i) +
            R"(: what is the capital of France, and why is it famous?"})";
    json += R"(, {"role": "assistant", "content": "The capital of France is Paris, famous for its museums, )"
            R"(architecture and food. Turn )" + std::to_string(i) + R"(."})";
  }
  json += "]}";
  auto v = parse_json(json);
  if (!v) std::abort();
  return *v;
}

void bench_render(benchmark::State& state, std::string name) {
  const std::string source =
      read_file(std::string(TANDEM_SOURCE_DIR) + "/tests/fixtures/chat/templates/" + name + ".jinja");
  auto tmpl = Template::parse(source);
  if (!tmpl) {
    state.SkipWithError(tmpl.error().message().c_str());
    return;
  }
  const Value context = conversation();
  size_t bytes = 0;
  for (auto _ : state) {
    auto out = tmpl->render(context);
    if (!out) {
      state.SkipWithError(out.error().message().c_str());
      return;
    }
    bytes += out->size();
    benchmark::DoNotOptimize(out->data());
  }
  state.counters["MB/s"] = benchmark::Counter(double(bytes) / 1e6, benchmark::Counter::kIsRate);
}

void bench_parse(benchmark::State& state, std::string name) {
  const std::string source =
      read_file(std::string(TANDEM_SOURCE_DIR) + "/tests/fixtures/chat/templates/" + name + ".jinja");
  for (auto _ : state) {
    auto tmpl = Template::parse(source);
    if (!tmpl) {
      state.SkipWithError(tmpl.error().message().c_str());
      return;
    }
    benchmark::DoNotOptimize(&tmpl);
  }
}

}  // namespace
}  // namespace tandem::chat

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
#ifndef NDEBUG
  std::fprintf(stderr, "warning: assertions enabled; figures are not representative\n");
#endif
  for (const char* name : {"Qwen-Qwen3-0.6B", "meta-llama-Llama-3.1-8B-Instruct", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
                           "deepseek-ai-DeepSeek-V3.1", "ibm-granite-granite-3.3-2B-Instruct", "openai-gpt-oss-120b"}) {
    benchmark::RegisterBenchmark((std::string("render20/") + name).c_str(), tandem::chat::bench_render, name)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((std::string("parse/") + name).c_str(), tandem::chat::bench_parse, name)
        ->Unit(benchmark::kMicrosecond);
  }
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
