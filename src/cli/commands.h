// The subcommands of the tandem binary. Each takes the arguments after its name and returns the
// process exit code: 0 success, 1 any error (printed as "error: ..." on stderr).
#pragma once

#include <optional>

#include "core/status.h"

namespace tandem::cli {

int info_main(int argc, char** argv);
int verify_main(int argc, char** argv);
int synth_main(int argc, char** argv);
int run_main(int argc, char** argv);
int bench_main(int argc, char** argv);
int quantize_main(int argc, char** argv);
int tokenize_main(int argc, char** argv);
int perplexity_main(int argc, char** argv);
int plan_main(int argc, char** argv);
int probe_main(int argc, char** argv);
int serve_main(int argc, char** argv);
int top_main(int argc, char** argv);

// Prints "error: <message>" and returns 1.
int fail(const Status& status);

class ArgParser;
// Parses a subcommand's arguments; returns the exit code when the command is already done (--help
// printed: 0; bad arguments reported: 1), nothing when it should run.
std::optional<int> parse_command_line(ArgParser& args, int argc, char** argv);

}  // namespace tandem::cli
