// Named quantization mixes (llama.cpp's "file types": Q4_K_M, Q6_K, Q8_0, ...) and the per-tensor
// type each mix gives, following llama.cpp's choices (src/llama-quant.cpp) so `synth` and `quantize`
// write files whose tensor types match llama-quantize's for the same model and mix.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "gguf/types.h"

namespace tandem::quant {

// Values are llama.cpp's LLAMA_FTYPE_* (stored as general.file_type).
enum class FileType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 7, Q5_0 = 8, Q5_1 = 9, Q2_K = 10, Q3_K_S = 11,
  Q3_K_M = 12, Q3_K_L = 13, Q4_K_S = 14, Q4_K_M = 15, Q5_K_S = 16, Q5_K_M = 17, Q6_K = 18,
  Q2_K_S = 21, IQ4_NL = 25, IQ4_XS = 30, BF16 = 32,
};

// "Q4_K_M", "q4_k_m", "F16", ... and llama-quantize's aliases Q3_K, Q4_K, Q5_K (the _M mixes), or
// the llama_ftype number ("15"); nullopt for names and numbers not listed above.
std::optional<FileType> parse_file_type(std::string_view name);
std::string_view file_type_name(FileType t);
std::string file_type_names();  // for --help and error messages: "F32, F16, BF16, Q4_0, ..."
// The mix's main type (Q4_K for Q4_K_M, ...).
WeightType base_type(FileType t);

// What the choice depends on, besides the tensor's own name and shape.
struct MixModel {
  std::string arch;      // general.architecture
  int64_t n_layer = 0;    // <arch>.block_count: the ffn_down "first/last eighth" rules count layers of it
  int64_t n_head = 0;     // layer 0's, as llama.cpp's n_gqa() reads them (attn_v gets more bits at >= 4)
  int64_t n_head_kv = 0;
  int64_t n_expert = 0;   // <arch>.expert_count; 8 has rules of its own, > 1 reads layers from names
  int64_t n_embd = 0;     // not used by llama.cpp's rules; kept for callers' messages
};

struct MixTensor {
  std::string name;             // GGUF name, e.g. "blk.3.attn_v.weight"
  std::vector<int64_t> shape;   // outermost first (shape.back() is the row length)
};

// llama-quantize's options that change the choice.
struct MixOptions {
  bool pure = false;                          // --pure: the mix's base type for every quantizable tensor
  std::optional<WeightType> output_type;      // --output-tensor-type (also a tied token_embd's, without --pure)
  std::optional<WeightType> token_embd_type;  // --token-embedding-type
};

// A tensor whose row length the wanted type's block size does not divide, and the type it got instead.
struct Fallback {
  size_t tensor;  // index into the tensors passed to choose_types
  WeightType wanted, chosen;
};

// One entry per tensor, in order: the type llama-quantize would write, or nullopt where it leaves the
// tensor as it is (1-D norms and biases, ...; synth writes those as F32). Rows that the chosen block
// size does not divide fall back as llama.cpp's tensor_type_fallback does (Q4_K -> Q5_0 for a 896-wide
// row, ..., F16 when not even 32 divides it); each is appended to *fallbacks when given. Tandem also
// falls back for --token-embedding-type and --output-tensor-type, which llama-quantize passes on
// unchecked (its quantizer then aborts on such a row).
std::vector<std::optional<WeightType>> choose_types(FileType mix, const MixModel& model,
                                                    const std::vector<MixTensor>& tensors,
                                                    const MixOptions& options = {},
                                                    std::vector<Fallback>* fallbacks = nullptr);

}  // namespace tandem::quant
