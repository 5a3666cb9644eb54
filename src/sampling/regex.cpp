// ECMA-262 regular expression -> GBNF over a JSON string's content: a recursive-descent parser that
// writes the grammar as it goes. Every character set (a literal, a class, `.`, \d ...) becomes a
// GBNF class of the characters JSON writes raw plus one literal per character it must escape.
#include "sampling/regex.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "sampling/grammar.h"

namespace tandem::sampling {

namespace {

constexpr uint32_t kMaxCodePoint = 0x10FFFF;
constexpr int kMaxDepth = 100;  // nested groups: the grammar allows Grammar::kMaxNesting

using Ranges = std::vector<std::pair<uint32_t, uint32_t>>;

Ranges normalized(Ranges r) {
  std::sort(r.begin(), r.end());
  Ranges out;
  for (const auto& x : r) {
    if (!out.empty() && x.first <= out.back().second + 1) out.back().second = std::max(out.back().second, x.second);
    else out.push_back(x);
  }
  return out;
}

Ranges complement(const Ranges& r) {
  Ranges out;
  uint32_t next = 0;
  for (const auto& [lo, hi] : normalized(r)) {
    if (lo > next) out.push_back({next, lo - 1});
    next = hi + 1;
  }
  if (next <= kMaxCodePoint) out.push_back({next, kMaxCodePoint});
  return out;
}

const Ranges kDigit = {{'0', '9'}};
const Ranges kWord = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
// ECMA-262 WhiteSpace and LineTerminator.
const Ranges kSpace = {{0x09, 0x0D}, {0x20, 0x20}, {0xA0, 0xA0}, {0x1680, 0x1680}, {0x2000, 0x200A},
                       {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000}, {0xFEFF, 0xFEFF}};
const Ranges kDot = complement({{0x0A, 0x0A}, {0x0D, 0x0D}, {0x2028, 0x2029}});

// How JSON writes a character it may not write raw, as GBNF literal text ("\\n" is backslash, n).
std::string json_escape_literal(uint32_t cp) {
  switch (cp) {
    case '"': return R"("\\\"")";
    case '\\': return R"("\\\\")";
    case '\b': return R"("\\b")";
    case '\f': return R"("\\f")";
    case '\n': return R"("\\n")";
    case '\r': return R"("\\r")";
    case '\t': return R"("\\t")";
    default: {
      char buf[16];
      std::snprintf(buf, sizeof buf, R"("\\u%04X")", cp);
      return buf;
    }
  }
}

bool needs_escape(uint32_t cp) { return cp < 0x20 || cp == '"' || cp == '\\' || cp == 0x7F; }

std::string class_bound(uint32_t cp) {
  if ((cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return std::string(1, char(cp));
  char buf[16];
  std::snprintf(buf, sizeof buf, cp < 0x10000 ? "\\u%04X" : "\\U%08X", cp);
  return buf;
}

class RegexParser {
 public:
  explicit RegexParser(std::string_view pattern) : pattern_(pattern) {}

  Result<std::string> run() {
    size_t begin = 0, end = pattern_.size();
    const bool from_start = !pattern_.empty() && pattern_[0] == '^';
    if (from_start) begin = 1;
    size_t backslashes = 0;  // a final '$' is an anchor unless escaped
    for (size_t i = end; i > begin + 1 && pattern_[i - 2] == '\\'; --i) ++backslashes;
    const bool to_end = end > begin && pattern_[end - 1] == '$' && backslashes % 2 == 0;
    if (to_end) --end;
    offset_ = begin;
    src_ = pattern_.substr(begin, end - begin);
    const std::string body = alternation(0);
    if (ok() && pos_ < src_.size()) fail("unmatched ')'");
    if (!ok()) return error_;
    const std::string any = "([^\"\\\\\\x7F\\x00-\\x1F] | [\\\\] [\"\\\\/bfnrt])*";  // any JSON string content
    return (from_start ? "" : any + " ") + "(" + body + ")" + (to_end ? "" : " " + any);
  }

 private:
  bool ok() const { return error_.is_ok(); }
  bool at_end() const { return pos_ >= src_.size(); }
  char peek(size_t ahead = 0) const { return pos_ + ahead < src_.size() ? src_[pos_ + ahead] : '\0'; }
  std::string fail(const char* msg) {
    if (ok())
      error_ = invalid_argument("pattern '%.*s': column %zu: %s", int(pattern_.size()), pattern_.data(),
                                offset_ + pos_ + 1, msg);
    return "";
  }

  std::string alternation(int depth) {
    std::string out = sequence(depth);
    while (ok() && peek() == '|') {
      ++pos_;
      out += " | " + sequence(depth);
    }
    return out;
  }

  std::string sequence(int depth) {
    std::string out;
    while (ok() && !at_end() && peek() != '|' && peek() != ')') {
      std::string item = atom(depth);
      if (!ok()) return "";
      item = quantified(item);
      out += (out.empty() ? "" : " ") + item;
    }
    return out;
  }

  // {m}, {m,} or {m,n} at pos_; false (nothing consumed) when the braces are not a quantifier, which
  // ECMA-262 then reads as a literal '{'.
  bool braces(uint64_t* min, uint64_t* max) {
    size_t i = pos_ + 1;
    auto number = [&](uint64_t* out) {
      const size_t start = i;
      *out = 0;
      while (i < src_.size() && src_[i] >= '0' && src_[i] <= '9' && i - start < 12) *out = *out * 10 + uint64_t(src_[i++] - '0');
      return i > start;
    };
    if (!number(min)) return false;
    *max = *min;
    if (i < src_.size() && src_[i] == ',') {
      ++i;
      *max = UINT64_MAX;
      if (i < src_.size() && src_[i] != '}' && !number(max)) return false;
    }
    if (i >= src_.size() || src_[i] != '}') return false;
    pos_ = i + 1;
    return true;
  }

  std::string quantified(const std::string& item) {
    std::string q;
    uint64_t min = 0, max = 0;
    if (peek() == '*' || peek() == '+' || peek() == '?') {
      q = std::string(1, peek());
      ++pos_;
    } else if (peek() == '{' && braces(&min, &max)) {
      if (min > Grammar::kMaxRepetitions || (max != UINT64_MAX && max > Grammar::kMaxRepetitions))
        return fail("repetition count above 10000");
      if (max < min) return fail("repetition {m,n} with n below m");
      q = "{";  // appended piece by piece: GCC 12 warns falsely (-Wrestrict) on "{" + ...
      q += std::to_string(min);
      if (max != min) q += ",";
      if (max != min && max != UINT64_MAX) q += std::to_string(max);
      q += "}";
    } else {
      return item;
    }
    if (peek() == '?') ++pos_;  // lazy: the same strings
    if (peek() == '*' || peek() == '+' || (peek() == '?' && q != "?")) return fail("nothing to repeat");
    return "(" + item + ")" + q;
  }

  std::string atom(int depth) {
    const char c = peek();
    if (c == '(') {
      if (depth >= kMaxDepth) return fail("groups nested too deep");
      ++pos_;
      if (peek() == '?') {
        if (peek(1) == ':') {
          pos_ += 2;
        } else if (peek(1) == '<' && peek(2) != '=' && peek(2) != '!') {  // a named group
          while (!at_end() && peek() != '>') ++pos_;
          if (at_end()) return fail("unterminated group name");
          ++pos_;
        } else {
          return fail("lookahead and lookbehind are not supported");
        }
      }
      const std::string inner = alternation(depth + 1);
      if (!ok()) return "";
      if (peek() != ')') return fail("missing ')'");
      ++pos_;
      return "(" + inner + ")";
    }
    if (c == '[') return set(char_class());
    if (c == '.') {
      ++pos_;
      return set(kDot);
    }
    if (c == '\\') {
      Ranges r;
      escape(false, &r);
      return ok() ? set(r) : "";
    }
    if (c == '^' || c == '$') return fail("'^' and '$' are supported only at the start and the end");
    if (c == '*' || c == '+' || c == '?') return fail("nothing to repeat");
    if (c == '{') {
      const size_t save = pos_;
      uint64_t a, b;
      if (braces(&a, &b)) {
        pos_ = save;
        return fail("nothing to repeat");
      }
    }
    const uint32_t cp = code_point();
    return ok() ? set({{cp, cp}}) : "";
  }

  uint32_t code_point() {
    const auto b = static_cast<uint8_t>(peek());
    const int n = b < 0x80 ? 0 : b >= 0xC2 && b <= 0xDF ? 1 : b >= 0xE0 && b <= 0xEF ? 2 : b >= 0xF0 && b <= 0xF4 ? 3 : -1;
    uint32_t cp = n == 0 ? b : n == 1 ? b & 0x1F : n == 2 ? b & 0x0F : b & 0x07;
    for (int i = 1; i <= n; ++i) {
      const auto c = static_cast<uint8_t>(peek(size_t(i)));
      if ((c & 0xC0) != 0x80) return fail("invalid UTF-8"), 0;
      cp = (cp << 6) | (c & 0x3F);
    }
    if (n < 0) return fail("invalid UTF-8"), 0;
    pos_ += size_t(n) + 1;
    return cp;
  }

  uint32_t hex(int digits) {
    uint32_t v = 0;
    for (int i = 0; i < digits; ++i) {
      const char c = peek();
      const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return fail("expected hex digits"), 0;
      v = v * 16 + uint32_t(d);
      ++pos_;
    }
    return v;
  }

  // After a '\\': the characters it stands for, into *out. Returns true when that is one character
  // (so it may start or end a range in a class).
  bool escape(bool in_class, Ranges* out) {
    ++pos_;
    if (at_end()) return fail("'\\' at the end"), false;
    const char c = peek();
    ++pos_;
    auto one = [&](uint32_t cp) {
      out->push_back({cp, cp});
      return true;
    };
    switch (c) {
      case 'd': *out = kDigit; return false;
      case 'D': *out = complement(kDigit); return false;
      case 'w': *out = kWord; return false;
      case 'W': *out = complement(kWord); return false;
      case 's': *out = kSpace; return false;
      case 'S': *out = complement(kSpace); return false;
      case 't': return one('\t');
      case 'n': return one('\n');
      case 'r': return one('\r');
      case 'f': return one('\f');
      case 'v': return one('\v');
      case '0': return one(0);
      case 'x': return one(hex(2));
      case 'u': return one(hex(4));
      case 'b':
        if (in_class) return one('\b');
        return fail("word boundaries (\\b) are not supported"), false;
      case 'B': return fail("word boundaries (\\B) are not supported"), false;
      case 'c': case 'p': case 'P': case 'k':
        return fail("this escape (\\c, \\p, \\P, \\k) is not supported"), false;
      default:
        if (c >= '1' && c <= '9') return fail("back-references are not supported"), false;
        --pos_;
        return one(code_point());
    }
  }

  bool class_atom(Ranges* out) {
    if (peek() == '\\') return escape(true, out);
    const uint32_t cp = code_point();
    out->push_back({cp, cp});
    return true;
  }

  Ranges char_class() {
    ++pos_;  // '['
    bool negated = false;
    if (peek() == '^') negated = true, ++pos_;
    Ranges r;
    while (ok() && peek() != ']') {
      if (at_end()) return fail("missing ']'"), Ranges{};
      Ranges item;
      const bool single = class_atom(&item);
      if (!ok()) return {};
      if (single && peek() == '-' && peek(1) != ']' && pos_ + 1 < src_.size()) {
        ++pos_;
        Ranges hi;
        const bool hi_single = class_atom(&hi);
        if (!ok()) return {};
        if (!hi_single) {  // [a-\d]: no range, the three parts (ECMA-262 Annex B)
          item.push_back({'-', '-'});
          item.insert(item.end(), hi.begin(), hi.end());
        } else if (hi[0].first < item[0].first) {
          return fail("range out of order"), Ranges{};
        } else {
          item[0].second = hi[0].first;
        }
      }
      r.insert(r.end(), item.begin(), item.end());
    }
    ++pos_;  // ']'
    return negated ? complement(r) : normalized(r);
  }

  // A set of characters as JSON spells them: one class of the raw ones, a literal per escaped one.
  std::string set(const Ranges& ranges) {
    if (!ok()) return "";
    std::string cls;
    std::vector<std::string> alts;
    for (const auto& [lo, hi] : normalized(ranges)) {
      uint32_t a = lo;
      while (a <= hi) {
        if (needs_escape(a)) {
          alts.push_back(json_escape_literal(a));
          ++a;
          continue;
        }
        uint32_t b = a;  // the run of raw characters from a; past ASCII nothing needs an escape
        while (b < hi && !needs_escape(b + 1)) b = b + 1 >= 0x80 ? hi : b + 1;
        cls += class_bound(a);
        if (b > a) cls += "-", cls += class_bound(b);
        a = b + 1;
      }
    }
    if (!cls.empty()) alts.insert(alts.begin(), "[" + cls + "]");
    if (alts.empty()) return fail("a class that matches no character");
    if (alts.size() == 1) return alts[0];
    std::string out = "(";
    for (size_t i = 0; i < alts.size(); ++i) out += (i ? " | " : "") + alts[i];
    return out + ")";
  }

  std::string_view pattern_, src_;
  size_t offset_ = 0, pos_ = 0;
  Status error_ = Status::ok();
};

}  // namespace

Result<std::string> regex_to_gbnf(std::string_view pattern) { return RegexParser(pattern).run(); }

}  // namespace tandem::sampling
