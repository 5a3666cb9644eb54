// libFuzzer target for the GGUF parser: any byte string must parse or fail with a Status, never
// crash, hang or allocate beyond what the input justifies (run with -rss_limit_mb).
#include <cstddef>
#include <cstdint>

#include "gguf/gguf_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = tandem::gguf::GgufFile::from_bytes({data, size}, "fuzz.gguf");
  if (file.has_value()) {
    // Touch what a later stage would: every tensor's first and last byte, every metadata rendering.
    volatile uint8_t sink = 0;
    for (const auto& t : (*file)->tensors())
      if (t.size_bytes) sink = sink ^ t.data[0] ^ t.data[t.size_bytes - 1];
    for (const auto& [key, value] : (*file)->metadata().entries()) (void)value.to_string();
  }
  return 0;
}
