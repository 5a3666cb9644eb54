// llama-perplexity's base-logits file: the exact byte layout, writer/reader round trips, and one
// crafted file per failure mode (bad magic, bad dimensions, truncation anywhere, trailing bytes, tokens
// outside the vocabulary), each refused with a message naming the problem.
#include "eval/kld_file.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>

namespace tandem::eval {
namespace {

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

int32_t i32_at(const std::vector<uint8_t>& b, size_t at) {
  int32_t v;
  std::memcpy(&v, b.data() + at, 4);
  return v;
}

// A valid file image: n_chunk chunks of n_ctx tokens over n_vocab, rows filled with a counter.
std::vector<uint8_t> make_file(int32_t n_ctx, int32_t n_vocab, int32_t n_chunk) {
  std::vector<uint8_t> b(kBaseLogitsMagic, kBaseLogitsMagic + 8);
  auto put = [&b](const void* p, size_t n) { b.insert(b.end(), (const uint8_t*)p, (const uint8_t*)p + n); };
  for (int32_t v : {n_ctx, n_vocab, n_chunk}) put(&v, 4);
  for (int32_t i = 0; i < n_ctx * n_chunk; ++i) {
    const int32_t t = i % n_vocab;
    put(&t, 4);
  }
  const int64_t n = n_chunk * scored_per_chunk(n_ctx) * base_row_u16(n_vocab);
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t v = uint16_t(i * 7);
    put(&v, 2);
  }
  return b;
}

void set_i32(std::vector<uint8_t>& b, size_t at, int32_t v) { std::memcpy(b.data() + at, &v, 4); }

TEST(KldFile, SizesFollowLlamaPerplexity) {
  EXPECT_EQ(base_row_u16(262144), 262148);
  EXPECT_EQ(base_row_u16(5), 10);  // odd vocabularies are padded to even
  EXPECT_EQ(scored_per_chunk(512), 255);
  EXPECT_EQ(scored_per_chunk(7), 3);
  EXPECT_EQ(base_file_bytes(512, 262144, 2), 20u + 4 * 1024 + 2ull * 2 * 255 * 262148);
}

TEST(KldFile, WriterAndReaderRoundTripByteForByte) {
  const int32_t n_ctx = 6, n_vocab = 5, n_chunk = 2;
  const std::string path = ::testing::TempDir() + "/kld_round_trip.bin";
  std::vector<int32_t> tokens(n_ctx * n_chunk);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t(i % 5);
  const size_t n_row = size_t(scored_per_chunk(n_ctx) * base_row_u16(n_vocab));
  std::vector<uint16_t> chunk0(n_row), chunk1(n_row);
  for (size_t i = 0; i < n_row; ++i) {
    chunk0[i] = uint16_t(i);
    chunk1[i] = uint16_t(65535 - i);
  }
  {
    auto w = BaseLogitsWriter::create(path, n_ctx, n_vocab, n_chunk, tokens);
    ASSERT_TRUE(w.has_value()) << w.error().message();
    ASSERT_TRUE(w->write_chunk(chunk0).is_ok());
    ASSERT_TRUE(w->write_chunk(chunk1).is_ok());
    ASSERT_TRUE(w->finish().is_ok());
  }
  const auto bytes = read_all(path);
  ASSERT_EQ(bytes.size(), base_file_bytes(n_ctx, n_vocab, n_chunk));
  EXPECT_EQ(std::memcmp(bytes.data(), "_logits_", 8), 0);
  EXPECT_EQ(i32_at(bytes, 8), n_ctx);
  EXPECT_EQ(i32_at(bytes, 12), n_vocab);
  EXPECT_EQ(i32_at(bytes, 16), n_chunk);
  EXPECT_EQ(i32_at(bytes, 20 + 4 * 7), tokens[7]);

  auto r = BaseLogitsReader::open(path);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->n_ctx(), n_ctx);
  EXPECT_EQ(r->n_vocab(), n_vocab);
  EXPECT_EQ(r->n_chunk(), n_chunk);
  EXPECT_EQ(r->tokens(), tokens);
  std::vector<uint16_t> rows;
  r->read_chunk(1, &rows);
  EXPECT_EQ(rows, chunk1);
  r->read_chunk(0, &rows);
  EXPECT_EQ(rows, chunk0);
  auto unmapped = BaseLogitsReader::open(path, false);
  ASSERT_TRUE(unmapped.has_value());
  unmapped->read_chunk(1, &rows);
  EXPECT_EQ(rows, chunk1);
}

TEST(KldFile, UnfinishedWriterLeavesNoFile) {
  const std::string path = ::testing::TempDir() + "/kld_unfinished.bin";
  const std::vector<int32_t> tokens(8, 1);
  {
    auto w = BaseLogitsWriter::create(path, 4, 3, 2, tokens);
    ASSERT_TRUE(w.has_value());
    ASSERT_TRUE(w->write_chunk(std::vector<uint16_t>(size_t(scored_per_chunk(4) * base_row_u16(3)))).is_ok());
    const Status s = w->finish();
    EXPECT_FALSE(s.is_ok());
    EXPECT_NE(s.message().find("1 of 2 chunks"), std::string::npos) << s.message();
  }
  EXPECT_FALSE(std::ifstream(path).good());
}

TEST(KldFile, WriterRefusesBadDimensionsAndPaths) {
  EXPECT_FALSE(BaseLogitsWriter::create(::testing::TempDir() + "/x.bin", 4, 3, 2, std::vector<int32_t>(7)).has_value());
  auto w = BaseLogitsWriter::create("/nonexistent-dir/base.bin", 4, 3, 1, std::vector<int32_t>(4));
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().code(), StatusCode::IoError);
  EXPECT_NE(w.error().message().find("/nonexistent-dir/base.bin"), std::string::npos);
}

// Parses a crafted image and expects a Corrupt status whose message contains `what`.
void expect_refused(const std::vector<uint8_t>& bytes, const std::string& what) {
  auto r = BaseLogitsReader::parse(bytes, "crafted.bin");
  ASSERT_FALSE(r.has_value()) << "accepted; expected: " << what;
  EXPECT_EQ(r.error().code(), StatusCode::Corrupt);
  EXPECT_NE(r.error().message().find("crafted.bin"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find(what), std::string::npos) << r.error().message();
}

TEST(KldFile, ReaderAcceptsACraftedValidFile) {
  const auto b = make_file(8, 7, 3);
  auto r = BaseLogitsReader::parse(b, "crafted.bin");
  ASSERT_TRUE(r.has_value()) << r.error().message();
  std::vector<uint16_t> rows;
  r->read_chunk(2, &rows);
  const size_t n_row = size_t(scored_per_chunk(8) * base_row_u16(7));
  ASSERT_EQ(rows.size(), n_row);
  EXPECT_EQ(rows[0], uint16_t(2 * n_row * 7));
}

TEST(KldFile, ReaderRefusesWrongMagic) {
  auto b = make_file(8, 7, 1);
  b[0] = 'X';
  expect_refused(b, "_logits_");
  expect_refused({}, "_logits_");
  expect_refused(std::vector<uint8_t>{'G', 'G', 'U', 'F', 3, 0, 0, 0, 0, 0, 0, 0}, "_logits_");
}

TEST(KldFile, ReaderRefusesBadDimensions) {
  auto b = make_file(8, 7, 1);
  set_i32(b, 8, 1);
  expect_refused(b, "context size 1");
  b = make_file(8, 7, 1);
  set_i32(b, 8, -512);
  expect_refused(b, "context size -512");
  b = make_file(8, 7, 1);
  set_i32(b, 12, 0);
  expect_refused(b, "vocabulary size 0");
  b = make_file(8, 7, 1);
  set_i32(b, 16, -1);
  expect_refused(b, "chunk count -1");
  b = make_file(8, 7, 1);
  set_i32(b, 16, 2);  // claims a second chunk the file does not hold
  expect_refused(b, "truncated");
  b = make_file(8, 7, 1);
  set_i32(b, 12, 262144);  // another model's vocabulary
  expect_refused(b, "truncated");
}

TEST(KldFile, ReaderRefusesTruncationAnywhere) {
  const auto full = make_file(8, 7, 2);
  for (size_t keep : {size_t(8), size_t(13), size_t(20), size_t(20 + 4 * 16 - 1), full.size() / 2, full.size() - 1}) {
    const std::vector<uint8_t> b(full.begin(), full.begin() + long(keep));
    expect_refused(b, "truncated");
  }
}

TEST(KldFile, ReaderRefusesTrailingBytes) {
  auto b = make_file(8, 7, 1);
  b.push_back(0);
  b.push_back(0);
  expect_refused(b, "trailing bytes");
}

TEST(KldFile, ReaderRefusesTokensOutsideTheVocabulary) {
  auto b = make_file(8, 7, 1);
  set_i32(b, 20 + 4 * 3, 7);
  expect_refused(b, "offset 32: token 7");
  set_i32(b, 20 + 4 * 3, -2);
  expect_refused(b, "token -2");
}

TEST(KldFile, MissingFileIsNotFound) {
  auto r = BaseLogitsReader::open(::testing::TempDir() + "/no-such-base.bin");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("no-such-base.bin"), std::string::npos);
}

}  // namespace
}  // namespace tandem::eval
