// Text <-> token ids for a GGUF model's vocabulary ("llama" SentencePiece, "gpt2" byte-level BPE, "gemma4"),
// giving the same ids as llama.cpp's llama_tokenize / llama_detokenize, and a streaming detokenizer.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "gguf/value.h"
#include "tokenizer/vocab.h"

namespace tandem::tokenizer {

class PreTokenizer;

// Immutable after creation; every method is const and safe to call from many threads at once.
class Tokenizer {
 public:
  // From a model's metadata; `source` names the file in messages. Warnings (an unknown pre-tokenizer,
  // ...) are in warnings(): the caller decides where to print them.
  static Result<std::unique_ptr<Tokenizer>> from_metadata(const gguf::Metadata& metadata, const std::string& source);
  // Opens a GGUF file (a vocab-only file is fine) and reads its tokenizer.
  static Result<std::unique_ptr<Tokenizer>> open(const std::string& path);
  ~Tokenizer();

  // llama_tokenize(text, add_special, parse_special): add_special adds BOS/EOS where the vocabulary asks
  // for them; parse_special matches control-token texts ("<|im_end|>") as those tokens. User-defined tokens
  // are always matched. Invalid UTF-8 is tokenized the way llama.cpp does; the only error is a text
  // whose pre-tokenization needs more memory than can be had (PreTokenizer::split).
  Result<std::vector<TokenId>> tokenize(std::string_view text, bool add_special, bool parse_special) const;

  // The bytes a token stands for (llama_token_to_piece with lstrip 0). Control and unknown tokens
  // render as their text when `special`, as nothing otherwise. An id outside the vocabulary gives "".
  std::string token_to_piece(TokenId id, bool special) const;
  // llama_detokenize: the leading space SentencePiece added is removed, BOS/EOS dropped when
  // remove_special, and spaces cleaned up (" ," -> ",") where the vocabulary asks for it.
  std::string detokenize(std::span<const TokenId> ids, bool remove_special, bool unparse_special) const;

  const Vocab& vocab() const { return vocab_; }
  size_t n_tokens() const { return vocab_.n_tokens(); }
  const std::vector<std::string>& warnings() const { return vocab_.warnings; }
  // The pre-tokenizer family in use ("llama3", "qwen2", ...; "spm" for SentencePiece).
  const std::string& pre_family() const { return pre_family_; }

 private:
  Tokenizer() = default;
  struct Fragment;
  std::vector<Fragment> partition(std::string_view text, bool parse_special) const;
  Status tokenize_bpe_text(std::string_view text, std::vector<TokenId>* out, void* cache) const;

  Vocab vocab_;
  std::string pre_family_;
  std::unique_ptr<PreTokenizer> pre_;        // BPE only
  std::vector<std::string> pieces_;          // token_to_piece(id, true) for every id
  struct SpecialTrie;
  std::unique_ptr<SpecialTrie> special_trie_;  // finds which special texts occur in an input at all
};

// Turns generated tokens into text one token at a time without ever emitting part of a UTF-8
// character: bytes of an unfinished character wait for the next token; bytes that can never form a
// character come out as U+FFFD. Not thread-safe (one per stream); the tokenizer must outlive it.
class StreamDecoder {
 public:
  // strip_leading_space: drop one space at the start of the first non-empty piece (SentencePiece's
  // prefix space, when the stream starts a text). special: render control tokens as their text.
  StreamDecoder(const Tokenizer& tokenizer, bool special, bool strip_leading_space)
      : tokenizer_(tokenizer), special_(special), strip_space_(strip_leading_space) {}
  // The text completed by this token (possibly empty).
  std::string push(TokenId id);
  // Whatever is still held back, as U+FFFD: call at the end of the stream.
  std::string flush();
  size_t held_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  bool special_, strip_space_;
  std::string pending_;
};

}  // namespace tandem::tokenizer
