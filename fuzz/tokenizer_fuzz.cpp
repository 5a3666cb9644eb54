// libFuzzer target: tokenize and detokenize arbitrary bytes with a small in-memory SPM and a small
// byte-level BPE vocabulary (no files needed), checking that nothing crashes and that streaming
// detokenization only ever emits valid UTF-8.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace {

using tandem::gguf::Metadata;
using tandem::gguf::Value;
using namespace tandem::tokenizer;

std::unique_ptr<Tokenizer> make(bool spm) {
  Metadata md;
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", "<|im_end|>"};
  static const char kHex[] = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b)
    tokens.push_back(spm ? std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">" : byte_to_unicode(uint8_t(b)));
  for (const char* t : {"▁a", "▁the", "he", "the", "Ġt", "Ġthe", "in", "ing"}) tokens.push_back(t);
  std::vector<int32_t> types(tokens.size(), 1);
  types[0] = 2, types[1] = types[2] = types[3] = 3;
  if (spm)
    for (int b = 0; b < 256; ++b) types[4 + size_t(b)] = 6;
  std::vector<float> scores(tokens.size(), 0.0f);
  for (size_t i = 0; i < scores.size(); ++i) scores[i] = -float(i);
  md.add("tokenizer.ggml.model", Value::string(spm ? "llama" : "gpt2"));
  if (!spm) md.add("tokenizer.ggml.pre", Value::string("llama-bpe"));
  md.add("tokenizer.ggml.tokens", Value::string_array(tokens));
  md.add("tokenizer.ggml.token_type", Value::array_of<int32_t>(tandem::gguf::ValueType::I32, types));
  md.add("tokenizer.ggml.scores", Value::array_of<float>(tandem::gguf::ValueType::F32, scores));
  md.add("tokenizer.ggml.merges", Value::string_array({"h e", "t he", "Ġ t", "Ġt he", "i n", "in g"}));
  auto t = Tokenizer::from_metadata(md, "fuzz");
  if (!t) std::abort();
  return std::move(*t);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto spm = make(true);
  static const auto bpe = make(false);
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const Tokenizer* t : {spm.get(), bpe.get()}) {
    for (const bool special : {false, true}) {
      const auto tokenized = t->tokenize(text, special, special);
      if (!tokenized) std::abort();  // fuzz inputs are small: splitting them can never run out of stack
      const std::vector<TokenId>& ids = *tokenized;
      (void)t->detokenize(ids, special, special);
      StreamDecoder stream(*t, special, true);
      for (const TokenId id : ids) {
        const std::string piece = stream.push(id);
        if (sanitize_utf8(piece) != piece) std::abort();
      }
      const std::string rest = stream.flush();
      if (sanitize_utf8(rest) != rest) std::abort();
    }
  }
  return 0;
}
