// JSON into template values (nlohmann's parser, key order kept) and out of them, byte for byte as
// Python's json.dumps writes it (transformers' tojson filter).
#include <cstdio>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>

#include "chat/value.h"

namespace tandem::chat {
namespace {

void escape_json_string(std::string_view s, bool ensure_ascii, std::string& out) {
  out += '"';
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = s[i];
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    char buf[16];
    if (c < 0x20) {
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else if (c >= 0x80 && ensure_ascii) {
      // One code point as \uXXXX, or a surrogate pair above the BMP, as json.dumps writes it.
      size_t n = (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : 4;
      n = std::min(n, s.size() - i);
      uint32_t cp = n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;
      for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (s[i + k] & 0x3f);
      i += n - 1;
      if (cp >= 0x10000) {
        cp -= 0x10000;
        std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
      } else {
        std::snprintf(buf, sizeof buf, "\\u%04x", cp);
      }
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}

Status dump(const Value& v, const JsonStyle& st, int depth, std::string& out) {
  if (depth > 512) return invalid_argument("tojson: nesting deeper than 512");
  if (out.size() > st.max_bytes) return invalid_argument("tojson: more than %zu bytes", st.max_bytes);
  auto newline = [&](int level) {
    if (st.indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(st.indent) * level, ' ');
  };
  switch (v.kind()) {
    case Kind::None: out += "null"; return {};
    case Kind::Bool: out += v.as_bool() ? "true" : "false"; return {};
    case Kind::Int: out += std::to_string(v.as_int()); return {};
    case Kind::Float: {
      const double f = v.as_float();
      out += std::isnan(f) ? "NaN" : std::isinf(f) ? (f > 0 ? "Infinity" : "-Infinity") : float_repr(f);
      return {};
    }
    case Kind::String: escape_json_string(v.as_string(), st.ensure_ascii, out); return {};
    case Kind::List: {
      if (v.is_generator()) return invalid_argument("Object of type generator is not JSON serializable");
      const List& items = v.as_list();
      if (items.empty()) {
        out += "[]";
        return {};
      }
      out += '[';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += st.item_separator;
        newline(depth + 1);
        TANDEM_TRY(dump(items[i], st, depth + 1, out));
      }
      newline(depth);
      out += ']';
      return {};
    }
    case Kind::Dict: {
      std::vector<const std::pair<Value, Value>*> items;
      for (const auto& kv : v.as_dict().items) items.push_back(&kv);
      if (items.empty()) {
        out += "{}";
        return {};
      }
      if (st.sort_keys) {
        Status err;
        std::stable_sort(items.begin(), items.end(), [&](auto* a, auto* b) {
          auto c = compare_values(a->first, b->first);
          if (!c) err = c.error();
          return c && *c < 0;
        });
        TANDEM_TRY(err);
      }
      out += '{';
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += st.item_separator;
        newline(depth + 1);
        const Value& k = items[i]->first;
        // json.dumps turns keys of simple types into strings and refuses the rest.
        if (k.is_string()) escape_json_string(k.as_string(), st.ensure_ascii, out);
        else if (k.kind() == Kind::Bool) out += k.as_bool() ? "\"true\"" : "\"false\"";
        else if (k.is_none()) out += "\"null\"";
        else if (k.is_number()) escape_json_string(k.str(), false, out);
        else return invalid_argument("keys must be str, int, float, bool or None, not %s", k.type_name().c_str());
        out += st.key_separator;
        TANDEM_TRY(dump(items[i]->second, st, depth + 1, out));
      }
      newline(depth);
      out += '}';
      return {};
    }
    default:
      return invalid_argument("Object of type %s is not JSON serializable", v.type_name().c_str());
  }
}

Value from_nlohmann(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return Value::none();
    case nlohmann::json::value_t::boolean: return Value(j.get<bool>());
    case nlohmann::json::value_t::number_integer: return Value(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      return u <= static_cast<uint64_t>(INT64_MAX) ? Value(static_cast<int64_t>(u)) : Value(static_cast<double>(u));
    }
    case nlohmann::json::value_t::number_float: return Value(j.get<double>());
    case nlohmann::json::value_t::string: return Value(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      List items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(from_nlohmann(e));
      return Value::list(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Dict d;
      d.items.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) d.items.emplace_back(Value(it.key()), from_nlohmann(it.value()));
      return Value::dict(std::move(d));
    }
    default: return Value::none();
  }
}

}  // namespace

Result<std::string> to_json(const Value& v, const JsonStyle& style) {
  std::string out;
  TANDEM_TRY(dump(v, style, 0, out));
  return out;
}

Result<Value> parse_json(std::string_view text) {
  // nlohmann throws on bad input; the exception stops here (CONVENTIONS.md: Tandem code does not throw).
  try {
    // Depth bounded by the parser's callback so a hostile body cannot exhaust the stack.
    int depth = 0;
    bool too_deep = false;
    auto cb = [&](int d, nlohmann::ordered_json::parse_event_t ev, nlohmann::ordered_json&) {
      depth = d;
      if (ev == nlohmann::ordered_json::parse_event_t::object_start ||
          ev == nlohmann::ordered_json::parse_event_t::array_start)
        if (depth > 256) too_deep = true;
      return !too_deep;
    };
    auto j = nlohmann::ordered_json::parse(text, cb);
    if (too_deep) return invalid_argument("JSON nests deeper than 256 levels");
    return from_nlohmann(j);
  } catch (const std::exception& e) {
    return invalid_argument("invalid JSON: %s", e.what());
  }
}

}  // namespace tandem::chat
