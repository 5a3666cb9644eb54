// The expert tests' synth models: tiny-deepseek-v3 (4 layers, 3 of them MoE with 16 experts, top-4) in
// Q4_K_M as one file, in parts, and with fused gate_up experts; built once into build/synth-cache.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>

#include "test_data.h"

namespace tandem::expert::test {

// tiny-deepseek-v3 Q4_K_M written as `name` (its first part's file name when split) with `edit` applied
// to the options; "" and *why without its vocabulary.
template <class Edit>
std::string tiny_deepseek(const std::string& name, Edit edit, std::string* why) {
  const std::string dir = std::string(TANDEM_BINARY_DIR) + "/synth-cache";
  const std::string out = dir + "/" + name;
  if (std::filesystem::exists(out)) return out;
  model::SynthOptions o;
  o.preset = *model::find_synth_preset("tiny-deepseek-v3");
  o.mix = quant::FileType::Q4_K_M;
  o.vocab_path = test_data::path(o.preset.vocab_file);
  if (!std::filesystem::exists(o.vocab_path)) {
    *why = test_data::absent(o.preset.vocab_file);
    return "";
  }
  o.progress = false;
  edit(o);
  // Written in a folder of its own, then moved: CTest runs tests at once.
  const std::string tmp = dir + "/" + name + ".tmp" + std::to_string(getpid());
  std::filesystem::create_directories(tmp);
  o.output_path = tmp + "/" + std::filesystem::path(o.output_path).filename().string();
  if (auto r = model::write_synth_model(o); !r) {
    *why = r.error().message();
    return "";
  }
  for (const auto& entry : std::filesystem::directory_iterator(tmp))
    std::filesystem::rename(entry.path(), dir + "/" + entry.path().filename().string());
  std::filesystem::remove(tmp);
  if (!std::filesystem::exists(out)) *why = out + " was not written";
  return std::filesystem::exists(out) ? out : "";
}

inline std::string tiny_deepseek_q4(std::string* why) {
  return test_data::synth_model("tiny-deepseek-v3", quant::FileType::Q4_K_M, why);
}

// In parts of at most 16 tensors (5 parts).
inline std::string tiny_deepseek_split(std::string* why) {
  return tiny_deepseek("expert-split-tiny-deepseek-v3-00001-of-00005.gguf", [](model::SynthOptions& o) {
    o.output_path = "expert-split-tiny-deepseek-v3.gguf";
    o.split_max_tensors = 16;
  }, why);
}

// Each layer's gate and up experts as one ffn_gate_up_exps tensor.
inline std::string tiny_deepseek_fused(std::string* why) {
  return tiny_deepseek("expert-fused-tiny-deepseek-v3.gguf", [](model::SynthOptions& o) {
    o.output_path = "expert-fused-tiny-deepseek-v3.gguf";
    o.fuse_gate_up_exps = true;
  }, why);
}

}  // namespace tandem::expert::test
