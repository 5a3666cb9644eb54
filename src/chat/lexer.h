// Jinja lexer: template source to tokens, with jinja2's whitespace control as Hugging Face sets it
// (trim_blocks, lstrip_blocks, `-`/`+` markers, no trailing newline kept). Internal to src/chat.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace tandem::chat {

enum class TokenType { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, Eof };

struct Token {
  TokenType type;
  std::string text;  // Text: the output text; String: the unescaped value; Op/Name/numbers: as written
  size_t offset;     // in the normalized source, for line and column in messages
};

// Line and column (1-based) of a byte offset, as an editor counts them (columns in bytes).
class SourceMap {
 public:
  explicit SourceMap(std::string_view source);
  std::string where(size_t offset) const;  // "line L, column C"

 private:
  std::vector<size_t> line_starts_;
};

struct Lexed {
  std::string source;  // newlines normalized to \n, one trailing newline dropped (jinja2's defaults)
  std::vector<Token> tokens;  // ends with Eof
};

Result<Lexed> lex(std::string_view source);

}  // namespace tandem::chat
