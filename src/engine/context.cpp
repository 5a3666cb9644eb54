// Context: KV cache sizing and the micro-batch loop.
#include "engine/context.h"

#include <tuple>

#include "kv/kv_types.h"

namespace tandem {

Result<std::unique_ptr<Context>> Context::create(const model::Model& model, const ContextOptions& options) {
  const auto& hp = model.hparams();
  if (options.n_ctx < 1) return invalid_argument("context size must be at least 1 (got %lld)", (long long)options.n_ctx);
  if (options.n_ubatch < 1 || options.n_batch < 1)
    return invalid_argument("batch sizes must be at least 1 (-b %lld, -ub %lld)", (long long)options.n_batch,
                            (long long)options.n_ubatch);
  for (const auto& [type, head_dim, flag] : {std::tuple{options.type_k, hp.head_dim_k, "-ctk"},
                                              std::tuple{options.type_v, hp.head_dim_v, "-ctv"}}) {
    if (!is_kv_cache_type(type))
      return unsupported("%s %s: not a KV cache type (use f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1 or iq4_nl)",
                         flag, type_name(type).data());
    if (head_dim % block_size(type) != 0)
      return unsupported("%s %s: this model's heads have %lld dimensions, not a multiple of the type's %u-element "
                         "blocks; use f16, bf16 or f32", flag, type_name(type).data(), (long long)head_dim,
                         block_size(type));
  }
  std::vector<Backend*> backends;
  std::vector<int64_t> row_k, row_v;
  for (const model::KvLayerSpec& l : model.kv_layers()) {
    backends.push_back(l.backend);
    row_k.push_back(l.row_k);
    row_v.push_back(l.row_v);
  }
  TANDEM_ASSIGN(KvCache kv, KvCache::create(backends, options.n_ctx, row_k, row_v, options.type_k, options.type_v));
  auto ctx = std::unique_ptr<Context>(new Context(model, std::move(kv), options));
  ctx->n_vocab_ = model.output().n_rows();
  return ctx;
}

Status Context::decode(const Batch& batch) { return decode(batch, false); }

Status Context::prefill(int32_t seq, std::span<const int32_t> tokens, int32_t pos) {
  return prefill(seq, tokens, pos, int64_t(tokens.size()) - 1, int64_t(tokens.size()));
}

Status Context::prefill(int32_t seq, std::span<const int32_t> tokens, int32_t pos, int64_t logits_begin,
                        int64_t logits_end) {
  if (tokens.empty()) return invalid_argument("prefill: no tokens");
  TANDEM_TRY(kv_.check_room(int64_t(tokens.size())));
  const int64_t n = int64_t(tokens.size());
  Batch b;
  for (int64_t start = 0; start < n; start += options_.n_batch) {
    b.clear();
    const int64_t end = std::min(n, start + options_.n_batch);
    for (int64_t i = start; i < end; ++i)
      b.add(tokens[size_t(i)], pos + int32_t(i), seq, i >= logits_begin && i < logits_end);
    TANDEM_TRY(decode(b, start > 0));
  }
  return Status::ok();
}

Status Context::decode(const Batch& batch, bool append_logits) {
  if (batch.size() == 0) return invalid_argument("decode: empty batch");
  if (batch.size() > options_.n_batch)
    return invalid_argument("decode: %lld tokens exceed the logical batch size -b %lld", (long long)batch.size(),
                            (long long)options_.n_batch);
  TANDEM_TRY(kv_.check_room(batch.size()));
  const int64_t n_vocab_in = model_.tok_embd().n_rows();
  for (int64_t i = 0; i < batch.size(); ++i) {
    const size_t k = size_t(i);
    if (batch.tokens[k] < 0 || batch.tokens[k] >= n_vocab_in)
      return invalid_argument("decode: token id %d is outside the vocabulary (%lld tokens)", batch.tokens[k],
                              (long long)n_vocab_in);
    if (batch.pos[k] < 0 || batch.seq[k] < 0)
      return invalid_argument("decode: token %lld has position %d, sequence %d (both must be >= 0)", (long long)i,
                              batch.pos[k], batch.seq[k]);
  }
  // Set per call, not at create: contexts with different options may share the model's backends.
  for (Backend* b : model_.devices()) b->set_batch_invariant(options_.batch_invariant);
  if (!append_logits) logits_.clear(), n_out_ = 0;
  for (int64_t start = 0; start < batch.size(); start += options_.n_ubatch) {
    const int64_t end = std::min(batch.size(), start + options_.n_ubatch);
    Batch ub;
    for (int64_t i = start; i < end; ++i)
      ub.add(batch.tokens[size_t(i)], batch.pos[size_t(i)], batch.seq[size_t(i)], batch.want_logits[size_t(i)] != 0);
    std::vector<int32_t> cells;
    TANDEM_TRY(kv_.place(ub, &cells));
    TANDEM_TRY(model_.forward(ub, cells, kv_, scratch_, ubatch_logits_, options_.flash_attn));
    if (logits_.empty()) std::swap(logits_, ubatch_logits_);  // the usual case: no copy
    else logits_.insert(logits_.end(), ubatch_logits_.begin(), ubatch_logits_.end());
  }
  n_out_ = int64_t(logits_.size()) / n_vocab_;
  return Status::ok();
}

std::span<const float> Context::logits(int64_t i) const {
  return {logits_.data() + i * n_vocab_, size_t(n_vocab_)};
}

}  // namespace tandem
