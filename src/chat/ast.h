// The parsed template: expression and statement nodes, built once by parser.cpp and only read by
// the renderer (so one Template renders from many threads). Internal to src/chat.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "chat/lexer.h"
#include "chat/value.h"

namespace tandem::chat {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind {
  Literal,    // value
  Name,       // name
  List,       // args: items
  Tuple,      // args: items (a list at run time; a target list in set/for)
  Dict,       // args: key, value, key, value...
  GetAttr,    // object . name
  GetItem,    // object [ args[0] ]
  Slice,      // object [ start : stop : step ]: args (null when omitted)
  Call,       // object ( args, kwargs )
  Filter,     // object | name ( args, kwargs ); object null inside {% filter %}
  Test,       // object is [not] name ( args, kwargs )
  Unary,      // op: Not, Neg, Pos; object
  Binary,     // op; args[0], args[1]
  Compare,    // object, then ops[i] against args[i] (Python's chained comparisons)
  Condition,  // args: then, condition, else (else may be null)
};

enum class Op { None, Not, Neg, Pos, Add, Sub, Mul, Div, FloorDiv, Mod, Pow, Concat, And, Or,
                Eq, Ne, Lt, Le, Gt, Ge, In, NotIn };

struct Expr {
  ExprKind kind;
  size_t offset = 0;  // in the source, for messages
  Op op = Op::None;
  bool negated = false;  // Test: `is not`
  Value value;         // Literal
  std::string name;    // Name, GetAttr, Filter, Test
  ExprPtr object;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<Op> ops;  // Compare
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

enum class NodeKind { Text, Output, If, For, Set, SetBlock, Macro, CallBlock, FilterBlock, With, Break, Continue, Scope };

// A target of set/for: a name, a tuple of names, or `ns.attr` (set only).
struct Target {
  std::vector<std::string> names;  // one name, or the names of a tuple
  bool tuple = false;
  std::string attr;  // `set ns.attr = ...`: names[0] is the namespace
};

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // null: required
};

struct Node {
  NodeKind kind = NodeKind::Scope;
  size_t offset = 0;
  std::string text;                         // Text; Macro: name
  ExprPtr expr;                             // Output, Set, For (iterable), CallBlock (the call), FilterBlock (filter chain)
  ExprPtr condition;                        // For: `if` filter
  Target target;                            // Set, SetBlock, For
  std::vector<std::pair<ExprPtr, Body>> branches;  // If: condition, body
  Body body;                                // For, SetBlock, Macro, CallBlock, FilterBlock, With, Scope
  Body else_body;                           // If, For
  std::vector<MacroParam> params;           // Macro; CallBlock: caller's parameters
  std::vector<std::pair<std::string, ExprPtr>> assignments;  // With
  bool recursive = false;                   // For
};

// A parsed template: its statements and the map from offsets to line and column for messages.
struct Program {
  SourceMap map;
  Body body;
};

Result<std::shared_ptr<const Program>> parse_program(std::string_view source);

}  // namespace tandem::chat
