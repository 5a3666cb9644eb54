// The subcommands of the tandem binary. Each takes the arguments after its name and returns the
// process exit code: 0 success, 1 any error (printed as "error: ..." on stderr).
#pragma once

#include "core/status.h"

namespace tandem::cli {

int info_main(int argc, char** argv);
int verify_main(int argc, char** argv);
int synth_main(int argc, char** argv);
int run_main(int argc, char** argv);
int bench_main(int argc, char** argv);
int tokenize_main(int argc, char** argv);

// Prints "error: <message>" and returns 1.
int fail(const Status& status);

}  // namespace tandem::cli
