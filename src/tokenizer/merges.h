// The two merge algorithms: SentencePiece-style score merges (spm.cpp) and byte-level BPE rank
// merges (bpe.cpp). Both reproduce llama.cpp's order of merges exactly, ties included.
#pragma once

#include <string_view>
#include <vector>

#include "tokenizer/vocab.h"

namespace tandem::tokenizer {

// Tokenizes one text fragment (spaces already replaced by U+2581) with an SPM vocabulary: starting from
// one symbol per UTF-8 character, repeatedly merges the adjacent pair whose concatenation is the
// highest-scoring token (leftmost first on ties); symbols that are no token fall back to byte tokens.
// Cost: O(n log n) in the fragment's characters.
void spm_tokenize(const Vocab& vocab, std::string_view text, std::vector<TokenId>* out);

// Tokenizes one pre-tokenized word with a BPE vocabulary (GPT-2 byte-encoded, or raw UTF-8 for a
// spm_style vocab): repeatedly merges the adjacent pair with the lowest merge rank (leftmost first on
// ties). Symbols that are no token emit the tokens of their single bytes (<0xXX> when spm_style), where
// those exist (llama.cpp's behaviour; bytes without a token are dropped).
void bpe_tokenize_word(const Vocab& vocab, std::string_view word, std::vector<TokenId>* out);

}  // namespace tandem::tokenizer
