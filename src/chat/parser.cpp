// Jinja statements: text, {{ }}, and the {% %} tags (if, for, set, macro, call, filter, with,
// generation, break/continue). Anything outside the supported language is refused here, with its
// line and column.
#include "chat/builtins.h"
#include "chat/parser.h"

namespace tandem::chat {

Result<Body> Parser::parse_template() {
  TANDEM_ASSIGN(Body body, parse_body({}));
  if (cur().type != TokenType::Eof) return error(cur().offset, "unexpected '" + peek_name() + "' tag");
  return body;
}

Result<Body> Parser::parse_body(std::initializer_list<const char*> ends) {
  if (++depth_ > kMaxNesting) return error(cur().offset, format("blocks nest deeper than %d", kMaxNesting));
  Body body;
  while (true) {
    const Token& tok = cur();
    if (tok.type == TokenType::Eof) {
      // The block's closing tag (the last of `ends`; the others only continue it).
      if (ends.size()) return error(tok.offset, format("unexpected end of template: expected '%s'", *(ends.end() - 1)));
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

Result<NodePtr> Parser::parse_statement() {
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

Result<Target> Parser::parse_target(bool allow_attr) {
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

Result<std::vector<MacroParam>> Parser::parse_params() {
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

Result<std::shared_ptr<const Program>> parse_program(std::string_view source) {
  TANDEM_ASSIGN(Lexed lexed, lex(source));
  auto program = std::make_shared<Program>(Program{SourceMap(lexed.source), {}});
  Parser parser(lexed.tokens, program->map);
  TANDEM_ASSIGN(program->body, parser.parse_template());
  return std::shared_ptr<const Program>(std::move(program));
}

}  // namespace tandem::chat
