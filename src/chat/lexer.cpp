// Jinja lexer, following jinja2/lexer.py's rules (3.1) for the environment transformers builds:
// trim_blocks and lstrip_blocks on, keep_trailing_newline off, brackets balanced inside tags.
#include "chat/lexer.h"

#include <algorithm>
#include <cstring>

namespace tandem::chat {

SourceMap::SourceMap(std::string_view source) {
  line_starts_.push_back(0);
  for (size_t i = 0; i < source.size(); ++i)
    if (source[i] == '\n') line_starts_.push_back(i + 1);
}

std::string SourceMap::where(size_t offset) const {
  const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset) - 1;
  return format("line %zu, column %zu", static_cast<size_t>(it - line_starts_.begin()) + 1, offset - *it + 1);
}

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

int hex_value(char c) {
  if (is_digit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(std::move(source)), map_(src_) {}

  Result<Lexed> run() {
    size_t pos = 0;
    bool line_starting = true;  // jinja2: did the previous match end with a newline?
    while (pos < src_.size()) {
      size_t p = pos;
      while ((p = src_.find('{', p)) != std::string::npos) {
        if (p + 1 < src_.size() && (src_[p + 1] == '{' || src_[p + 1] == '%' || src_[p + 1] == '#')) break;
        ++p;
      }
      if (p == std::string::npos) {
        emit_text(src_.substr(pos), pos);
        break;
      }
      const char kind = src_[p + 1];
      const char sign = p + 2 < src_.size() && (src_[p + 2] == '-' || src_[p + 2] == '+') ? src_[p + 2] : 0;
      std::string text = src_.substr(pos, p - pos);
      strip_before_tag(text, kind, sign, line_starting);
      emit_text(std::move(text), pos);
      size_t q = p + 2 + (sign ? 1 : 0);
      if (kind == '#') {
        const size_t end = src_.find("#}", q);
        if (end == std::string::npos) return error(p, "unclosed comment: no '#}' follows");
        const char end_sign = end > q && (src_[end - 1] == '-' || src_[end - 1] == '+') ? src_[end - 1] : 0;
        pos = after_tag_end(end + 2, end_sign, true);
      } else if (kind == '%' && is_raw_begin(q)) {
        TANDEM_TRY(lex_raw(p, q, pos, line_starting));
        continue;
      } else {
        tokens_.push_back({kind == '{' ? TokenType::VarBegin : TokenType::BlockBegin, "", p});
        TANDEM_ASSIGN(pos, lex_tag(q, kind));
      }
      line_starting = pos > 0 && src_[pos - 1] == '\n';
    }
    tokens_.push_back({TokenType::Eof, "", src_.size()});
    return Lexed{std::move(src_), std::move(tokens_)};
  }

 private:
  Status error(size_t offset, const std::string& what) const {
    return invalid_argument("chat template: %s: %s", map_.where(offset).c_str(), what.c_str());
  }

  void emit_text(std::string text, size_t offset) {
    if (!text.empty()) tokens_.push_back({TokenType::Text, std::move(text), offset});
  }

  // `{%-` strips all whitespace before the tag; lstrip_blocks strips spaces and tabs between the
  // line start and a block or comment tag, unless `{%+` keeps them.
  static void strip_before_tag(std::string& text, char kind, char sign, bool line_starting) {
    if (sign == '-') {
      size_t end = text.size();
      while (end > 0 && is_space(text[end - 1])) --end;
      text.resize(end);
    } else if (sign != '+' && kind != '{') {
      const size_t nl = text.rfind('\n');
      const size_t l_pos = nl == std::string::npos ? 0 : nl + 1;
      if ((l_pos > 0 || line_starting) && l_pos < text.size() &&
          std::all_of(text.begin() + l_pos, text.end(), is_space))
        text.resize(l_pos);
    }
  }

  // After a tag's end at `pos`: `-` strips all following whitespace, trim_blocks one newline.
  size_t after_tag_end(size_t pos, char end_sign, bool trim) const {
    if (end_sign == '-') {
      while (pos < src_.size() && is_space(src_[pos])) ++pos;
    } else if (end_sign != '+' && trim && pos < src_.size() && src_[pos] == '\n') {
      ++pos;
    }
    return pos;
  }

  size_t skip_spaces(size_t q) const {
    while (q < src_.size() && is_space(src_[q])) ++q;
    return q;
  }

  bool is_raw_begin(size_t q) const {
    q = skip_spaces(q);
    if (src_.compare(q, 3, "raw") != 0) return false;
    q = skip_spaces(q + 3);
    if (q < src_.size() && src_[q] == '-') ++q;
    return src_.compare(q, 2, "%}") == 0;
  }

  // {% raw %}...{% endraw %}: the body is text, untouched.
  Status lex_raw(size_t start, size_t q, size_t& pos, bool& line_starting) {
    q = skip_spaces(skip_spaces(q) + 3);
    const bool strip_after = src_[q] == '-';
    q = strip_after ? skip_spaces(q + 3) : q + 2;
    for (size_t p = q; (p = src_.find("{%", p)) != std::string::npos; p += 2) {
      size_t r = p + 2;
      const char sign = r < src_.size() && (src_[r] == '-' || src_[r] == '+') ? src_[r] : 0;
      if (sign) ++r;
      r = skip_spaces(r);
      if (src_.compare(r, 6, "endraw") != 0) continue;
      r = skip_spaces(r + 6);
      char end_sign = 0;
      if (r < src_.size() && (src_[r] == '-' || src_[r] == '+')) end_sign = src_[r++];
      if (src_.compare(r, 2, "%}") != 0) continue;
      std::string text = src_.substr(q, p - q);
      strip_before_tag(text, '%', sign, line_starting);
      emit_text(std::move(text), q);
      pos = after_tag_end(r + 2, end_sign, true);
      line_starting = pos > 0 && src_[pos - 1] == '\n';
      return {};
    }
    return error(start, "unclosed raw block: no '{% endraw %}' follows");
  }

  // Expression tokens of a `{{ }}` or `{% %}` tag from q; returns the offset after the tag.
  Result<size_t> lex_tag(size_t q, char kind) {
    const char* close = kind == '{' ? "}}" : "%}";
    int depth = 0;  // brackets: an end marker inside ( [ { is an operator, as in jinja2
    while (true) {
      q = skip_spaces(q);
      if (q >= src_.size()) return error(q, format("unexpected end of template, expected '%s'", close));
      const char c = src_[q];
      if (depth == 0) {
        const char sign = (c == '-' || c == '+') ? c : 0;
        const size_t e = sign ? q + 1 : q;
        if (src_.compare(e, 2, close) == 0 && (sign != '+' || kind == '%')) {
          tokens_.push_back({kind == '{' ? TokenType::VarEnd : TokenType::BlockEnd, "", q});
          return after_tag_end(e + 2, sign, kind == '%');
        }
      }
      if (is_name_start(c)) {
        size_t e = q + 1;
        while (e < src_.size() && (is_name_start(src_[e]) || is_digit(src_[e]))) ++e;
        tokens_.push_back({TokenType::Name, src_.substr(q, e - q), q});
        q = e;
      } else if (is_digit(c)) {
        q = lex_number(q);
      } else if (c == '\'' || c == '"') {
        TANDEM_ASSIGN(q, lex_string(q));
      } else {
        static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                     "=", ".", ",", ":", "|", "(", ")", "[", "]", "{", "}"};
        const char* op = nullptr;
        for (const char* o : kOps)
          if (src_.compare(q, std::strlen(o), o) == 0) {
            op = o;
            break;
          }
        if (!op) return error(q, format("unexpected character '%c'", c));
        if (c == '(' || c == '[' || c == '{') ++depth;
        if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
        tokens_.push_back({TokenType::Op, op, q});
        q += std::strlen(op);
      }
    }
  }

  size_t lex_number(size_t q) {
    size_t e = q;
    auto digits = [&] {
      while (e < src_.size() && (is_digit(src_[e]) || (src_[e] == '_' && e + 1 < src_.size() && is_digit(src_[e + 1]))))
        ++e;
    };
    digits();
    bool is_float = false;
    // After a '.', a number is an item index (`x.0`), never a float, as jinja2's (?<!\.) says.
    const bool after_dot = !tokens_.empty() && tokens_.back().type == TokenType::Op && tokens_.back().text == ".";
    if (!after_dot && e + 1 < src_.size() && src_[e] == '.' && is_digit(src_[e + 1])) {
      ++e;
      digits();
      is_float = true;
    }
    if (!after_dot && e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t f = e + 1;
      if (f < src_.size() && (src_[f] == '+' || src_[f] == '-')) ++f;
      if (f < src_.size() && is_digit(src_[f])) {
        e = f;
        digits();
        is_float = true;
      }
    }
    std::string text;
    for (size_t i = q; i < e; ++i)
      if (src_[i] != '_') text += src_[i];
    tokens_.push_back({is_float ? TokenType::Float : TokenType::Int, text, q});
    return e;
  }

  // A quoted literal, unescaped as Python's "unicode-escape" codec does (jinja2 does the same).
  Result<size_t> lex_string(size_t q) {
    const char quote = src_[q];
    std::string out;
    size_t i = q + 1;
    while (true) {
      if (i >= src_.size()) return error(q, "unterminated string");
      const char c = src_[i];
      if (c == quote) break;
      if (c != '\\' || i + 1 >= src_.size()) {
        out += c;
        ++i;
        continue;
      }
      const char n = src_[i + 1];
      i += 2;
      switch (n) {
        case '\n': break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'v': out += '\v'; break;
        case 'x': case 'u': case 'U': {
          const int len = n == 'x' ? 2 : n == 'u' ? 4 : 8;
          uint32_t cp = 0;
          for (int k = 0; k < len; ++k) {
            const int h = i + k < src_.size() ? hex_value(src_[i + k]) : -1;
            if (h < 0) return error(i - 2, format("truncated \\%c escape in a string", n));
            cp = cp * 16 + h;
          }
          if (cp > 0x10ffff) return error(i - 2, "escape beyond U+10FFFF in a string");
          append_utf8(cp, out);
          i += len;
          break;
        }
        default:
          if (n >= '0' && n <= '7') {
            uint32_t cp = n - '0';
            for (int k = 0; k < 2 && i < src_.size() && src_[i] >= '0' && src_[i] <= '7'; ++k) cp = cp * 8 + (src_[i++] - '0');
            append_utf8(cp, out);
          } else {
            out += '\\';  // unknown escapes stay as written, as in Python
            out += n;
          }
      }
    }
    tokens_.push_back({TokenType::String, std::move(out), q});
    return i + 1;
  }

  std::string src_;
  SourceMap map_;
  std::vector<Token> tokens_;
};

}  // namespace

Result<Lexed> lex(std::string_view source) {
  // jinja2 splits on every newline form and joins with \n, dropping one trailing newline.
  std::string s;
  s.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      s += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      s += source[i];
    }
  }
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return Lexer(std::move(s)).run();
}

}  // namespace tandem::chat
