// Python semantics of the template value type: truthiness, str/repr, equality and ordering.
#include "chat/value.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "chat/text.h"

namespace tandem::chat {

const Value* Dict::find(const Value& key) const {
  for (const auto& [k, v] : items)
    if (k.equals(key)) return &v;
  return nullptr;
}

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : items)
    if (k.is_string() && k.as_string() == key) return &v;
  return nullptr;
}

void Dict::set(Value key, Value value) {
  for (auto& [k, v] : items)
    if (k.equals(key)) {
      v = std::move(value);
      return;
    }
  items.emplace_back(std::move(key), std::move(value));
}

const Value* CallArgs::get(size_t index, std::string_view name) const {
  if (index < positional.size()) return &positional[index];
  for (const auto& [k, v] : keyword)
    if (k == name) return &v;
  return nullptr;
}

Value Value::list(List items) {
  Value v = with_kind(Kind::List);
  v.list_ = std::make_shared<List>(std::move(items));
  return v;
}

Value Value::tuple(List items) {
  Value v = list(std::move(items));
  v.flavor_ = Flavor::Tuple;
  return v;
}

Value Value::generator(List items) {
  Value v = list(std::move(items));
  v.flavor_ = Flavor::Generator;
  return v;
}

Value Value::markup(std::string s) {
  Value v(std::move(s));
  v.flavor_ = Flavor::Markup;
  return v;
}

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

Value Value::dict(Dict d) {
  Value v = with_kind(Kind::Dict);
  v.dict_ = std::make_shared<Dict>(std::move(d));
  return v;
}

Value Value::name_space(Dict d) {
  Value v = with_kind(Kind::Namespace);
  v.dict_ = std::make_shared<Dict>(std::move(d));
  return v;
}

Value Value::callable(std::string name, std::function<Result<Value>(const CallArgs&)> fn) {
  Value v = with_kind(Kind::Callable);
  v.fn_ = std::make_shared<const Callable>(Callable{std::move(name), std::move(fn)});
  return v;
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::Undefined: case Kind::None: return false;
    case Kind::Bool: return num_.b;
    case Kind::Int: return num_.i != 0;
    case Kind::Float: return num_.f != 0.0;
    case Kind::String: return !str_.empty();
    case Kind::List: return flavor_ == Flavor::Generator || !list_->empty();
    case Kind::Dict: return !dict_->items.empty();
    case Kind::Namespace: case Kind::Callable: return true;
  }
  return false;
}

std::string float_repr(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  char buf[64];
  // Shortest round-trip digits in scientific form, then laid out as Python's repr does: fixed
  // notation for exponents -4..15, scientific with a two-digit exponent otherwise.
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, f, std::chars_format::scientific);
  std::string sci(buf, end);
  const size_t e = sci.find('e');
  std::string mant = sci.substr(0, e);
  const int exp = std::atoi(sci.c_str() + e + 1);
  const bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  std::string out = neg ? "-" : "";
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      out += "0." + std::string(-exp - 1, '0') + digits;
    } else if (static_cast<int>(digits.size()) <= exp + 1) {
      out += digits + std::string(exp + 1 - digits.size(), '0') + ".0";
    } else {
      out += digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char ebuf[16];
  std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  return out + ebuf;
}

bool is_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

std::vector<std::string_view> utf8_chars(std::string_view s) {
  std::vector<std::string_view> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = s[i];
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (i + n > s.size()) n = 1;
    out.push_back(s.substr(i, n));
    i += n;
  }
  return out;
}

// Python's str.isprintable() for the code points chat text meets: controls, the Latin-1 gap,
// format characters and separators other than the space are escaped by repr.
static bool printable(uint32_t cp) {
  if (cp < 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0xad) return false;
  if ((cp >= 0x2000 && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202f) || (cp >= 0x205f && cp <= 0x2064)) return false;
  if (cp == 0x3000 || cp == 0xfeff || (cp >= 0xe000 && cp <= 0xf8ff) || cp == 0x1680) return false;
  return true;
}

std::string string_repr(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const char quote = has_single && s.find('"') == std::string_view::npos ? '"' : '\'';
  std::string out(1, quote);
  for (std::string_view ch : utf8_chars(s)) {
    const uint32_t cp = code_point(ch);
    if (cp == static_cast<uint32_t>(quote) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (!printable(cp)) {
      char buf[16];
      if (cp <= 0xff) std::snprintf(buf, sizeof buf, "\\x%02x", cp);
      else if (cp <= 0xffff) std::snprintf(buf, sizeof buf, "\\u%04x", cp);
      else std::snprintf(buf, sizeof buf, "\\U%08x", cp);
      out += buf;
    } else {
      out += ch;
    }
  }
  out += quote;
  return out;
}

std::string Value::str(size_t limit) const {
  switch (kind_) {
    case Kind::Undefined: return "";
    case Kind::String: return str_;
    default: return repr(limit);
  }
}

std::string Value::repr(size_t limit) const {
  std::string out;
  repr_into(out, limit);
  return out;
}

void Value::repr_into(std::string& out, size_t limit) const {
  if (out.size() > limit) return;
  switch (kind_) {
    case Kind::Undefined: out += "Undefined"; return;  // jinja2's Undefined.__repr__
    case Kind::None: out += "None"; return;
    case Kind::Bool: out += num_.b ? "True" : "False"; return;
    case Kind::Int: out += std::to_string(num_.i); return;
    case Kind::Float: out += float_repr(num_.f); return;
    case Kind::String: out += string_repr(str_); return;
    case Kind::List: {
      if (flavor_ == Flavor::Generator) {
        out += "<generator object>";  // jinja2 adds an address
        return;
      }
      out += flavor_ == Flavor::Tuple ? "(" : "[";
      for (size_t i = 0; i < list_->size() && out.size() <= limit; ++i) {
        if (i) out += ", ";
        (*list_)[i].repr_into(out, limit);
      }
      if (flavor_ == Flavor::Tuple) out += list_->size() == 1 ? ",)" : ")";
      else out += "]";
      return;
    }
    case Kind::Dict: case Kind::Namespace: {
      out += kind_ == Kind::Namespace ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [k, v] : dict_->items) {
        if (out.size() > limit) break;
        if (!first) out += ", ";
        k.repr_into(out, limit);
        out += ": ";
        v.repr_into(out, limit);
        first = false;
      }
      out += kind_ == Kind::Namespace ? "}>" : "}";
      return;
    }
    case Kind::Callable: out += "<function " + fn_->name + ">"; return;
  }
}

std::string Value::type_name() const {
  switch (kind_) {
    case Kind::Undefined: return "Undefined";
    case Kind::None: return "NoneType object";
    case Kind::Bool: return "bool object";
    case Kind::Int: return "int object";
    case Kind::Float: return "float object";
    case Kind::String: return "str object";
    case Kind::List: return flavor_ == Flavor::Tuple ? "tuple object" : flavor_ == Flavor::Generator ? "generator object" : "list object";
    case Kind::Dict: return "dict object";
    case Kind::Namespace: return "Namespace object";
    case Kind::Callable: return "function object";
  }
  return "object";
}

bool Value::equals(const Value& o) const {
  if (is_number() && o.is_number()) {
    if (kind_ == Kind::Float || o.kind_ == Kind::Float) return as_float() == o.as_float();
    return as_int() == o.as_int();
  }
  if (kind_ != o.kind_) return false;
  switch (kind_) {
    case Kind::Undefined: case Kind::None: return true;
    case Kind::String: return str_ == o.str_;
    case Kind::List: {
      if (list_ == o.list_) return true;  // Python compares identical objects as equal first too
      if (flavor_ != o.flavor_) return false;
      if (flavor_ == Flavor::Generator) return list_ == o.list_;
      if (list_->size() != o.list_->size()) return false;
      for (size_t i = 0; i < list_->size(); ++i)
        if (!(*list_)[i].equals((*o.list_)[i])) return false;
      return true;
    }
    case Kind::Dict: {
      if (dict_ == o.dict_) return true;
      if (dict_->items.size() != o.dict_->items.size()) return false;
      for (const auto& [k, v] : dict_->items) {
        const Value* ov = o.dict_->find(k);
        if (!ov || !v.equals(*ov)) return false;
      }
      return true;
    }
    case Kind::Namespace: return dict_ == o.dict_;
    case Kind::Callable: return fn_ == o.fn_;
    default: return false;
  }
}

Result<List> Value::iterate() const {
  switch (kind_) {
    case Kind::Undefined: return List{};
    case Kind::List: return *list_;
    case Kind::Dict: {
      List keys;
      keys.reserve(dict_->items.size());
      for (const auto& kv : dict_->items) keys.push_back(kv.first);
      return keys;
    }
    case Kind::String: {
      List chars;
      for (std::string_view ch : utf8_chars(str_)) chars.emplace_back(ch);
      return chars;
    }
    default: return invalid_argument("'%s' is not iterable", type_name().c_str());
  }
}

Result<int> compare_values(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind() == Kind::Float || b.kind() == Kind::Float) {
      const double x = a.as_float(), y = b.as_float();
      return x < y ? -1 : x > y ? 1 : 0;
    }
    const int64_t x = a.as_int(), y = b.as_int();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.as_string().compare(b.as_string());  // UTF-8 byte order is code point order
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple() && !a.is_generator() && !b.is_generator()) {
    const List& x = a.as_list();
    const List& y = b.as_list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (x[i].equals(y[i])) continue;
      return compare_values(x[i], y[i]);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  return invalid_argument("'<' not supported between instances of '%s' and '%s'", a.type_name().c_str(),
                          b.type_name().c_str());
}

}  // namespace tandem::chat
