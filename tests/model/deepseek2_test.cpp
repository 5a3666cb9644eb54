// deepseek2 files refused at load: one damaged copy of a tiny synth model per failure mode, each message
// naming the key or tensor at fault. (Its logits against llama.cpp are in logits_test.cpp.)
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "gguf/gguf_file.h"
#include "gguf/writer.h"
#include "model/model.h"
#include "test_data.h"

namespace tandem::model {
namespace {

namespace fs = std::filesystem;

// A copy of the base model with its metadata edited and, optionally, one tensor left out and one stored as another
// type (its bytes zeros).
std::string damaged_copy(const std::string& base, const std::string& name,
                         const std::function<void(gguf::Metadata&)>& edit, const std::string& drop = "",
                         const std::string& retype = "", WeightType to = WeightType::F32) {
  auto in = gguf::GgufFile::open(base);
  EXPECT_TRUE(in.has_value());
  gguf::GgufWriter w;
  for (const auto& [key, value] : (*in)->metadata().entries()) w.metadata().set(key, value);
  edit(w.metadata());
  for (const auto& t : (*in)->tensors()) {
    if (t.name == drop) continue;
    EXPECT_TRUE(w.add_tensor(t.name, t.name == retype ? to : t.type, t.shape).is_ok());
  }
  const std::string out = (fs::path(TANDEM_BINARY_DIR) / "synth-cache" / (name + std::to_string(getpid()) + ".gguf")).string();
  EXPECT_TRUE(w.open(out).is_ok());
  for (const auto& t : (*in)->tensors()) {
    if (t.name == drop) continue;
    if (t.name == retype) {
      const std::vector<uint8_t> zeros(row_bytes(to, t.shape.back()) * size_t(t.n_elements() / t.shape.back()));
      EXPECT_TRUE(w.write(zeros.data(), zeros.size()).is_ok());
      continue;
    }
    EXPECT_TRUE(w.write(t.data, t.size_bytes).is_ok());
  }
  EXPECT_TRUE(w.finish().is_ok());
  return out;
}

// Loads the damaged copy; returns the error message ("" when it loaded).
std::string load_error(const std::string& path) {
  cpu::CpuBackend backend(1);
  auto m = Model::load(path, {}, backend);
  fs::remove(path);
  return m.has_value() ? "" : m.error().message();
}

#define BASE_OR_SKIP(var)                    \
  std::string why;                           \
  const std::string var = test_data::tiny_deepseek_model(&why);  \
  if (var.empty()) { GTEST_SKIP() << why; } do {} while (0)

auto set_u32(const char* key, uint32_t v) {
  return [=](gguf::Metadata& m) { m.set(key, gguf::Value::u32(v)); };
}

TEST(Deepseek2Load, AnUndamagedCopyLoads) {
  BASE_OR_SKIP(base);
  EXPECT_EQ(load_error(damaged_copy(base, "same", [](gguf::Metadata&) {})), "");
}

TEST(Deepseek2Load, RejectsAnExpertCountTheTensorsDisagreeWith) {
  BASE_OR_SKIP(base);
  const std::string e = load_error(damaged_copy(base, "experts", set_u32("deepseek2.expert_count", 8)));
  EXPECT_NE(e.find("blk.1.ffn_gate_inp.weight"), std::string::npos) << e;
}

TEST(Deepseek2Load, RejectsTopKLargerThanTheExperts) {
  BASE_OR_SKIP(base);
  const std::string e = load_error(damaged_copy(base, "topk", set_u32("deepseek2.expert_used_count", 17)));
  EXPECT_NE(e.find("deepseek2.expert_used_count 17"), std::string::npos) << e;
}

TEST(Deepseek2Load, RejectsGroupsThatDoNotDivideTheExperts) {
  BASE_OR_SKIP(base);
  const std::string e = load_error(damaged_copy(base, "groups", set_u32("deepseek2.expert_group_count", 3)));
  EXPECT_NE(e.find("deepseek2.expert_group_count 3 does not divide expert_count 16"), std::string::npos) << e;
}

TEST(Deepseek2Load, RejectsAsManyGroupsUsedAsThereAre) {
  BASE_OR_SKIP(base);
  const std::string e = load_error(damaged_copy(base, "used", set_u32("deepseek2.expert_group_used_count", 4)));
  EXPECT_NE(e.find("deepseek2.expert_group_used_count 4"), std::string::npos) << e;
}

TEST(Deepseek2Load, RejectsAKvLoraRankTheKeyLengthDisagreesWith) {
  BASE_OR_SKIP(base);
  const std::string e = load_error(damaged_copy(base, "kvlora", set_u32("deepseek2.attention.kv_lora_rank", 32)));
  EXPECT_NE(e.find("kv_lora_rank 32"), std::string::npos) << e;
}

TEST(Deepseek2Load, RejectsAKvLoraRankTheTensorsDisagreeWith) {
  BASE_OR_SKIP(base);
  // The keys agree with each other (key_length = kv_lora + rope, value_length = kv_lora) but not the tensors.
  const std::string e = load_error(damaged_copy(base, "kvlora2", [](gguf::Metadata& m) {
    m.set("deepseek2.attention.kv_lora_rank", gguf::Value::u32(32));
    m.set("deepseek2.attention.key_length", gguf::Value::u32(64));
    m.set("deepseek2.attention.value_length", gguf::Value::u32(32));
  }));
  EXPECT_NE(e.find("blk.0.attn_kv_a_mqa.weight"), std::string::npos) << e;
}

TEST(Deepseek2Load, RejectsAMissingExpertTensor) {
  BASE_OR_SKIP(base);
  const std::string e =
      load_error(damaged_copy(base, "missing", [](gguf::Metadata&) {}, "blk.1.ffn_up_exps.weight"));
  EXPECT_NE(e.find("tensor 'blk.1.ffn_up_exps.weight' is missing"), std::string::npos) << e;
}

// A weight type Tandem has no dequantizer or kernel for (gpt-oss's MXFP4 here; TQ1_0 and TQ2_0 alike):
// refused at load with the tensor and type named, not a failed check at the first multiplication.
TEST(Deepseek2Load, RejectsAWeightTypeItCannotCompute) {
  BASE_OR_SKIP(base);
  const std::string e = load_error(
      damaged_copy(base, "mxfp4", [](gguf::Metadata&) {}, "", "blk.0.attn_output.weight", WeightType::MXFP4));
  EXPECT_NE(e.find("tensor 'blk.0.attn_output.weight' is stored as MXFP4, a weight type Tandem cannot compute"),
            std::string::npos)
      << e;
}

TEST(Deepseek2Load, RejectsAFileWithoutTheMlaKeysWhoseHeadsAreNotExpanded) {
  BASE_OR_SKIP(base);
  const std::string e = load_error(damaged_copy(base, "kvb", [](gguf::Metadata& m) {
    m.erase("deepseek2.attention.key_length_mla");
    m.erase("deepseek2.attention.value_length_mla");
  }));
  EXPECT_NE(e.find("deepseek2.attention.head_count_kv 1 differs from head_count 4"), std::string::npos) << e;
}

}  // namespace
}  // namespace tandem::model
