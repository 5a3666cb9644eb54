// Command-line parsing for the subcommands: an option table that also renders --help.
// Hand-written because llama.cpp's flags (-ngl, -ctk, -fa on) don't fit getopt-style libraries;
// both "--flag value" and "--flag=value" are accepted; an unknown flag is always an error.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

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
  // only if it is one of `values` (llama.cpp's older and newer spellings of the same flag).
  void optional_value(const std::string& names, const std::vector<std::string>& values, const std::string& implied,
                      const std::string& help, std::function<Status(std::string_view)> set);
  void positional(const std::string& name, const std::string& help, std::string* out, bool required);
  void epilog(std::string text) { epilog_ = std::move(text); }

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
    std::vector<std::string> optional_values;  // non-empty: the value may be omitted
    std::string implied;
  };
  struct Positional {
    std::string name, help;
    std::string* out;
    bool required;
  };
  const Option* find(std::string_view name) const;

  std::string command_, usage_, summary_, epilog_;
  std::vector<Option> options_;
  std::vector<Positional> positionals_;
  bool help_ = false;
};

// Parses sizes like "4096", "512M", "2G", "1.5GB" (binary units) into bytes.
Result<uint64_t> parse_size(std::string_view text);
Result<int64_t> parse_int(std::string_view text, int64_t min, int64_t max);

}  // namespace tandem::cli
