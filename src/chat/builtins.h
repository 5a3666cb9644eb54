// jinja2's built-in filters and tests, and the methods of str/dict/list that templates call, over
// template values. Internal to src/chat: the parser checks names, the renderer calls them.
#pragma once

#include <string_view>

#include "chat/value.h"

namespace tandem::chat {

bool is_known_filter(std::string_view name);
// jinja2 3.1's own filters, including those Tandem lacks (filesizeformat, groupby, pprint, random,
// slice, striptags, truncate, urlencode, urlize, wordwrap, xmlattr).
bool is_jinja2_filter(std::string_view name);
bool is_known_test(std::string_view name);

// Errors carry the message alone; the renderer adds the line and column.
Result<Value> apply_filter(std::string_view name, const Value& input, const CallArgs& args);
Result<bool> apply_test(std::string_view name, const Value& input, const CallArgs& args);

// `obj.name` as jinja2's sandbox resolves it: a method of str/dict (bound to obj), a dict key, a
// namespace attribute; an undefined value (carrying the message jinja2 would give) otherwise.
// Only an undefined `obj` is an error.
Result<Value> get_attribute(const Value& obj, std::string_view name);
// `obj[key]`: dict keys, list and str indexes (negative from the end), then attributes.
Result<Value> get_item(const Value& obj, const Value& key);

// Python's `item in container`.
Result<bool> contains(const Value& container, const Value& item);

// Python's printf-style `fmt % args` for %s, %r, %d, %i and %% (other conversions are refused).
// allow_unused: Python's rule for a mapping-like argument (a list or dict): no error if unused.
Result<std::string> printf_format(const std::string& fmt, const List& args, bool allow_unused);

// Python's str.strip family on whitespace or on a set of characters (code points).
std::string strip_chars(std::string_view s, const Value* chars, bool left, bool right);

}  // namespace tandem::chat
