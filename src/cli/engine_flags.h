// The flags of engine/engine.h's settings, as llama.cpp spells them: model and engine flags (-m, -t,
// -c, -b, -ub, -ngl, -fa, -ctk, ...) and sampling flags (--temp, --top-k, ..., -l).
#pragma once

#include "cli/args.h"
#include "engine/engine.h"

namespace tandem::cli {

void add_engine_flags(ArgParser& args, EngineFlags& f);
// The placement flags alone (-ngl, -ot, --cpu-moe, --n-cpu-moe, -ts, -sm, -mg, -nkvo, -dev), for plan;
// add_engine_flags includes them.
void add_placement_flags(ArgParser& args, EngineFlags& f);
void add_sampling_flags(ArgParser& args, SamplingFlags& f);

}  // namespace tandem::cli
