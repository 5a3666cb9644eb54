// Jinja expressions, by jinja2's precedence from the loosest: conditional, or, and, not, comparisons,
// + -, ~, * / // %, **, unary sign, then primaries with postfix . [] () and filters/tests.
#include <cerrno>
#include <cstdlib>

#include "chat/builtins.h"
#include "chat/parser.h"

namespace tandem::chat {

Result<ExprPtr> Parser::parse_tuple(bool with_condexpr) {
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

Result<ExprPtr> Parser::parse_expression(bool with_condexpr) {
  if (++depth_ > kMaxNesting) return error(cur().offset, format("expressions nest deeper than %d", kMaxNesting));
  auto r = with_condexpr ? parse_condexpr() : parse_or();
  --depth_;
  return r;
}

Result<ExprPtr> Parser::parse_condexpr() {
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

Result<ExprPtr> Parser::parse_or() {
  TANDEM_ASSIGN(ExprPtr left, parse_and());
  while (is_name("or")) {
    const size_t at = cur().offset;
    ++i_;
    TANDEM_ASSIGN(ExprPtr right, parse_and());
    TANDEM_ASSIGN(left, binary(Op::Or, at, std::move(left), std::move(right)));
  }
  return left;
}

Result<ExprPtr> Parser::parse_and() {
  TANDEM_ASSIGN(ExprPtr left, parse_not());
  while (is_name("and")) {
    const size_t at = cur().offset;
    ++i_;
    TANDEM_ASSIGN(ExprPtr right, parse_not());
    TANDEM_ASSIGN(left, binary(Op::And, at, std::move(left), std::move(right)));
  }
  return left;
}

Result<ExprPtr> Parser::parse_not() {
  if (!is_name("not")) return parse_compare();
  auto e = make(ExprKind::Unary, cur().offset);
  ++i_;
  if (++depth_ > kMaxNesting) return error(cur().offset, "expressions nest too deep");
  TANDEM_ASSIGN(e->object, parse_not());
  --depth_;
  e->op = Op::Not;
  return e;
}

Result<ExprPtr> Parser::parse_compare() {
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

Result<ExprPtr> Parser::parse_math1() {
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

Result<ExprPtr> Parser::parse_concat() {
  TANDEM_ASSIGN(ExprPtr left, parse_math2());
  while (is_op("~")) {
    const size_t at = cur().offset;
    ++i_;
    TANDEM_ASSIGN(ExprPtr right, parse_math2());
    TANDEM_ASSIGN(left, binary(Op::Concat, at, std::move(left), std::move(right)));
  }
  return left;
}

Result<ExprPtr> Parser::parse_math2() {
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

Result<ExprPtr> Parser::parse_pow() {
  TANDEM_ASSIGN(ExprPtr left, parse_unary(true));
  while (is_op("**")) {
    const size_t at = cur().offset;
    ++i_;
    TANDEM_ASSIGN(ExprPtr right, parse_unary(true));
    TANDEM_ASSIGN(left, binary(Op::Pow, at, std::move(left), std::move(right)));
  }
  return left;
}

Result<ExprPtr> Parser::parse_unary(bool with_filter) {
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

Result<ExprPtr> Parser::parse_primary() {
  const Token& tok = cur();
  const size_t at = tok.offset;
  switch (tok.type) {
    case TokenType::Name: {
      ++i_;
      const std::string& n = tok.text;
      if (n == "true" || n == "True") return literal(Value(true), at);
      if (n == "false" || n == "False") return literal(Value(false), at);
      if (n == "none" || n == "None") return literal(Value::none(), at);
      if (n == "cycler" || n == "joiner" || n == "lipsum")  // jinja2 globals Tandem lacks: refuse, never misrender
        return error(at, "unsupported global '" + n + "'");
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

Result<ExprPtr> Parser::parse_postfix(ExprPtr node) {
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

Result<ExprPtr> Parser::parse_subscript(ExprPtr object, size_t at) {
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

Status Parser::parse_call_args(Expr& e) {
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

Result<ExprPtr> Parser::parse_call(ExprPtr callee) {
  auto e = make(ExprKind::Call, cur().offset);
  e->object = std::move(callee);
  TANDEM_TRY(parse_call_args(*e));
  return e;
}

Result<ExprPtr> Parser::parse_filter_expr(ExprPtr node) {
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

Result<ExprPtr> Parser::parse_filter_chain(ExprPtr node, bool leading_pipe, bool just_one) {
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

Result<ExprPtr> Parser::parse_test(ExprPtr node) {
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

}  // namespace tandem::chat
