// jinja2's built-in tests (jinja2/tests.py, 3.1): `x is defined`, `x is string`, `x is divisibleby 3`...
#include <cmath>

#include "chat/ast.h"
#include "chat/builtins.h"
#include "chat/text.h"

namespace tandem::chat {

Result<Value> eval_binary(Op op, const Value& a, const Value& b, size_t max_bytes);  // operators.cpp

namespace {

Result<Value> arg0(std::string_view test, const CallArgs& a) {
  if (a.positional.empty() && a.keyword.empty())
    return invalid_argument("test '%.*s' takes one argument", static_cast<int>(test.size()), test.data());
  return a.positional.empty() ? a.keyword[0].second : a.positional[0];
}

Result<bool> compare_test(Op op, const Value& x, const Value& y) {
  TANDEM_ASSIGN(Value r, eval_binary(op, x, y, SIZE_MAX));
  return r.truthy();
}

}  // namespace

bool is_known_test(std::string_view n) {
  static constexpr std::string_view kTests[] = {
      "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number", "string",
      "mapping", "iterable", "sequence", "callable", "sameas", "eq", "equalto", "==", "ne", "!=", "lt",
      "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in", "odd", "even", "divisibleby",
      "lower", "upper", "escaped", "filter", "test"};
  for (std::string_view t : kTests)
    if (t == n) return true;
  return false;
}

Result<bool> apply_test(std::string_view n, const Value& v, const CallArgs& a) {
  const Kind k = v.kind();
  if (n == "defined") return !v.is_undefined();
  if (n == "undefined") return v.is_undefined();
  if (n == "none") return v.is_none();
  if (n == "boolean") return k == Kind::Bool;
  if (n == "true") return k == Kind::Bool && v.as_bool();
  if (n == "false") return k == Kind::Bool && !v.as_bool();
  if (n == "integer") return k == Kind::Int;
  if (n == "float") return k == Kind::Float;
  if (n == "number") return v.is_number();
  if (n == "string") return v.is_string();
  if (n == "mapping") return k == Kind::Dict;
  // jinja2's Undefined iterates (as empty) and has a length, so it counts as iterable and sequence.
  if (n == "iterable") return k == Kind::Undefined || k == Kind::String || k == Kind::List || k == Kind::Dict;
  if (n == "sequence") return k == Kind::Undefined || k == Kind::String || k == Kind::List || k == Kind::Dict;
  if (n == "callable") return k == Kind::Callable;
  if (n == "escaped") return false;
  if (n == "filter" || n == "test") {
    if (!v.is_string()) return false;
    return n == "filter" ? is_known_filter(v.as_string()) : is_known_test(v.as_string());
  }
  if (n == "lower") return py_islower(v.str());  // jinja2: str(value).islower()
  if (n == "upper") return py_isupper(v.str());
  if (n == "odd" || n == "even") {  // jinja2: value % 2 == 1 / == 0, with Python's modulo
    if (!v.is_number()) return invalid_argument("test '%.*s' needs a number", static_cast<int>(n.size()), n.data());
    TANDEM_ASSIGN(Value m, eval_binary(Op::Mod, v, Value(static_cast<int64_t>(2)), SIZE_MAX));
    return m.equals(Value(static_cast<int64_t>(n == "odd" ? 1 : 0)));
  }
  if (n == "divisibleby") {
    TANDEM_ASSIGN(Value d, arg0(n, a));
    if (!v.is_number() || !d.is_number()) return invalid_argument("divisibleby needs numbers");
    TANDEM_ASSIGN(Value m, eval_binary(Op::Mod, v, d, SIZE_MAX));
    return m.equals(Value(static_cast<int64_t>(0)));
  }
  TANDEM_ASSIGN(Value other, arg0(n, a));
  if (n == "sameas") {
    // Python's `is`: singletons by value, containers by identity.
    if (k != other.kind()) return false;
    if (k == Kind::None || k == Kind::Undefined) return true;
    if (k == Kind::Bool) return v.as_bool() == other.as_bool();
    if (k == Kind::List || k == Kind::Dict || k == Kind::Namespace) {
      if (k == Kind::List) return &v.as_list() == &other.as_list();
      return &v.as_dict() == &other.as_dict();
    }
    return v.equals(other);  // small ints and interned strings: CPython shares them
  }
  if (n == "eq" || n == "equalto" || n == "==") return v.equals(other);
  if (n == "ne" || n == "!=") return !v.equals(other);
  if (n == "lt" || n == "lessthan" || n == "<") return compare_test(Op::Lt, v, other);
  if (n == "le" || n == "<=") return compare_test(Op::Le, v, other);
  if (n == "gt" || n == "greaterthan" || n == ">") return compare_test(Op::Gt, v, other);
  if (n == "ge" || n == ">=") return compare_test(Op::Ge, v, other);
  if (n == "in") return contains(other, v);
  return invalid_argument("No test named '%.*s'.", static_cast<int>(n.size()), n.data());
}

}  // namespace tandem::chat
