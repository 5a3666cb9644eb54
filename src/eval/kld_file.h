// The base-logits file of llama-perplexity (--kl-divergence-base): read and written byte for byte as
// llama.cpp's tools/perplexity/perplexity.cpp does, so either tool reads the other's. The scoring that
// fills and consumes its rows lives in eval/perplexity.h.
//
// Layout, little-endian, no padding between fields:
//   char[8]  "_logits_"
//   int32    n_ctx, n_vocab, n_chunk
//   int32    tokens[n_chunk * n_ctx]        the tokenized text, before any BOS substitution
//   then for each chunk, for each scored position (the last n_ctx - 1 - n_ctx/2 but one of the chunk):
//   uint16   row[base_row_u16(n_vocab)]     float scale, float min_log_prob (4 uint16), then one
//                                           uint16 q per token, padded to an even count:
//                                           log p(token) = scale * q + min_log_prob
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/file.h"
#include "core/status.h"

namespace tandem::eval {

inline constexpr char kBaseLogitsMagic[8] = {'_', 'l', 'o', 'g', 'i', 't', 's', '_'};
inline constexpr int64_t kBaseHeaderBytes = 8 + 3 * 4;

// uint16 values per scored position: 4 for the two floats, n_vocab rounded up to even.
inline int64_t base_row_u16(int64_t n_vocab) { return 2 * ((n_vocab + 1) / 2) + 4; }
// Positions scored per chunk: the second half, less the last token (it has no next token).
inline int64_t scored_per_chunk(int64_t n_ctx) { return n_ctx - 1 - n_ctx / 2; }
// The exact size of a file with these dimensions.
uint64_t base_file_bytes(int64_t n_ctx, int64_t n_vocab, int64_t n_chunk);

// A whole base-logits file, validated on open: magic, positive dimensions, exact size. Rows are read
// one chunk at a time. Movable; the bytes stay mapped (or owned) for its lifetime.
class BaseLogitsReader {
 public:
  // Maps `path` (or reads it, when use_mmap is false).
  static Result<BaseLogitsReader> open(const std::string& path, bool use_mmap = true);
  // Parses bytes the caller keeps alive; `name` labels messages.
  static Result<BaseLogitsReader> parse(std::span<const uint8_t> bytes, const std::string& name);

  int32_t n_ctx() const { return n_ctx_; }
  int32_t n_vocab() const { return n_vocab_; }
  int32_t n_chunk() const { return n_chunk_; }
  const std::vector<int32_t>& tokens() const { return tokens_; }  // [n_chunk * n_ctx]
  const std::string& name() const { return name_; }

  // Copies chunk `chunk`'s rows into *rows: [scored_per_chunk(n_ctx), base_row_u16(n_vocab)].
  void read_chunk(int64_t chunk, std::vector<uint16_t>* rows) const;

 private:
  MappedFile file_;
  std::span<const uint8_t> bytes_;
  std::string name_;
  int32_t n_ctx_ = 0, n_vocab_ = 0, n_chunk_ = 0;
  std::vector<int32_t> tokens_;
};

// Writes a base-logits file: the header on create(), then every chunk's rows in order, then finish().
// A file left unfinished (an error, or the writer destroyed early) is removed.
class BaseLogitsWriter {
 public:
  BaseLogitsWriter() = default;
  BaseLogitsWriter(BaseLogitsWriter&&) noexcept = default;
  BaseLogitsWriter& operator=(BaseLogitsWriter&&) noexcept = default;
  ~BaseLogitsWriter();

  // tokens: [n_chunk * n_ctx], the text the rows will score.
  static Result<BaseLogitsWriter> create(const std::string& path, int32_t n_ctx, int32_t n_vocab, int32_t n_chunk,
                                         std::span<const int32_t> tokens);
  // One chunk: [scored_per_chunk(n_ctx), base_row_u16(n_vocab)] values.
  Status write_chunk(std::span<const uint16_t> rows);
  // Checks every chunk was written, flushes and closes.
  Status finish();

 private:
  struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
  };
  std::unique_ptr<std::FILE, FileCloser> file_;
  std::string path_;
  int64_t n_ctx_ = 0, n_vocab_ = 0, n_chunk_ = 0, n_written_ = 0;
};

}  // namespace tandem::eval
