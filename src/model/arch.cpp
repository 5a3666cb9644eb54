// The hyperparameter keys every architecture shares (as llama.cpp's convert script writes them).
#include "model/arch.h"

namespace tandem::model {

Result<HParams> read_hparams(const gguf::Metadata& meta, const std::string& source) {
  HParams hp;
  const auto arch = meta.get_string("general.architecture");
  if (!arch) return corrupt("%s: no general.architecture key", source.c_str());
  hp.arch = *arch;
  const std::string p = hp.arch + ".";
  auto need = [&](const char* key, int64_t* out) -> Status {
    const gguf::Value* v = meta.find(p + key);
    // Some models store per-layer arrays (e.g. feed_forward_length); the first entry is representative.
    std::optional<int64_t> n = v ? (v->is_array() ? v->array_i64(0) : v->as_i64()) : std::nullopt;
    if (!n || *n < 0) return corrupt("%s: missing or invalid %s%s", source.c_str(), p.c_str(), key);
    *out = *n;
    return Status::ok();
  };
  auto maybe = [&](const char* key, int64_t* out) {
    const gguf::Value* v = meta.find(p + key);
    if (!v) return;
    std::optional<int64_t> n = v->is_array() ? v->array_i64(0) : v->as_i64();
    if (n && *n >= 0) *out = *n;
  };
  TANDEM_TRY(need("embedding_length", &hp.n_embd));
  TANDEM_TRY(need("block_count", &hp.n_layer));
  TANDEM_TRY(need("attention.head_count", &hp.n_head));
  maybe("context_length", &hp.n_ctx_train);
  maybe("feed_forward_length", &hp.n_ff);
  hp.n_head_kv = hp.n_head;
  maybe("attention.head_count_kv", &hp.n_head_kv);
  if (hp.n_head == 0 || (hp.n_embd % hp.n_head != 0 && !meta.find(p + "attention.key_length")))
    return corrupt("%s: %sembedding_length %lld is not divisible by head_count %lld", source.c_str(), p.c_str(),
                   (long long)hp.n_embd, (long long)hp.n_head);
  hp.head_dim_k = hp.n_head ? hp.n_embd / hp.n_head : 0;
  maybe("attention.key_length", &hp.head_dim_k);
  hp.head_dim_v = hp.head_dim_k;
  maybe("attention.value_length", &hp.head_dim_v);
  hp.n_rot = hp.head_dim_k;
  maybe("rope.dimension_count", &hp.n_rot);
  maybe("attention.sliding_window", &hp.sliding_window);
  maybe("expert_count", &hp.n_expert);
  maybe("expert_used_count", &hp.n_expert_used);
  if (auto v = meta.get_f64(p + "rope.freq_base")) hp.rope_freq_base = *v;
  if (auto v = meta.get_f64(p + "attention.layer_norm_rms_epsilon")) hp.norm_eps = *v;
  if (auto v = meta.find(p + "vocab_size"); v && v->as_i64()) hp.n_vocab = *v->as_i64();
  else if (auto t = meta.find("tokenizer.ggml.tokens"); t && t->as_array()) hp.n_vocab = int64_t(t->as_array()->count);
  return hp;
}

}  // namespace tandem::model
