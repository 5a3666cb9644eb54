// Command-line parsing for the subcommands: an option table that also renders --help.
// Hand-written because llama.cpp's flags (-ngl, -ctk, -fa on) don't fit getopt-style libraries;
// both "--flag value" and "--flag=value" are accepted; an unknown flag is always an error.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/on_off_auto.h"
#include "core/status.h"

namespace tandem::cli {

class ArgParser {
 public:
  ArgParser(std::string command, std::string usage, std::string summary)
      : command_(std::move(command)), usage_(std::move(usage)), summary_(std::move(summary)) {}

  // names: "-m,--model". A flag takes no value.
  void flag(const std::string& names, const std::string& help, bool* out);
  void string(const std::string& names, const std::string& value_name, const std::string& help, std::string* out);
  void integer(const std::string& names, const std::string& value_name, const std::string& help, int64_t* out,
               int64_t min, int64_t max);
  void custom(const std::string& names, const std::string& value_name, const std::string& help,
              std::function<Status(std::string_view)> set);
  // A flag whose value may be left out: "-fa" alone means `implied`; "-fa off" takes the next argument
  // only if `is_value` accepts it (llama.cpp's older and newer spellings of the same flag).
  void optional_value(const std::string& names, const std::string& value_name, const std::string& implied,
                      const std::string& help, std::function<bool(std::string_view)> is_value,
                      std::function<Status(std::string_view)> set);
  // A pair of flags without values, as llama.cpp's "--warmup / --no-warmup": the first sets *out, the
  // second clears it.
  void toggle(const std::string& on_names, const std::string& off_names, const std::string& help, bool* out);
  // llama-bench's value lists for an option registered earlier (by any of its names): its value is cut
  // at commas (integers may also be ranges, see split_list) and the items are appended to *items; the
  // option's own setter no longer runs at parse time: the caller checks and applies each item with set().
  void collect_list(const std::string& name, bool int_ranges, std::vector<std::string>* items);
  // Runs a registered option's setter on one value, as if "name value" had been given.
  Status set(const std::string& name, std::string_view value) const;
  void positional(const std::string& name, const std::string& help, std::string* out, bool required);

  // Fills the outputs; `help_requested()` is set by -h/--help (then nothing else is checked).
  Status parse(int argc, char** argv);
  bool help_requested() const { return help_; }
  std::string help() const;

 private:
  struct Option {
    std::vector<std::string> names;
    std::string value_name;  // empty: a flag
    std::string help;
    std::function<Status(std::string_view)> set;
    std::function<bool(std::string_view)> is_value = {};  // set: the value may be omitted (then `implied`)
    std::string implied = {};
    std::function<Status(std::string_view)> single = {};  // collect_list: the setter of one item
  };
  struct Positional {
    std::string name, help;
    std::string* out;
    bool required;
  };
  Option* find(std::string_view name);
  std::string closest_flag(std::string_view name) const;
  const Option* find(std::string_view name) const;

  std::string command_, usage_, summary_;
  std::vector<Option> options_;
  std::vector<Positional> positionals_;
  bool help_ = false;
};

// llama.cpp's spellings of a yes/no value (common/arg.cpp is_truthy / is_falsey): on, enabled, true, 1
// and off, disabled, false, 0; also yes and no. Anything else is an error listing them.
Result<bool> parse_bool(std::string_view text);
// A value that may also be "auto": llama.cpp's -fa, whose is_autoy also takes -1.
Result<OnOffAuto> parse_on_off_auto(std::string_view text);
bool is_on_off_auto(std::string_view text);
const char* on_off_auto_name(OnOffAuto v);
// llama-bench's lists (tools/llama-bench/llama-bench.cpp): "a,b,c". With int_ranges, an item may be a
// range first-last, first-last+step or first-last*step (parse_int_range there), expanded in place; the
// first number may be negative ("-1,0").
Result<std::vector<std::string>> split_list(std::string_view text, bool int_ranges);

// Parses sizes like "4096", "512M", "2G", "1.5GB" (binary units) into bytes: digits with an optional
// fraction (not of a byte), then K, M, G or T; at most 1 PiB. Anything else is one "not a size" error.
Result<uint64_t> parse_size(std::string_view text);
Result<int64_t> parse_int(std::string_view text, int64_t min, int64_t max);

}  // namespace tandem::cli
