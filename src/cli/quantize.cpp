// tandem quantize: a GGUF model to another weight type or named mix, with llama-quantize's
// per-tensor choices (src/quant/mix.cpp) and its reference quantizers, multi-threaded and streamed.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <thread>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/progress.h"
#include "gguf/gguf_file.h"
#include "gguf/writer.h"
#include "model/arch.h"
#include "quant/mix.h"
#include "quant/quant.h"

namespace tandem::cli {
namespace {

bool is_float_type(WeightType t) { return t == WeightType::F32 || t == WeightType::F16 || t == WeightType::BF16; }

// Converts `rows` rows of one tensor from `from` to `to`, threads splitting the rows.
void convert_rows(WeightType from, WeightType to, int64_t n, const uint8_t* src, int64_t rows, uint8_t* dst,
                  int n_threads) {
  std::atomic<int64_t> next{0};
  auto work = [&] {
    std::vector<float> row(static_cast<size_t>(n));
    for (int64_t r; (r = next.fetch_add(1)) < rows;) {
      quant::dequantize_row(from, src + size_t(r) * row_bytes(from, n), row.data(), n);
      quant::quantize_row(to, row.data(), dst + size_t(r) * row_bytes(to, n), n);
    }
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < n_threads && i < rows; ++i) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}

}  // namespace

int quantize_main(int argc, char** argv) {
  std::string in_path, out_path, type_name_arg, threads_arg, output_type, embd_type;
  bool allow_requantize = false, pure = false;
  ArgParser args("quantize",
                 "tandem quantize [--allow-requantize] [--pure] [--output-tensor-type T] [--token-embedding-type T] "
                 "IN.gguf [OUT.gguf] TYPE [THREADS]",
                 "Converts a model to a weight type or named mix with the per-tensor choices llama-quantize makes\n"
                 "for that mix (its reference quantizers, no importance matrix), streaming tensor by tensor.");
  args.flag("--allow-requantize", "accept already-quantized input (quality suffers: it is quantized twice)",
            &allow_requantize);
  args.flag("--pure", "every quantizable tensor gets TYPE's base type: no per-tensor mix rules", &pure);
  args.string("--output-tensor-type", "T", "type of output.weight (e.g. q8_0, f16)", &output_type);
  args.string("--token-embedding-type", "T", "type of token_embd.weight", &embd_type);
  args.positional("IN.gguf", "the model to convert (F32/F16/BF16, or quantized with --allow-requantize)", &in_path, true);
  args.positional("OUT.gguf", "where to write the result", &out_path, true);
  args.positional("TYPE", "target: " + quant::file_type_names() + "\n" + std::string(31, ' ') +
                  "(any case, or llama.cpp's file type number: 15 is Q4_K_M)", &type_name_arg, false);
  args.positional("THREADS", "threads (default, or 0 and below: all cores)", &threads_arg, false);
  if (auto done = parse_command_line(args, argc, argv)) return *done;
  // llama-quantize's short form "IN TYPE [THREADS]" writes IN's folder/ggml-model-TYPE.gguf.
  if (const auto short_form = quant::parse_file_type(out_path)) {
    threads_arg = type_name_arg;
    type_name_arg = out_path;
    const size_t slash = in_path.find_last_of('/');
    out_path = (slash == std::string::npos ? "" : in_path.substr(0, slash + 1)) + "ggml-model-" +
               std::string(quant::file_type_name(*short_form)) + ".gguf";
  }
  if (type_name_arg.empty())
    return fail(invalid_argument("quantize: missing TYPE (usage: tandem quantize IN.gguf OUT.gguf TYPE [THREADS])"));

  const auto mix = quant::parse_file_type(type_name_arg);
  if (!mix)
    return fail(invalid_argument("quantize: unknown type '%s' (known: %s)", type_name_arg.c_str(),
                                 quant::file_type_names().c_str()));
  int n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
  if (!threads_arg.empty()) {
    auto t = parse_int(threads_arg, INT32_MIN, 4096);
    if (!t) return fail(invalid_argument("quantize: THREADS: %s", t.error().message().c_str()));
    if (*t > 0) n_threads = int(*t);  // 0 or less: all cores, as llama-quantize
  }
  std::optional<WeightType> forced_output, forced_embd;
  for (auto [arg, out] : {std::pair{&output_type, &forced_output}, std::pair{&embd_type, &forced_embd}}) {
    if (arg->empty()) continue;
    *out = parse_weight_type(*arg);
    if (!*out || !quant::can_quantize(**out))
      return fail(invalid_argument("quantize: cannot write tensors of type '%s'", arg->c_str()));
  }
  if (in_path == out_path) return fail(invalid_argument("quantize: IN and OUT are the same file"));

  auto opened = gguf::GgufFile::open(in_path);
  if (!opened) return fail(opened.error());
  const gguf::GgufFile& in = **opened;
  for (const auto& t : in.tensors())
    if (!is_float_type(t.type) && t.shape.size() >= 2 && !allow_requantize)
      return fail(invalid_argument("quantize: %s: tensor '%s' is already %s; pass --allow-requantize to quantize "
                                   "it again (from F16/BF16 the result is better)",
                                   in_path.c_str(), t.name.c_str(), type_name(t.type).data()));

  quant::MixModel mm;
  mm.arch = in.architecture();
  if (auto hp = model::read_hparams(in.metadata(), in_path)) {
    mm.n_layer = hp->n_layer;
    mm.n_head = hp->n_head;
    mm.n_head_kv = hp->n_head_kv;
    mm.n_expert = hp->n_expert;
    mm.n_embd = hp->n_embd;
  }
  std::vector<quant::MixTensor> mix_tensors;
  for (const auto& t : in.tensors()) mix_tensors.push_back({t.name, t.shape});
  quant::MixOptions options{.pure = pure, .output_type = forced_output, .token_embd_type = forced_embd};
  std::vector<quant::Fallback> fallbacks;
  const auto chosen = quant::choose_types(*mix, mm, mix_tensors, options, &fallbacks);
  // As llama-quantize's tensor_type_fallback warns: every tensor whose rows the type cannot hold.
  for (const quant::Fallback& fb : fallbacks) {
    const auto& t = in.tensors()[fb.tensor];
    std::printf("fallback: %s: rows of %lld are not a multiple of %s's %u-element blocks -> %s\n", t.name.c_str(),
                (long long)t.row_length(), type_name(fb.wanted).data(), block_size(fb.wanted),
                type_name(fb.chosen).data());
  }
  if (!fallbacks.empty())
    std::printf("fallback: %zu of %zu tensors required fallback quantization\n", fallbacks.size(), in.tensors().size());

  gguf::GgufWriter writer;
  for (const auto& [key, value] : in.metadata().entries())
    if (key.rfind("split.", 0) != 0) writer.metadata().set(key, value);
  writer.metadata().set("general.file_type", gguf::Value::u32(uint32_t(*mix)));
  writer.metadata().set("general.quantization_version", gguf::Value::u32(2));
  std::vector<WeightType> types;
  for (size_t i = 0; i < in.tensors().size(); ++i) {
    const auto& t = in.tensors()[i];
    const WeightType type = chosen[i].value_or(t.type);
    if (type != t.type && (!quant::can_dequantize(t.type) || !quant::can_quantize(type)))
      return fail(unsupported("quantize: cannot convert '%s' from %s to %s", t.name.c_str(),
                              type_name(t.type).data(), type_name(type).data()));
    types.push_back(type);
    if (Status s = writer.add_tensor(t.name, type, t.shape); !s.is_ok()) return fail(s);
  }
  if (Status s = writer.open(out_path); !s.is_ok()) return fail(s);

  uint64_t bytes_in = 0, bytes_out = 0, n_elements = 0;
  for (const auto& t : writer.tensors()) bytes_out += t.size_bytes;
  ProgressBar bar("quant ", in.tensor_bytes());
  std::vector<uint8_t> buffer;
  constexpr int64_t kRowsPerChunk = 4096;  // bounds memory: a few MB per chunk
  for (size_t i = 0; i < in.tensors().size(); ++i) {
    const auto& t = in.tensors()[i];
    bytes_in += t.size_bytes;
    n_elements += uint64_t(t.n_elements());
    if (types[i] == t.type) {
      if (Status s = writer.write(t.data, t.size_bytes); !s.is_ok()) return fail(s);
    } else {
      const int64_t n = t.row_length();
      for (int64_t r0 = 0; r0 < t.n_rows(); r0 += kRowsPerChunk) {
        const int64_t rows = std::min(kRowsPerChunk, t.n_rows() - r0);
        buffer.resize(size_t(rows) * row_bytes(types[i], n));
        convert_rows(t.type, types[i], n, t.data + size_t(r0) * row_bytes(t.type, n), rows, buffer.data(), n_threads);
        if (Status s = writer.write(buffer.data(), buffer.size()); !s.is_ok()) return fail(s);
      }
    }
    bar.add(t.size_bytes);
  }
  if (Status s = writer.finish(); !s.is_ok()) return fail(s);
  bar.finish();
  std::map<std::string, uint64_t> by_type;
  for (const auto& t : writer.tensors()) by_type[std::string(type_name(t.type))] += t.size_bytes;
  std::printf("wrote %s (%s)\n  size %s -> %s, %.2f -> %.2f bits per weight, %.1f s\n", out_path.c_str(),
              quant::file_type_name(*mix).data(), human_bytes(bytes_in).c_str(), human_bytes(bytes_out).c_str(),
              8.0 * double(bytes_in) / double(std::max<uint64_t>(n_elements, 1)),
              8.0 * double(bytes_out) / double(std::max<uint64_t>(n_elements, 1)), bar.seconds());
  for (const auto& [t, b] : by_type) std::printf("  %-7s %s\n", t.c_str(), human_bytes(b).c_str());
  return 0;
}

}  // namespace tandem::cli
