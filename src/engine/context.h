// An inference context: one model, its KV cache, and the step loop that splits a logical batch
// (-b) into micro-batches (-ub) and keeps the logits callers asked for.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "model/model.h"

namespace tandem {

struct ContextOptions {
  int64_t n_ctx = 4096;     // KV cells (all sequences together)
  int64_t n_batch = 2048;   // logical batch: tokens accepted by one decode() call
  int64_t n_ubatch = 512;   // micro-batch: tokens in one forward pass
  WeightType type_k = WeightType::F16;
  WeightType type_v = WeightType::F16;
  bool flash_attn = false;  // flash attention (-fa on); false: the plain path
  // A sequence's logits are the same bits whatever shares its batches (issue 11: other sequences,
  // prefill or decode, -ub, threads); costs prefill speed on CPUs with VNNI panels or AMX (BENCHMARKS.md).
  bool batch_invariant = false;
};

class Context {
 public:
  static Result<std::unique_ptr<Context>> create(const model::Model& model, const ContextOptions& options);

  // Runs the batch; afterwards logits(i) is the i-th requested row, in batch order.
  // Fails without side effects on the cache when the context cannot hold the batch.
  Status decode(const Batch& batch);
  // Feeds one sequence's tokens at positions pos, pos+1, ... in -b chunks; afterwards logits(i) are
  // the rows of tokens [logits_begin, logits_end) in order (default: the last token's only). Checks
  // room for all of them first: a prompt that does not fit changes nothing.
  Status prefill(int32_t seq, std::span<const int32_t> tokens, int32_t pos);
  Status prefill(int32_t seq, std::span<const int32_t> tokens, int32_t pos, int64_t logits_begin, int64_t logits_end);
  std::span<const float> logits(int64_t i) const;
  int64_t n_logits() const { return n_out_; }
  int64_t n_vocab() const { return n_vocab_; }

  // Counts the MoE routers' choices of every pass into `stats` (null: stop); not owned.
  void set_expert_stats(model::ExpertStats* stats) { scratch_.set_expert_stats(stats); }

  KvCache& kv() { return kv_; }
  const ContextOptions& options() const { return options_; }
  const model::Model& model() const { return model_; }

 private:
  Status decode(const Batch& batch, bool append_logits);

  Context(const model::Model& model, KvCache kv, ContextOptions options)
      : model_(model), kv_(std::move(kv)), options_(options) {}

  const model::Model& model_;
  KvCache kv_;
  ContextOptions options_;
  model::ForwardScratch scratch_;
  std::vector<float> logits_, ubatch_logits_;
  int64_t n_out_ = 0, n_vocab_ = 0;
};

}  // namespace tandem
