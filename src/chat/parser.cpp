// Jinja parser: tokens to statements and expressions, with jinja2/parser.py's grammar and operator
// precedence. Anything outside the supported language is refused here, with its line and column.
#include <cerrno>
#include <cstdlib>
#include <initializer_list>

#include "chat/ast.h"
#include "chat/builtins.h"

namespace tandem::chat {
namespace {

constexpr int kMaxNesting = 128;  // expression and block nesting: bounds the recursion of parse and render

class Parser {
 public:
  Parser(const std::vector<Token>& tokens, const SourceMap& map) : t_(tokens), map_(map) {}

  Result<Body> parse_template() {
    TANDEM_ASSIGN(Body body, parse_body({}));
    if (cur().type != TokenType::Eof) return error(cur().offset, "unexpected '" + peek_name() + "' tag");
    return body;
  }

 private:
  const Token& cur() const { return t_[i_]; }
  const Token& next() const { return t_[i_ + 1 < t_.size() ? i_ + 1 : i_]; }
  bool is_op(const char* op) const { return cur().type == TokenType::Op && cur().text == op; }
  bool is_name(const char* name) const { return cur().type == TokenType::Name && cur().text == name; }
  std::string peek_name() const { return cur().type == TokenType::Name ? cur().text : describe(cur()); }

  static std::string describe(const Token& tok) {
    switch (tok.type) {
      case TokenType::Text: return "text";
      case TokenType::VarBegin: return "{{";
      case TokenType::VarEnd: return "}}";
      case TokenType::BlockBegin: return "{%";
      case TokenType::BlockEnd: return "%}";
      case TokenType::Eof: return "end of template";
      case TokenType::String: return "string";
      default: return tok.text;
    }
  }

  Status error(size_t offset, const std::string& what) const {
    return invalid_argument("chat template: %s: %s", map_.where(offset).c_str(), what.c_str());
  }
  Status unexpected() const { return error(cur().offset, "unexpected '" + describe(cur()) + "'"); }

  Status expect_op(const char* op) {
    if (!is_op(op)) return error(cur().offset, format("expected '%s', got '%s'", op, describe(cur()).c_str()));
    ++i_;
    return {};
  }
  Status expect_block_end() {
    if (cur().type != TokenType::BlockEnd)
      return error(cur().offset, "expected end of statement '%}', got '" + describe(cur()) + "'");
    ++i_;
    return {};
  }
  Result<std::string> expect_name() {
    if (cur().type != TokenType::Name) return error(cur().offset, "expected a name, got '" + describe(cur()) + "'");
    return t_[i_++].text;
  }

  // Statements until a `{% end %}` tag named in `ends` (left unconsumed: the caller reads which).
  Result<Body> parse_body(std::initializer_list<const char*> ends) {
    if (++depth_ > kMaxNesting) return error(cur().offset, format("blocks nest deeper than %d", kMaxNesting));
    Body body;
    while (true) {
      const Token& tok = cur();
      if (tok.type == TokenType::Eof) {
        if (ends.size()) return error(tok.offset, format("unexpected end of template: expected '%s'", *ends.begin()));
        break;
      }
      if (tok.type == TokenType::Text) {
        auto n = make_node(NodeKind::Text, tok.offset);
        n->text = tok.text;
        body.push_back(std::move(n));
        ++i_;
      } else if (tok.type == TokenType::VarBegin) {
        ++i_;
        auto n = make_node(NodeKind::Output, tok.offset);
        TANDEM_ASSIGN(n->expr, parse_tuple());
        if (cur().type != TokenType::VarEnd) return error(cur().offset, "expected '}}', got '" + describe(cur()) + "'");
        ++i_;
        body.push_back(std::move(n));
      } else if (tok.type == TokenType::BlockBegin) {
        const Token& name = next();
        bool is_end = false;
        for (const char* e : ends) is_end |= name.type == TokenType::Name && name.text == e;
        if (is_end) {
          ++i_;  // leave the end name current
          break;
        }
        ++i_;
        TANDEM_ASSIGN(NodePtr n, parse_statement());
        body.push_back(std::move(n));
      } else {
        return unexpected();
      }
    }
    --depth_;
    return body;
  }

  Result<NodePtr> parse_statement() {
    const size_t at = cur().offset;
    TANDEM_ASSIGN(std::string tag, expect_name());
    auto node = make_node(NodeKind::Scope, at);
    const bool outer_soft = soft_;
    if (tag == "if") {
      node->kind = NodeKind::If;
      soft_ = true;  // jinja2's "soft frame": see parse_filter_chain
      while (true) {
        TANDEM_ASSIGN(ExprPtr cond, parse_tuple());
        TANDEM_TRY(expect_block_end());
        TANDEM_ASSIGN(Body body, parse_body({"elif", "else", "endif"}));
        node->branches.emplace_back(std::move(cond), std::move(body));
        TANDEM_ASSIGN(std::string end, expect_name());
        if (end == "elif") continue;
        if (end == "else") {
          TANDEM_TRY(expect_block_end());
          TANDEM_ASSIGN(node->else_body, parse_body({"endif"}));
          ++i_;
        }
        break;
      }
      soft_ = outer_soft;
    } else if (tag == "for") {
      node->kind = NodeKind::For;
      TANDEM_ASSIGN(node->target, parse_target(false));
      if (!is_name("in")) return error(cur().offset, "expected 'in' in a for loop");
      ++i_;
      TANDEM_ASSIGN(node->expr, parse_tuple(false));
      soft_ = false;  // a loop's body is a frame of its own, never soft
      if (is_name("if")) {
        ++i_;
        TANDEM_ASSIGN(node->condition, parse_tuple());
      }
      if (is_name("recursive")) {
        ++i_;
        node->recursive = true;
      }
      TANDEM_TRY(expect_block_end());
      ++loops_;
      TANDEM_ASSIGN(node->body, parse_body({"else", "endfor"}));
      --loops_;
      if (cur().text == "else") {
        ++i_;
        TANDEM_TRY(expect_block_end());
        TANDEM_ASSIGN(node->else_body, parse_body({"endfor"}));
      }
      soft_ = outer_soft;
      ++i_;
    } else if (tag == "set") {
      TANDEM_ASSIGN(node->target, parse_target(true));
      if (is_op("=")) {
        ++i_;
        node->kind = NodeKind::Set;
        TANDEM_ASSIGN(node->expr, parse_tuple());
        TANDEM_TRY(expect_block_end());
        return node;
      }
      node->kind = NodeKind::SetBlock;
      if (is_op("|")) {
        TANDEM_ASSIGN(node->expr, parse_filter_chain(nullptr));
      }
      TANDEM_TRY(expect_block_end());
      soft_ = false;
      TANDEM_ASSIGN(node->body, parse_body({"endset"}));
      ++i_;
    } else if (tag == "macro") {
      node->kind = NodeKind::Macro;
      TANDEM_ASSIGN(node->text, expect_name());
      TANDEM_ASSIGN(node->params, parse_params());
      TANDEM_TRY(expect_block_end());
      const int saved_loops = loops_;
      loops_ = 0;  // break/continue cannot cross a macro
      soft_ = false;
      TANDEM_ASSIGN(node->body, parse_body({"endmacro"}));
      loops_ = saved_loops;
      ++i_;
    } else if (tag == "call") {
      node->kind = NodeKind::CallBlock;
      if (is_op("(")) {
        TANDEM_ASSIGN(node->params, parse_params());
      }
      TANDEM_ASSIGN(node->expr, parse_expression());
      if (node->expr->kind != ExprKind::Call) return error(at, "expected a call after 'call'");
      TANDEM_TRY(expect_block_end());
      soft_ = false;
      TANDEM_ASSIGN(node->body, parse_body({"endcall"}));
      ++i_;
    } else if (tag == "filter") {
      node->kind = NodeKind::FilterBlock;
      TANDEM_ASSIGN(node->expr, parse_filter_chain(nullptr, false));
      TANDEM_TRY(expect_block_end());
      soft_ = false;
      TANDEM_ASSIGN(node->body, parse_body({"endfilter"}));
      ++i_;
    } else if (tag == "with") {
      node->kind = NodeKind::With;
      while (cur().type != TokenType::BlockEnd) {
        if (!node->assignments.empty()) TANDEM_TRY(expect_op(","));
        TANDEM_ASSIGN(std::string name, expect_name());
        TANDEM_TRY(expect_op("="));
        TANDEM_ASSIGN(ExprPtr value, parse_expression());
        node->assignments.emplace_back(std::move(name), std::move(value));
      }
      ++i_;
      soft_ = false;
      TANDEM_ASSIGN(node->body, parse_body({"endwith"}));
      ++i_;
    } else if (tag == "generation") {
      // transformers' AssistantTracker extension: the body renders as it is (a scope of its own).
      TANDEM_TRY(expect_block_end());
      soft_ = false;
      TANDEM_ASSIGN(node->body, parse_body({"endgeneration"}));
      ++i_;
    } else if (tag == "break" || tag == "continue") {
      if (loops_ == 0) return error(at, "'" + tag + "' outside of a loop");
      node->kind = tag == "break" ? NodeKind::Break : NodeKind::Continue;
    } else if (tag == "include" || tag == "extends" || tag == "import" || tag == "from" || tag == "block" ||
               tag == "autoescape" || tag == "do" || tag == "trans") {
      return error(at, "unsupported tag '" + tag + "' (chat templates render alone, without loaders or extensions)");
    } else if (tag.rfind("end", 0) == 0 || tag == "elif" || tag == "else") {
      return error(at, "unexpected '" + tag + "' tag");
    } else {
      return error(at, "unknown tag '" + tag + "'");
    }
    soft_ = outer_soft;
    if (node->kind != NodeKind::Set) TANDEM_TRY(expect_block_end());
    return node;
  }

  // `name`, `a, b`, `(a, b)`, or with `allow_attr`, `ns.attr`.
  Result<Target> parse_target(bool allow_attr) {
    Target target;
    const bool paren = is_op("(");
    if (paren) ++i_;
    TANDEM_ASSIGN(std::string first, expect_name());
    target.names.push_back(first);
    if (allow_attr && !paren && is_op(".")) {
      ++i_;
      TANDEM_ASSIGN(target.attr, expect_name());
      return target;
    }
    while (is_op(",")) {
      ++i_;
      target.tuple = true;
      if (cur().type != TokenType::Name) break;  // a trailing comma
      target.names.push_back(t_[i_++].text);
    }
    if (paren) TANDEM_TRY(expect_op(")"));
    return target;
  }

  // `(a, b=default, ...)` of a macro or a call block's caller.
  Result<std::vector<MacroParam>> parse_params() {
    std::vector<MacroParam> params;
    TANDEM_TRY(expect_op("("));
    while (!is_op(")")) {
      if (!params.empty()) TANDEM_TRY(expect_op(","));
      if (is_op(")")) break;
      MacroParam p;
      TANDEM_ASSIGN(p.name, expect_name());
      if (is_op("=")) {
        ++i_;
        TANDEM_ASSIGN(p.default_value, parse_expression());
      } else if (!params.empty() && params.back().default_value) {
        return error(cur().offset, "non-default argument follows default argument");
      }
      params.push_back(std::move(p));
    }
    ++i_;
    return params;
  }

  static NodePtr make_node(NodeKind kind, size_t offset) {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    n->offset = offset;
    return n;
  }

  ExprPtr make(ExprKind kind, size_t offset) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->offset = offset;
    return e;
  }

  // An expression, or a tuple of them without parentheses (`a, b`).
  Result<ExprPtr> parse_tuple(bool with_condexpr = true) {
    const size_t at = cur().offset;
    TANDEM_ASSIGN(ExprPtr first, parse_expression(with_condexpr));
    if (!is_op(",")) return first;
    auto tuple = make(ExprKind::Tuple, at);
    tuple->args.push_back(std::move(first));
    while (is_op(",")) {
      ++i_;
      if (cur().type == TokenType::BlockEnd || cur().type == TokenType::VarEnd || is_op(")")) break;
      TANDEM_ASSIGN(ExprPtr item, parse_expression(with_condexpr));
      tuple->args.push_back(std::move(item));
    }
    return tuple;
  }

  Result<ExprPtr> parse_expression(bool with_condexpr = true) {
    if (++depth_ > kMaxNesting) return error(cur().offset, format("expressions nest deeper than %d", kMaxNesting));
    auto r = with_condexpr ? parse_condexpr() : parse_or();
    --depth_;
    return r;
  }

  Result<ExprPtr> parse_condexpr() {
    TANDEM_ASSIGN(ExprPtr expr, parse_or());
    const bool outer_soft = soft_;
    while (is_name("if")) {
      auto cond = make(ExprKind::Condition, cur().offset);
      soft_ = true;
      ++i_;
      TANDEM_ASSIGN(ExprPtr test, parse_or());
      ExprPtr otherwise;
      if (is_name("else")) {
        ++i_;
        TANDEM_ASSIGN(otherwise, parse_expression());
      }
      cond->args.push_back(std::move(expr));
      cond->args.push_back(std::move(test));
      cond->args.push_back(std::move(otherwise));
      expr = std::move(cond);
    }
    soft_ = outer_soft;
    return expr;
  }

  Result<ExprPtr> binary(Op op, size_t at, ExprPtr left, ExprPtr right) {
    auto e = make(ExprKind::Binary, at);
    e->op = op;
    e->args.push_back(std::move(left));
    e->args.push_back(std::move(right));
    return e;
  }

  Result<ExprPtr> parse_or() {
    TANDEM_ASSIGN(ExprPtr left, parse_and());
    while (is_name("or")) {
      const size_t at = cur().offset;
      ++i_;
      TANDEM_ASSIGN(ExprPtr right, parse_and());
      TANDEM_ASSIGN(left, binary(Op::Or, at, std::move(left), std::move(right)));
    }
    return left;
  }

  Result<ExprPtr> parse_and() {
    TANDEM_ASSIGN(ExprPtr left, parse_not());
    while (is_name("and")) {
      const size_t at = cur().offset;
      ++i_;
      TANDEM_ASSIGN(ExprPtr right, parse_not());
      TANDEM_ASSIGN(left, binary(Op::And, at, std::move(left), std::move(right)));
    }
    return left;
  }

  Result<ExprPtr> parse_not() {
    if (!is_name("not")) return parse_compare();
    auto e = make(ExprKind::Unary, cur().offset);
    ++i_;
    if (++depth_ > kMaxNesting) return error(cur().offset, "expressions nest too deep");
    TANDEM_ASSIGN(e->object, parse_not());
    --depth_;
    e->op = Op::Not;
    return e;
  }

  Result<ExprPtr> parse_compare() {
    const size_t at = cur().offset;
    TANDEM_ASSIGN(ExprPtr first, parse_math1());
    ExprPtr cmp;
    while (true) {
      Op op = Op::None;
      if (cur().type == TokenType::Op) {
        const std::string& s = cur().text;
        op = s == "==" ? Op::Eq : s == "!=" ? Op::Ne : s == "<" ? Op::Lt : s == "<=" ? Op::Le
           : s == ">" ? Op::Gt : s == ">=" ? Op::Ge : Op::None;
        if (op != Op::None) ++i_;
      } else if (is_name("in")) {
        op = Op::In;
        ++i_;
      } else if (is_name("not") && next().type == TokenType::Name && next().text == "in") {
        op = Op::NotIn;
        i_ += 2;
      }
      if (op == Op::None) break;
      if (!cmp) {
        cmp = make(ExprKind::Compare, at);
        cmp->object = std::move(first);
      }
      cmp->ops.push_back(op);
      TANDEM_ASSIGN(ExprPtr operand, parse_math1());
      cmp->args.push_back(std::move(operand));
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  Result<ExprPtr> parse_math1() {
    TANDEM_ASSIGN(ExprPtr left, parse_concat());
    while (is_op("+") || is_op("-")) {
      const Op op = cur().text == "+" ? Op::Add : Op::Sub;
      const size_t at = cur().offset;
      ++i_;
      TANDEM_ASSIGN(ExprPtr right, parse_concat());
      TANDEM_ASSIGN(left, binary(op, at, std::move(left), std::move(right)));
    }
    return left;
  }

  Result<ExprPtr> parse_concat() {
    TANDEM_ASSIGN(ExprPtr left, parse_math2());
    while (is_op("~")) {
      const size_t at = cur().offset;
      ++i_;
      TANDEM_ASSIGN(ExprPtr right, parse_math2());
      TANDEM_ASSIGN(left, binary(Op::Concat, at, std::move(left), std::move(right)));
    }
    return left;
  }

  Result<ExprPtr> parse_math2() {
    TANDEM_ASSIGN(ExprPtr left, parse_pow());
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const std::string& s = cur().text;
      const Op op = s == "*" ? Op::Mul : s == "/" ? Op::Div : s == "//" ? Op::FloorDiv : Op::Mod;
      const size_t at = cur().offset;
      ++i_;
      TANDEM_ASSIGN(ExprPtr right, parse_pow());
      TANDEM_ASSIGN(left, binary(op, at, std::move(left), std::move(right)));
    }
    return left;
  }

  Result<ExprPtr> parse_pow() {
    TANDEM_ASSIGN(ExprPtr left, parse_unary(true));
    while (is_op("**")) {
      const size_t at = cur().offset;
      ++i_;
      TANDEM_ASSIGN(ExprPtr right, parse_unary(true));
      TANDEM_ASSIGN(left, binary(Op::Pow, at, std::move(left), std::move(right)));
    }
    return left;
  }

  // jinja2: a sign applies to the bare operand; postfix operators and filters then apply to the
  // signed value (`-x|abs` is abs(-x)).
  Result<ExprPtr> parse_unary(bool with_filter) {
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      node = make(ExprKind::Unary, cur().offset);
      node->op = cur().text == "-" ? Op::Neg : Op::Pos;
      ++i_;
      if (++depth_ > kMaxNesting) return error(cur().offset, "expressions nest too deep");
      TANDEM_ASSIGN(node->object, parse_unary(false));
      --depth_;
    } else {
      TANDEM_ASSIGN(node, parse_primary());
    }
    TANDEM_ASSIGN(node, parse_postfix(std::move(node)));
    if (with_filter) {
      TANDEM_ASSIGN(node, parse_filter_expr(std::move(node)));
    }
    return node;
  }

  Result<ExprPtr> parse_primary() {
    const Token& tok = cur();
    const size_t at = tok.offset;
    switch (tok.type) {
      case TokenType::Name: {
        ++i_;
        const std::string& n = tok.text;
        if (n == "true" || n == "True") return literal(Value(true), at);
        if (n == "false" || n == "False") return literal(Value(false), at);
        if (n == "none" || n == "None") return literal(Value::none(), at);
        auto e = make(ExprKind::Name, at);
        e->name = n;
        return e;
      }
      case TokenType::String: {
        std::string s;
        while (cur().type == TokenType::String) s += t_[i_++].text;  // adjacent literals join
        return literal(Value(std::move(s)), at);
      }
      case TokenType::Int: {
        ++i_;
        errno = 0;
        const long long v = std::strtoll(tok.text.c_str(), nullptr, 10);
        if (errno == ERANGE) return error(at, "integer literal out of 64-bit range");
        return literal(Value(static_cast<int64_t>(v)), at);
      }
      case TokenType::Float: ++i_; return literal(Value(std::strtod(tok.text.c_str(), nullptr)), at);
      case TokenType::Op:
        if (tok.text == "(") {
          ++i_;
          if (is_op(")")) {
            ++i_;
            return make(ExprKind::Tuple, at);
          }
          TANDEM_ASSIGN(ExprPtr inner, parse_tuple());
          TANDEM_TRY(expect_op(")"));
          return inner;
        }
        if (tok.text == "[" || tok.text == "{") {
          const bool is_list = tok.text == "[";
          auto e = make(is_list ? ExprKind::List : ExprKind::Dict, at);
          ++i_;
          const char* close = is_list ? "]" : "}";
          while (!is_op(close)) {
            if (!e->args.empty()) TANDEM_TRY(expect_op(","));
            if (is_op(close)) break;
            TANDEM_ASSIGN(ExprPtr item, parse_expression());
            e->args.push_back(std::move(item));
            if (!is_list) {
              TANDEM_TRY(expect_op(":"));
              TANDEM_ASSIGN(ExprPtr value, parse_expression());
              e->args.push_back(std::move(value));
            }
          }
          ++i_;
          return e;
        }
        break;
      default: break;
    }
    return unexpected();
  }

  ExprPtr literal(Value v, size_t at) {
    auto e = make(ExprKind::Literal, at);
    e->value = std::move(v);
    return e;
  }

  Result<ExprPtr> parse_postfix(ExprPtr node) {
    while (true) {
      const size_t at = cur().offset;
      if (is_op(".")) {
        ++i_;
        if (cur().type == TokenType::Int) {
          auto e = make(ExprKind::GetItem, at);
          e->object = std::move(node);
          e->args.push_back(literal(Value(static_cast<int64_t>(std::strtoll(cur().text.c_str(), nullptr, 10))), at));
          ++i_;
          node = std::move(e);
          continue;
        }
        auto e = make(ExprKind::GetAttr, at);
        TANDEM_ASSIGN(e->name, expect_name());
        e->object = std::move(node);
        node = std::move(e);
      } else if (is_op("[")) {
        ++i_;
        TANDEM_ASSIGN(node, parse_subscript(std::move(node), at));
      } else if (is_op("(")) {
        TANDEM_ASSIGN(node, parse_call(std::move(node)));
      } else {
        return node;
      }
    }
  }

  Result<ExprPtr> parse_subscript(ExprPtr object, size_t at) {
    ExprPtr parts[3];
    int n_colons = 0;
    while (!is_op("]")) {
      if (is_op(":")) {
        if (++n_colons > 2) return unexpected();
        ++i_;
        continue;
      }
      if (parts[n_colons]) return unexpected();
      TANDEM_ASSIGN(parts[n_colons], parse_expression());
    }
    ++i_;
    auto e = make(n_colons ? ExprKind::Slice : ExprKind::GetItem, at);
    e->object = std::move(object);
    if (!n_colons) {
      if (!parts[0]) return error(at, "empty subscript");
      e->args.push_back(std::move(parts[0]));
    } else {
      for (auto& p : parts) e->args.push_back(std::move(p));
    }
    return e;
  }

  Status parse_call_args(Expr& e) {
    TANDEM_TRY(expect_op("("));
    while (!is_op(")")) {
      if (!e.args.empty() || !e.kwargs.empty()) TANDEM_TRY(expect_op(","));
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) return error(cur().offset, "unsupported: *args and **kwargs in calls");
      if (cur().type == TokenType::Name && next().type == TokenType::Op && next().text == "=") {
        std::string name = t_[i_].text;
        i_ += 2;
        TANDEM_ASSIGN(ExprPtr value, parse_expression());
        e.kwargs.emplace_back(std::move(name), std::move(value));
      } else {
        if (!e.kwargs.empty()) return error(cur().offset, "positional argument follows keyword argument");
        TANDEM_ASSIGN(ExprPtr value, parse_expression());
        e.args.push_back(std::move(value));
      }
    }
    ++i_;
    return {};
  }

  Result<ExprPtr> parse_call(ExprPtr callee) {
    auto e = make(ExprKind::Call, cur().offset);
    e->object = std::move(callee);
    TANDEM_TRY(parse_call_args(*e));
    return e;
  }

  Result<ExprPtr> parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        TANDEM_ASSIGN(node, parse_filter_chain(std::move(node), true, true));
      } else if (is_name("is")) {
        TANDEM_ASSIGN(node, parse_test(std::move(node)));
      } else if (is_op("(")) {
        TANDEM_ASSIGN(node, parse_call(std::move(node)));
      } else {
        return node;
      }
    }
  }

  // `| name(args) | name ...`; in a filter block the chain starts without a `|`.
  Result<ExprPtr> parse_filter_chain(ExprPtr node, bool leading_pipe = true, bool just_one = false) {
    bool first = true;
    while (is_op("|") || (first && !leading_pipe)) {
      if (is_op("|")) ++i_;
      first = false;
      auto e = make(ExprKind::Filter, cur().offset);
      TANDEM_ASSIGN(e->name, expect_name());
      if (!is_known_filter(e->name)) {
        if (is_jinja2_filter(e->name)) return error(e->offset, "unsupported filter '" + e->name + "'");
        // jinja2 compiles a filter it does not know inside an `if` and fails only if it runs.
        if (!soft_) return error(e->offset, "no filter named '" + e->name + "'");
      }
      if (is_op("(")) TANDEM_TRY(parse_call_args(*e));
      e->object = std::move(node);
      node = std::move(e);
      if (just_one) break;
    }
    return node;
  }

  Result<ExprPtr> parse_test(ExprPtr node) {
    auto e = make(ExprKind::Test, cur().offset);
    ++i_;  // is
    if (is_name("not")) {
      e->negated = true;
      ++i_;
    }
    if (cur().type == TokenType::Op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                        cur().text == "<=" || cur().text == ">" || cur().text == ">=")) {
      e->name = t_[i_++].text;
    } else {
      TANDEM_ASSIGN(e->name, expect_name());
    }
    if (!is_known_test(e->name) && !soft_) return error(e->offset, "no test named '" + e->name + "'");
    if (is_op("(")) {
      TANDEM_TRY(parse_call_args(*e));
    } else if ((cur().type == TokenType::Name || cur().type == TokenType::String || cur().type == TokenType::Int ||
                cur().type == TokenType::Float || is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      // jinja2: one argument without parentheses (`x is divisibleby 3`, `x is sameas none`).
      if (is_name("is")) return error(cur().offset, "tests cannot be chained with 'is'");
      TANDEM_ASSIGN(ExprPtr arg, parse_primary());
      TANDEM_ASSIGN(arg, parse_postfix(std::move(arg)));
      e->args.push_back(std::move(arg));
    }
    e->object = std::move(node);
    return e;
  }

  const std::vector<Token>& t_;
  const SourceMap& map_;
  size_t i_ = 0;
  int depth_ = 0;
  int loops_ = 0;
  bool soft_ = false;  // inside an `if` (not under a loop or macro body): unknown filters fail when run
};

}  // namespace

Result<std::shared_ptr<const Program>> parse_program(std::string_view source) {
  TANDEM_ASSIGN(Lexed lexed, lex(source));
  auto program = std::make_shared<Program>(Program{SourceMap(lexed.source), {}});
  Parser parser(lexed.tokens, program->map);
  TANDEM_ASSIGN(program->body, parser.parse_template());
  return std::shared_ptr<const Program>(std::move(program));
}

}  // namespace tandem::chat
