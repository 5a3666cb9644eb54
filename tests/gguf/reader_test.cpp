// The GGUF parser against a valid file and one crafted file per failure mode: each must yield a
// Corrupt/Unsupported status whose message names the file and the problem, never a crash.
#include "gguf/reader.h"

#include <gtest/gtest.h>

#include "gguf/gguf_bytes.h"

namespace tandem::gguf {
namespace {

using testing::GgufBytes;
using testing::valid_gguf;

// Parses and expects failure with `needle` in the message (and the source name).
void expect_error(const std::vector<uint8_t>& bytes, const std::string& needle) {
  auto r = parse(bytes, "crafted.gguf");
  ASSERT_FALSE(r.has_value()) << "expected an error mentioning: " << needle;
  EXPECT_NE(r.error().message().find("crafted.gguf"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().message();
}

TEST(GgufReader, ParsesValidFile) {
  const auto bytes = valid_gguf();
  auto r = parse(bytes, "valid.gguf");
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->version, 3u);
  EXPECT_EQ(r->metadata.get_string("general.architecture"), "test");
  EXPECT_EQ(r->metadata.get_u64("test.value"), 7u);
  ASSERT_EQ(r->tensors.size(), 2u);
  EXPECT_EQ(r->tensors[1].name, "b");
  EXPECT_EQ(r->tensors[1].shape, (std::vector<int64_t>{2, 8}));  // outermost first
  EXPECT_EQ(r->tensors[1].size_bytes, 64u);
  float first_b;
  std::memcpy(&first_b, r->tensors[1].data, 4);
  EXPECT_EQ(first_b, 100.0f);
}

TEST(GgufReader, AcceptsVersion2) {
  auto bytes = valid_gguf();
  bytes[4] = 2;
  EXPECT_TRUE(parse(bytes, "v2.gguf").has_value());
}

TEST(GgufReader, RejectsEmptyFile) { expect_error({}, "empty file"); }

TEST(GgufReader, RejectsEveryTruncation) {
  const auto bytes = valid_gguf();
  for (size_t n = 1; n < bytes.size(); ++n) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + n);
    auto r = parse(cut, "cut.gguf");
    ASSERT_FALSE(r.has_value()) << "prefix of " << n << " bytes parsed";
    EXPECT_EQ(r.error().code(), StatusCode::Corrupt) << r.error().message();
  }
}

TEST(GgufReader, RejectsBadMagic) {
  auto bytes = valid_gguf();
  bytes[0] = 'X';
  expect_error(bytes, "not a GGUF file");
}

TEST(GgufReader, RejectsUnsupportedVersions) {
  auto bytes = valid_gguf();
  bytes[4] = 1;
  expect_error(bytes, "version 1");
  bytes[4] = 4;
  expect_error(bytes, "version 4");
  bytes[4] = 0;
  bytes[7] = 3;  // version 3 written big-endian
  expect_error(bytes, "big-endian");
}

TEST(GgufReader, RejectsAbsurdCounts) {
  GgufBytes t;
  t.header(uint64_t(1) << 60, 0);
  expect_error(t.bytes, "tensor count");
  GgufBytes k;
  k.header(0, uint64_t(1) << 60);
  expect_error(k.bytes, "metadata count");
}

TEST(GgufReader, RejectsHugeStringLength) {
  GgufBytes b;
  b.header(0, 1).u64(uint64_t(1) << 62).zeros(16);
  expect_error(b.bytes, "claims");
  GgufBytes v;
  v.header(0, 1).str("key").u32(8).u64(~uint64_t(0));
  expect_error(v.bytes, "claims");
}

TEST(GgufReader, RejectsHugeArrayLength) {
  GgufBytes b;
  b.header(0, 1).str("key").u32(9).u32(6).u64(uint64_t(1) << 61);
  expect_error(b.bytes, "cannot fit");
  GgufBytes s;  // strings: at least 8 bytes each
  s.header(0, 1).str("key").u32(9).u32(8).u64(1000).zeros(100);
  expect_error(s.bytes, "cannot fit");
}

TEST(GgufReader, RejectsUnknownValueType) {
  GgufBytes b;
  b.header(0, 1).str("key").u32(13).u32(0);
  expect_error(b.bytes, "unknown value type 13");
  GgufBytes a;
  a.header(0, 1).str("key").u32(9).u32(99).u64(0);
  expect_error(a.bytes, "unknown value type 99");
}

TEST(GgufReader, RejectsDeeplyNestedArrays) {
  GgufBytes b;
  b.header(0, 1).str("key").u32(9);
  for (int i = 0; i < 100; ++i) b.u32(9).u64(1);
  b.u32(4).u64(0);
  expect_error(b.bytes, "nested");
}

TEST(GgufReader, ReadsNestedArrays) {
  GgufBytes b;
  b.header(0, 1).str("key").u32(9).u32(9).u64(2);
  b.u32(4).u64(2).u32(1).u32(2);
  b.u32(8).u64(1).str("x");
  auto r = parse(b.bytes, "nested.gguf");
  ASSERT_TRUE(r.has_value()) << r.error().message();
  const Array* outer = r->metadata.find("key")->as_array();
  ASSERT_EQ(outer->count, 2u);
  EXPECT_EQ(outer->arrays[0].array_i64(1), 2);
  EXPECT_EQ(outer->arrays[1].as_array()->strings[0], "x");
}

TEST(GgufReader, RejectsDuplicateKey) {
  GgufBytes b;
  b.header(0, 2).kv_u32("a", 1).kv_u32("a", 2);
  expect_error(b.bytes, "duplicate metadata key 'a'");
}

TEST(GgufReader, RejectsBadAlignment) {
  for (uint32_t bad : {0u, 3u, 48u}) {
    GgufBytes b;
    b.header(0, 1).kv_u32("general.alignment", bad);
    expect_error(b.bytes, "general.alignment");
  }
  GgufBytes wrong_type;
  wrong_type.header(0, 1).str("general.alignment").u32(10).u64(32);
  expect_error(wrong_type.bytes, "general.alignment");
}

TEST(GgufReader, HonoursCustomAlignment) {
  GgufBytes b;
  b.header(1, 1).kv_u32("general.alignment", 64).tensor("t", {16}, 0, 0).pad_to(64).zeros(64);
  auto r = parse(b.bytes, "align64.gguf");
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->alignment, 64u);
  EXPECT_EQ(r->data_offset % 64, 0u);
}

TEST(GgufReader, RejectsUnknownTensorType) {
  GgufBytes b;
  b.header(1, 0).tensor("t", {32}, 4, 0).pad_to(32).zeros(64);  // id 4 was retired (Q4_2)
  expect_error(b.bytes, "unknown type id 4");
  GgufBytes c;
  c.header(1, 0).tensor("t", {32}, 1000, 0).pad_to(32).zeros(64);
  expect_error(c.bytes, "unknown type id 1000");
}

TEST(GgufReader, RejectsTooManyDimensions) {
  GgufBytes b;
  b.header(1, 0).tensor("t", {1, 1, 1, 1, 1}, 0, 0).pad_to(32).zeros(32);
  expect_error(b.bytes, "5 dimensions");
  GgufBytes z;
  z.header(1, 0).tensor("t", {}, 0, 0).pad_to(32).zeros(32);
  expect_error(z.bytes, "0 dimensions");
}

TEST(GgufReader, RejectsOverflowingDimensions) {
  GgufBytes b;
  b.header(1, 0).tensor("t", {int64_t(1) << 40, int64_t(1) << 40}, 0, 0).pad_to(32);
  expect_error(b.bytes, "overflows");
  GgufBytes n;
  n.header(1, 0).tensor("t", {-4}, 0, 0).pad_to(32);
  expect_error(n.bytes, "negative");
  GgufBytes bytes;  // element count fits, byte count does not
  bytes.header(1, 0).tensor("t", {int64_t(1) << 31, int64_t(1) << 31}, 0, 0).pad_to(32);
  expect_error(bytes.bytes, "byte size overflows");
  GgufBytes big;  // 4 TB claimed by a small file
  big.header(1, 0).tensor("t", {int64_t(1) << 20, int64_t(1) << 20}, 0, 0).pad_to(32).zeros(64);
  expect_error(big.bytes, "past the end");
  GgufBytes none;  // the tensor table, then nothing: a header-only description, or a file cut at its header
  none.header(1, 0).tensor("t", {16}, 0, 0).pad_to(32);
  expect_error(none.bytes, "no tensor data after the tensor table");
}

TEST(GgufReader, RejectsRowNotMultipleOfBlock) {
  GgufBytes b;
  b.header(1, 0).tensor("t", {33}, 2, 0).pad_to(32).zeros(64);  // Q4_0 blocks of 32
  expect_error(b.bytes, "not a multiple of the Q4_0 block size");
}

TEST(GgufReader, RejectsTensorOutsideFile) {
  GgufBytes b;
  b.header(1, 0).tensor("t", {16}, 0, 0).pad_to(32).zeros(63);
  expect_error(b.bytes, "extends past the end");
  GgufBytes far;
  far.header(1, 0).tensor("t", {16}, 0, uint64_t(1) << 63).pad_to(32).zeros(64);
  expect_error(far.bytes, "extends past the end");
}

TEST(GgufReader, RejectsOverlappingTensors) {
  GgufBytes b;
  b.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {16}, 0, 32).pad_to(32).zeros(128);
  expect_error(b.bytes, "overlap");
}

TEST(GgufReader, RejectsMisalignedTensor) {
  GgufBytes b;
  b.header(1, 0).tensor("a", {4}, 0, 4).pad_to(32).zeros(64);
  expect_error(b.bytes, "not a multiple of the alignment");
}

TEST(GgufReader, RejectsDuplicateTensorNames) {
  GgufBytes b;
  b.header(2, 0).tensor("a", {4}, 0, 0).tensor("a", {4}, 0, 32).pad_to(32).zeros(64);
  expect_error(b.bytes, "duplicate tensor name 'a'");
}

TEST(GgufReader, RejectsOverlongTensorName) {
  GgufBytes b;
  b.header(1, 0).tensor(std::string(64, 'x'), {4}, 0, 0).pad_to(32).zeros(32);
  expect_error(b.bytes, "at most 63");
}

TEST(GgufReader, AcceptsVocabOnlyFileWithoutDataSection) {
  GgufBytes b;
  b.header(0, 1).kv_str("general.architecture", "llama");  // ends right after the header
  EXPECT_TRUE(parse(b.bytes, "vocab.gguf").has_value());
}

}  // namespace
}  // namespace tandem::gguf
