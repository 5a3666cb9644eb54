// GgufWriter round trips (every value type, nested arrays, streamed data, split output) and the
// split-model checks of GgufFile::open: missing, foreign or mismatched parts.
#include "gguf/gguf_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gguf/gguf_bytes.h"
#include "gguf/writer.h"

namespace tandem::gguf {
namespace {

namespace fs = std::filesystem;

class GgufFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tandem_gguf_" + std::to_string(getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  static void write_file(const std::string& p, const std::vector<uint8_t>& bytes) {
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  }

  fs::path dir_;
};

// Writes n tensors "t0".."t{n-1}", each [rows, 32] F32 filled with i*1000 + k.
Status write_model(const std::string& p, int n, WriterOptions opt) {
  GgufWriter w(opt);
  w.metadata().set("general.architecture", Value::string("test"));
  for (int i = 0; i < n; ++i) TANDEM_TRY(w.add_tensor("t" + std::to_string(i), WeightType::F32, {int64_t(i + 1), 32}));
  TANDEM_TRY(w.open(p));
  for (int i = 0; i < n; ++i) {
    std::vector<float> v(size_t(32 * (i + 1)));
    for (size_t k = 0; k < v.size(); ++k) v[k] = float(i * 1000 + int(k));
    // Two calls per tensor: data may arrive in pieces.
    TANDEM_TRY(w.write(v.data(), 8));
    TANDEM_TRY(w.write(reinterpret_cast<const uint8_t*>(v.data()) + 8, v.size() * 4 - 8));
  }
  return w.finish();
}

void expect_model_data(const GgufFile& f, int n) {
  ASSERT_EQ(f.tensors().size(), size_t(n));
  for (int i = 0; i < n; ++i) {
    const TensorInfo* t = f.find("t" + std::to_string(i));
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->shape, (std::vector<int64_t>{i + 1, 32}));
    const float* v = reinterpret_cast<const float*>(t->data);
    for (int k = 0; k < 32 * (i + 1); ++k) ASSERT_EQ(v[k], float(i * 1000 + k)) << t->name << "[" << k << "]";
  }
}

TEST_F(GgufFileTest, WriterRoundTripsEveryValueType) {
  GgufWriter w;
  Metadata& m = w.metadata();
  m.set("u8", Value::u8(200));
  m.set("i8", Value::i8(-100));
  m.set("u16", Value::u16(60000));
  m.set("i16", Value::i16(-30000));
  m.set("u32", Value::u32(4000000000u));
  m.set("i32", Value::i32(-2000000000));
  m.set("u64", Value::u64(~uint64_t(0)));
  m.set("i64", Value::i64(INT64_MIN));
  m.set("f32", Value::f32(1.5f));
  m.set("f64", Value::f64(-2.25));
  m.set("bool", Value::boolean(true));
  m.set("str", Value::string("héllo\nworld"));
  const std::vector<float> scores = {0.5f, -1.0f};
  m.set("floats", Value::array_of(ValueType::F32, std::span<const float>(scores)));
  m.set("strings", Value::string_array({"a", "", "ccc"}));
  Array nested;
  nested.elem_type = ValueType::Array;
  nested.count = 2;
  nested.arrays = {Value::string_array({"x"}), Value::array_of(ValueType::F32, std::span<const float>(scores))};
  m.set("nested", Value::array(nested));
  ASSERT_TRUE(w.open(path("values.gguf")).is_ok());
  ASSERT_TRUE(w.finish().is_ok());

  auto f = GgufFile::open(path("values.gguf"));
  ASSERT_TRUE(f.has_value()) << f.error().message();
  const Metadata& r = (*f)->metadata();
  EXPECT_EQ(r.get_u64("u8"), 200u);
  EXPECT_EQ(r.find("i8")->as_i64(), -100);
  EXPECT_EQ(r.get_u64("u16"), 60000u);
  EXPECT_EQ(r.find("i16")->as_i64(), -30000);
  EXPECT_EQ(r.get_u64("u32"), 4000000000u);
  EXPECT_EQ(r.find("i32")->as_i64(), -2000000000);
  EXPECT_EQ(r.get_u64("u64"), ~uint64_t(0));
  EXPECT_EQ(r.find("i64")->as_i64(), INT64_MIN);
  EXPECT_EQ(r.get_f64("f32"), 1.5);
  EXPECT_EQ(r.get_f64("f64"), -2.25);
  EXPECT_EQ(r.get_bool("bool"), true);
  EXPECT_EQ(r.get_string("str"), "héllo\nworld");
  EXPECT_EQ(r.find("floats")->array_f64(1), -1.0);
  EXPECT_EQ(r.find("strings")->as_array()->strings, (std::vector<std::string>{"a", "", "ccc"}));
  const Array* n = r.find("nested")->as_array();
  ASSERT_EQ(n->count, 2u);
  EXPECT_EQ(n->arrays[0].as_array()->strings[0], "x");
  EXPECT_EQ(n->arrays[1].array_f64(0), 0.5);
  // Keys keep their order.
  EXPECT_EQ(r.entries().front().first, "u8");
}

TEST_F(GgufFileTest, WriterStreamsTensorsThatReadBack) {
  ASSERT_TRUE(write_model(path("m.gguf"), 5, {}).is_ok());
  auto f = GgufFile::open(path("m.gguf"));
  ASSERT_TRUE(f.has_value()) << f.error().message();
  expect_model_data(**f, 5);
  auto no_mmap = GgufFile::open(path("m.gguf"), {.use_mmap = false});
  ASSERT_TRUE(no_mmap.has_value());
  EXPECT_FALSE((*no_mmap)->parts()[0].file.is_mapped());
  expect_model_data(**no_mmap, 5);
}

TEST_F(GgufFileTest, WriterHonoursCustomAlignment) {
  ASSERT_TRUE(write_model(path("a.gguf"), 3, {.alignment = 256}).is_ok());
  auto f = GgufFile::open(path("a.gguf"));
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_EQ((*f)->parts()[0].header.alignment, 256u);
  for (const auto& t : (*f)->tensors()) EXPECT_EQ(t.offset % 256, 0u);
  expect_model_data(**f, 3);
}

TEST_F(GgufFileTest, WriterRefusesMisuse) {
  GgufWriter w;
  EXPECT_FALSE(w.add_tensor("q", WeightType::Q4_0, {2, 33}).is_ok());  // not a block multiple
  ASSERT_TRUE(w.add_tensor("a", WeightType::F32, {4}).is_ok());
  EXPECT_FALSE(w.add_tensor("a", WeightType::F32, {4}).is_ok());
  ASSERT_TRUE(w.open(path("short.gguf")).is_ok());
  const float v[4] = {};
  ASSERT_TRUE(w.write(v, 8).is_ok());
  Status s = w.finish();
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("'a'"), std::string::npos) << s.message();
}

TEST_F(GgufFileTest, SplitOutputOpensFromFirstPart) {
  ASSERT_TRUE(write_model(path("s.gguf"), 7, {.split_max_tensors = 3}).is_ok());
  EXPECT_TRUE(fs::exists(path("s-00001-of-00003.gguf")));
  EXPECT_TRUE(fs::exists(path("s-00003-of-00003.gguf")));
  auto f = GgufFile::open(path("s-00001-of-00003.gguf"));
  ASSERT_TRUE(f.has_value()) << f.error().message();
  EXPECT_EQ((*f)->parts().size(), 3u);
  EXPECT_EQ((*f)->find("t6")->part, 2u);
  EXPECT_EQ((*f)->metadata().get_string("general.architecture"), "test");
  expect_model_data(**f, 7);
}

TEST_F(GgufFileTest, SplitBySizeKeepsPartsUnderLimit) {
  // Tensor i holds 128 * (i + 1) bytes: parts {t0, t1}, {t2}, {t3}, {t4 alone, over the limit}, {t5}.
  ASSERT_TRUE(write_model(path("z.gguf"), 6, {.split_max_bytes = 600}).is_ok());
  auto f = GgufFile::open(path("z-00001-of-00005.gguf"));
  ASSERT_TRUE(f.has_value()) << f.error().message();
  expect_model_data(**f, 6);
  std::vector<uint64_t> part_bytes(5);
  for (const auto& t : (*f)->tensors()) part_bytes[t.part] += t.size_bytes;
  EXPECT_EQ(part_bytes, (std::vector<uint64_t>{384, 384, 512, 640, 768}));
}

TEST_F(GgufFileTest, RefusesLaterPartWithFirstPartName) {
  ASSERT_TRUE(write_model(path("s.gguf"), 4, {.split_max_tensors = 2}).is_ok());
  auto f = GgufFile::open(path("s-00002-of-00002.gguf"));
  ASSERT_FALSE(f.has_value());
  EXPECT_NE(f.error().message().find("s-00001-of-00002.gguf"), std::string::npos) << f.error().message();
}

TEST_F(GgufFileTest, RefusesMissingPart) {
  ASSERT_TRUE(write_model(path("s.gguf"), 6, {.split_max_tensors = 2}).is_ok());
  fs::remove(path("s-00002-of-00003.gguf"));
  auto f = GgufFile::open(path("s-00001-of-00003.gguf"));
  ASSERT_FALSE(f.has_value());
  EXPECT_NE(f.error().message().find("part 2 of 3 is missing"), std::string::npos) << f.error().message();
}

TEST_F(GgufFileTest, RefusesPartFromAnotherSplit) {
  ASSERT_TRUE(write_model(path("s.gguf"), 6, {.split_max_tensors = 2}).is_ok());
  // Part 3 replaced by a copy of part 2: split.no says 1 where 2 is expected.
  fs::copy_file(path("s-00002-of-00003.gguf"), path("s-00003-of-00003.gguf"), fs::copy_options::overwrite_existing);
  auto f = GgufFile::open(path("s-00001-of-00003.gguf"));
  ASSERT_FALSE(f.has_value());
  EXPECT_NE(f.error().message().find("split part mismatch"), std::string::npos) << f.error().message();
}

TEST_F(GgufFileTest, RefusesSplitWithWrongTensorTotal) {
  using testing::GgufBytes;
  auto part = [](uint16_t no, int32_t total, const std::string& tensor) {
    GgufBytes b;
    b.header(1, 3).str("split.no").u32(2).pod<uint16_t>(no).str("split.count").u32(2).pod<uint16_t>(2);
    b.str("split.tensors.count").u32(5).pod<int32_t>(total);
    b.tensor(tensor, {4}, 0, 0).pad_to(32).zeros(16);
    return b.bytes;
  };
  write_file(path("w-00001-of-00002.gguf"), part(0, 3, "a"));
  write_file(path("w-00002-of-00002.gguf"), part(1, 3, "b"));
  auto f = GgufFile::open(path("w-00001-of-00002.gguf"));
  ASSERT_FALSE(f.has_value());
  EXPECT_NE(f.error().message().find("declares 3 tensors"), std::string::npos) << f.error().message();

  write_file(path("d-00001-of-00002.gguf"), part(0, 2, "same"));
  write_file(path("d-00002-of-00002.gguf"), part(1, 2, "same"));
  auto d = GgufFile::open(path("d-00001-of-00002.gguf"));
  ASSERT_FALSE(d.has_value());
  EXPECT_NE(d.error().message().find("appears in split part 1 and again in part 2"), std::string::npos)
      << d.error().message();
}

TEST_F(GgufFileTest, ReportsMissingAndEmptyFiles) {
  auto missing = GgufFile::open(path("nope.gguf"));
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), StatusCode::NotFound);
  write_file(path("empty.gguf"), {});
  auto empty = GgufFile::open(path("empty.gguf"));
  ASSERT_FALSE(empty.has_value());
  EXPECT_NE(empty.error().message().find("empty file"), std::string::npos);
  auto dir = GgufFile::open(dir_.string());
  ASSERT_FALSE(dir.has_value());
  EXPECT_NE(dir.error().message().find("not a regular file"), std::string::npos);
}

TEST(SplitPath, ParsesAndFormatsNames) {
  std::string prefix;
  int index = 0, count = 0;
  ASSERT_TRUE(parse_split_path("/m/DeepSeek-R1-Q4_K_M-00002-of-00009.gguf", &prefix, &index, &count));
  EXPECT_EQ(prefix, "/m/DeepSeek-R1-Q4_K_M");
  EXPECT_EQ(index, 1);
  EXPECT_EQ(count, 9);
  EXPECT_EQ(split_path(prefix, 0, 9), "/m/DeepSeek-R1-Q4_K_M-00001-of-00009.gguf");
  EXPECT_FALSE(parse_split_path("model.gguf", &prefix, &index, &count));
  EXPECT_FALSE(parse_split_path("m-00003-of-00002.gguf", &prefix, &index, &count));
}

}  // namespace
}  // namespace tandem::gguf
