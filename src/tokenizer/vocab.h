// The vocabulary as read from a GGUF file's tokenizer.ggml.* metadata: token texts, scores and
// attributes, BPE merge ranks, special-token ids and the flags that steer tokenization. No algorithms.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/status.h"
#include "gguf/value.h"

namespace tandem::tokenizer {

using TokenId = int32_t;
inline constexpr TokenId kNoToken = -1;

enum class VocabType { Spm, Bpe };  // tokenizer.ggml.model "llama"; "gpt2" and "gemma4"

// Attribute bits per token, with the values of llama.cpp's llama_token_attr (include/llama.h).
enum TokenAttr : uint32_t {
  kAttrUndefined = 0,
  kAttrUnknown = 1u << 0,
  kAttrUnused = 1u << 1,
  kAttrNormal = 1u << 2,
  kAttrControl = 1u << 3,
  kAttrUserDefined = 1u << 4,
  kAttrByte = 1u << 5,
  kAttrLstrip = 1u << 7,
  kAttrRstrip = 1u << 8,
};

struct SpecialIds {
  TokenId bos = kNoToken, eos = kNoToken, eot = kNoToken, eom = kNoToken, unk = kNoToken, sep = kNoToken,
          pad = kNoToken, mask = kNoToken, fim_pre = kNoToken, fim_suf = kNoToken, fim_mid = kNoToken,
          fim_pad = kNoToken, fim_rep = kNoToken, fim_sep = kNoToken;
};

// Heterogeneous lookup so a string_view finds a std::string key without a copy.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct Vocab {
  VocabType type = VocabType::Spm;
  std::string model_name;  // tokenizer.ggml.model
  std::string pre_name;    // tokenizer.ggml.pre as written ("" when absent); "gemma4" for that model, as in llama.cpp

  std::vector<std::string> texts;  // [n_tokens]
  std::vector<float> scores;       // [n_tokens]; 0 when the file has none
  std::vector<uint32_t> attrs;     // [n_tokens] TokenAttr bits
  StringMap text_to_id;            // the last token wins on duplicate texts, as in llama.cpp
  StringMap merge_ranks;           // "left right" -> rank; the first of duplicate merges wins

  SpecialIds special;
  std::vector<TokenId> eog_ids;         // tokens that end generation (EOS, EOT, EOM, ...), sorted
  std::vector<TokenId> special_tokens;  // control/user-defined/unknown, longest text first

  bool add_bos = false, add_eos = false;
  bool add_space_prefix = false;  // SPM: a space before text that starts the input or follows a special token
  bool clean_spaces = false;      // detokenize: " ," -> "," and friends
  bool ignore_merges = false;     // BPE: a word that is itself a token skips the merges
  bool spm_style = false;         // BPE over raw UTF-8 with U+2581 for spaces (PreTokenizerSpec::spm_style)

  std::vector<std::string> warnings;  // things a user should know (e.g. an unknown pre-tokenizer)

  size_t n_tokens() const { return texts.size(); }
  TokenId find(std::string_view text) const {
    auto it = text_to_id.find(text);
    return it == text_to_id.end() ? kNoToken : it->second;
  }
  // The byte-fallback token of an SPM vocab ("<0x41>", else the byte itself); kNoToken if absent.
  TokenId spm_byte_token(uint8_t byte) const;
  bool is_eog(TokenId id) const;
};

// Reads the vocabulary from metadata; `source` names the file in error messages. A tokenizer type
// other than "llama", "gpt2" or "gemma4" is refused with its name.
Result<Vocab> load_vocab(const gguf::Metadata& metadata, const std::string& source);

}  // namespace tandem::tokenizer
