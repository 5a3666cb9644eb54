// jinja2's built-in filters (jinja2/filters.py, 3.1) and transformers' tojson, over template values.
// Tests (`is defined`...) live in tests.cpp.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "chat/builtins.h"
#include "chat/text.h"

namespace tandem::chat {
namespace {

using FilterFn = Result<Value> (*)(const Value& in, const CallArgs& a);

bool flag(const CallArgs& a, size_t i, std::string_view name, bool dflt = false) {
  const Value* v = a.get(i, name);
  return v ? v->truthy() : dflt;
}

// jinja2's attribute paths: "a.b.0" walks items and attributes; an integer part indexes.
Result<Value> lookup_path(const Value& v, const Value& path) {
  if (!path.is_string()) return get_item(v, path);
  Value cur = v;
  const std::string& p = path.as_string();
  size_t start = 0;
  while (true) {
    const size_t dot = p.find('.', start);
    const std::string part = p.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    TANDEM_ASSIGN(cur, get_item(cur, numeric ? Value(static_cast<int64_t>(std::strtoll(part.c_str(), nullptr, 10))) : Value(part)));
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

Result<List> items_of(const Value& v, std::string_view filter) {
  if (v.is_none() || v.is_number() || v.kind() == Kind::Callable)
    return invalid_argument("%.*s: '%s' is not iterable", static_cast<int>(filter.size()), filter.data(), v.type_name().c_str());
  return v.iterate();
}

// Sort key of jinja2's sort/unique/dictsort: strings compare lowercased unless case_sensitive.
Value sort_key(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) {
    std::string s = v.as_string();
    for (char& c : s)
      if (c >= 'A' && c <= 'Z') c += 32;
    return Value(std::move(s));
  }
  return v;
}

// jinja2's sort/dictsort/min/max order: the key of an item is a list of its attributes (the
// comma-separated `attribute`, or the item itself), so equal parts, even two undefined ones, are
// skipped before anything is ordered, as Python compares lists.
Result<List> sorted(List items, bool reverse, bool case_sensitive, const Value* attribute) {
  std::vector<std::pair<Value, Value>> keyed;
  std::vector<Value> paths;
  if (attribute && attribute->is_string()) {
    TANDEM_ASSIGN(Value parts, get_attribute(*attribute, "split"));
    TANDEM_ASSIGN(Value split, parts.as_callable().fn(CallArgs{{Value(",")}, {}}));
    paths = split.as_list();
  } else if (attribute && !attribute->is_none()) {
    paths.push_back(*attribute);
  }
  for (Value& item : items) {
    List key;
    if (paths.empty()) key.push_back(sort_key(item, case_sensitive));
    for (const Value& path : paths) {
      TANDEM_ASSIGN(Value part, lookup_path(item, path));
      key.push_back(sort_key(part, case_sensitive));
    }
    keyed.emplace_back(Value::list(std::move(key)), std::move(item));
  }
  Status err;
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
    auto c = compare_values(reverse ? b.first : a.first, reverse ? a.first : b.first);
    if (!c) err = c.error();
    return c && *c < 0;
  });
  TANDEM_TRY(err);
  List out;
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return out;
}

Result<Value> f_default(const Value& in, const CallArgs& a) {
  const bool boolean = flag(a, 1, "boolean");
  if (in.is_undefined() || (boolean && !in.truthy())) {
    const Value* d = a.get(0, "default_value");
    return d ? *d : Value("");
  }
  return in;
}

Result<Value> f_length(const Value& in, const CallArgs&) {
  switch (in.kind()) {
    case Kind::Undefined: return Value(static_cast<int64_t>(0));
    case Kind::String: return Value(static_cast<int64_t>(is_ascii(in.as_string()) ? in.as_string().size() : utf8_chars(in.as_string()).size()));
    case Kind::List:
      if (in.is_generator()) return invalid_argument("object of type 'generator' has no len()");
      return Value(static_cast<int64_t>(in.as_list().size()));
    case Kind::Dict: case Kind::Namespace: return Value(static_cast<int64_t>(in.as_dict().items.size()));
    default: return invalid_argument("object of type '%s' has no len()", in.type_name().c_str());
  }
}

Result<Value> f_first(const Value& in, const CallArgs&) {
  TANDEM_ASSIGN(List items, items_of(in, "first"));
  return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
}

Result<Value> f_last(const Value& in, const CallArgs&) {
  if (in.is_generator()) return invalid_argument("'generator' object is not reversible");
  TANDEM_ASSIGN(List items, items_of(in, "last"));
  return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
}

Result<Value> f_join(const Value& in, const CallArgs& a) {
  TANDEM_ASSIGN(List items, items_of(in, "join"));
  const Value* sep = a.get(0, "d");
  const Value* attribute = a.get(1, "attribute");
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (out.size() > a.max_bytes) return invalid_argument("join: more than %zu bytes", a.max_bytes);
    if (i && sep) out += sep->str(a.max_bytes);
    if (attribute && !attribute->is_none()) {
      TANDEM_ASSIGN(Value v, lookup_path(items[i], *attribute));
      out += v.str(a.max_bytes);
    } else {
      out += items[i].str(a.max_bytes);
    }
  }
  return Value(std::move(out));
}

Result<Value> f_map(const Value& in, const CallArgs& a) {
  if (!in.truthy()) return Value::generator({});  // jinja2: `if value:` before iterating
  TANDEM_ASSIGN(List items, items_of(in, "map"));
  List out;
  if (const Value* attribute = a.get(SIZE_MAX, "attribute")) {
    const Value* dflt = a.get(SIZE_MAX, "default");
    for (const Value& item : items) {
      TANDEM_ASSIGN(Value v, lookup_path(item, *attribute));
      out.push_back(v.is_undefined() && dflt ? *dflt : v);
    }
    return Value::generator(std::move(out));
  }
  if (a.positional.empty() || !a.positional[0].is_string()) return invalid_argument("map: expected a filter name or attribute=");
  const std::string name = a.positional[0].as_string();
  if (!is_known_filter(name)) return invalid_argument("No filter named '%s'.", name.c_str());
  CallArgs rest{List(a.positional.begin() + 1, a.positional.end()), a.keyword, a.max_bytes};
  for (const Value& item : items) {
    TANDEM_ASSIGN(Value v, apply_filter(name, item, rest));
    out.push_back(std::move(v));
  }
  return Value::generator(std::move(out));
}

// select/reject/selectattr/rejectattr: keep items whose test (or truthiness) equals `keep`.
Result<Value> select(const Value& in, const CallArgs& a, bool keep, bool by_attr) {
  if (!in.truthy()) return Value::generator({});  // jinja2: `if value:` before iterating
  TANDEM_ASSIGN(List items, items_of(in, "select"));
  size_t next = 0;
  Value attribute;
  if (by_attr) {
    if (a.positional.empty()) return invalid_argument("selectattr: missing attribute");
    attribute = a.positional[next++];
  }
  std::string test;
  if (next < a.positional.size()) {
    if (!a.positional[next].is_string()) return invalid_argument("select: the test name must be a string");
    test = a.positional[next++].as_string();
    if (!is_known_test(test)) return invalid_argument("No test named '%s'.", test.c_str());
  }
  CallArgs rest{List(a.positional.begin() + next, a.positional.end()), a.keyword, a.max_bytes};
  List out;
  for (const Value& item : items) {
    Value subject = item;
    if (by_attr) {
      TANDEM_ASSIGN(subject, lookup_path(item, attribute));
    }
    bool pass = subject.truthy();
    if (!test.empty()) {
      TANDEM_ASSIGN(pass, apply_test(test, subject, rest));
    }
    if (pass == keep) out.push_back(item);
  }
  return Value::generator(std::move(out));
}
Result<Value> f_select(const Value& in, const CallArgs& a) { return select(in, a, true, false); }
Result<Value> f_reject(const Value& in, const CallArgs& a) { return select(in, a, false, false); }
Result<Value> f_selectattr(const Value& in, const CallArgs& a) { return select(in, a, true, true); }
Result<Value> f_rejectattr(const Value& in, const CallArgs& a) { return select(in, a, false, true); }

Result<Value> f_items(const Value& in, const CallArgs&) {
  if (in.is_undefined()) return Value::generator({});
  if (!in.is_dict()) return invalid_argument("Can only get item pairs from a mapping.");
  List out;
  for (const auto& [k, v] : in.as_dict().items) out.push_back(Value::tuple({k, v}));
  return Value::generator(std::move(out));
}

Result<Value> f_list(const Value& in, const CallArgs&) {
  TANDEM_ASSIGN(List items, items_of(in, "list"));
  return Value::list(std::move(items));
}

Result<Value> f_string(const Value& in, const CallArgs& a) { return in.is_markup() ? in : Value(in.str(a.max_bytes)); }
Result<Value> f_safe(const Value& in, const CallArgs&) { return Value::markup(in.str()); }
Result<Value> f_escape(const Value& in, const CallArgs&) { return in.is_markup() ? in : Value::markup(html_escape(in.str())); }
Result<Value> f_forceescape(const Value& in, const CallArgs&) { return Value::markup(html_escape(in.str())); }

// Python's int(x) of a float: truncation; past 64 bits an error (Python would grow the integer).
Result<Value> truncate_to_int(double d) {
  if (!(d > -9223372036854775808.0 && d < 9223372036854775808.0))
    return invalid_argument("int of %s is beyond 64 bits (Tandem's integers are 64-bit)", float_repr(d).c_str());
  return Value(static_cast<int64_t>(d));
}

Result<Value> f_int(const Value& in, const CallArgs& a) {
  if (in.is_undefined()) return invalid_argument("%s", in.undefined_name().c_str());  // int(Undefined) raises
  const Value* dflt = a.get(0, "default");
  const Value fallback = dflt ? *dflt : Value(static_cast<int64_t>(0));
  if (in.is_integer()) return Value(in.as_int());
  if (in.kind() == Kind::Float) return std::isfinite(in.as_float()) ? truncate_to_int(in.as_float()) : fallback;
  if (!in.is_string()) return fallback;
  const Value* base_v = a.get(1, "base");
  const int base = base_v && base_v->is_integer() ? static_cast<int>(base_v->as_int()) : 10;
  const std::string s = strip_chars(in.as_string(), nullptr, true, true);
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, base);
  if (!s.empty() && end == s.c_str() + s.size()) {
    if (errno == ERANGE) return invalid_argument("int of '%s' is beyond 64 bits (Tandem's integers are 64-bit)", s.c_str());
    if (errno == 0) return Value(static_cast<int64_t>(v));
  }
  const double d = std::strtod(s.c_str(), &end);  // jinja2 falls back to int(float(s))
  if (!s.empty() && end == s.c_str() + s.size() && std::isfinite(d)) return truncate_to_int(d);
  return fallback;
}

Result<Value> f_float(const Value& in, const CallArgs& a) {
  if (in.is_undefined()) return invalid_argument("%s", in.undefined_name().c_str());
  const Value* dflt = a.get(0, "default");
  const Value fallback = dflt ? *dflt : Value(0.0);
  if (in.is_number()) return Value(in.as_float());
  if (!in.is_string()) return fallback;
  const std::string s = strip_chars(in.as_string(), nullptr, true, true);
  char* end = nullptr;
  const double d = std::strtod(s.c_str(), &end);
  return !s.empty() && end == s.c_str() + s.size() ? Value(d) : fallback;
}

Result<Value> f_abs(const Value& in, const CallArgs&) {
  if (in.kind() == Kind::Float) return Value(std::fabs(in.as_float()));
  if (in.is_integer() && in.as_int() != INT64_MIN) return Value(in.as_int() < 0 ? -in.as_int() : in.as_int());
  return invalid_argument("bad operand type for abs(): '%s'", in.type_name().c_str());
}

Result<Value> f_round(const Value& in, const CallArgs& a) {
  if (!in.is_number()) return invalid_argument("type %s doesn't define __round__ method", in.type_name().c_str());
  const Value* p = a.get(0, "precision");
  const int64_t precision = p && p->is_integer() ? p->as_int() : 0;
  const Value* m = a.get(1, "method");
  const std::string method = m ? m->str() : "common";
  if (method == "common" && in.is_integer()) return Value(in.as_int());  // Python: round(int, n) stays int
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double x = in.as_float() * scale;
  double r;
  if (method == "common") r = std::nearbyint(x);  // Python rounds half to even (the FE default)
  else if (method == "ceil") r = std::ceil(x);
  else if (method == "floor") r = std::floor(x);
  else return invalid_argument("method must be common, ceil or floor");
  return Value(r / scale);
}

Result<Value> call_method(const Value& obj, const char* name, const CallArgs& a) {
  TANDEM_ASSIGN(Value m, get_attribute(obj, name));
  return m.as_callable().fn(a);
}

// Markup's string methods return Markup (markupsafe wraps them), so a safe string stays safe.
Result<Value> keep_markup(const Value& in, Result<Value> r) {
  if (r && in.is_markup() && r->is_string()) return Value::markup(r->as_string());
  return r;
}
// jinja2's replace without autoescape: str(s).replace(...), a plain string even from Markup.
Result<Value> f_replace(const Value& in, const CallArgs& a) { return call_method(Value(in.str()), "replace", a); }
Result<Value> f_upper(const Value& in, const CallArgs& a) { return keep_markup(in, call_method(Value(in.str()), "upper", a)); }
Result<Value> f_lower(const Value& in, const CallArgs& a) { return keep_markup(in, call_method(Value(in.str()), "lower", a)); }
Result<Value> f_capitalize(const Value& in, const CallArgs& a) { return keep_markup(in, call_method(Value(in.str()), "capitalize", a)); }

Result<Value> f_title(const Value& in, const CallArgs&) { return keep_markup(in, Value(jinja_title(in.str()))); }

Result<Value> f_trim(const Value& in, const CallArgs& a) {
  return keep_markup(in, Value(strip_chars(in.str(), a.get(0, "chars"), true, true)));
}

Result<Value> f_reverse(const Value& in, const CallArgs&) {
  if (in.is_string()) {
    auto chars = utf8_chars(in.as_string());
    std::string out;
    for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += *it;
    return Value(std::move(out));
  }
  TANDEM_ASSIGN(List items, items_of(in, "reverse"));
  std::reverse(items.begin(), items.end());
  return Value::generator(std::move(items));  // reversed(): an iterator
}

Result<Value> f_sort(const Value& in, const CallArgs& a) {
  TANDEM_ASSIGN(List items, items_of(in, "sort"));
  TANDEM_ASSIGN(List out, sorted(std::move(items), flag(a, 0, "reverse"), flag(a, 1, "case_sensitive"), a.get(2, "attribute")));
  return Value::list(std::move(out));
}

Result<Value> f_unique(const Value& in, const CallArgs& a) {
  TANDEM_ASSIGN(List items, items_of(in, "unique"));
  const bool case_sensitive = flag(a, 0, "case_sensitive");
  const Value* attribute = a.get(1, "attribute");
  List out, seen;
  for (const Value& item : items) {
    Value key = item;
    if (attribute && !attribute->is_none()) {
      TANDEM_ASSIGN(key, lookup_path(item, *attribute));
    }
    key = sort_key(key, case_sensitive);
    if ((key.is_list() && !key.is_tuple()) || key.is_dict())  // jinja2 keeps a set of seen keys
      return invalid_argument("unhashable type: '%s'", key.is_dict() ? "dict" : "list");
    if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return s.equals(key); })) continue;
    seen.push_back(key);
    out.push_back(item);
  }
  return Value::generator(std::move(out));
}

Result<Value> f_dictsort(const Value& in, const CallArgs& a) {
  if (!in.is_dict()) return invalid_argument("dictsort: expected a mapping");
  const Value* by = a.get(1, "by");
  const bool by_value = by && by->str() == "value";
  List pairs;
  for (const auto& [k, v] : in.as_dict().items) pairs.push_back(Value::tuple({k, v}));
  const Value index(static_cast<int64_t>(by_value ? 1 : 0));
  TANDEM_ASSIGN(List out, sorted(std::move(pairs), flag(a, 2, "reverse"), flag(a, 0, "case_sensitive"), &index));
  return Value::list(std::move(out));
}

Result<Value> f_batch(const Value& in, const CallArgs& a) {
  TANDEM_ASSIGN(List items, items_of(in, "batch"));
  const Value* n_v = a.get(0, "linecount");
  if (!n_v || !n_v->is_integer() || n_v->as_int() <= 0) return invalid_argument("batch: linecount must be a positive integer");
  const size_t n = static_cast<size_t>(n_v->as_int());
  const Value* fill = a.get(1, "fill_with");
  List out;
  for (size_t i = 0; i < items.size(); i += n) {
    List row(items.begin() + i, items.begin() + std::min(items.size(), i + n));
    if (fill && !fill->is_none())
      while (row.size() < n) row.push_back(*fill);
    out.push_back(Value::list(std::move(row)));
  }
  return Value::generator(std::move(out));
}

Result<Value> f_indent(const Value& in, const CallArgs& a) {
  // jinja2 appends "\n" to the value and splits its lines: anything but a string fails there.
  if (!in.is_string()) return invalid_argument("'%s' has no attribute 'splitlines'", in.type_name().c_str());
  const Value* w = a.get(0, "width");
  std::string pad = w && w->is_string() ? w->as_string() : std::string(w && w->is_integer() ? std::max<int64_t>(0, std::min<int64_t>(w->as_int(), 1024)) : 4, ' ');
  const bool first = flag(a, 1, "first"), blank = flag(a, 2, "blank");
  std::vector<std::string> lines;
  const std::string s = in.str() + "\n";  // jinja2 appends a newline before splitlines()
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] == '\n') {
      lines.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  std::string out = lines.empty() ? "" : lines[0];
  for (size_t i = 1; i < lines.size(); ++i) out += "\n" + ((blank || !lines[i].empty()) ? pad : "") + lines[i];
  return Value(first ? pad + out : out);
}

Result<Value> f_tojson(const Value& in, const CallArgs& a) {
  // transformers: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
  JsonStyle st;
  st.ensure_ascii = flag(a, 0, "ensure_ascii");
  if (const Value* indent = a.get(1, "indent"); indent && !indent->is_none()) {
    if (!indent->is_integer()) return invalid_argument("tojson: indent must be an integer");
    st.indent = static_cast<int>(std::clamp<int64_t>(indent->as_int(), 0, 64));
    st.item_separator = ",";
  }
  if (const Value* sep = a.get(2, "separators"); sep && !sep->is_none()) {
    if (!sep->is_list() || sep->as_list().size() != 2) return invalid_argument("tojson: separators must be a pair of strings");
    st.item_separator = sep->as_list()[0].str();
    st.key_separator = sep->as_list()[1].str();
  }
  st.sort_keys = flag(a, 3, "sort_keys");
  st.max_bytes = a.max_bytes;
  TANDEM_ASSIGN(std::string s, to_json(in, st));
  return Value(std::move(s));
}

Result<Value> f_sum(const Value& in, const CallArgs& a) {
  TANDEM_ASSIGN(List items, items_of(in, "sum"));
  const Value* attribute = a.get(0, "attribute");
  const Value* start = a.get(1, "start");
  Value total = start ? *start : Value(static_cast<int64_t>(0));
  for (const Value& item : items) {
    Value v = item;
    if (attribute && !attribute->is_none()) {
      TANDEM_ASSIGN(v, lookup_path(item, *attribute));
    }
    if (!v.is_number() || !total.is_number()) return invalid_argument("sum: unsupported operand types");
    if (v.kind() == Kind::Float || total.kind() == Kind::Float) {
      total = Value(total.as_float() + v.as_float());
    } else {
      int64_t sum = 0;
      if (__builtin_add_overflow(total.as_int(), v.as_int(), &sum)) return invalid_argument("sum: integer overflow");
      total = Value(sum);
    }
  }
  return total;
}

// Python's min()/max() with jinja2's single attribute key: the first extreme item wins.
Result<Value> min_max(const Value& in, const CallArgs& a, bool want_max) {
  TANDEM_ASSIGN(List items, items_of(in, want_max ? "max" : "min"));
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  const bool case_sensitive = flag(a, 0, "case_sensitive");
  const Value* attribute = a.get(1, "attribute");
  auto key_of = [&](const Value& item) -> Result<Value> {
    Value key = item;
    if (attribute && !attribute->is_none()) {
      TANDEM_ASSIGN(key, lookup_path(item, *attribute));
    }
    return sort_key(key, case_sensitive);
  };
  size_t best = 0;
  TANDEM_ASSIGN(Value best_key, key_of(items[0]));
  for (size_t i = 1; i < items.size(); ++i) {
    TANDEM_ASSIGN(Value key, key_of(items[i]));
    TANDEM_ASSIGN(int c, compare_values(key, best_key));
    if (want_max ? c > 0 : c < 0) best = i, best_key = std::move(key);
  }
  return items[best];
}
Result<Value> f_min(const Value& in, const CallArgs& a) { return min_max(in, a, false); }
Result<Value> f_max(const Value& in, const CallArgs& a) { return min_max(in, a, true); }

Result<Value> f_attr(const Value& in, const CallArgs& a) {
  const Value* name = a.get(0, "name");
  if (!name || !name->is_string()) return invalid_argument("attr: expected an attribute name");
  // Python's getattr alone: a dict's keys are items, not attributes.
  const std::string& n = name->as_string();
  if (in.is_dict() && n != "get" && n != "items" && n != "keys" && n != "values")
    return Value::undefined("'dict object' has no attribute '" + n + "'");
  return get_attribute(in, n);
}

Result<Value> f_center(const Value& in, const CallArgs& a) {
  const std::string s = in.str();
  const Value* w = a.get(0, "width");
  const int64_t width = w && w->is_integer() ? std::min<int64_t>(w->as_int(), 1 << 20) : 80;
  const int64_t len = static_cast<int64_t>(utf8_chars(s).size());
  if (width <= len) return Value(s);
  const int64_t total = width - len;
  const int64_t left = total / 2 + (total & width & 1);  // CPython's str.center split
  return Value(std::string(left, ' ') + s + std::string(total - left, ' '));
}

// jinja2's truncate(length=255, killwords=False, end='...', leeway=5), counting code points: text
// within length + leeway is kept; otherwise cut to length - len(end), at the last space unless
// killwords, and `end` appended.
Result<Value> f_truncate(const Value& in, const CallArgs& a) {
  if (!in.is_string()) return invalid_argument("object of type '%s' has no len()", in.type_name().c_str());
  const auto chars = utf8_chars(in.as_string());
  const Value* length_v = a.get(0, "length");
  const Value* end_v = a.get(2, "end");
  const Value* leeway_v = a.get(3, "leeway");
  if ((length_v && !length_v->is_integer()) || (leeway_v && !leeway_v->is_none() && !leeway_v->is_integer()))
    return invalid_argument("truncate: length and leeway must be integers");
  const int64_t length = length_v ? length_v->as_int() : 255;
  const std::string end = end_v ? end_v->str() : "...";
  const int64_t end_len = static_cast<int64_t>(utf8_chars(end).size());
  const int64_t leeway = leeway_v && !leeway_v->is_none() ? leeway_v->as_int() : 5;
  if (length < end_len) return invalid_argument("expected length >= %lld, got %lld", (long long)end_len, (long long)length);
  if (leeway < 0) return invalid_argument("expected leeway >= 0, got %lld", (long long)leeway);
  if (static_cast<int64_t>(chars.size()) <= length + leeway) return in;
  std::string out;
  for (int64_t i = 0; i < length - end_len; ++i) out += chars[static_cast<size_t>(i)];
  if (!flag(a, 1, "killwords"))
    if (const size_t space = out.rfind(' '); space != std::string::npos) out.resize(space);
  return Value(out + end);
}

Result<Value> f_wordcount(const Value& in, const CallArgs&) { return Value(word_count(in.str())); }

Result<Value> f_format(const Value& in, const CallArgs& a) {
  TANDEM_ASSIGN(std::string out, printf_format(in.str(), a.positional, false));
  return Value(std::move(out));
}

struct FilterEntry {
  std::string_view name;
  FilterFn fn;
};
constexpr FilterEntry kFilters[] = {
    {"abs", f_abs}, {"attr", f_attr}, {"batch", f_batch}, {"capitalize", f_capitalize}, {"center", f_center},
    {"count", f_length}, {"d", f_default}, {"default", f_default}, {"dictsort", f_dictsort}, {"e", f_escape},
    {"escape", f_escape}, {"first", f_first}, {"float", f_float}, {"forceescape", f_forceescape}, {"format", f_format},
    {"indent", f_indent}, {"int", f_int}, {"items", f_items}, {"join", f_join}, {"last", f_last},
    {"length", f_length}, {"list", f_list}, {"lower", f_lower}, {"map", f_map}, {"max", f_max}, {"min", f_min},
    {"reject", f_reject}, {"rejectattr", f_rejectattr}, {"replace", f_replace}, {"reverse", f_reverse},
    {"round", f_round}, {"safe", f_safe}, {"select", f_select}, {"selectattr", f_selectattr}, {"sort", f_sort},
    {"string", f_string}, {"sum", f_sum}, {"title", f_title}, {"tojson", f_tojson}, {"trim", f_trim},
    {"truncate", f_truncate},
    {"unique", f_unique}, {"upper", f_upper}, {"wordcount", f_wordcount},
};

const FilterEntry* find_filter(std::string_view name) {
  for (const auto& f : kFilters)
    if (f.name == name) return &f;
  return nullptr;
}

}  // namespace

Result<std::string> printf_format(const std::string& fmt, const List& args, bool allow_unused) {
  std::string out;
  size_t next = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%' || i + 1 >= fmt.size()) {
      out += fmt[i];
      continue;
    }
    const char c = fmt[++i];
    if (c == '%') {
      out += '%';
      continue;
    }
    if (next >= args.size()) return invalid_argument("not enough arguments for format string");
    const Value& v = args[next++];
    if (c == 's') out += v.str();
    else if (c == 'r') out += v.repr();
    else if ((c == 'd' || c == 'i') && v.is_integer()) out += std::to_string(v.as_int());
    else if ((c == 'd' || c == 'i') && v.is_number() && std::isfinite(v.as_float())) {
      TANDEM_ASSIGN(Value i, truncate_to_int(v.as_float()));
      out += std::to_string(i.as_int());
    }
    else return invalid_argument("format: unsupported conversion '%%%c'", c);
  }
  if (next < args.size() && !allow_unused) return invalid_argument("not all arguments converted during string formatting");
  return out;
}

bool is_known_filter(std::string_view name) { return find_filter(name) != nullptr; }

bool is_jinja2_filter(std::string_view name) {
  static constexpr std::string_view kMissing[] = {"filesizeformat", "groupby", "pprint", "random", "slice",
                                                  "striptags", "urlencode", "urlize", "wordwrap",
                                                  "xmlattr"};
  for (std::string_view m : kMissing)
    if (m == name) return true;
  return is_known_filter(name);
}

Result<Value> apply_filter(std::string_view name, const Value& input, const CallArgs& args) {
  const FilterEntry* f = find_filter(name);
  if (!f) return invalid_argument("No filter named '%.*s'.", static_cast<int>(name.size()), name.data());
  // Undefined input fails most filters as jinja2's Undefined fails the Python operations inside.
  return f->fn(input, args);
}

}  // namespace tandem::chat
