// The value type of the chat-template engine: Python's objects as jinja2 sees them (undefined, None,
// bool, int, float, str, list, dict, jinja2's namespace and callables). Printing, equality, ordering
// and truthiness follow Python. JSON in and out lives in json.cpp; filters and methods elsewhere.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace tandem::chat {

class Value;
using List = std::vector<Value>;

// A Python dict: insertion order kept, keys compared with Python equality (linear search: chat
// messages hold a handful of keys, so a scan beats hashing).
struct Dict {
  std::vector<std::pair<Value, Value>> items;

  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  void set(Value key, Value value);  // replaces an existing key in place, else appends
};

// Arguments of a call: positional, then keyword (in source order).
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  size_t max_bytes = 64u << 20;  // the render's output bound: text a builtin builds stays under it

  // Python's parameter binding for a builtin: the value of parameter `index` named `name`, from
  // the positional list or the keywords; nullptr when not given.
  const Value* get(size_t index, std::string_view name) const;
};

struct Callable {
  std::string name;
  std::function<Result<Value>(const CallArgs&)> fn;
};

enum class Kind : uint8_t { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Callable };

// Lists, dicts and namespaces are shared by reference, as in Python (a namespace changed inside a
// loop is seen after it); strings and numbers are values.
class Value {
 public:
  Value() = default;  // undefined
  static Value undefined(std::string name) {
    Value v;
    v.str_ = std::move(name);
    return v;
  }
  static Value none() { return with_kind(Kind::None); }
  Value(bool b) : kind_(Kind::Bool) { num_.b = b; }  // NOLINT: implicit like Python's literals
  Value(int64_t i) : kind_(Kind::Int) { num_.i = i; }  // NOLINT
  Value(int i) : Value(static_cast<int64_t>(i)) {}  // NOLINT
  Value(double f) : kind_(Kind::Float) { num_.f = f; }  // NOLINT
  Value(std::string s) : kind_(Kind::String), str_(std::move(s)) {}  // NOLINT
  Value(std::string_view s) : Value(std::string(s)) {}  // NOLINT
  Value(const char* s) : Value(std::string(s)) {}  // NOLINT
  static Value list(List items = {});
  static Value tuple(List items);      // a list that prints as (a, b) and never equals a list
  static Value generator(List items);  // what jinja2's map/select/... return: truthy, no len, no JSON
  static Value markup(std::string s);  // markupsafe.Markup (from |safe, |escape): `+` escapes the other side
  static Value dict(Dict d = {});
  static Value name_space(Dict d = {});
  static Value callable(std::string name, std::function<Result<Value>(const CallArgs&)> fn);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::Undefined; }
  bool is_none() const { return kind_ == Kind::None; }
  bool is_string() const { return kind_ == Kind::String; }
  bool is_list() const { return kind_ == Kind::List; }
  bool is_dict() const { return kind_ == Kind::Dict; }
  bool is_tuple() const { return kind_ == Kind::List && flavor_ == Flavor::Tuple; }
  bool is_generator() const { return kind_ == Kind::List && flavor_ == Flavor::Generator; }
  bool is_markup() const { return kind_ == Kind::String && flavor_ == Flavor::Markup; }
  bool is_number() const { return kind_ == Kind::Int || kind_ == Kind::Float || kind_ == Kind::Bool; }
  bool is_integer() const { return kind_ == Kind::Int || kind_ == Kind::Bool; }  // Python: bool is an int

  bool as_bool() const { return num_.b; }
  int64_t as_int() const { return kind_ == Kind::Bool ? num_.b : num_.i; }
  double as_float() const { return kind_ == Kind::Float ? num_.f : static_cast<double>(as_int()); }
  const std::string& as_string() const { return str_; }
  const std::string& undefined_name() const { return str_; }
  List& as_list() const { return *list_; }
  Dict& as_dict() const { return *dict_; }  // dicts and namespaces
  const Callable& as_callable() const { return *fn_; }

  bool truthy() const;
  // Python's str() and repr(). A container shared many times over can print exponentially long:
  // printing stops once the text passes `limit` bytes (the renderer's output bound then refuses it;
  // elsewhere 64 MiB, far past any chat prompt, keeps memory bounded).
  static constexpr size_t kMaxTextBytes = 64u << 20;
  std::string str(size_t limit = kMaxTextBytes) const;
  std::string repr(size_t limit = kMaxTextBytes) const;
  std::string type_name() const;  // "dict object", as jinja2's messages name types
  bool equals(const Value& other) const;  // Python ==

  // The item list a for loop walks: list items, dict keys, string characters; an error otherwise.
  Result<List> iterate() const;

 private:
  void repr_into(std::string& out, size_t limit) const;

  static Value with_kind(Kind k) {
    Value v;
    v.kind_ = k;
    return v;
  }

  enum class Flavor : uint8_t { List, Tuple, Generator, Markup };  // the Python type behind a list or string

  Kind kind_ = Kind::Undefined;
  Flavor flavor_ = Flavor::List;
  union {
    bool b;
    int64_t i;
    double f;
  } num_{};
  std::string str_;  // a string, or the name an undefined value came from (for messages)
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<const Callable> fn_;
};

// HTML escaping as markupsafe.escape does it (& < > " ').
std::string html_escape(std::string_view s);

// Python ordering (<) of numbers, strings and lists; an error for other pairs, as Python raises.
Result<int> compare_values(const Value& a, const Value& b);

// Python's repr of a float: shortest round-trip digits, "1.0", "1e-05", "1e+16", "inf", "nan".
std::string float_repr(double f);
std::string string_repr(std::string_view s);

// UTF-8 code points of a string, for indexing, slicing and len() that count characters as Python.
std::vector<std::string_view> utf8_chars(std::string_view s);
bool is_ascii(std::string_view s);

// json.dumps as transformers' tojson calls it (ensure_ascii, indent, separators, sort_keys).
struct JsonStyle {
  bool ensure_ascii = false;
  int indent = -1;  // -1: no newlines (Python's indent=None)
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
  size_t max_bytes = 64u << 20;  // longer text is an error (a shared value can serialize exponentially long)
};
Result<std::string> to_json(const Value& v, const JsonStyle& style);
// Parses JSON text into values (objects keep their key order); errors name the position.
Result<Value> parse_json(std::string_view text);

}  // namespace tandem::chat
