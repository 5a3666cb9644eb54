// Byte-level BPE pre-tokenizers: the split rules of each model family (tokenizer.ggml.pre), run with
// PCRE2's JIT. Splitting only; the merges live in bpe.cpp.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace tandem::tokenizer {

// What a tokenizer.ggml.pre name selects, with the detokenizer flags llama.cpp ties to it
// (src/llama-vocab.cpp, llama_vocab::impl::load).
struct PreTokenizerSpec {
  const char* family;                     // canonical name, e.g. "llama3"
  std::vector<const char*> patterns;      // applied in order, each to the pieces the previous left
  bool clean_spaces = true;
  bool ignore_merges = false;
  bool add_bos = false;    // the family forces add_bos on (before tokenizer.ggml.add_bos_token)
  bool no_bos_id = false;  // the family has no BOS token (chatglm)
  // llama.cpp's GEMMA4 pre-type (SentencePiece-style BPE): spaces become U+2581 before splitting, words
  // keep their raw UTF-8 (no GPT-2 byte map), bytes without a token fall back to <0xXX> tokens,
  // add_bos is on whatever the metadata says, and a word of only newlines that is a token is taken whole.
  bool spm_style = false;
};

// The spec for a tokenizer.ggml.pre name, or nullptr when Tandem does not know it.
const PreTokenizerSpec* find_pre_tokenizer(std::string_view name);
// The spec used for a missing name and, with a warning, for an unknown one: llama.cpp's "default".
const PreTokenizerSpec& default_pre_tokenizer();
// Every name find_pre_tokenizer accepts (for docs and tests).
std::vector<std::string> known_pre_tokenizer_names();

// Rewrites a pattern written in llama.cpp's dialect into the PCRE2 pattern with the same meaning for
// llama.cpp: \s and \S cover its whitespace set, and \p{L}/\p{N}/\p{M}/\p{P}/\p{S} also take the
// Unicode 15 additions that Debian 12's PCRE2 (Unicode 14) lacks. Exposed for tests.
std::string to_pcre2_pattern(std::string_view llama_pattern);

// A compiled pre-tokenizer. Thread-safe: each call uses its own match resources.
class PreTokenizer {
 public:
  // max_jit_stack_bytes caps the match stack a split may grow to (0: 256 bytes per byte of the text,
  // enough for any length; tests set a small cap to reach the error path).
  static Result<std::unique_ptr<PreTokenizer>> create(const PreTokenizerSpec& spec, size_t max_jit_stack_bytes = 0);
  ~PreTokenizer();

  // Splits `text` (valid UTF-8 except for surrogate code points, which the caller has replaced by a
  // same-length stand-in) into words; returns the byte length of each word, in order. Empty words
  // (from patterns that can match nothing) are dropped. Any length splits as a short text would; an
  // error (OutOfMemory) only when the match stack that needs cannot be had, never a partial split.
  // Cost: linear in the text (about 0.1 s per million bytes of one run; pre_tokenizer_test).
  Result<std::vector<size_t>> split(std::string_view text) const;

 private:
  PreTokenizer() = default;
  struct Compiled;
  std::vector<std::unique_ptr<Compiled>> regexes_;
  const char* family_ = "";
  size_t max_jit_stack_bytes_ = 0;
};

}  // namespace tandem::tokenizer
