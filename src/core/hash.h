// File checksums with OpenSSL's libcrypto (SHA-256, MD5), streamed at disk speed: a reader thread
// fills one buffer while the caller's thread hashes the other, and for files larger than half
// of RAM, pages already hashed are dropped from the page cache so a 400 GB model evicts nothing else.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace tandem {

enum class HashAlgorithm { Sha256, Md5 };

const char* hash_name(HashAlgorithm a);
size_t hash_hex_length(HashAlgorithm a);  // 64 or 32

// Hex digests of `path`, one per requested algorithm, in one pass over the file.
// on_bytes(n) is called after each chunk (for progress bars).
Result<std::vector<std::string>> hash_file(const std::string& path, const std::vector<HashAlgorithm>& algorithms,
                                           const std::function<void(uint64_t)>& on_bytes = {});

// Hex digest of a text (cache keys, fingerprints).
std::string hash_text(HashAlgorithm a, std::string_view text);

}  // namespace tandem
