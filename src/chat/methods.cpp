// Attribute and item access as jinja2's ImmutableSandboxedEnvironment resolves them, and the str /
// dict / list methods templates call (.split, .strip, .startswith, .get, .items...). Methods that
// mutate a list or dict are refused as the immutable sandbox refuses them.
#include <algorithm>
#include <cstdlib>

#include "chat/builtins.h"
#include "chat/text.h"

namespace tandem::chat {
namespace {

// Python's str.isspace() code points.
bool is_py_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || c == ' ' || (c >= 0x1c && c <= 0x1f) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

Value unsafe(const Value& obj, std::string_view name) {
  const char* type = obj.is_list() ? "list" : "dict";
  return Value::undefined(format("access to attribute '%.*s' of '%s' object is unsafe.", static_cast<int>(name.size()),
                                 name.data(), type));
}

Value missing_attribute(const Value& obj, std::string_view name) {
  const std::string type = obj.is_none() ? "None" : obj.type_name();
  return Value::undefined(format("'%s' has no attribute '%.*s'", type.c_str(), static_cast<int>(name.size()), name.data()));
}

Result<std::string> arg_string(const CallArgs& a, size_t i, std::string_view name, std::string_view method) {
  const Value* v = a.get(i, name);
  if (!v || !v->is_string())
    return invalid_argument("%.*s() argument '%.*s' must be a string", static_cast<int>(method.size()), method.data(),
                            static_cast<int>(name.size()), name.data());
  return v->as_string();
}

List split(const std::string& s, const Value* sep, int64_t maxsplit, bool from_right) {
  List out;
  if (!sep || sep->is_none()) {
    // Runs of whitespace (code points) separate, none at the ends; after maxsplit splits the rest
    // is one part with its own spacing, as CPython's split_whitespace / rsplit_whitespace.
    const auto chars = utf8_chars(s);
    const size_t n = chars.size();
    auto space = [&](size_t k) { return is_py_space(code_point(chars[k])); };
    auto text = [&](size_t from, size_t to) {  // chars [from, to) as a string
      return from >= to ? std::string() : std::string(chars[from].data(), chars[to - 1].data() + chars[to - 1].size());
    };
    std::vector<std::string> parts;
    int64_t count = 0;
    if (!from_right) {
      for (size_t i = 0;;) {
        while (i < n && space(i)) ++i;
        if (i == n) break;
        if (maxsplit >= 0 && count == maxsplit) {
          parts.push_back(text(i, n));
          break;
        }
        size_t j = i;
        while (j < n && !space(j)) ++j;
        parts.push_back(text(i, j));
        ++count;
        i = j;
      }
    } else {
      for (size_t i = n;;) {
        while (i > 0 && space(i - 1)) --i;
        if (i == 0) break;
        if (maxsplit >= 0 && count == maxsplit) {
          parts.push_back(text(0, i));
          break;
        }
        size_t j = i;
        while (j > 0 && !space(j - 1)) --j;
        parts.push_back(text(j, i));
        ++count;
        i = j;
      }
      std::reverse(parts.begin(), parts.end());
    }
    for (auto& p : parts) out.emplace_back(std::move(p));
    return out;
  }
  const std::string& d = sep->as_string();
  std::vector<std::string> parts;
  if (!from_right) {
    size_t start = 0, pos;
    while ((maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) && (pos = s.find(d, start)) != std::string::npos) {
      parts.push_back(s.substr(start, pos - start));
      start = pos + d.size();
    }
    parts.push_back(s.substr(start));
  } else {
    size_t end = s.size();
    while (maxsplit < 0 || static_cast<int64_t>(parts.size()) < maxsplit) {
      if (end < d.size()) break;
      const size_t pos = s.rfind(d, end - d.size());
      if (pos == std::string::npos) break;
      parts.push_back(s.substr(pos + d.size(), end - pos - d.size()));
      end = pos;
    }
    parts.push_back(s.substr(0, end));
    std::reverse(parts.begin(), parts.end());
  }
  for (auto& p : parts) out.emplace_back(std::move(p));
  return out;
}

// str.format with auto-numbered, numbered and named fields and !s/!r; format specs are refused.
Result<std::string> str_format(const std::string& fmt, const CallArgs& a) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    const char c = fmt[i];
    if (c == '}' && i + 1 < fmt.size() && fmt[i + 1] == '}') {
      out += '}';
      ++i;
      continue;
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    const size_t end = fmt.find('}', i);
    if (end == std::string::npos) return invalid_argument("Single '{' encountered in format string");
    std::string field = fmt.substr(i + 1, end - i - 1);
    i = end;
    bool use_repr = false;
    if (const size_t bang = field.find('!'); bang != std::string::npos) {
      use_repr = field.substr(bang + 1) == "r";
      field.resize(bang);
    }
    if (field.find(':') != std::string::npos) return invalid_argument("str.format: format specs are not supported");
    const Value* v = nullptr;
    if (field.empty()) {
      v = auto_index < a.positional.size() ? &a.positional[auto_index] : nullptr;
      ++auto_index;
    } else if (std::all_of(field.begin(), field.end(), [](char d) { return d >= '0' && d <= '9'; })) {
      const size_t k = std::strtoull(field.c_str(), nullptr, 10);  // saturates, never throws
      v = k < a.positional.size() ? &a.positional[k] : nullptr;
    } else {
      v = a.get(SIZE_MAX, field);
    }
    if (!v) return invalid_argument("str.format: no value for field '{%s}'", field.c_str());
    out += use_repr ? v->repr() : v->str();
  }
  return out;
}

bool all_chars(const std::string& s, bool (*pred)(char)) {
  return !s.empty() && std::all_of(s.begin(), s.end(), pred);
}

Result<Value> call_str_method(const std::string& s, const std::string& name, const CallArgs& a) {
  if (name == "strip" || name == "lstrip" || name == "rstrip")
    return Value(strip_chars(s, a.get(0, "chars"), name != "rstrip", name != "lstrip"));
  if (name == "split" || name == "rsplit") {
    const Value* sep = a.get(0, "sep");
    if (sep && !sep->is_none() && (!sep->is_string() || sep->as_string().empty()))
      return invalid_argument("split(): the separator must be a non-empty string");
    const Value* maxsplit = a.get(1, "maxsplit");
    return Value::list(split(s, sep, maxsplit && maxsplit->is_integer() ? maxsplit->as_int() : -1, name == "rsplit"));
  }
  if (name == "startswith" || name == "endswith") {
    const Value* p = a.get(0, "prefix");
    if (!p) return invalid_argument("%s() takes at least 1 argument", name.c_str());
    List options = p->is_list() ? p->as_list() : List{*p};
    for (const Value& o : options) {
      if (!o.is_string()) return invalid_argument("%s first arg must be str or a tuple of str", name.c_str());
      const std::string& x = o.as_string();
      if (name == "startswith" ? s.compare(0, x.size(), x) == 0
                               : s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0)
        return Value(true);
    }
    return Value(false);
  }
  if (name == "replace") {
    TANDEM_ASSIGN(std::string from, arg_string(a, 0, "old", name));
    TANDEM_ASSIGN(std::string to, arg_string(a, 1, "new", name));
    const Value* count = a.get(2, "count");
    return Value([&] {
      int64_t left = count && count->is_integer() ? count->as_int() : -1;
      std::string out;
      if (from.empty()) {  // Python inserts `to` around every character
        for (std::string_view ch : utf8_chars(s)) {
          if (left-- != 0) out += to;
          out += ch;
        }
        if (left != 0) out += to;
        return out;
      }
      size_t start = 0, pos;
      while (left != 0 && (pos = s.find(from, start)) != std::string::npos) {
        out.append(s, start, pos - start);
        out += to;
        start = pos + from.size();
        --left;
      }
      out.append(s, start, std::string::npos);
      return out;
    }());
  }
  if (name == "upper") return Value(py_upper(s));
  if (name == "lower") return Value(py_lower(s));
  if (name == "capitalize") return Value(py_capitalize(s));
  if (name == "title") return Value(py_title(s));
  if (name == "find" || name == "rfind" || name == "count" || name == "index") {
    TANDEM_ASSIGN(std::string sub, arg_string(a, 0, "sub", name));
    if (name == "count") {
      if (sub.empty()) return Value(static_cast<int64_t>(utf8_chars(s).size() + 1));
      int64_t n = 0;
      for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) ++n;
      return Value(n);
    }
    const size_t pos = name == "rfind" ? s.rfind(sub) : s.find(sub);
    if (pos == std::string::npos) {
      if (name == "index") return invalid_argument("substring not found");
      return Value(static_cast<int64_t>(-1));
    }
    return Value(static_cast<int64_t>(utf8_chars(std::string_view(s).substr(0, pos)).size()));
  }
  if (name == "join") {
    const Value* items = a.get(0, "iterable");
    if (!items) return invalid_argument("join() takes exactly one argument");
    TANDEM_ASSIGN(List list, items->iterate());
    std::string out;
    for (size_t i = 0; i < list.size(); ++i) {
      if (!list[i].is_string()) return invalid_argument("sequence item %zu: expected str instance, %s found", i, list[i].type_name().c_str());
      if (i) out += s;
      out += list[i].as_string();
    }
    return Value(out);
  }
  if (name == "splitlines") {
    List out;
    size_t start = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] != '\n' && s[i] != '\r') continue;
      out.emplace_back(s.substr(start, i - start));
      if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      start = i + 1;
    }
    if (start < s.size()) out.emplace_back(s.substr(start));
    return Value::list(std::move(out));
  }
  if (name == "format") {
    TANDEM_ASSIGN(std::string out, str_format(s, a));
    return Value(out);
  }
  if (name == "removeprefix" || name == "removesuffix") {
    TANDEM_ASSIGN(std::string x, arg_string(a, 0, name == "removeprefix" ? "prefix" : "suffix", name));
    if (name == "removeprefix") return Value(s.compare(0, x.size(), x) == 0 ? s.substr(x.size()) : s);
    const bool ends = s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
    return Value(ends ? s.substr(0, s.size() - x.size()) : s);
  }
  if (name == "isdigit") return Value(all_chars(s, [](char c) { return c >= '0' && c <= '9'; }));
  if (name == "isalpha") return Value(all_chars(s, is_alpha));
  if (name == "isalnum") return Value(all_chars(s, [](char c) { return is_alpha(c) || (c >= '0' && c <= '9'); }));
  if (name == "isspace") {
    const auto chars = utf8_chars(s);
    return Value(!chars.empty() && std::all_of(chars.begin(), chars.end(), [](std::string_view c) { return is_py_space(code_point(c)); }));
  }
  if (name == "islower") return Value(py_islower(s));
  if (name == "isupper") return Value(py_isupper(s));
  return invalid_argument("'str' object has no attribute '%s'", name.c_str());
}

constexpr std::string_view kStrMethods[] = {"strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith",
                                            "replace", "upper", "lower", "capitalize", "title", "find", "rfind",
                                            "count", "index", "join", "splitlines", "format", "removeprefix",
                                            "removesuffix", "isdigit", "isalpha", "isalnum", "isspace", "islower",
                                            "isupper"};
constexpr std::string_view kDictMutators[] = {"pop", "popitem", "setdefault", "update", "clear"};
constexpr std::string_view kListMutators[] = {"append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear"};

template <size_t N>
bool one_of(std::string_view name, const std::string_view (&names)[N]) {
  return std::find(std::begin(names), std::end(names), name) != std::end(names);
}

Result<Value> call_dict_method(const Value& obj, const std::string& name, const CallArgs& a) {
  const Dict& d = obj.as_dict();
  if (name == "get") {
    const Value* key = a.get(0, "key");
    if (!key) return invalid_argument("get expected at least 1 argument, got 0");
    if (key->is_list() && !key->is_tuple()) return invalid_argument("unhashable type: 'list'");
    if (key->is_dict()) return invalid_argument("unhashable type: 'dict'");
    if (const Value* v = d.find(*key)) return *v;
    const Value* dflt = a.get(1, "default");
    return dflt ? *dflt : Value::none();
  }
  List out;
  for (const auto& [k, v] : d.items) {
    if (name == "keys") out.push_back(k);
    else if (name == "values") out.push_back(v);
    else out.push_back(Value::tuple({k, v}));  // items(): (key, value) pairs
  }
  return Value::list(std::move(out));
}

}  // namespace

std::string strip_chars(std::string_view s, const Value* chars, bool left, bool right) {
  const std::vector<std::string_view> cs = utf8_chars(s);
  std::vector<std::string_view> set;
  const bool whitespace = !chars || chars->is_none() || !chars->is_string();
  if (!whitespace) set = utf8_chars(chars->as_string());
  auto strip = [&](std::string_view ch) {
    if (whitespace) return is_py_space(code_point(ch));
    return std::find(set.begin(), set.end(), ch) != set.end();
  };
  size_t b = 0, e = cs.size();
  if (left)
    while (b < e && strip(cs[b])) ++b;
  if (right)
    while (e > b && strip(cs[e - 1])) --e;
  if (b == e) return "";
  return std::string(cs[b].data(), cs[e - 1].data() + cs[e - 1].size() - cs[b].data());
}

Result<Value> get_attribute(const Value& obj, std::string_view name) {
  const std::string n(name);
  switch (obj.kind()) {
    case Kind::Undefined: return invalid_argument("%s", obj.undefined_name().c_str());
    case Kind::String:
      if (one_of(name, kStrMethods))
        return Value::callable(n, [s = obj.as_string(), n](const CallArgs& a) { return call_str_method(s, n, a); });
      break;
    case Kind::Dict:
      if (name == "get" || name == "items" || name == "keys" || name == "values")
        return Value::callable(n, [obj, n](const CallArgs& a) { return call_dict_method(obj, n, a); });
      if (one_of(name, kDictMutators)) return unsafe(obj, name);
      if (const Value* v = obj.as_dict().find(name)) return *v;
      break;
    case Kind::Namespace:
      if (const Value* v = obj.as_dict().find(name)) return *v;
      break;
    case Kind::List:
      if (one_of(name, kListMutators)) return unsafe(obj, name);
      break;
    default: break;
  }
  return missing_attribute(obj, name);
}

Result<Value> get_item(const Value& obj, const Value& key) {
  switch (obj.kind()) {
    case Kind::Undefined: return invalid_argument("%s", obj.undefined_name().c_str());
    case Kind::Dict: case Kind::Namespace:
      if (const Value* v = obj.as_dict().find(key)) return *v;
      break;
    case Kind::List:
      if (obj.is_generator()) return invalid_argument("'generator' object is not subscriptable");
      if (key.is_integer()) {
        const List& l = obj.as_list();
        int64_t i = key.as_int();
        if (i < 0) i += static_cast<int64_t>(l.size());
        if (i >= 0 && i < static_cast<int64_t>(l.size())) return l[i];
        return Value::undefined(format("list object has no element %lld", static_cast<long long>(key.as_int())));
      }
      break;
    case Kind::String:
      if (key.is_integer()) {
        const auto chars = utf8_chars(obj.as_string());
        int64_t i = key.as_int();
        if (i < 0) i += static_cast<int64_t>(chars.size());
        if (i >= 0 && i < static_cast<int64_t>(chars.size())) return Value(chars[i]);
        return Value::undefined(format("str object has no element %lld", static_cast<long long>(key.as_int())));
      }
      break;
    default: break;
  }
  if (key.is_string()) return get_attribute(obj, key.as_string());  // jinja2: obj[name] falls back to obj.name
  return Value::undefined(format("'%s' has no element %s", obj.type_name().c_str(), key.repr().c_str()));
}

}  // namespace tandem::chat
