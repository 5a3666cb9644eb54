// JSON Schema -> GBNF. One rule per schema node (named after its place: "root-name", "root-items"), the
// primitive rules of llama.cpp's common/json-schema-to-grammar.cpp (space, char, string, number, ...)
// added on demand, and the result parsed once more by Grammar::parse as a check.
#include "sampling/json_schema.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <vector>

#include <nlohmann/json.hpp>

#include "sampling/grammar.h"
#include "sampling/regex.h"

namespace tandem::sampling {

namespace {

using Json = nlohmann::ordered_json;

// Bodies of the shared rules and the rules each one uses. `space` allows at most one line break and
// 20 indentation characters: unbounded whitespace lets a small model loop forever between tokens.
// `char` leaves out \u escapes of surrogates, so that every `char` is one code point, which is how
// minLength and maxLength count (a surrogate pair written as two escapes would be one).
struct Primitive {
  const char* name;
  const char* body;
  std::vector<const char*> uses;
};
const Primitive kPrimitives[] = {
    {"space", R"(| " " | "\n" [ \t]{0,20})", {}},
    {"boolean", R"(("true" | "false") space)", {"space"}},
    {"null", R"("null" space)", {"space"}},
    {"char", R"([^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" ([0-9a-cA-CefEF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2})))", {}},
    {"string", R"("\"" char* "\"" space)", {"char", "space"}},
    {"integral-part", R"([0] | [1-9] [0-9]{0,15})", {}},
    {"decimal-part", R"([0-9]{1,16})", {}},
    {"number", R"(("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)? space)",
     {"integral-part", "decimal-part", "space"}},
    {"integer", R"(("-"? integral-part) space)", {"integral-part", "space"}},
    {"value", "object | array | string | number | boolean | null",
     {"object", "array", "string", "number", "boolean", "null"}},
    {"object", R"("{" space ( string ":" space value ("," space string ":" space value)* )? "}" space)",
     {"space", "string", "value"}},
    {"array", R"("[" space ( value ("," space value)* )? "]" space)", {"space", "value"}},
    // Keys of additional properties: no escapes, so that none can spell a declared key another way.
    {"key-char", R"([^"\\\x7F\x00-\x1F])", {}},
};

const std::set<std::string> kAnnotations = {"title", "description", "default", "examples", "$schema", "$id",
                                            "$comment", "deprecated", "readOnly", "writeOnly", "format",
                                            "$defs", "definitions", "contentMediaType", "contentEncoding"};
const std::set<std::string> kAssertions = {"type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref",
                                           "properties", "required", "additionalProperties", "items",
                                           "minItems", "maxItems", "minLength", "maxLength", "uniqueItems",
                                           "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern"};
const char* const kBounds[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};

// Integers here have at most 16 digits, as `integral-part`: beyond that a bound is no bound.
constexpr int kMaxDigits = 16;
constexpr int64_t kMaxMagnitude = 9999999999999999;  // 16 nines

// The equal-length digit strings from a to b (a <= b) as GBNF: the common first digit, or a's first
// digit then anything up to 9..9, the digits in between then anything, b's first digit then 0..0 up.
std::string digits_between(const std::string& a, const std::string& b) {
  const size_t n = a.size();
  if (a == b) return "\"" + a + "\"";
  const std::string rest_any = n > 1 ? " [0-9]{" + std::to_string(n - 1) + "}" : "";
  const std::string a_rest = a.substr(1), b_rest = b.substr(1);
  if (a_rest.find_first_not_of('0') == std::string::npos && b_rest.find_first_not_of('9') == std::string::npos)
    return std::string("[") + a[0] + "-" + b[0] + "]" + rest_any;
  if (a[0] == b[0]) return std::string("[") + a[0] + "] " + digits_between(a_rest, b_rest);
  std::string out = std::string("([") + a[0] + "] " + digits_between(a_rest, std::string(n - 1, '9'));
  if (b[0] - a[0] >= 2) out += std::string(" | [") + char(a[0] + 1) + "-" + char(b[0] - 1) + "]" + rest_any;
  return out + std::string(" | [") + b[0] + "] " + digits_between(std::string(n - 1, '0'), b_rest) + ")";
}

// Non-negative integers in [lo, hi] (both <= kMaxMagnitude), without leading zeros.
std::string naturals_between(int64_t lo, int64_t hi) {
  std::string out;
  int64_t first = 0, last = 9;  // the numbers with d digits
  for (int d = 1; d <= kMaxDigits; ++d, first = last + 1, last = last * 10 + 9) {
    const int64_t a = std::max(lo, first), b = std::min(hi, last);
    if (a <= b) out += (out.empty() ? "" : " | ") + digits_between(std::to_string(a), std::to_string(b));
  }
  return "(" + out + ")";
}

}  // namespace

std::string gbnf_literal(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    const auto b = static_cast<uint8_t>(c);
    if (c == '"' || c == '\\') {
      out += '\\', out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (b < 0x20 || b == 0x7F) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02X", b);
      out += hex;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

namespace {

// One code point inside a [class].
std::string class_char(uint32_t cp) {
  if (cp < 0x20 || cp == 0x7F || cp == ']' || cp == '[' || cp == '\\' || cp == '^' || cp == '-' || cp == '"') {
    char hex[8];
    std::snprintf(hex, sizeof hex, "\\x%02X", cp);
    return hex;
  }
  std::string out;
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6)), out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12)), out += char(0x80 | ((cp >> 6) & 0x3F)), out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18)), out += char(0x80 | ((cp >> 12) & 0x3F)), out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
  return out;
}

// Code points of valid UTF-8 (JSON text from nlohmann is valid UTF-8).
std::vector<uint32_t> code_points(std::string_view s) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<uint8_t>(s[i]);
    const int n = b < 0x80 ? 0 : b < 0xE0 ? 1 : b < 0xF0 ? 2 : 3;
    uint32_t cp = n == 0 ? b : n == 1 ? b & 0x1F : n == 2 ? b & 0x0F : b & 0x07;
    for (int k = 1; k <= n && i + size_t(k) < s.size(); ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[i + size_t(k)]) & 0x3F);
    out.push_back(cp);
    i += size_t(n) + 1;
  }
  return out;
}

bool type_matches(const Json& v, const std::string& type) {
  if (type == "null") return v.is_null();
  if (type == "boolean") return v.is_boolean();
  if (type == "integer")
    return v.is_number_integer() || (v.is_number_float() && std::isfinite(v.get<double>()) &&
                                     std::floor(v.get<double>()) == v.get<double>());
  if (type == "number") return v.is_number();
  if (type == "string") return v.is_string();
  if (type == "array") return v.is_array();
  if (type == "object") return v.is_object();
  return false;
}

std::string pointer_token(const std::string& key) {
  std::string out;
  for (const char c : key) out += c == '~' ? "~0" : c == '/' ? "~1" : std::string(1, c);
  return out;
}

class Converter {
 public:
  Converter(const Json& root, std::string root_rule) : root_(root), root_rule_(std::move(root_rule)) {}

  Result<std::string> run() {
    refs_["#"] = root_rule_;
    names_.insert(root_rule_);
    for (const Primitive& p : kPrimitives) names_.insert(p.name);
    const std::string body = visit(root_, root_rule_, "#");
    if (!error_.is_ok()) return error_;
    rules_[root_rule_] = body;
    std::string out = root_rule_ + " ::= " + body + "\n";
    for (const auto& [name, b] : rules_)
      if (name != root_rule_) out += name + " ::= " + b + "\n";
    return out;
  }

 private:
  bool ok() const { return error_.is_ok(); }
  template <typename... Args>
  std::string fail(const std::string& path, const char* fmt, Args... args) {
    if (!ok()) return "";
    std::string what = fmt;  // no arguments: used as it is (and never as a format)
    if constexpr (sizeof...(Args) > 0) what = format(fmt, args...);
    error_ = invalid_argument("json schema: %s: %s", path.c_str(), what.c_str());
    return "";
  }

  std::string primitive(const std::string& name) {
    for (const Primitive& p : kPrimitives) {
      if (name != p.name) continue;
      if (rules_.emplace(name, p.body).second)
        for (const char* u : p.uses) primitive(u);
      return name;
    }
    TANDEM_CHECK(false);
    return "";
  }

  // A fresh rule name from a place in the schema: letters, digits and '-' only, never a primitive's.
  std::string unique_name(const std::string& hint) {
    std::string base;
    for (const char c : hint) base += (std::isalnum(static_cast<unsigned char>(c)) || c == '-') ? c : '-';
    if (base.empty()) base = "rule";
    std::string name = base;
    for (int i = 1; names_.count(name); ++i) name = base + "-" + std::to_string(i);
    names_.insert(name);
    return name;
  }
  std::string add_rule(const std::string& hint, const std::string& body) {
    auto it = by_body_.find(body);
    if (it != by_body_.end()) return it->second;
    const std::string name = unique_name(hint);
    rules_[name] = body;
    by_body_[body] = name;
    return name;
  }

  bool count(const Json& s, const char* key, const std::string& path, uint64_t* out) {
    if (!s.contains(key)) return false;
    const Json& v = s[key];
    if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
      return fail(path, "'%s' must be a non-negative integer", key), false;
    const uint64_t n = v.get<uint64_t>();
    if (n > Grammar::kMaxRepetitions)
      return fail(path, "'%s' = %llu is above %u, the largest repetition a grammar may hold", key,
                  (unsigned long long)n, Grammar::kMaxRepetitions), false;
    *out = n;
    return true;
  }

  std::string visit(const Json& s, const std::string& name, const std::string& path) {
    if (!ok()) return "";
    if (s.is_boolean()) return s.get<bool>() ? primitive("value") : fail(path, "the schema 'false' matches nothing");
    if (!s.is_object()) return fail(path, "a schema must be an object or a boolean");
    for (const auto& [k, v] : s.items())
      if (!kAnnotations.count(k) && !kAssertions.count(k)) return fail(path, "unsupported keyword '%s'", k.c_str());
    if (s.contains("uniqueItems") && s["uniqueItems"] != false)
      return fail(path, "unsupported keyword 'uniqueItems' (only false)");

    // Keywords that combine schemas stand alone: mixing them with others would need an intersection.
    for (const char* combiner : {"$ref", "anyOf", "oneOf", "allOf"}) {
      if (!s.contains(combiner)) continue;
      for (const auto& [k, v] : s.items())
        if (k != combiner && kAssertions.count(k))
          return fail(path, "'%s' beside '%s' is not supported (one or the other)", combiner, k.c_str());
    }
    if (s.contains("$ref")) return ref(s["$ref"], path);
    if (s.contains("allOf")) {
      const Json& all = s["allOf"];
      if (!all.is_array() || all.size() != 1) return fail(path, "'allOf' is supported with exactly one schema");
      return visit(all[0], name, path + "/allOf/0");
    }
    for (const char* any : {"anyOf", "oneOf"}) {
      if (!s.contains(any)) continue;
      const Json& alts = s[any];
      if (!alts.is_array() || alts.empty()) return fail(path, "'%s' must be a non-empty array", any);
      std::string body;
      for (size_t i = 0; i < alts.size(); ++i)
        body += (i ? " | " : "") + visit(alts[i], name + "-" + std::to_string(i), path + "/" + any + "/" + std::to_string(i));
      return ok() ? add_rule(name, body) : "";
    }

    std::vector<std::string> types;
    if (s.contains("type")) {
      const Json& t = s["type"];
      if (t.is_string()) types.push_back(t.get<std::string>());
      if (t.is_array())
        for (const Json& x : t)
          if (x.is_string()) types.push_back(x.get<std::string>());
      if (types.empty() || (t.is_array() && types.size() != t.size()))
        return fail(path, "'type' must be a type name or a list of them");
      static const std::set<std::string> kTypes = {"null", "boolean", "integer", "number", "string", "array", "object"};
      for (const std::string& type : types)
        if (!kTypes.count(type)) return fail(path, "unknown type '%s'", type.c_str());
    }
    auto allowed_by_type = [&](const Json& v) {
      if (types.empty()) return true;
      for (const std::string& t : types)
        if (type_matches(v, t)) return true;
      return false;
    };
    if (s.contains("const")) {
      if (!allowed_by_type(s["const"])) return fail(path, "'const' does not have the schema's type");
      primitive("space");
      return add_rule(name, gbnf_literal(s["const"].dump()) + " space");
    }
    if (s.contains("enum")) {
      const Json& e = s["enum"];
      if (!e.is_array()) return fail(path, "'enum' must be an array");
      std::string body;
      for (const Json& v : e)
        if (allowed_by_type(v)) body += (body.empty() ? "(" : " | ") + gbnf_literal(v.dump());
      if (body.empty()) return fail(path, "no value of 'enum' has the schema's type");
      primitive("space");
      return add_rule(name, body + ") space");
    }

    if (types.empty()) {  // no type: what the keywords describe, else any value
      if (s.contains("properties") || s.contains("required") || s.contains("additionalProperties")) types = {"object"};
      else if (s.contains("items") || s.contains("minItems") || s.contains("maxItems")) types = {"array"};
      else if (s.contains("minLength") || s.contains("maxLength") || s.contains("pattern")) types = {"string"};
      else if (std::any_of(std::begin(kBounds), std::end(kBounds), [&](const char* k) { return s.contains(k); }))
        return fail(path, "'minimum' and 'maximum' need \"type\": \"integer\"");
      else return primitive("value");
    }
    if (types.size() == 1) return typed(s, types[0], name, path);
    std::string body;
    for (const std::string& t : types) body += (body.empty() ? "" : " | ") + typed(s, t, name + "-" + t, path);
    return ok() ? add_rule(name, body) : "";
  }

  std::string typed(const Json& s, const std::string& type, const std::string& name, const std::string& path) {
    const bool bounded = std::any_of(std::begin(kBounds), std::end(kBounds), [&](const char* k) { return s.contains(k); });
    if (type == "integer" && bounded) return integer_range(s, name, path);
    if (type == "number" && bounded)
      return fail(path, "'minimum', 'maximum' and their exclusive forms are supported on integers only");
    if (type == "null" || type == "boolean" || type == "number" || type == "integer") return primitive(type);
    if (type == "string" && s.contains("pattern")) {
      if (s.contains("minLength") || s.contains("maxLength"))
        return fail(path, "'pattern' beside 'minLength' or 'maxLength' is not supported (put the length in the pattern)");
      if (!s["pattern"].is_string()) return fail(path, "'pattern' must be a string");
      auto expr = regex_to_gbnf(s["pattern"].get<std::string>());
      if (!expr) return fail(path, "%s", expr.error().message().c_str());
      primitive("space");
      return add_rule(name, "\"\\\"\" " + *expr + " \"\\\"\" space");
    }
    if (type == "string") {
      uint64_t min = 0, max = UINT64_MAX;
      const bool has_min = count(s, "minLength", path, &min), has_max = count(s, "maxLength", path, &max);
      if (!ok()) return "";
      if (!has_min && !has_max) return primitive("string");
      if (max < min) return fail(path, "maxLength %llu is below minLength %llu", (unsigned long long)max, (unsigned long long)min);
      primitive("char"), primitive("space");
      return add_rule(name, "\"\\\"\" char{" + std::to_string(min) + "," + (has_max ? std::to_string(max) : "") +
                                "} \"\\\"\" space");
    }
    if (type == "array") return array(s, name, path);
    return object(s, name, path);
  }

  // The integers between the bounds, each kept only within the 16 digits integers have here.
  std::string integer_range(const Json& s, const std::string& name, const std::string& path) {
    int64_t lo = -kMaxMagnitude, hi = kMaxMagnitude;
    for (const char* key : kBounds) {
      if (!s.contains(key)) continue;
      const Json& v = s[key];
      if (!v.is_number()) return fail(path, "'%s' must be a number", key);
      const std::string k = key;
      const bool lower = k == "minimum" || k == "exclusiveMinimum", exclusive = k.rfind("exclusive", 0) == 0;
      int64_t b;  // the nearest integer inside the bound, clamped just past the 16-digit range
      if (v.is_number_integer()) {  // exact, even past 2^53
        const int64_t i = std::clamp<int64_t>(
            v.is_number_unsigned() ? int64_t(std::min<uint64_t>(v.get<uint64_t>(), INT64_MAX)) : v.get<int64_t>(),
            -kMaxMagnitude - 2, kMaxMagnitude + 2);
        b = exclusive ? (lower ? i + 1 : i - 1) : i;
      } else {
        const double x = v.get<double>();
        const double r = lower ? (exclusive ? std::floor(x) + 1 : std::ceil(x)) : (exclusive ? std::ceil(x) - 1 : std::floor(x));
        b = int64_t(std::clamp(r, double(-kMaxMagnitude - 2), double(kMaxMagnitude + 2)));
      }
      if (lower) lo = std::max(lo, b);
      else hi = std::min(hi, b);
    }
    if (lo > hi || lo > kMaxMagnitude || hi < -kMaxMagnitude)
      return fail(path, "no integer of at most %d digits lies within the bounds", kMaxDigits);
    std::string body;
    if (lo < 0) body = "\"-\" " + naturals_between(std::max<int64_t>(1, hi < 0 ? -hi : 1), -lo);
    if (hi >= 0) body += (body.empty() ? "" : " | ") + naturals_between(std::max<int64_t>(lo, 0), hi);
    primitive("space");
    return add_rule(name, "(" + body + ") space");
  }

  std::string array(const Json& s, const std::string& name, const std::string& path) {
    uint64_t min = 0, max = UINT64_MAX;
    count(s, "minItems", path, &min);
    const bool has_max = count(s, "maxItems", path, &max);
    if (!ok()) return "";
    if (max < min) return fail(path, "maxItems %llu is below minItems %llu", (unsigned long long)max, (unsigned long long)min);
    std::string item;
    if (s.contains("items")) {
      if (s["items"].is_array()) return fail(path, "'items' as an array (a tuple) is not supported");
      item = visit(s["items"], name + "-item", path + "/items");
    } else {
      item = primitive("value");
    }
    if (!ok()) return "";
    primitive("space");
    if (!has_max && min == 0 && item == "value") return primitive("array");
    std::string body = "\"[\" space ";
    const std::string more = "(\",\" space " + item + ")";
    const std::string upper = has_max ? std::to_string(max - 1) : "";
    if (has_max && max == 0) {
      // nothing between the brackets
    } else if (min == 0) {
      body += "(" + item + " " + more + "{0," + upper + "})? ";
    } else {
      body += item + " " + more + "{" + std::to_string(min - 1) + "," + upper + "} ";
    }
    return add_rule(name, body + "\"]\" space");
  }

  std::string object(const Json& s, const std::string& name, const std::string& path) {
    const Json empty = Json::object();
    const Json& props = s.contains("properties") ? s["properties"] : empty;
    if (!props.is_object()) return fail(path, "'properties' must be an object");
    std::vector<std::string> required;
    if (s.contains("required")) {
      if (!s["required"].is_array()) return fail(path, "'required' must be an array of names");
      for (const Json& r : s["required"]) {
        if (!r.is_string()) return fail(path, "'required' must be an array of names");
        if (std::find(required.begin(), required.end(), r.get<std::string>()) == required.end())
          required.push_back(r.get<std::string>());
      }
    }
    const bool has_additional = s.contains("additionalProperties");
    const Json additional = has_additional ? s["additionalProperties"] : Json(props.empty() && required.empty());
    if (props.empty() && required.empty() && additional == true) return primitive("object");
    primitive("space");

    auto kv = [&](const std::string& key, const std::string& value) {
      return add_rule(name + "-" + key + "-kv", gbnf_literal(Json(key).dump()) + " space \":\" space " + value);
    };
    std::vector<std::string> req_kvs, opt_kvs, keys;
    for (const auto& [key, sub] : props.items()) {
      const std::string value = visit(sub, name + "-" + key, path + "/properties/" + pointer_token(key));
      if (!ok()) return "";
      const bool is_required = std::find(required.begin(), required.end(), key) != required.end();
      (is_required ? req_kvs : opt_kvs).push_back(kv(key, value));
      keys.push_back(key);
    }
    for (const std::string& key : required)
      if (!props.contains(key)) req_kvs.push_back(kv(key, primitive("value"))), keys.push_back(key);

    std::string add_kv;
    if (additional != false) {
      const std::string value = additional == true ? primitive("value")
                                                   : visit(additional, name + "-additional", path + "/additionalProperties");
      if (!ok()) return "";
      const std::string key = add_rule(name + "-additional-k", "\"\\\"\" " + key_not_in(keys, name) + " \"\\\"\" space");
      add_kv = add_rule(name + "-additional-kv", key + " \":\" space " + value);
    }
    const std::string add_tail = add_kv.empty() ? "" : " (\",\" space " + add_kv + ")*";

    std::string members;
    if (!req_kvs.empty()) {
      for (size_t i = 0; i < req_kvs.size(); ++i) members += (i ? " \",\" space " : "") + req_kvs[i];
      for (const std::string& o : opt_kvs) members += " (\",\" space " + o + ")?";
      members += add_tail;
    } else {
      // No member is sure to come first, so each optional one may open the list (no comma before it).
      std::vector<std::string> alts;
      for (size_t j = 0; j < opt_kvs.size(); ++j) {
        std::string a = opt_kvs[j];
        for (size_t k = j + 1; k < opt_kvs.size(); ++k) a += " (\",\" space " + opt_kvs[k] + ")?";
        alts.push_back(a + add_tail);
      }
      if (!add_kv.empty()) alts.push_back(add_kv + add_tail);
      for (size_t i = 0; i < alts.size(); ++i) members += (i ? " | " : "(") + alts[i];
      if (!alts.empty()) members += ")?";
    }
    return add_rule(name, "\"{\" space " + members + (members.empty() ? "" : " ") + "\"}\" space");
  }

  // The text of a key (between its quotes, escapes excluded) that is none of `keys`: a trie of the
  // keys, one rule per node, where each node may end (unless a key ends there), follow a key's next
  // character, or leave every key with a character none of them has next.
  std::string key_not_in(const std::vector<std::string>& keys, const std::string& name) {
    struct Node {
      std::map<uint32_t, size_t> next;
      bool is_key = false;
    };
    std::vector<Node> trie(1);
    for (const std::string& key : keys) {
      const std::vector<uint32_t> cps = code_points(key);
      bool spellable = true;  // a key with '"', '\\' or a control character needs escapes: never equal
      for (const uint32_t cp : cps) spellable = spellable && cp >= 0x20 && cp != '"' && cp != '\\' && cp != 0x7F;
      if (!spellable) continue;
      size_t n = 0;
      for (const uint32_t cp : cps) {
        auto it = trie[n].next.find(cp);
        if (it == trie[n].next.end()) {
          trie.push_back({});
          it = trie[n].next.emplace(cp, trie.size() - 1).first;
        }
        n = it->second;
      }
      trie[n].is_key = true;
    }
    primitive("key-char");
    std::vector<std::string> rule_of(trie.size());
    for (size_t n = trie.size(); n-- > 0;) {  // children come after their parent: build bottom-up
      std::vector<std::string> alts;
      std::string other = "[^\"\\\\\\x7F\\x00-\\x1F";
      for (const auto& [cp, child] : trie[n].next) {
        std::string alt = "[";  // appended piece by piece: GCC 12 warns falsely (-Wrestrict) on "[" + ...
        alt += class_char(cp);
        alt += "] ";
        alts.push_back(alt + rule_of[child]);
        other += class_char(cp);
      }
      alts.push_back(other + "] key-char*");
      std::string body;
      for (size_t i = 0; i < alts.size(); ++i) body += (i ? " | " : "") + alts[i];
      if (!trie[n].is_key) body = "| " + body;  // the key may end here (first: a trailing '|' joins the next line)
      rule_of[n] = add_rule(name + "-additional-k-" + std::to_string(n), body);
    }
    return rule_of[0];
  }

  std::string ref(const Json& r, const std::string& path) {
    if (!r.is_string()) return fail(path, "'$ref' must be a string");
    const std::string target = r.get<std::string>();
    auto known = refs_.find(target);
    if (known != refs_.end()) return known->second;
    if (target.empty() || target[0] != '#' || (target.size() > 1 && target[1] != '/'))
      return fail(path, "$ref '%s': only references inside the schema (\"#/...\") are supported", target.c_str());
    const Json* node = &root_;
    std::string last = "ref";
    for (size_t i = 2; i <= target.size() && target.size() > 1;) {
      size_t j = target.find('/', i);
      if (j == std::string::npos) j = target.size();
      std::string token;
      for (size_t k = i; k < j; ++k) {
        if (target[k] == '~' && k + 1 < j && (target[k + 1] == '0' || target[k + 1] == '1')) {
          token += target[k + 1] == '0' ? '~' : '/';
          ++k;
        } else {
          token += target[k];
        }
      }
      if (node->is_object() && node->contains(token)) {
        node = &(*node)[token];
      } else if (node->is_array() && !token.empty() && token.size() <= 9 &&
                 token.find_first_not_of("0123456789") == std::string::npos && std::stoul(token) < node->size()) {
        node = &(*node)[std::stoul(token)];
      } else {
        return fail(path, "$ref '%s' points at nothing", target.c_str());
      }
      last = token;
      i = j + 1;
    }
    const std::string rule = unique_name(last);
    refs_[target] = rule;  // before the visit: a schema may refer to itself
    const std::string body = visit(*node, rule, target);
    if (!ok()) return "";
    rules_[rule] = body;
    return rule;
  }

  const Json& root_;
  const std::string root_rule_;
  Status error_ = Status::ok();
  std::map<std::string, std::string> rules_;    // name -> body
  std::map<std::string, std::string> by_body_;  // body -> name: identical schemas share a rule
  std::set<std::string> names_;
  std::map<std::string, std::string> refs_;  // $ref -> rule
};

}  // namespace

Result<std::string> json_schema_to_grammar(const nlohmann::ordered_json& schema) {
  auto gbnf = Converter(schema, "root").run();
  if (!gbnf) return gbnf;
  // The converter's output must parse; what can fail here is a schema that refers to itself before
  // any character ({"$ref": "#"}), which the grammar calls left recursion.
  auto parsed = Grammar::parse(*gbnf);
  if (!parsed) return invalid_argument("json schema: %s", parsed.error().message().c_str());
  return gbnf;
}

Result<std::string> json_schema_rules(const nlohmann::ordered_json& schema, const std::string& rule) {
  auto rules = Converter(schema, rule).run();
  if (!rules) return rules;
  // The same check as above, with a root that uses the rule.
  if (auto parsed = Grammar::parse("root ::= " + rule + "\n" + *rules); !parsed)
    return invalid_argument("json schema: %s", parsed.error().message().c_str());
  return rules;
}

Result<std::string> json_schema_to_grammar(const nlohmann::json& schema) {
  // Through text to keep one converter; invalid UTF-8 in a string built in code becomes U+FFFD.
  return json_schema_to_grammar(
      nlohmann::ordered_json::parse(schema.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
}

Result<std::string> json_schema_to_grammar(std::string_view schema_text) {
  nlohmann::ordered_json schema;
  try {
    schema = nlohmann::ordered_json::parse(schema_text);
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument("json schema: not valid JSON: %s", e.what());
  }
  return json_schema_to_grammar(schema);
}

Result<std::string> grammar_for_request(const nlohmann::ordered_json& request) {
  if (!request.is_object()) return std::string();
  const auto field = [&](const char* name) { return request.contains(name) && !request[name].is_null(); };
  std::string format_type;
  if (field("response_format")) {
    const nlohmann::ordered_json& rf = request["response_format"];
    if (!rf.is_object() || !rf.contains("type") || !rf["type"].is_string())
      return invalid_argument("response_format must be an object with a string 'type'");
    format_type = rf["type"].get<std::string>();
    if (format_type != "text" && format_type != "json_object" && format_type != "json_schema")
      return invalid_argument("response_format type must be \"text\", \"json_object\" or \"json_schema\", not \"%s\"",
                              format_type.c_str());
    if (format_type == "text") format_type.clear();
  }
  if (int(field("grammar")) + int(field("json_schema")) + int(!format_type.empty()) > 1)
    return invalid_argument("give one of grammar, json_schema and response_format (json_object, json_schema)");

  if (field("grammar")) {
    if (!request["grammar"].is_string()) return invalid_argument("grammar must be a string (GBNF)");
    return request["grammar"].get<std::string>();
  }
  nlohmann::ordered_json schema;
  if (field("json_schema")) {
    schema = request["json_schema"];
  } else if (!format_type.empty()) {
    const nlohmann::ordered_json& rf = request["response_format"];
    if (format_type == "json_object") {
      schema = rf.contains("schema") ? rf["schema"] : nlohmann::ordered_json::object();
    } else {
      if (rf.contains("json_schema") && !rf["json_schema"].is_object())
        return invalid_argument("response_format.json_schema must be an object");
      const nlohmann::ordered_json wrapper = rf.value("json_schema", nlohmann::ordered_json::object());
      schema = wrapper.value("schema", nlohmann::ordered_json::object());
    }
    if (schema.is_object() && schema.empty()) schema = {{"type", "object"}};  // as llama-server
  } else {
    return std::string();
  }
  auto gbnf = json_schema_to_grammar(schema);
  if (!gbnf) return Status(gbnf.error().code(), (field("json_schema") ? "json_schema: " : "response_format: ") +
                                                    gbnf.error().message());
  return gbnf;
}

std::string json_object_grammar() {
  auto gbnf = json_schema_to_grammar(nlohmann::ordered_json{{"type", "object"}});
  TANDEM_CHECK(gbnf.has_value());
  return *gbnf;
}

}  // namespace tandem::sampling
