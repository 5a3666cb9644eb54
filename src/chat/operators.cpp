// Python's binary operators, comparisons and slicing over template values: int stays int (overflow
// is an error, where Python would grow the integer), `/` gives a float, `//` and `%` floor.
#include <algorithm>
#include <cmath>

#include "chat/ast.h"
#include "chat/builtins.h"

namespace tandem::chat {
namespace {

const char* op_symbol(Op op) {
  switch (op) {
    case Op::Add: return "+";
    case Op::Sub: return "-";
    case Op::Mul: return "*";
    case Op::Div: return "/";
    case Op::FloorDiv: return "//";
    case Op::Mod: return "%";
    case Op::Pow: return "**";
    case Op::Lt: return "<";
    case Op::Le: return "<=";
    case Op::Gt: return ">";
    case Op::Ge: return ">=";
    default: return "?";
  }
}

Status type_error(Op op, const Value& a, const Value& b) {
  if (a.is_undefined()) return invalid_argument("%s", a.undefined_name().c_str());
  if (b.is_undefined()) return invalid_argument("%s", b.undefined_name().c_str());
  return invalid_argument("unsupported operand type(s) for %s: '%s' and '%s'", op_symbol(op), a.type_name().c_str(),
                          b.type_name().c_str());
}

Result<Value> repeat(const Value& seq, int64_t n, size_t max_bytes) {
  if (n < 0) n = 0;
  if (seq.is_string()) {
    if (n > 0 && seq.as_string().size() * static_cast<double>(n) > max_bytes)
      return invalid_argument("string repetition beyond %zu bytes", max_bytes);
    std::string out;
    for (int64_t i = 0; i < n; ++i) out += seq.as_string();
    return Value(std::move(out));
  }
  if (n > 0 && seq.as_list().size() * static_cast<double>(n) > max_bytes / 64)
    return invalid_argument("list repetition too large");
  List out;
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq.as_list().begin(), seq.as_list().end());
  return Value::list(std::move(out));
}

Result<Value> arithmetic(Op op, const Value& a, const Value& b, size_t max_bytes) {
  if (a.is_number() && b.is_number()) {
    if (a.is_integer() && b.is_integer() && op != Op::Div) {
      const int64_t x = a.as_int(), y = b.as_int();
      int64_t r = 0;
      switch (op) {
        case Op::Add: if (__builtin_add_overflow(x, y, &r)) break; return Value(r);
        case Op::Sub: if (__builtin_sub_overflow(x, y, &r)) break; return Value(r);
        case Op::Mul: if (__builtin_mul_overflow(x, y, &r)) break; return Value(r);
        case Op::FloorDiv: case Op::Mod: {
          if (y == 0) return invalid_argument("integer division or modulo by zero");
          if (x == INT64_MIN && y == -1) break;
          int64_t q = x / y, m = x % y;
          if (m != 0 && ((m < 0) != (y < 0))) --q, m += y;
          return Value(op == Op::FloorDiv ? q : m);
        }
        case Op::Pow: {
          if (y < 0 && x == 0) return invalid_argument("0.0 cannot be raised to a negative power");
          if (y < 0) return Value(std::pow(static_cast<double>(x), static_cast<double>(y)));
          int64_t acc = 1;
          bool overflow = false;
          for (int64_t i = 0; i < y && !overflow; ++i) {
            overflow = __builtin_mul_overflow(acc, x, &acc);
            if (acc == 0 || acc == 1) break;
            if (acc == -1) {
              acc = (y % 2) ? -1 : 1;
              break;
            }
          }
          if (overflow) break;
          return Value(acc);
        }
        default: break;
      }
      return invalid_argument("integer overflow in '%s' (Tandem's integers are 64-bit)", op_symbol(op));
    }
    const double x = a.as_float(), y = b.as_float();
    switch (op) {
      case Op::Add: return Value(x + y);
      case Op::Sub: return Value(x - y);
      case Op::Mul: return Value(x * y);
      case Op::Div:
        if (y == 0) return invalid_argument("division by zero");
        return Value(x / y);
      case Op::FloorDiv:
        if (y == 0) return invalid_argument("float floor division by zero");
        return Value(std::floor(x / y));
      case Op::Mod: {
        if (y == 0) return invalid_argument("float modulo");
        double m = std::fmod(x, y);
        if (m != 0 && ((m < 0) != (y < 0))) m += y;
        return Value(m);
      }
      case Op::Pow:
        if (x == 0 && y < 0) return invalid_argument("0.0 cannot be raised to a negative power");
        if (x < 0 && y != std::floor(y)) return invalid_argument("a negative number to a fractional power is complex (unsupported)");
        return Value(std::pow(x, y));
      default: break;
    }
  }
  if (op == Op::Add && a.is_string() && b.is_string()) {
    if (a.as_string().size() + b.as_string().size() > max_bytes) return invalid_argument("string beyond %zu bytes", max_bytes);
    if (a.is_markup() || b.is_markup()) {  // Markup.__add__/__radd__ escape the plain side
      return Value::markup((a.is_markup() ? a.as_string() : html_escape(a.as_string())) +
                           (b.is_markup() ? b.as_string() : html_escape(b.as_string())));
    }
    return Value(a.as_string() + b.as_string());
  }
  if (op == Op::Add && a.is_list() && b.is_list() && !a.is_generator() && !b.is_generator() && a.is_tuple() == b.is_tuple()) {
    List out = a.as_list();
    out.insert(out.end(), b.as_list().begin(), b.as_list().end());
    return Value::list(std::move(out));
  }
  if (op == Op::Mod && a.is_string()) {  // "%s: %d" % (name, n)
    const bool mapping_like = (b.is_list() && !b.is_tuple()) || b.is_dict() || b.is_undefined();  // has __getitem__
    TANDEM_ASSIGN(std::string s, printf_format(a.as_string(), b.is_tuple() ? b.as_list() : List{b}, mapping_like));
    return Value(std::move(s));
  }
  if (op == Op::Mul && (a.is_string() || a.is_list()) && !a.is_generator() && b.is_integer())
    return repeat(a, b.as_int(), max_bytes);  // bool counts as 0 or 1, as in Python
  if (op == Op::Mul && (b.is_string() || b.is_list()) && !b.is_generator() && a.is_integer())
    return repeat(b, a.as_int(), max_bytes);
  return type_error(op, a, b);
}

}  // namespace

Result<bool> contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Kind::Undefined: return false;  // jinja2's Undefined iterates as empty
    case Kind::String:
      if (!item.is_string())
        return invalid_argument("'in <string>' requires string as left operand, not %s", item.type_name().c_str());
      return container.as_string().find(item.as_string()) != std::string::npos;
    case Kind::List:
      for (const Value& v : container.as_list())
        if (v.equals(item)) return true;
      return false;
    case Kind::Dict:
      if ((item.is_list() && !item.is_tuple()) || item.is_dict())
        return invalid_argument("unhashable type: '%s'", item.is_list() ? "list" : "dict");
      return container.as_dict().find(item) != nullptr;
    default: return invalid_argument("argument of type '%s' is not iterable", container.type_name().c_str());
  }
}

Result<Value> eval_binary(Op op, const Value& a, const Value& b, size_t max_bytes) {
  switch (op) {
    case Op::Concat: {
      std::string s = a.str(max_bytes) + b.str(max_bytes);
      if (s.size() > max_bytes) return invalid_argument("string beyond %zu bytes", max_bytes);
      return Value(std::move(s));
    }
    case Op::Eq: return Value(a.equals(b));
    case Op::Ne: return Value(!a.equals(b));
    case Op::Lt: case Op::Le: case Op::Gt: case Op::Ge: {
      auto c = compare_values(a, b);
      if (!c) {
        if (a.is_undefined() || b.is_undefined()) return type_error(op, a, b);
        return invalid_argument("'%s' not supported between instances of '%s' and '%s'", op_symbol(op),
                                a.type_name().c_str(), b.type_name().c_str());
      }
      const int r = *c;
      return Value(op == Op::Lt ? r < 0 : op == Op::Le ? r <= 0 : op == Op::Gt ? r > 0 : r >= 0);
    }
    case Op::In: case Op::NotIn: {
      TANDEM_ASSIGN(bool in, contains(b, a));
      return Value(in == (op == Op::In));
    }
    default: return arithmetic(op, a, b, max_bytes);
  }
}

Result<Value> eval_slice(const Value& obj, const Value& start_v, const Value& stop_v, const Value& step_v) {
  for (const Value* v : {&start_v, &stop_v, &step_v})
    if (!v->is_none() && !v->is_integer())
      return invalid_argument("slice indices must be integers or None, not %s", v->type_name().c_str());
  const int64_t step = step_v.is_none() ? 1 : step_v.as_int();
  if (step == 0) return invalid_argument("slice step cannot be zero");
  const bool ascii = obj.is_string() && is_ascii(obj.as_string());
  std::vector<std::string_view> chars;
  int64_t n = 0;
  if (obj.is_generator()) return invalid_argument("'generator' object is not subscriptable");
  if (obj.is_list()) n = static_cast<int64_t>(obj.as_list().size());
  else if (ascii) n = static_cast<int64_t>(obj.as_string().size());
  else if (obj.is_string()) chars = utf8_chars(obj.as_string()), n = static_cast<int64_t>(chars.size());
  else if (obj.is_undefined()) return invalid_argument("%s", obj.undefined_name().c_str());
  else return invalid_argument("'%s' is not subscriptable", obj.type_name().c_str());
  // Python's slice.indices(): clamp into range, with -1 meaning "before the first" for negative steps.
  auto clamp = [&](const Value& v, int64_t dflt) {
    if (v.is_none()) return dflt;
    int64_t i = v.as_int();
    if (i < 0) i += n;
    if (step > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  const int64_t start = clamp(start_v, step > 0 ? 0 : n - 1);
  const int64_t stop = clamp(stop_v, step > 0 ? n : -1);
  // Indexes start + k * step for k < count, in 128 bits: a huge step must not overflow.
  const __int128 span = step > 0 ? __int128(stop) - start : __int128(start) - stop;
  const __int128 stride = step > 0 ? __int128(step) : -__int128(step);
  const int64_t count = span > 0 ? int64_t((span - 1) / stride + 1) : 0;
  auto index = [&](int64_t k) { return int64_t(__int128(start) + __int128(k) * step); };
  if (obj.is_list()) {
    List out;
    for (int64_t k = 0; k < count; ++k) out.push_back(obj.as_list()[index(k)]);
    return obj.is_tuple() ? Value::tuple(std::move(out)) : Value::list(std::move(out));
  }
  std::string out;
  for (int64_t k = 0; k < count; ++k) {
    if (ascii) out += obj.as_string()[index(k)];
    else out += chars[index(k)];
  }
  return Value(std::move(out));
}

}  // namespace tandem::chat
