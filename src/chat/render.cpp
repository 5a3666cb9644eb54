// The renderer: walks the parsed statements with jinja2's scoping (a fresh scope per loop
// iteration, macro call and `with`; `if` shares its scope), Python's operators and the globals
// transformers adds (raise_exception, strftime_now) besides jinja2's (range, namespace, dict).
#include <cmath>
#include <ctime>
#include <optional>
#include <unordered_set>

#include "chat/ast.h"
#include "chat/builtins.h"
#include "chat/template.h"

namespace tandem::chat {

Result<Value> eval_binary(Op op, const Value& a, const Value& b, size_t max_bytes);  // operators.cpp
Result<Value> eval_slice(const Value& obj, const Value& start, const Value& stop, const Value& step);

namespace {

struct Frame;
using FramePtr = std::shared_ptr<Frame>;

// One scope: its own variables, then the enclosing scope's.
struct Frame : std::enable_shared_from_this<Frame> {
  std::vector<std::pair<std::string, Value>> vars;
  FramePtr parent;

  const Value* find(std::string_view name) const {
    for (const Frame* f = this; f; f = f->parent.get())
      for (const auto& [k, v] : f->vars)
        if (k == name) return &v;
    return nullptr;
  }
  void set(const std::string& name, Value v) {
    for (auto& [k, old] : vars)
      if (k == name) {
        old = std::move(v);
        return;
      }
    vars.emplace_back(name, std::move(v));
  }
};

FramePtr child_of(const FramePtr& parent) {
  auto f = std::make_shared<Frame>();
  f->parent = parent;
  return f;
}

class Renderer {
 public:
  Renderer(const Program& program, const RenderOptions& options) : program_(program), options_(options) {}

  Result<std::string> run(const Value& context) {
    auto globals = std::make_shared<Frame>();
    add_globals(*globals);
    auto root = child_of(globals);
    if (context.is_dict())
      for (const auto& [k, v] : context.as_dict().items)
        if (k.is_string()) root->set(k.as_string(), v);
    std::string out;
    TANDEM_TRY(exec(program_.body, root, out));
    return out;
  }

 private:
  enum class Flow { Normal, Break, Continue };

  // Adds the line and column to a message from below, once; raise_exception's message stays bare.
  Status located(size_t offset, const Status& s) {
    if (final_error_) return s;
    final_error_ = true;
    return invalid_argument("chat template: %s: %s", program_.map.where(offset).c_str(), s.message().c_str());
  }
  Status error(size_t offset, const std::string& what) { return located(offset, invalid_argument("%s", what.c_str())); }

  Status step(size_t offset) {
    if (++steps_ > options_.max_steps)
      return error(offset, format("rendering took more than %lld steps (a loop without end?)",
                                  static_cast<long long>(options_.max_steps)));
    return {};
  }

  // A namespace outlives loop iterations, so it is where values could nest without end or refer
  // back to themselves: refused (jinja2 would hit Python's recursion limit printing them).
  static Status storable(const Value& v, int depth, std::unordered_set<const void*>& seen) {
    if (depth > 256) return invalid_argument("a namespace attribute nests deeper than 256 levels");
    if (v.kind() == Kind::Namespace) return invalid_argument("Tandem does not store a namespace inside a namespace");
    const void* id = v.is_list() ? static_cast<const void*>(&v.as_list()) : v.is_dict() ? static_cast<const void*>(&v.as_dict()) : nullptr;
    if (!id) return {};
    if (!seen.insert(id).second) return {};
    if (v.is_list())
      for (const Value& item : v.as_list()) TANDEM_TRY(storable(item, depth + 1, seen));
    else
      for (const auto& [k, item] : v.as_dict().items) TANDEM_TRY(storable(item, depth + 1, seen));
    return {};
  }

  void add_globals(Frame& g) {
    g.set("range", Value::callable("range", [](const CallArgs& a) -> Result<Value> {
      int64_t start = 0, stop = 0, stride = 1;
      for (const Value& v : a.positional)
        if (!v.is_integer()) return invalid_argument("range() takes integers, not %s", v.type_name().c_str());
      if (a.positional.size() == 1) stop = a.positional[0].as_int();
      else if (a.positional.size() >= 2) start = a.positional[0].as_int(), stop = a.positional[1].as_int();
      else return invalid_argument("range expected at least 1 argument, got 0");
      if (a.positional.size() >= 3) stride = a.positional[2].as_int();
      if (stride == 0) return invalid_argument("range() arg 3 must not be zero");
      // jinja2's sandbox refuses ranges over MAX_RANGE (100000) items.
      const double n = std::ceil((static_cast<double>(stop) - start) / stride);
      if (n > 100000) return invalid_argument("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
      List items;
      for (__int128 i = start; stride > 0 ? i < stop : i > stop; i += stride) items.emplace_back(int64_t(i));
      return Value::list(std::move(items));
    }));
    g.set("namespace", Value::callable("namespace", [](const CallArgs& a) -> Result<Value> {
      Dict d;
      for (const Value& v : a.positional)
        if (v.is_dict())
          for (const auto& kv : v.as_dict().items) d.set(kv.first, kv.second);
      for (const auto& [k, v] : a.keyword) d.set(Value(k), v);
      return Value::name_space(std::move(d));
    }));
    g.set("dict", Value::callable("dict", [](const CallArgs& a) -> Result<Value> {
      Dict d;
      for (const auto& [k, v] : a.keyword) d.set(Value(k), v);
      return Value::dict(std::move(d));
    }));
    g.set("raise_exception", Value::callable("raise_exception", [this](const CallArgs& a) -> Result<Value> {
      final_error_ = true;  // the template's own message, unchanged: the server answers 400 with it
      return invalid_argument("%s", a.positional.empty() ? "" : a.positional[0].str().c_str());
    }));
    g.set("strftime_now", Value::callable("strftime_now", [this](const CallArgs& a) -> Result<Value> {
      if (a.positional.empty() || !a.positional[0].is_string()) return invalid_argument("strftime_now(format) needs a string");
      std::tm tm{};
      if (options_.now) {
        tm = *options_.now;
      } else {
        const std::time_t t = std::time(nullptr);
        localtime_r(&t, &tm);
      }
      char buf[512];
      const size_t n = std::strftime(buf, sizeof buf, a.positional[0].as_string().c_str(), &tm);
      return Value(std::string(buf, n));
    }));
  }

  Status exec(const Body& body, const FramePtr& f, std::string& out) {
    for (const NodePtr& n : body) {
      TANDEM_TRY(exec_node(*n, f, out));
      if (out.size() > options_.max_output_bytes)
        return error(n->offset, format("output exceeds %zu bytes", options_.max_output_bytes));
      if (flow_ != Flow::Normal) break;
    }
    return {};
  }

  Status exec_node(const Node& n, const FramePtr& f, std::string& out) {
    TANDEM_TRY(step(n.offset));
    switch (n.kind) {
      case NodeKind::Text: out += n.text; return {};
      case NodeKind::Output: {
        TANDEM_ASSIGN(Value v, eval(*n.expr, f));
        out += v.str(options_.max_output_bytes);
        return {};
      }
      case NodeKind::If:
        for (const auto& [cond, body] : n.branches) {
          TANDEM_ASSIGN(Value c, eval(*cond, f));
          if (c.truthy()) return exec(body, f, out);
        }
        return exec(n.else_body, f, out);
      case NodeKind::For: {
        TANDEM_ASSIGN(Value iterable, eval(*n.expr, f));
        return run_loop(n, f, iterable, 0, out);
      }
      case NodeKind::Set: {
        TANDEM_ASSIGN(Value v, eval(*n.expr, f));
        return assign(n, n.target, std::move(v), f);
      }
      case NodeKind::SetBlock: {
        std::string text;
        TANDEM_TRY(exec(n.body, f, text));
        Value v(std::move(text));
        if (n.expr) {
          TANDEM_ASSIGN(v, apply_filters(*n.expr, std::move(v), f));
        }
        return assign(n, n.target, std::move(v), f);
      }
      case NodeKind::Macro: f->set(n.text, make_macro(n, f)); return {};
      case NodeKind::CallBlock: {
        const Node* node = &n;
        Frame* scope = keep_alive(f);
        Value caller = Value::callable("caller", [this, node, scope](const CallArgs& a) -> Result<Value> {
          return call_body(*node, scope->shared_from_this(), a);
        });
        TANDEM_ASSIGN(Value v, eval_call(*n.expr, f, &caller));
        out += v.str(options_.max_output_bytes);
        return {};
      }
      case NodeKind::FilterBlock: {
        std::string text;
        TANDEM_TRY(exec(n.body, child_of(f), text));
        TANDEM_ASSIGN(Value v, apply_filters(*n.expr, Value(std::move(text)), f));
        out += v.str(options_.max_output_bytes);
        return {};
      }
      case NodeKind::With: {
        auto inner = child_of(f);
        for (const auto& [name, expr] : n.assignments) {
          TANDEM_ASSIGN(Value v, eval(*expr, f));
          inner->set(name, std::move(v));
        }
        return exec(n.body, inner, out);
      }
      case NodeKind::Scope: return exec(n.body, child_of(f), out);
      case NodeKind::Break: flow_ = Flow::Break; return {};
      case NodeKind::Continue: flow_ = Flow::Continue; return {};
    }
    return {};
  }

  Status assign(const Node& n, const Target& t, Value v, const FramePtr& f) {
    if (!t.attr.empty()) {
      const Value* ns = f->find(t.names[0]);
      if (!ns || ns->kind() != Kind::Namespace) return error(n.offset, "cannot assign attribute on non-namespace object");
      std::unordered_set<const void*> seen;
      if (Status s = storable(v, 0, seen); !s.is_ok()) return located(n.offset, s);
      ns->as_dict().set(Value(t.attr), std::move(v));
      return {};
    }
    if (!t.tuple) {
      f->set(t.names[0], std::move(v));
      return {};
    }
    auto items = v.iterate();
    if (!items) return located(n.offset, items.error());
    if (items->size() != t.names.size())
      return error(n.offset, format("cannot unpack %zu values into %zu names", items->size(), t.names.size()));
    for (size_t i = 0; i < t.names.size(); ++i) f->set(t.names[i], (*items)[i]);
    return {};
  }

  Status run_loop(const Node& n, const FramePtr& f, const Value& iterable, int depth, std::string& out) {
    if (iterable.is_none() || iterable.kind() == Kind::Bool || iterable.is_number() || iterable.kind() == Kind::Callable)
      return error(n.expr->offset, "'" + iterable.type_name() + "' is not iterable");
    auto all = iterable.iterate();
    if (!all) return located(n.expr->offset, all.error());
    List items;
    if (n.condition) {
      for (Value& item : *all) {
        auto scratch = child_of(f);
        TANDEM_TRY(assign(n, n.target, item, scratch));
        TANDEM_ASSIGN(Value keep, eval(*n.condition, scratch));
        if (keep.truthy()) items.push_back(std::move(item));
      }
    } else {
      items = std::move(*all);
    }
    const int64_t len = static_cast<int64_t>(items.size());
    Value recurse;
    if (n.recursive) {
      const Node* node = &n;
      Frame* scope = keep_alive(f);
      recurse = Value::callable("loop", [this, node, scope, depth](const CallArgs& a) -> Result<Value> {
        if (a.positional.empty()) return invalid_argument("loop() takes the items to walk");
        if (depth + 1 >= options_.max_call_depth)
          return invalid_argument("recursive loop deeper than %d", options_.max_call_depth);
        std::string text;
        TANDEM_TRY(run_loop(*node, scope->shared_from_this(), a.positional[0], depth + 1, text));
        return Value(std::move(text));
      });
    }
    // loop.changed(value): true when the value differs from the previous call's (one per loop).
    auto last_seen = std::make_shared<std::optional<Value>>();
    const Value changed = Value::callable("changed", [last_seen](const CallArgs& a) -> Result<Value> {
      const Value v = Value::list(a.positional);
      if (*last_seen && (*last_seen)->equals(v)) return Value(false);
      *last_seen = v;
      return Value(true);
    });
    // jinja2 runs `else` unless some iteration ran to its end: an iteration left by break or
    // continue does not count (its compiled loop clears the flag at the end of the body).
    bool completed_one = false;
    for (int64_t i = 0; i < len; ++i) {
      TANDEM_TRY(step(n.offset));
      auto inner = child_of(f);
      TANDEM_TRY(assign(n, n.target, items[i], inner));
      Dict loop;
      loop.items.reserve(14);
      loop.items.emplace_back("index", i + 1);
      loop.items.emplace_back("index0", i);
      loop.items.emplace_back("revindex", len - i);
      loop.items.emplace_back("revindex0", len - i - 1);
      loop.items.emplace_back("first", i == 0);
      loop.items.emplace_back("last", i == len - 1);
      loop.items.emplace_back("length", len);
      loop.items.emplace_back("depth", static_cast<int64_t>(depth + 1));
      loop.items.emplace_back("depth0", static_cast<int64_t>(depth));
      loop.items.emplace_back("previtem", i > 0 ? items[i - 1] : Value::undefined("'previtem' is undefined"));
      loop.items.emplace_back("nextitem", i + 1 < len ? items[i + 1] : Value::undefined("'nextitem' is undefined"));
      loop.items.emplace_back("cycle", Value::callable("cycle", [i](const CallArgs& a) -> Result<Value> {
        if (a.positional.empty()) return invalid_argument("no items for cycling given");
        return a.positional[i % a.positional.size()];
      }));
      loop.items.emplace_back("changed", changed);
      // A recursive loop is also callable: `loop(children)` (eval_call looks for this key).
      if (n.recursive) loop.items.emplace_back("__call__", recurse);
      inner->vars.emplace_back("loop", Value::dict(std::move(loop)));
      TANDEM_TRY(exec(n.body, inner, out));
      if (flow_ == Flow::Break) {
        flow_ = Flow::Normal;
        break;
      }
      completed_one |= flow_ == Flow::Normal;
      flow_ = Flow::Normal;
    }
    if (!completed_one) return exec(n.else_body, f, out);
    return {};
  }

  // Callables refer to their scope by plain pointer, or a macro stored in the very scope it
  // captures would keep it alive forever (a reference cycle); the renderer owns such scopes.
  Frame* keep_alive(const FramePtr& f) {
    keep_alive_.push_back(f);
    return f.get();
  }

  Value make_macro(const Node& n, const FramePtr& defined_in) {
    const Node* node = &n;
    Frame* scope = keep_alive(defined_in);
    return Value::callable(n.text, [this, node, scope](const CallArgs& a) -> Result<Value> {
      return call_body(*node, scope->shared_from_this(), a);
    });
  }

  // A macro's or a call block's body with its parameters bound, in a new scope under `outer`.
  Result<Value> call_body(const Node& n, const FramePtr& outer, const CallArgs& a) {
    const std::vector<MacroParam>& params = n.params;
    if (call_depth_ >= options_.max_call_depth)
      return invalid_argument("macro calls nest deeper than %d (unbounded recursion?)", options_.max_call_depth);
    auto frame = child_of(outer);
    for (size_t i = 0; i < params.size(); ++i) {
      if (const Value* v = a.get(i, params[i].name)) {
        frame->set(params[i].name, *v);
      } else if (params[i].default_value) {
        TANDEM_ASSIGN(Value d, eval(*params[i].default_value, frame));
        frame->set(params[i].name, std::move(d));
      } else {
        frame->set(params[i].name, Value::undefined("'" + params[i].name + "' is undefined"));
      }
    }
    List varargs(a.positional.begin() + std::min(a.positional.size(), params.size()), a.positional.end());
    frame->set("varargs", Value::tuple(std::move(varargs)));
    Dict kwargs;
    for (const auto& [k, v] : a.keyword) {
      bool is_param = k == "caller";
      for (const auto& p : params) is_param |= p.name == k;
      if (is_param) continue;
      kwargs.set(Value(k), v);
    }
    frame->set("kwargs", Value::dict(std::move(kwargs)));
    if (const Value* c = a.get(SIZE_MAX, "caller")) frame->set("caller", *c);
    ++call_depth_;
    std::string out;
    const Flow saved = flow_;
    Status s = exec(n.body, frame, out);
    flow_ = saved;
    --call_depth_;
    TANDEM_TRY(s);
    return Value(std::move(out));
  }

  Result<CallArgs> eval_args(const Expr& e, const FramePtr& f) {
    CallArgs args;
    args.max_bytes = options_.max_output_bytes;
    args.positional.reserve(e.args.size());
    for (const ExprPtr& a : e.args) {
      TANDEM_ASSIGN(Value v, eval(*a, f));
      args.positional.push_back(std::move(v));
    }
    for (const auto& [k, a] : e.kwargs) {
      TANDEM_ASSIGN(Value v, eval(*a, f));
      args.keyword.emplace_back(k, std::move(v));
    }
    return args;
  }

  Result<Value> eval_call(const Expr& e, const FramePtr& f, const Value* caller = nullptr) {
    TANDEM_ASSIGN(Value callee, eval(*e.object, f));
    TANDEM_ASSIGN(CallArgs args, eval_args(e, f));
    if (caller) args.keyword.emplace_back("caller", *caller);
    if (callee.is_dict())
      if (const Value* c = callee.as_dict().find(std::string_view("__call__"))) callee = *c;
    if (callee.kind() != Kind::Callable) {
      if (callee.is_undefined()) return error(e.offset, callee.undefined_name());
      return error(e.offset, "'" + callee.type_name() + "' is not callable");
    }
    auto r = callee.as_callable().fn(args);
    if (!r) return located(e.offset, r.error());
    return r;
  }

  // The filters of a {% filter %} block or a block set, applied in order to `v`.
  Result<Value> apply_filters(const Expr& chain, Value v, const FramePtr& f) {
    if (chain.kind != ExprKind::Filter) return v;
    if (chain.object) {
      TANDEM_ASSIGN(v, apply_filters(*chain.object, std::move(v), f));
    }
    TANDEM_ASSIGN(CallArgs args, eval_args(chain, f));
    auto r = apply_filter(chain.name, v, args);
    if (!r) return located(chain.offset, r.error());
    return r;
  }

  Result<Value> eval(const Expr& e, const FramePtr& f) {
    TANDEM_TRY(step(e.offset));
    switch (e.kind) {
      case ExprKind::Literal: return e.value;
      case ExprKind::Name: {
        if (const Value* v = f->find(e.name)) return *v;
        return Value::undefined("'" + e.name + "' is undefined");
      }
      case ExprKind::List: case ExprKind::Tuple: {
        List items;
        items.reserve(e.args.size());
        for (const ExprPtr& a : e.args) {
          TANDEM_ASSIGN(Value v, eval(*a, f));
          items.push_back(std::move(v));
        }
        return e.kind == ExprKind::Tuple ? Value::tuple(std::move(items)) : Value::list(std::move(items));
      }
      case ExprKind::Dict: {
        Dict d;
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          TANDEM_ASSIGN(Value k, eval(*e.args[i], f));
          TANDEM_ASSIGN(Value v, eval(*e.args[i + 1], f));
          d.set(std::move(k), std::move(v));
        }
        return Value::dict(std::move(d));
      }
      case ExprKind::GetAttr: {
        TANDEM_ASSIGN(Value obj, eval(*e.object, f));
        auto r = get_attribute(obj, e.name);
        if (!r) return located(e.offset, r.error());
        return r;
      }
      case ExprKind::GetItem: {
        TANDEM_ASSIGN(Value obj, eval(*e.object, f));
        TANDEM_ASSIGN(Value key, eval(*e.args[0], f));
        auto r = get_item(obj, key);
        if (!r) return located(e.offset, r.error());
        return r;
      }
      case ExprKind::Slice: {
        TANDEM_ASSIGN(Value obj, eval(*e.object, f));
        Value bounds[3] = {Value::none(), Value::none(), Value::none()};
        for (int i = 0; i < 3; ++i)
          if (e.args[i]) {
            TANDEM_ASSIGN(bounds[i], eval(*e.args[i], f));
          }
        auto r = eval_slice(obj, bounds[0], bounds[1], bounds[2]);
        if (!r) return located(e.offset, r.error());
        return r;
      }
      case ExprKind::Call: return eval_call(e, f);
      case ExprKind::Filter: {
        TANDEM_ASSIGN(Value input, eval(*e.object, f));
        TANDEM_ASSIGN(CallArgs args, eval_args(e, f));
        auto r = apply_filter(e.name, input, args);
        if (!r) return located(e.offset, r.error());
        return r;
      }
      case ExprKind::Test: {
        TANDEM_ASSIGN(Value input, eval(*e.object, f));
        TANDEM_ASSIGN(CallArgs args, eval_args(e, f));
        auto r = apply_test(e.name, input, args);
        if (!r) return located(e.offset, r.error());
        return Value(*r != e.negated);
      }
      case ExprKind::Unary: {
        TANDEM_ASSIGN(Value v, eval(*e.object, f));
        if (e.op == Op::Not) return Value(!v.truthy());
        if (v.kind() == Kind::Float) return Value(e.op == Op::Neg ? -v.as_float() : v.as_float());
        if (v.is_integer()) {
          if (e.op == Op::Neg && v.as_int() == INT64_MIN) return error(e.offset, "integer overflow");
          return Value(e.op == Op::Neg ? -v.as_int() : v.as_int());
        }
        if (v.is_undefined()) return error(e.offset, v.undefined_name());
        return error(e.offset, "bad operand type for unary " + std::string(e.op == Op::Neg ? "-" : "+") + ": '" +
                                   v.type_name() + "'");
      }
      case ExprKind::Binary: {
        TANDEM_ASSIGN(Value a, eval(*e.args[0], f));
        if (e.op == Op::And && !a.truthy()) return a;
        if (e.op == Op::Or && a.truthy()) return a;
        TANDEM_ASSIGN(Value b, eval(*e.args[1], f));
        if (e.op == Op::And || e.op == Op::Or) return b;
        auto r = eval_binary(e.op, a, b, options_.max_output_bytes);
        if (!r) return located(e.offset, r.error());
        return r;
      }
      case ExprKind::Compare: {
        TANDEM_ASSIGN(Value left, eval(*e.object, f));
        for (size_t i = 0; i < e.ops.size(); ++i) {
          TANDEM_ASSIGN(Value right, eval(*e.args[i], f));
          auto r = eval_binary(e.ops[i], left, right, options_.max_output_bytes);
          if (!r) return located(e.offset, r.error());
          if (!r->truthy()) return Value(false);
          left = std::move(right);
        }
        return Value(true);
      }
      case ExprKind::Condition: {
        TANDEM_ASSIGN(Value c, eval(*e.args[1], f));
        if (c.truthy()) return eval(*e.args[0], f);
        if (e.args[2]) return eval(*e.args[2], f);
        return Value::undefined("the inline if-expression on " + program_.map.where(e.offset) +
                                " evaluated to false and no else section was defined.");
      }
    }
    return Value();
  }

  const Program& program_;
  const RenderOptions& options_;
  Flow flow_ = Flow::Normal;
  int64_t steps_ = 0;
  int call_depth_ = 0;
  bool final_error_ = false;
  std::vector<FramePtr> keep_alive_;  // scopes that callables point into; freed with the renderer
};

}  // namespace

Result<Template> Template::parse(std::string_view source) {
  Template t;
  TANDEM_ASSIGN(t.program_, parse_program(source));
  return t;
}

Result<std::string> Template::render(const Value& context, const RenderOptions& options) const {
  Renderer r(*program_, options);
  return r.run(context);
}

}  // namespace tandem::chat
