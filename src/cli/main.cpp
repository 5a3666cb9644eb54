// tandem: one binary, one subcommand per job.
#include <cstdio>
#include <cstring>
#include <string_view>

#include "cli/args.h"
#include "cli/commands.h"
#include "engine/engine.h"

namespace {

struct Command {
  const char* name;
  int (*main)(int, char**);
  const char* summary;
};

constexpr Command kCommands[] = {
    {"run", tandem::cli::run_main, "generate text from a prompt, or chat interactively"},
    {"serve", tandem::cli::serve_main, "OpenAI- and llama-server-compatible HTTP server with continuous batching"},
    {"top", tandem::cli::top_main, "a running server's live figures in the terminal (tokens/s, bandwidth, load)"},
    {"bench", tandem::cli::bench_main, "prompt-processing and generation speed, like llama-bench"},
    {"quantize", tandem::cli::quantize_main, "convert a model to another weight type or llama.cpp mix (Q4_K_M, ...)"},
    {"info", tandem::cli::info_main, "metadata, hyperparameters and tensor table of a GGUF model"},
    {"verify", tandem::cli::verify_main, "checksums and structural checks of a model (every split part)"},
    {"synth", tandem::cli::synth_main, "write a random-weight model at real shapes, for benchmarks"},
    {"perplexity", tandem::cli::perplexity_main, "perplexity of a text and KL-divergence against saved logits, like llama-perplexity"},
    {"plan", tandem::cli::plan_main, "what fits where on a machine, the flags for it, and the decode speed it allows"},
    {"probe", tandem::cli::probe_main, "measure this machine once (memory, matmul kernels, disk, links) for plan and --fit"},
    {"tokenize", tandem::cli::tokenize_main, "token ids of a text with a model's tokenizer (like llama-tokenize)"},
};

void print_usage(std::FILE* out) {
  std::fprintf(out,
               "usage: tandem <command> [options]\n\n"
               "Tandem runs large quantized GGUF language models on CPU+GPU machines.\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(out, "\n'tandem <command> --help' explains each command's flags; 'tandem --list-devices' shows the\n"
                    "devices (the CPU, CUDA GPUs).\n");
}

}  // namespace

namespace tandem::cli {

int fail(const Status& status) {
  std::fflush(stdout);
  std::fprintf(stderr, "error: %s\n", status.message().c_str());
  return 1;
}

std::optional<int> parse_command_line(ArgParser& args, int argc, char** argv) {
  if (Status s = args.parse(argc, argv); !s.is_ok()) return fail(s);
  if (args.help_requested()) {
    std::fputs(args.help().c_str(), stdout);
    return 0;
  }
  return std::nullopt;
}

}  // namespace tandem::cli

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(stderr);
    return 1;
  }
  const std::string_view cmd = argv[1];
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    print_usage(stdout);
    return 0;
  }
  if (cmd == "--list-devices") {  // llama.cpp's flag, before any command: the devices and exit
    std::fputs(tandem::list_devices({}).c_str(), stdout);
    return 0;
  }
  for (const Command& c : kCommands)
    if (cmd == c.name) return c.main(argc - 2, argv + 2);
  std::fprintf(stderr, "error: unknown command '%s'\n\n", argv[1]);
  print_usage(stderr);
  return 1;
}
