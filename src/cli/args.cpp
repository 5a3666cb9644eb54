// ArgParser implementation and value parsers.
#include "cli/args.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace tandem::cli {
namespace {

std::vector<std::string> split_names(const std::string& names) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= names.size()) {
    const size_t comma = names.find(',', start);
    const size_t end = comma == std::string::npos ? names.size() : comma;
    if (end > start) out.push_back(names.substr(start, end - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// "-fa", "--model"; not "-1" (a negative number) nor "-" alone.
bool looks_like_flag(std::string_view a) { return a.size() > 1 && a[0] == '-' && !(a[1] >= '0' && a[1] <= '9'); }

// "a,b,,c" -> {"a", "b", "", "c"}: empty items are kept so the caller can refuse them.
std::vector<std::string> split_names_keep_empty(std::string_view text) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t comma = text.find(',', start);
    out.emplace_back(text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (comma == std::string_view::npos) return out;
    start = comma + 1;
  }
}

}  // namespace

Result<int64_t> parse_int(std::string_view text, int64_t min, int64_t max) {
  const std::string s(text);
  if (s.empty()) return invalid_argument("expected an integer, got an empty value");
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno == ERANGE || end == s.c_str() || *end != '\0')
    return invalid_argument("'%s' is not an integer", s.c_str());
  if (v < min || v > max)
    return invalid_argument("%lld is out of range [%lld, %lld]", v, (long long)min, (long long)max);
  return int64_t(v);
}

Result<bool> parse_bool(std::string_view text) {
  for (const char* t : {"on", "enabled", "true", "1", "yes"})
    if (text == t) return true;
  for (const char* f : {"off", "disabled", "false", "0", "no"})
    if (text == f) return false;
  return invalid_argument("'%.*s' is not a yes/no value (on, enabled, true, 1, yes / off, disabled, false, 0, no)",
                          int(text.size()), text.data());
}

Result<OnOffAuto> parse_on_off_auto(std::string_view text) {
  if (text == "auto" || text == "-1") return OnOffAuto::Auto;
  auto b = parse_bool(text);
  if (!b)
    return invalid_argument("'%.*s' is not on, off or auto (also: enabled, true, 1, yes / disabled, false, 0, no / -1)",
                            int(text.size()), text.data());
  return *b ? OnOffAuto::On : OnOffAuto::Off;
}

bool is_on_off_auto(std::string_view text) { return parse_on_off_auto(text).has_value(); }

const char* on_off_auto_name(OnOffAuto v) {
  switch (v) {
    case OnOffAuto::Off: return "off";
    case OnOffAuto::On: return "on";
    case OnOffAuto::Auto: return "auto";
  }
  return "?";
}

Result<std::vector<std::string>> split_list(std::string_view text, bool int_ranges) {
  std::vector<std::string> out;
  for (const std::string& item : split_names_keep_empty(text)) {
    if (item.empty()) return invalid_argument("'%.*s' has an empty item", int(text.size()), text.data());
    // first-last[(+|*)step]: the '-' that separates first from last is the first one after a digit.
    const size_t dash = item.find('-', 1);
    if (!int_ranges || dash == std::string::npos) {
      out.push_back(item);
      continue;
    }
    const size_t op_at = item.find_first_of("+*", dash);
    TANDEM_ASSIGN(const int64_t first, parse_int(item.substr(0, dash), INT32_MIN, INT32_MAX));
    TANDEM_ASSIGN(const int64_t last, parse_int(item.substr(dash + 1, op_at - dash - 1), 0, INT32_MAX));
    int64_t step = 1;
    if (op_at != std::string::npos) {
      TANDEM_ASSIGN(step, parse_int(item.substr(op_at + 1), 1, INT32_MAX));
    }
    const char op = op_at == std::string::npos ? '+' : item[op_at];
    if (last < first) return invalid_argument("'%s' is an empty range", item.c_str());
    for (int64_t v = first; v <= last;) {
      out.push_back(std::to_string(v));
      const int64_t next = op == '+' ? v + step : v * step;
      if (next <= v) return invalid_argument("'%s' is not an increasing range", item.c_str());
      if (out.size() > 10000) return invalid_argument("'%s' has more than 10000 values", item.c_str());
      v = next;
    }
  }
  return out;
}

Result<uint64_t> parse_size(std::string_view text) {
  // One message for every way a size can be wrong, so that each flag taking one says the same.
  const std::string s(text);
  auto not_a_size = [&] {
    return invalid_argument("'%s' is not a size (examples: 4096, 512M, 1.5G; units K, M, G, T; at most 1024T)", s.c_str());
  };
  // Digits with an optional decimal fraction: strtod would also take exponents, hex, signs, "inf".
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  const size_t n_int = i;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  }
  if (n_int == 0 || s[i - 1] == '.') return not_a_size();
  const bool fraction = i > n_int;
  std::string unit = s.substr(i);
  for (char& c : unit) c = char(std::toupper(static_cast<unsigned char>(c)));
  if (unit.size() >= 2 && unit.back() == 'B') unit.pop_back();
  if (unit.size() >= 2 && unit.back() == 'I') unit.pop_back();  // "GiB"
  double scale = 1;
  if (unit.empty()) scale = 1;
  else if (unit == "K") scale = 1024.0;
  else if (unit == "M") scale = 1024.0 * 1024;
  else if (unit == "G") scale = 1024.0 * 1024 * 1024;
  else if (unit == "T") scale = 1024.0 * 1024 * 1024 * 1024;
  else return not_a_size();
  if (fraction && unit.empty()) return not_a_size();  // a fraction of a byte
  const double bytes = std::strtod(s.substr(0, i).c_str(), nullptr) * scale;
  // 1 PiB: more than any machine this plans for; far larger values are typos (100000T for 100000M).
  if (bytes > 1024.0 * 1024 * 1024 * 1024 * 1024) return not_a_size();
  return uint64_t(bytes);
}

void ArgParser::flag(const std::string& names, const std::string& help, bool* out) {
  options_.push_back({split_names(names), "", help, [out](std::string_view) {
                        *out = true;
                        return Status::ok();
                      }});
}

void ArgParser::string(const std::string& names, const std::string& value_name, const std::string& help,
                       std::string* out) {
  options_.push_back({split_names(names), value_name, help, [out](std::string_view v) {
                        *out = std::string(v);
                        return Status::ok();
                      }});
}

void ArgParser::integer(const std::string& names, const std::string& value_name, const std::string& help,
                        int64_t* out, int64_t min, int64_t max) {
  options_.push_back({split_names(names), value_name, help, [out, min, max](std::string_view v) {
                        TANDEM_ASSIGN(*out, parse_int(v, min, max));
                        return Status::ok();
                      }});
}

void ArgParser::custom(const std::string& names, const std::string& value_name, const std::string& help,
                       std::function<Status(std::string_view)> set) {
  options_.push_back({split_names(names), value_name, help, std::move(set)});
}

void ArgParser::optional_value(const std::string& names, const std::string& value_name, const std::string& implied,
                               const std::string& help, std::function<bool(std::string_view)> is_value,
                               std::function<Status(std::string_view)> set) {
  options_.push_back({split_names(names), "[" + value_name + "]", help, std::move(set), std::move(is_value), implied});
}

void ArgParser::toggle(const std::string& on_names, const std::string& off_names, const std::string& help,
                       bool* out) {
  options_.push_back({split_names(on_names), "", help, [out](std::string_view) {
                        *out = true;
                        return Status::ok();
                      }});
  options_.push_back({split_names(off_names), "", "the opposite of " + split_names(on_names).back(),
                      [out](std::string_view) {
                        *out = false;
                        return Status::ok();
                      }});
}

void ArgParser::collect_list(const std::string& name, bool int_ranges, std::vector<std::string>* items) {
  Option* o = find(name);
  TANDEM_CHECK(o && !o->value_name.empty());
  o->single = std::move(o->set);
  o->set = [int_ranges, items](std::string_view v) {
    TANDEM_ASSIGN(const std::vector<std::string> list, split_list(v, int_ranges));
    items->insert(items->end(), list.begin(), list.end());
    return Status::ok();
  };
}

Status ArgParser::set(const std::string& name, std::string_view value) const {
  const Option* o = find(name);
  TANDEM_CHECK(o != nullptr);
  if (Status s = (o->single ? o->single : o->set)(value); !s.is_ok())
    return invalid_argument("%s: %s: %s", command_.c_str(), name.c_str(), s.message().c_str());
  return Status::ok();
}

void ArgParser::positional(const std::string& name, const std::string& help, std::string* out, bool required) {
  positionals_.push_back({name, help, out, required});
}

ArgParser::Option* ArgParser::find(std::string_view name) {
  for (Option& o : options_)
    for (const std::string& n : o.names)
      if (n == name) return &o;
  return nullptr;
}

const ArgParser::Option* ArgParser::find(std::string_view name) const {
  return const_cast<ArgParser*>(this)->find(name);
}

// " (did you mean --port?)" for the known name with the fewest edits, when it is close enough to be
// a typo; empty otherwise.
std::string ArgParser::closest_flag(std::string_view name) const {
  // Edits between two names, a swap of neighbours counting as one (optimal string alignment: typos
  // like --prot for --port are swaps).
  auto distance = [](std::string_view a, std::string_view b) {
    std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
    for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
    for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
    for (size_t i = 1; i <= a.size(); ++i)
      for (size_t j = 1; j <= b.size(); ++j) {
        d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
        if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    return d[a.size()][b.size()];
  };
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const Option& o : options_)
    for (const std::string& n : o.names)
      if (const size_t d = distance(name, n); d < best_d) best_d = d, best = n;
  if (best.empty() || best_d > std::max<size_t>(2, name.size() / 3)) return "";
  return " (did you mean " + best + "?)";
}

Status ArgParser::parse(int argc, char** argv) {
  for (int i = 0; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      help_ = true;
      return Status::ok();
    }
  }
  size_t n_positional = 0;
  bool only_positionals = false;
  for (int i = 0; i < argc; ++i) {
    std::string_view a = argv[i];
    if (!only_positionals && a == "--") {
      only_positionals = true;
      continue;
    }
    if (only_positionals || !looks_like_flag(a)) {
      if (n_positional >= positionals_.size())
        return invalid_argument("%s: unexpected argument '%s' (see 'tandem %s --help')", command_.c_str(),
                                argv[i], command_.c_str());
      *positionals_[n_positional++].out = std::string(a);
      continue;
    }
    std::string_view name = a, inline_value;
    bool has_inline = false;
    if (const size_t eq = a.find('='); eq != std::string_view::npos && a.substr(0, 2) == "--") {
      name = a.substr(0, eq);
      inline_value = a.substr(eq + 1);
      has_inline = true;
    }
    const Option* o = find(name);
    if (!o)
      return invalid_argument("%s: unknown flag '%.*s'%s (see 'tandem %s --help')", command_.c_str(),
                              int(name.size()), name.data(), closest_flag(name).c_str(), command_.c_str());
    std::string_view value;
    if (!o->value_name.empty()) {
      if (has_inline) {
        value = inline_value;
      } else if (o->is_value) {
        // Without positional arguments to confuse it with, a next argument that is no flag is the value,
        // so "-fa maybe" names -fa in its error instead of calling "maybe" an unexpected argument.
        const bool next_is_value = i + 1 < argc && (o->is_value(argv[i + 1]) ||
                                                    (positionals_.empty() && !looks_like_flag(argv[i + 1])));
        value = next_is_value ? std::string_view(argv[++i]) : std::string_view(o->implied);
      } else {
        if (i + 1 >= argc)
          return invalid_argument("%s: flag '%.*s' needs a value (%s)", command_.c_str(), int(name.size()),
                                  name.data(), o->value_name.c_str());
        value = argv[++i];
      }
    } else if (has_inline) {
      return invalid_argument("%s: flag '%.*s' takes no value", command_.c_str(), int(name.size()), name.data());
    }
    if (Status s = o->set(value); !s.is_ok())
      return invalid_argument("%s: %.*s: %s", command_.c_str(), int(name.size()), name.data(), s.message().c_str());
  }
  for (size_t i = n_positional; i < positionals_.size(); ++i)
    if (positionals_[i].required)
      return invalid_argument("%s: missing %s (usage: %s)", command_.c_str(), positionals_[i].name.c_str(),
                              usage_.c_str());
  return Status::ok();
}

std::string ArgParser::help() const {
  std::string out = "usage: " + usage_ + "\n\n" + summary_ + "\n";
  if (!positionals_.empty()) {
    out += "\narguments:\n";
    for (const auto& p : positionals_) out += format("  %-28s %s\n", p.name.c_str(), p.help.c_str());
  }
  out += "\noptions:\n";
  for (const Option& o : options_) {
    std::string left;
    for (size_t i = 0; i < o.names.size(); ++i) left += (i ? ", " : "") + o.names[i];
    if (!o.value_name.empty()) left += " " + o.value_name;
    if (left.size() > 28) out += "  " + left + "\n  " + std::string(29, ' ');
    else out += format("  %-28s ", left.c_str());
    // Continuation lines of a long help text line up under its first line.
    std::string help = o.help;
    for (size_t pos = 0; (pos = help.find('\n', pos)) != std::string::npos; pos += 31) help.insert(pos + 1, 31, ' ');
    out += help + "\n";
  }
  out += format("  %-28s %s\n", "-h, --help", "show this help and exit");
  return out;
}

}  // namespace tandem::cli
