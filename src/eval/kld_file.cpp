// llama-perplexity's base-logits file: validation on open, chunk reads, and the streaming writer.
#include "eval/kld_file.h"

#include <bit>
#include <cerrno>
#include <cstring>

namespace tandem::eval {

static_assert(std::endian::native == std::endian::little, "the base-logits file is little-endian");

uint64_t base_file_bytes(int64_t n_ctx, int64_t n_vocab, int64_t n_chunk) {
  return uint64_t(kBaseHeaderBytes) + 4 * uint64_t(n_chunk) * uint64_t(n_ctx) +
         2 * uint64_t(n_chunk) * uint64_t(scored_per_chunk(n_ctx)) * uint64_t(base_row_u16(n_vocab));
}

namespace {

// Dimensions a real file can have: n_ctx >= 2 gives at least one scored position per chunk; the bounds
// keep every product below 2^63 before the size check.
constexpr int32_t kMaxCtx = 1 << 24, kMaxVocab = 1 << 24, kMaxChunks = 1 << 24;

int32_t load_i32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

Result<BaseLogitsReader> BaseLogitsReader::open(const std::string& path, bool use_mmap) {
  TANDEM_ASSIGN(MappedFile file, MappedFile::open(path, {.use_mmap = use_mmap, .mlock = false, .on_progress = {}}));
  TANDEM_ASSIGN(BaseLogitsReader r, parse(file.bytes(), path));
  r.file_ = std::move(file);  // moving a MappedFile keeps its bytes where they are
  return r;
}

Result<BaseLogitsReader> BaseLogitsReader::parse(std::span<const uint8_t> bytes, const std::string& name) {
  const char* what = "a llama-perplexity base-logits file (--kl-divergence-base)";
  if (bytes.size() < sizeof kBaseLogitsMagic ||
      std::memcmp(bytes.data(), kBaseLogitsMagic, sizeof kBaseLogitsMagic) != 0)
    return corrupt("%s: not %s: it does not start with \"_logits_\"", name.c_str(), what);
  if (bytes.size() < size_t(kBaseHeaderBytes))
    return corrupt("%s: truncated header: %zu bytes, the header alone needs %lld", name.c_str(), bytes.size(),
                   (long long)kBaseHeaderBytes);
  BaseLogitsReader r;
  r.name_ = name;
  r.n_ctx_ = load_i32(bytes.data() + 8);
  r.n_vocab_ = load_i32(bytes.data() + 12);
  r.n_chunk_ = load_i32(bytes.data() + 16);
  if (r.n_ctx_ < 2 || r.n_ctx_ > kMaxCtx)
    return corrupt("%s: offset 8: context size %d is outside [2, %d]", name.c_str(), r.n_ctx_, kMaxCtx);
  if (r.n_vocab_ < 1 || r.n_vocab_ > kMaxVocab)
    return corrupt("%s: offset 12: vocabulary size %d is outside [1, %d]", name.c_str(), r.n_vocab_, kMaxVocab);
  if (r.n_chunk_ < 1 || r.n_chunk_ > kMaxChunks)
    return corrupt("%s: offset 16: chunk count %d is outside [1, %d]", name.c_str(), r.n_chunk_, kMaxChunks);
  const uint64_t want = base_file_bytes(r.n_ctx_, r.n_vocab_, r.n_chunk_);
  if (bytes.size() != want)
    return corrupt("%s: %s: %zu bytes, but %d chunks of %d tokens over a vocabulary of %d take %llu", name.c_str(),
                   bytes.size() < want ? "truncated" : "trailing bytes", bytes.size(), r.n_chunk_, r.n_ctx_,
                   r.n_vocab_, (unsigned long long)want);
  r.tokens_.resize(size_t(r.n_chunk_) * size_t(r.n_ctx_));
  std::memcpy(r.tokens_.data(), bytes.data() + kBaseHeaderBytes, r.tokens_.size() * sizeof(int32_t));
  for (size_t i = 0; i < r.tokens_.size(); ++i)
    if (r.tokens_[i] < 0 || r.tokens_[i] >= r.n_vocab_)
      return corrupt("%s: offset %llu: token %d is outside the vocabulary of %d", name.c_str(),
                     (unsigned long long)(kBaseHeaderBytes + 4 * i), r.tokens_[i], r.n_vocab_);
  r.bytes_ = bytes;
  return r;
}

void BaseLogitsReader::read_chunk(int64_t chunk, std::vector<uint16_t>* rows) const {
  TANDEM_CHECK(chunk >= 0 && chunk < n_chunk_);
  const size_t n = size_t(scored_per_chunk(n_ctx_)) * size_t(base_row_u16(n_vocab_));
  const size_t offset = size_t(kBaseHeaderBytes) + tokens_.size() * sizeof(int32_t) + size_t(chunk) * n * 2;
  rows->resize(n);
  std::memcpy(rows->data(), bytes_.data() + offset, n * 2);
}

BaseLogitsWriter::~BaseLogitsWriter() {
  if (file_) {
    file_.reset();
    std::remove(path_.c_str());
  }
}

Result<BaseLogitsWriter> BaseLogitsWriter::create(const std::string& path, int32_t n_ctx, int32_t n_vocab,
                                                  int32_t n_chunk, std::span<const int32_t> tokens) {
  if (n_ctx < 2 || n_vocab < 1 || n_chunk < 1 || tokens.size() != size_t(n_ctx) * size_t(n_chunk))
    return invalid_argument("%s: cannot write %d chunks of %d tokens (vocabulary %d) from %zu tokens", path.c_str(),
                            n_chunk, n_ctx, n_vocab, tokens.size());
  BaseLogitsWriter w;
  w.file_.reset(std::fopen(path.c_str(), "wb"));
  if (!w.file_) return io_error("%s: cannot create: %s", path.c_str(), std::strerror(errno));
  w.path_ = path;
  w.n_ctx_ = n_ctx;
  w.n_vocab_ = n_vocab;
  w.n_chunk_ = n_chunk;
  const int32_t dims[3] = {n_ctx, n_vocab, n_chunk};
  if (std::fwrite(kBaseLogitsMagic, 1, sizeof kBaseLogitsMagic, w.file_.get()) != sizeof kBaseLogitsMagic ||
      std::fwrite(dims, sizeof dims, 1, w.file_.get()) != 1 ||
      std::fwrite(tokens.data(), sizeof(int32_t), tokens.size(), w.file_.get()) != tokens.size())
    return io_error("%s: write failed: %s", path.c_str(), std::strerror(errno));
  return w;
}

Status BaseLogitsWriter::write_chunk(std::span<const uint16_t> rows) {
  TANDEM_CHECK(file_ != nullptr);
  const size_t n = size_t(scored_per_chunk(n_ctx_)) * size_t(base_row_u16(n_vocab_));
  TANDEM_CHECK(rows.size() == n && n_written_ < n_chunk_);
  if (std::fwrite(rows.data(), sizeof(uint16_t), n, file_.get()) != n)
    return io_error("%s: write failed after %lld of %lld chunks: %s", path_.c_str(), (long long)n_written_,
                    (long long)n_chunk_, std::strerror(errno));
  ++n_written_;
  return Status::ok();
}

Status BaseLogitsWriter::finish() {
  TANDEM_CHECK(file_ != nullptr);
  if (n_written_ != n_chunk_)
    return invalid_argument("%s: %lld of %lld chunks written", path_.c_str(), (long long)n_written_,
                            (long long)n_chunk_);
  std::FILE* f = file_.release();
  const bool ok = std::fflush(f) == 0 && !std::ferror(f);
  const int err = errno;
  if (std::fclose(f) != 0 || !ok) {
    std::remove(path_.c_str());
    return io_error("%s: write failed: %s", path_.c_str(), std::strerror(ok ? errno : err));
  }
  return Status::ok();
}

}  // namespace tandem::eval
