// A setting that may also be left to the program: llama.cpp's -fa on|off|auto. Parsing lives with
// the command line (cli/args.h); the engine only reads the value.
#pragma once

namespace tandem {

enum class OnOffAuto { Off, On, Auto };

}  // namespace tandem
