// The Jinja parser: statements in parser.cpp, expressions in parse_expr.cpp, with jinja2/parser.py's
// grammar and operator precedence. Internal to src/chat; parse_program (ast.h) is its entry point.
#pragma once

#include <initializer_list>
#include <string>
#include <vector>

#include "chat/ast.h"

namespace tandem::chat {

constexpr int kMaxNesting = 128;  // expression and block nesting: bounds the recursion of parse and render

class Parser {
 public:
  Parser(const std::vector<Token>& tokens, const SourceMap& map) : t_(tokens), map_(map) {}

  Result<Body> parse_template();

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
  Result<Body> parse_body(std::initializer_list<const char*> ends);

  Result<NodePtr> parse_statement();

  // `name`, `a, b`, `(a, b)`, or with `allow_attr`, `ns.attr`.
  Result<Target> parse_target(bool allow_attr);

  // `(a, b=default, ...)` of a macro or a call block's caller.
  Result<std::vector<MacroParam>> parse_params();

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
  Result<ExprPtr> parse_tuple(bool with_condexpr = true);

  Result<ExprPtr> parse_expression(bool with_condexpr = true);

  Result<ExprPtr> parse_condexpr();

  Result<ExprPtr> binary(Op op, size_t at, ExprPtr left, ExprPtr right) {
    auto e = make(ExprKind::Binary, at);
    e->op = op;
    e->args.push_back(std::move(left));
    e->args.push_back(std::move(right));
    return e;
  }

  Result<ExprPtr> parse_or();

  Result<ExprPtr> parse_and();

  Result<ExprPtr> parse_not();

  Result<ExprPtr> parse_compare();

  Result<ExprPtr> parse_math1();

  Result<ExprPtr> parse_concat();

  Result<ExprPtr> parse_math2();

  Result<ExprPtr> parse_pow();

  // jinja2: a sign applies to the bare operand; postfix operators and filters then apply to the
  // signed value (`-x|abs` is abs(-x)).
  Result<ExprPtr> parse_unary(bool with_filter);

  Result<ExprPtr> parse_primary();

  ExprPtr literal(Value v, size_t at) {
    auto e = make(ExprKind::Literal, at);
    e->value = std::move(v);
    return e;
  }

  Result<ExprPtr> parse_postfix(ExprPtr node);

  Result<ExprPtr> parse_subscript(ExprPtr object, size_t at);

  Status parse_call_args(Expr& e);

  Result<ExprPtr> parse_call(ExprPtr callee);

  Result<ExprPtr> parse_filter_expr(ExprPtr node);

  // `| name(args) | name ...`; in a filter block the chain starts without a `|`.
  Result<ExprPtr> parse_filter_chain(ExprPtr node, bool leading_pipe = true, bool just_one = false);

  Result<ExprPtr> parse_test(ExprPtr node);

  const std::vector<Token>& t_;
  const SourceMap& map_;
  size_t i_ = 0;
  int depth_ = 0;
  int loops_ = 0;
  bool soft_ = false;  // inside an `if` (not under a loop or macro body): unknown filters fail when run
};

}  // namespace tandem::chat
