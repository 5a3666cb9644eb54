// tandem info: what a GGUF file holds — metadata, hyperparameters, tensor table, totals.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/progress.h"
#include "gguf/gguf_file.h"
#include "model/arch.h"

namespace tandem::cli {
namespace {

using gguf::GgufFile;
using nlohmann::json;

json value_json(const gguf::Value& v, size_t max_items) {
  using gguf::ValueType;
  if (const std::string* s = v.as_string()) return *s;
  if (const gguf::Array* a = v.as_array()) {
    json arr = json::array();
    const uint64_t n = std::min<uint64_t>(a->count, max_items);
    for (uint64_t i = 0; i < n; ++i) {
      if (a->elem_type == ValueType::String) arr.push_back(a->strings[i]);
      else if (a->elem_type == ValueType::Array) arr.push_back(value_json(a->arrays[i], max_items));
      else if (gguf::is_integer(a->elem_type)) arr.push_back(*v.array_i64(i));
      else if (a->elem_type == ValueType::Bool) arr.push_back(*v.array_f64(i) != 0);
      else arr.push_back(*v.array_f64(i));
    }
    if (a->count <= max_items) return arr;
    return json{{"type", "array"}, {"element_type", gguf::value_type_name(a->elem_type)}, {"count", a->count},
                {"head", arr}};
  }
  if (auto b = v.as_bool()) return *b;
  if (v.type() == ValueType::F32 || v.type() == ValueType::F64) return *v.as_f64();
  if (v.type() == ValueType::U64) return *v.as_u64();
  return *v.as_i64();
}

struct TypeTotal {
  uint64_t tensors = 0, elements = 0, bytes = 0;
};

// "blk.12.attn_q.weight" -> "blk.12"; other tensors are "non-layer".
std::string layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return "non-layer";
  const size_t dot = name.find('.', 4);
  return dot == std::string::npos ? name : name.substr(0, dot);
}

int layer_index(const std::string& layer) {
  return layer == "non-layer" ? -1 : std::atoi(layer.c_str() + 4);
}

void print_text(const GgufFile& f, const std::string& path, bool show_tensors, size_t max_items) {
  std::printf("file:     %s\n", path.c_str());
  std::printf("format:   GGUF v%u, %zu part%s, %s on disk, alignment %llu\n", f.version(), f.parts().size(),
              f.parts().size() == 1 ? "" : "s", human_bytes(f.total_bytes()).c_str(),
              (unsigned long long)f.parts()[0].header.alignment);
  std::printf("contents: %zu metadata keys, %zu tensors, %s of tensor data\n", f.metadata().size(),
              f.tensors().size(), human_bytes(f.tensor_bytes()).c_str());

  if (auto hp = model::read_hparams(f.metadata(), path)) {
    std::printf("\nhyperparameters (%s%s):\n", hp->arch.c_str(),
                model::is_supported_architecture(hp->arch) ? "" : ", not yet supported by the engine");
    std::printf("  vocab %lld, context %lld, embedding %lld, layers %lld, feed-forward %lld\n",
                (long long)hp->n_vocab, (long long)hp->n_ctx_train, (long long)hp->n_embd, (long long)hp->n_layer,
                (long long)hp->n_ff);
    std::printf("  heads %lld, kv heads %lld, head dim k/v %lld/%lld, rope dims %lld, rope base %g, norm eps %g\n",
                (long long)hp->n_head, (long long)hp->n_head_kv, (long long)hp->head_dim_k, (long long)hp->head_dim_v,
                (long long)hp->n_rot, hp->rope_freq_base, hp->norm_eps);
    if (hp->sliding_window) std::printf("  sliding window %lld\n", (long long)hp->sliding_window);
    if (hp->n_expert) std::printf("  experts %lld, used per token %lld\n", (long long)hp->n_expert,
                                  (long long)hp->n_expert_used);
  } else {
    std::printf("\nhyperparameters: %s\n", hp.error().message().c_str());
  }

  std::printf("\nmetadata:\n");
  for (const auto& [key, value] : f.metadata().entries()) {
    std::string type = gguf::value_type_name(value.type());
    if (const gguf::Array* a = value.as_array())
      type = format("%s[%llu]", gguf::value_type_name(a->elem_type), (unsigned long long)a->count);
    std::printf("  %-44s %-12s %s\n", key.c_str(), type.c_str(), value.to_string(max_items).c_str());
  }

  if (show_tensors) {
    std::printf("\ntensors (shape outermost first; offset within the part's data section):\n");
    std::printf("  %5s  %-36s %-24s %-7s %12s %14s%s\n", "#", "name", "shape", "type", "bytes", "offset",
                f.parts().size() > 1 ? "  part" : "");
    for (size_t i = 0; i < f.tensors().size(); ++i) {
      const gguf::TensorInfo& t = f.tensors()[i];
      std::printf("  %5zu  %-36s %-24s %-7s %12llu %14llu", i, t.name.c_str(), t.shape_string().c_str(),
                  type_name(t.type).data(), (unsigned long long)t.size_bytes, (unsigned long long)t.offset);
      if (f.parts().size() > 1) std::printf("  %4u", t.part + 1);
      std::printf("\n");
    }
  }

  std::map<std::string, TypeTotal> by_type;
  std::map<int, std::pair<std::string, TypeTotal>> by_layer;
  uint64_t all_elements = 0;
  for (const gguf::TensorInfo& t : f.tensors()) {
    for (TypeTotal* tt : {&by_type[std::string(type_name(t.type))], &by_layer[layer_index(layer_of(t.name))].second}) {
      tt->tensors += 1;
      tt->elements += uint64_t(t.n_elements());
      tt->bytes += t.size_bytes;
    }
    by_layer[layer_index(layer_of(t.name))].first = layer_of(t.name);
    all_elements += uint64_t(t.n_elements());
  }
  std::printf("\ntotals by type:\n  %-8s %8s %16s %14s %7s %6s\n", "type", "tensors", "elements", "bytes", "share",
              "bpw");
  for (const auto& [name, tt] : by_type)
    std::printf("  %-8s %8llu %16llu %14llu %6.1f%% %6.2f\n", name.c_str(), (unsigned long long)tt.tensors,
                (unsigned long long)tt.elements, (unsigned long long)tt.bytes,
                f.tensor_bytes() ? 100.0 * double(tt.bytes) / double(f.tensor_bytes()) : 0.0,
                tt.elements ? 8.0 * double(tt.bytes) / double(tt.elements) : 0.0);
  std::printf("  %-8s %8zu %16llu %14llu %7s %6.2f\n", "all", f.tensors().size(), (unsigned long long)all_elements,
              (unsigned long long)f.tensor_bytes(), "",
              all_elements ? 8.0 * double(f.tensor_bytes()) / double(all_elements) : 0.0);
  std::printf("\ntotals by layer:\n  %-10s %8s %14s\n", "layer", "tensors", "bytes");
  for (const auto& [index, entry] : by_layer)
    std::printf("  %-10s %8llu %14llu\n", entry.first.c_str(), (unsigned long long)entry.second.tensors,
                (unsigned long long)entry.second.bytes);
}

json to_json(const GgufFile& f, const std::string& path, bool show_tensors, size_t max_items) {
  json j;
  j["file"] = path;
  j["version"] = f.version();
  j["alignment"] = f.parts()[0].header.alignment;
  j["size_bytes"] = f.total_bytes();
  j["tensor_bytes"] = f.tensor_bytes();
  j["parts"] = json::array();
  for (const auto& p : f.parts()) j["parts"].push_back({{"path", p.file.path()}, {"size_bytes", p.file.bytes().size()}});
  json meta = json::object();
  for (const auto& [key, value] : f.metadata().entries()) meta[key] = value_json(value, max_items);
  j["metadata"] = meta;
  if (auto hp = model::read_hparams(f.metadata(), path)) {
    j["hparams"] = {{"arch", hp->arch}, {"n_vocab", hp->n_vocab}, {"n_ctx_train", hp->n_ctx_train},
                    {"n_embd", hp->n_embd}, {"n_layer", hp->n_layer}, {"n_ff", hp->n_ff},
                    {"n_head", hp->n_head}, {"n_head_kv", hp->n_head_kv}, {"head_dim_k", hp->head_dim_k},
                    {"head_dim_v", hp->head_dim_v}, {"n_rot", hp->n_rot}, {"rope_freq_base", hp->rope_freq_base},
                    {"norm_eps", hp->norm_eps}, {"sliding_window", hp->sliding_window},
                    {"n_expert", hp->n_expert}, {"n_expert_used", hp->n_expert_used},
                    {"supported", model::is_supported_architecture(hp->arch)}};
  }
  std::map<std::string, TypeTotal> totals;
  for (const gguf::TensorInfo& t : f.tensors()) {
    TypeTotal& tt = totals[std::string(type_name(t.type))];
    tt.tensors += 1;
    tt.elements += uint64_t(t.n_elements());
    tt.bytes += t.size_bytes;
  }
  json by_type = json::object();
  for (const auto& [name, tt] : totals)
    by_type[name] = {{"tensors", tt.tensors}, {"elements", tt.elements}, {"bytes", tt.bytes}};
  j["totals_by_type"] = by_type;
  if (show_tensors) {
    json ts = json::array();
    for (const gguf::TensorInfo& t : f.tensors())
      ts.push_back({{"name", t.name}, {"shape", t.shape}, {"type", type_name(t.type)}, {"bytes", t.size_bytes},
                    {"offset", t.offset}, {"part", t.part + 1}});
    j["tensors"] = ts;
  }
  return j;
}

}  // namespace

int info_main(int argc, char** argv) {
  std::string model, positional_model;
  bool as_json = false, no_tensors = false, full = false;
  ArgParser args("info", "tandem info -m MODEL [--json] [--no-tensors] [--full]",
                 "Prints a GGUF model's metadata, architecture hyperparameters, tensor table\n"
                 "(name, shape, type, bytes, offset) and totals by type and by layer.");
  args.string("-m,--model", "FILE", "model file (for a split model, its first part)", &model);
  args.flag("--json", "print one JSON object instead of text", &as_json);
  args.flag("--no-tensors", "leave out the tensor table", &no_tensors);
  args.flag("--full", "print whole metadata arrays (by default long arrays are summarized)", &full);
  args.positional("MODEL", "the model, as an alternative to -m", &positional_model, false);
  if (auto done = parse_command_line(args, argc, argv)) return *done;
  if (model.empty()) model = positional_model;
  if (model.empty()) return fail(invalid_argument("info: no model given (use -m FILE)"));
  auto file = GgufFile::open(model);
  // A description without data (synth --header-only) has all info shows; the error stands for anything else.
  bool header_only = false;
  if (!file) {
    auto described = GgufFile::open(model, {.header_only = true});
    if (!described || (*described)->total_bytes() > (*described)->parts()[0].header.data_offset) return fail(file.error());
    file = std::move(described);
    header_only = true;
  }
  const size_t max_items = full ? SIZE_MAX : 8;
  if (as_json) {
    json j = to_json(**file, model, !no_tensors, max_items);
    if (header_only) j["header_only"] = true;
    std::printf("%s\n", j.dump(2, ' ', false, json::error_handler_t::replace).c_str());
  } else {
    print_text(**file, model, !no_tensors, max_items);
    if (header_only)
      std::printf("\nheader only: the tensor table without the tensors' data (tandem plan reads it; run, bench and "
                  "verify need the weights)\n");
  }
  return 0;
}

}  // namespace tandem::cli
