// GBNF text -> Grammar: the recursive-descent parser, the rewriting of groups and repetitions into
// generated rules, and the checks that make matching terminate (defined rules, no left recursion).
// Follows the notation of llama.cpp's grammars/README.md and src/llama-grammar.cpp (parse_sequence):
// a repetition applies to the last symbol, and a whole "literal" is one symbol.
#include <algorithm>
#include <unordered_map>

#include "sampling/grammar.h"

namespace tandem::sampling {

bool Grammar::CharClass::matches(uint32_t cp) const {
  if (cp < 128) return (ascii[cp >> 6] >> (cp & 63)) & 1;
  bool in = false;
  for (const auto& [lo, hi] : ranges)
    if (cp >= lo && cp <= hi) {
      in = true;
      break;
    }
  return in != negated;
}

bool Grammar::CharClass::intersects(uint32_t lo, uint32_t hi) const {
  for (const auto& [a, b] : ranges) {
    if (negated && a <= lo && hi <= b) return false;  // all of [lo, hi] is excluded
    if (!negated && a <= hi && lo <= b) return true;
  }
  return negated;
}

namespace {

struct Sym {
  Grammar::Element::Kind kind;
  uint32_t value;
};
using Sequence = std::vector<Sym>;

bool is_word_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

class Parser {
 public:
  explicit Parser(std::string_view src) : src_(src) {}

  Result<std::shared_ptr<const Grammar>> run() {
    skip_space(true);
    while (ok() && pos_ < src_.size()) parse_rule();
    if (ok()) check_defined();
    if (ok()) check_left_recursion();
    if (!ok()) return Status(error_);
    auto g = std::make_shared<Grammar>(std::move(g_));
    flatten(*g);
    return std::shared_ptr<const Grammar>(std::move(g));
  }

 private:
  struct RuleInfo {
    std::vector<Sequence> alts;
    bool defined = false;
    size_t first_use = 0;  // source offset of the first reference, for "undefined rule"
  };

  bool ok() const { return error_.is_ok(); }
  char peek(size_t ahead = 0) const { return pos_ + ahead < src_.size() ? src_[pos_ + ahead] : '\0'; }
  bool at_end() const { return pos_ >= src_.size(); }

  // Remembers the first error only; parsing unwinds by checking ok() at every loop.
  template <typename... Args>
  void fail_at(size_t at, const char* fmt, Args... args) {
    if (!ok()) return;
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at && i < src_.size(); ++i) {
      if (src_[i] == '\n') {
        ++line, col = 1;
      } else if ((static_cast<uint8_t>(src_[i]) & 0xC0) != 0x80) {
        ++col;  // columns count characters, not bytes
      }
    }
    std::string msg = fmt;  // no arguments: used as it is (and never as a format)
    if constexpr (sizeof...(Args) > 0) msg = format(fmt, args...);
    error_ = invalid_argument("grammar: line %zu, column %zu: %s", line, col, msg.c_str());
  }
  void fail(const char* msg) { fail_at(pos_, "%s", msg); }

  // Spaces, tabs and # comments; newlines too where the notation allows them (inside groups, after
  // '|' and '::=', between rules).
  void skip_space(bool newline_ok) {
    while (!at_end()) {
      const char c = peek();
      if (c == ' ' || c == '\t' || (newline_ok && (c == '\n' || c == '\r'))) {
        ++pos_;
      } else if (c == '#') {
        while (!at_end() && peek() != '\n' && peek() != '\r') ++pos_;
      } else {
        break;
      }
    }
  }

  uint32_t rule_id(std::string_view name) {
    auto it = ids_.find(std::string(name));
    if (it != ids_.end()) return it->second;
    const uint32_t id = new_rule(std::string(name));
    ids_.emplace(std::string(name), id);
    return id;
  }
  uint32_t new_rule(std::string name) {
    rules_.emplace_back();
    g_.rule_names.push_back(std::move(name));
    return static_cast<uint32_t>(rules_.size() - 1);
  }
  uint32_t generated_rule(uint32_t parent) {
    return new_rule(g_.rule_names[parent] + "-" + std::to_string(rules_.size()));
  }

  void count_elements(size_t n) {
    n_elements_ += n;
    if (n_elements_ > Grammar::kMaxElements)
      fail_at(pos_, "the grammar expands to more than %zu elements (lower the repetition counts)",
              Grammar::kMaxElements);
  }
  void add_alt(uint32_t rule, Sequence seq) {
    count_elements(seq.size() + 1);
    rules_[rule].alts.push_back(std::move(seq));
  }

  void parse_rule() {
    const size_t start = pos_;
    while (is_word_char(peek())) ++pos_;
    if (pos_ == start) return fail("expected a rule name (letters, digits and '-')");
    const std::string_view name = src_.substr(start, pos_ - start);
    skip_space(false);
    if (src_.substr(pos_, 3) != "::=") return fail("expected '::=' after the rule name");
    pos_ += 3;
    skip_space(true);
    const uint32_t id = rule_id(name);
    if (rules_[id].defined)
      return fail_at(start, "rule '%.*s' is defined twice", int(name.size()), name.data());
    rules_[id].defined = true;
    parse_alternates(id, false, 0);
    if (!ok()) return;
    if (peek() == '\r') ++pos_;
    if (peek() == '\n') {
      ++pos_;
    } else if (!at_end()) {
      return fail_at(pos_, "unexpected '%c' (expected a symbol, '|' or the end of the line)", peek());
    }
    skip_space(true);
  }

  void parse_alternates(uint32_t rule, bool nested, int depth) {
    for (;;) {
      Sequence seq = parse_sequence(rule, nested, depth);
      if (!ok()) return;
      add_alt(rule, std::move(seq));
      if (peek() != '|') return;
      ++pos_;
      skip_space(true);
    }
  }

  Sequence parse_sequence(uint32_t rule, bool nested, int depth) {
    Sequence seq;
    size_t last = SIZE_MAX;  // start of the last symbol in seq, which a repetition applies to
    while (ok() && !at_end()) {
      const char c = peek();
      const size_t sym_start = pos_;
      if (c == '"') {
        ++pos_;
        last = seq.size();
        while (ok() && peek() != '"') {
          if (at_end()) return fail_at(sym_start, "unterminated string literal"), seq;
          const uint32_t cp = parse_char();
          if (ok()) seq.push_back({Grammar::Element::kChars, add_class({{cp, cp}}, false)});
        }
        ++pos_;
        if (seq.size() == last) last = SIZE_MAX;  // "" is nothing: nothing to repeat
      } else if (c == '[') {
        ++pos_;
        bool negated = false;
        if (peek() == '^') negated = true, ++pos_;
        std::vector<std::pair<uint32_t, uint32_t>> ranges;
        while (ok() && peek() != ']') {
          if (at_end()) return fail_at(sym_start, "unterminated character class"), seq;
          const size_t char_at = pos_;
          const uint32_t lo = parse_char();
          uint32_t hi = lo;
          if (ok() && peek() == '-' && peek(1) != ']' && pos_ + 1 < src_.size()) {
            ++pos_;
            hi = parse_char();
            if (ok() && hi < lo) fail_at(char_at, "character range is backwards (U+%04X-U+%04X)", lo, hi);
          }
          ranges.push_back({lo, hi});
        }
        if (!ok()) return seq;
        ++pos_;
        last = seq.size();
        seq.push_back({Grammar::Element::kChars, add_class(std::move(ranges), negated)});
      } else if (c == '.') {
        ++pos_;
        last = seq.size();
        seq.push_back({Grammar::Element::kChars, add_class({}, true)});
      } else if (is_word_char(c)) {
        while (is_word_char(peek())) ++pos_;
        const uint32_t id = rule_id(src_.substr(sym_start, pos_ - sym_start));
        if (!rules_[id].defined && rules_[id].first_use == 0) rules_[id].first_use = sym_start + 1;
        last = seq.size();
        seq.push_back({Grammar::Element::kRule, id});
      } else if (c == '(') {
        if (depth >= Grammar::kMaxNesting)
          return fail_at(sym_start, "groups nested more than %d deep", Grammar::kMaxNesting), seq;
        ++pos_;
        skip_space(true);
        const uint32_t sub = generated_rule(rule);
        parse_alternates(sub, true, depth + 1);
        if (!ok()) return seq;
        if (peek() != ')') return fail_at(pos_, "expected ')' to close the group opened at column %zu",
                                          column_of(sym_start)), seq;
        ++pos_;
        last = seq.size();
        seq.push_back({Grammar::Element::kRule, sub});
      } else if (c == '*' || c == '+' || c == '?' || c == '{') {
        if (last == SIZE_MAX) return fail_at(sym_start, "'%c' has nothing before it to repeat", c), seq;
        uint64_t min = 0, max = UINT64_MAX;
        ++pos_;
        if (c == '+') min = 1;
        if (c == '?') max = 1;
        if (c == '{') {
          skip_space(nested);
          if (!parse_count(&min)) return seq;
          skip_space(nested);
          if (peek() == '}') {
            max = min;
          } else if (peek() == ',') {
            ++pos_;
            skip_space(nested);
            if (peek() >= '0' && peek() <= '9' && !parse_count(&max)) return seq;
            skip_space(nested);
            if (peek() != '}') return fail("expected '}' to close the repetition"), seq;
            if (max < min) return fail_at(sym_start, "repetition {%llu,%llu}: the maximum is below the minimum",
                                          (unsigned long long)min, (unsigned long long)max), seq;
          } else {
            return fail("expected ',' or '}' in the repetition"), seq;
          }
          ++pos_;
        }
        const Sequence item(seq.begin() + static_cast<ptrdiff_t>(last), seq.end());
        seq.resize(last);
        repeat(rule, item, min, max, &seq);
      } else if (c == '<' || c == '!') {
        return fail("token matches (<...>, <[id]>, !<...>) are not supported"), seq;
      } else {
        break;
      }
      skip_space(nested);
    }
    return seq;
  }

  size_t column_of(size_t at) const {
    size_t col = 1;
    for (size_t i = at; i > 0 && src_[i - 1] != '\n'; --i)
      if ((static_cast<uint8_t>(src_[i - 1]) & 0xC0) != 0x80) ++col;
    return col;
  }

  bool parse_count(uint64_t* out) {
    const size_t start = pos_;
    uint64_t v = 0;
    while (peek() >= '0' && peek() <= '9') {
      v = v * 10 + uint64_t(peek() - '0');
      if (v > Grammar::kMaxRepetitions) {
        fail_at(start, "repetition count above %u", Grammar::kMaxRepetitions);
        return false;
      }
      ++pos_;
    }
    if (pos_ == start) fail("expected a number in the repetition");
    *out = v;
    return ok();
  }

  // item{min,max} as llama.cpp rewrites it: min copies, then either `r ::= item r | ` (no maximum)
  // or max-min nested optionals `o ::= item o' | `, which stay linear where `item? item? ...` would not.
  void repeat(uint32_t rule, const Sequence& item, uint64_t min, uint64_t max, Sequence* seq) {
    count_elements(item.size() * min);
    if (!ok()) return;
    for (uint64_t i = 0; i < min; ++i) seq->insert(seq->end(), item.begin(), item.end());
    if (max == UINT64_MAX) {
      const uint32_t r = generated_rule(rule);
      Sequence loop = item;
      loop.push_back({Grammar::Element::kRule, r});
      add_alt(r, std::move(loop));
      add_alt(r, {});
      seq->push_back({Grammar::Element::kRule, r});
      return;
    }
    uint32_t inner = UINT32_MAX;
    for (uint64_t i = min; i < max && ok(); ++i) {
      const uint32_t o = generated_rule(rule);
      Sequence s = item;
      if (inner != UINT32_MAX) s.push_back({Grammar::Element::kRule, inner});
      add_alt(o, std::move(s));
      add_alt(o, {});
      inner = o;
    }
    if (inner != UINT32_MAX) seq->push_back({Grammar::Element::kRule, inner});
  }

  // One character of a literal or class: UTF-8 or an escape.
  uint32_t parse_char() {
    const size_t start = pos_;
    const uint8_t b = static_cast<uint8_t>(peek());
    if (b == '\\') {
      const char e = peek(1);
      pos_ += 2;
      switch (e) {
        case 'x': return parse_hex(2, start);
        case 'u': return parse_hex(4, start);
        case 'U': return parse_hex(8, start);
        case 't': return '\t';
        case 'r': return '\r';
        case 'n': return '\n';
        case '\\': case '"': case '[': case ']': case '-': return uint32_t(e);
        default:
          fail_at(start, "unknown escape '\\%c'", e ? e : '?');
          return 0;
      }
    }
    if (b < 0x80) {
      ++pos_;
      if (b == '\n' || b == '\r') fail_at(start, "a line break inside a literal or class (write \\n)");
      return b;
    }
    const int n = b >= 0xF0 && b <= 0xF4 ? 3 : b >= 0xE0 ? (b < 0xF0 ? 2 : -1) : b >= 0xC2 ? 1 : -1;
    uint32_t cp = n == 3 ? b & 0x07 : n == 2 ? b & 0x0F : b & 0x1F;
    for (int i = 1; i <= n && n > 0; ++i) {
      const uint8_t c = static_cast<uint8_t>(peek(size_t(i)));
      if ((c & 0xC0) != 0x80) {
        cp = UINT32_MAX;
        break;
      }
      cp = (cp << 6) | (c & 0x3F);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (n < 0 || cp == UINT32_MAX || cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      fail_at(start, "invalid UTF-8 in the grammar");
      return 0;
    }
    pos_ += size_t(n) + 1;
    return cp;
  }

  uint32_t parse_hex(int digits, size_t start) {
    uint32_t v = 0;
    for (int i = 0; i < digits; ++i) {
      const char c = peek();
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) {
        fail_at(start, "expected %d hex digits after '\\%c'", digits, digits == 2 ? 'x' : digits == 4 ? 'u' : 'U');
        return 0;
      }
      v = (v << 4) | uint32_t(d);
      ++pos_;
    }
    if (v > 0x10FFFF) fail_at(start, "code point U+%X is beyond U+10FFFF", v);
    return v;
  }

  uint32_t add_class(std::vector<std::pair<uint32_t, uint32_t>> ranges, bool negated) {
    Grammar::CharClass c;
    c.negated = negated;
    for (uint32_t cp = 0; cp < 128; ++cp) {
      bool in = false;
      for (const auto& [lo, hi] : ranges) in = in || (cp >= lo && cp <= hi);
      if (in != negated) c.ascii[cp >> 6] |= uint64_t(1) << (cp & 63);
    }
    c.ranges = std::move(ranges);
    g_.classes.push_back(std::move(c));
    return static_cast<uint32_t>(g_.classes.size() - 1);
  }

  void check_defined() {
    auto root = ids_.find("root");
    if (root == ids_.end() || !rules_[root->second].defined) {
      error_ = invalid_argument("grammar: there is no 'root' rule (where matching starts)");
      return;
    }
    g_.root = root->second;
    for (size_t r = 0; r < rules_.size(); ++r)
      if (!rules_[r].defined && rules_[r].first_use > 0)
        return fail_at(rules_[r].first_use - 1, "rule '%s' is used but never defined", g_.rule_names[r].c_str());
  }

  // A rule that reaches itself before consuming a character would make expansion loop forever.
  void check_left_recursion() {
    const size_t n = rules_.size();
    std::vector<uint8_t> nullable(n, 0);
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t r = 0; r < n; ++r) {
        if (nullable[r]) continue;
        for (const Sequence& alt : rules_[r].alts) {
          bool all = true;
          for (const Sym& s : alt) all = all && s.kind == Grammar::Element::kRule && nullable[s.value];
          if (all) {
            nullable[r] = 1, changed = true;
            break;
          }
        }
      }
    }
    std::vector<std::vector<uint32_t>> left(n);  // rules each rule can start with
    for (size_t r = 0; r < n; ++r)
      for (const Sequence& alt : rules_[r].alts)
        for (const Sym& s : alt) {
          if (s.kind != Grammar::Element::kRule) break;
          left[r].push_back(s.value);
          if (!nullable[s.value]) break;
        }
    // Iterative DFS (a generated grammar may have many thousand rules): 0 new, 1 on the path, 2 done.
    std::vector<uint8_t> color(n, 0);
    std::vector<std::pair<uint32_t, size_t>> path;
    for (uint32_t start = 0; start < n; ++start) {
      if (color[start]) continue;
      path.push_back({start, 0});
      color[start] = 1;
      while (!path.empty()) {
        auto& [r, next] = path.back();
        if (next == left[r].size()) {
          color[r] = 2;
          path.pop_back();
          continue;
        }
        const uint32_t to = left[r][next++];
        if (color[to] == 1) {
          std::string cycle;
          bool on = false;
          for (const auto& [p, unused] : path) {
            on = on || p == to;
            if (on) cycle += g_.rule_names[p] + " -> ";
          }
          cycle += g_.rule_names[to];
          error_ = invalid_argument("grammar: left recursion: %s (a rule reaches itself before any character; "
                                    "a repeated part that can match nothing does this too)", cycle.c_str());
          return;
        }
        if (color[to] == 0) {
          color[to] = 1;
          path.push_back({to, 0});
        }
      }
    }
  }

  void flatten(Grammar& g) {
    g.alternatives.resize(rules_.size());
    g.elements.reserve(n_elements_);
    for (size_t r = 0; r < rules_.size(); ++r)
      for (const Sequence& alt : rules_[r].alts) {
        g.alternatives[r].push_back(static_cast<uint32_t>(g.elements.size()));
        for (const Sym& s : alt) g.elements.push_back({s.kind, s.value});
        g.elements.push_back({Grammar::Element::kEnd, 0});
      }
  }

  std::string_view src_;
  size_t pos_ = 0;
  Status error_ = Status::ok();
  Grammar g_;
  std::vector<RuleInfo> rules_;
  std::unordered_map<std::string, uint32_t> ids_;
  size_t n_elements_ = 0;
};

}  // namespace

Result<std::shared_ptr<const Grammar>> Grammar::parse(std::string_view gbnf) { return Parser(gbnf).run(); }

}  // namespace tandem::sampling
