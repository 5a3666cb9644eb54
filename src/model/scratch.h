// Activation buffers of forward passes, per device: grown to the largest pass and kept, so a step no
// larger than an earlier one allocates nothing. Also the per-pass inputs (token ids, positions, KV
// cells) as each device sees them, and the moves of activations between devices.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/buffer.h"
#include "kv/kv_cache.h"
#include "model/expert_stats.h"
#include "model/batch.h"

namespace tandem::model {

// A pass's integer inputs, as pointers into one device's memory.
struct DeviceInputs {
  const int32_t* tokens = nullptr;    // [n_tokens]
  const int32_t* pos = nullptr;       // [n_tokens]
  const int32_t* seq = nullptr;       // [n_tokens]
  const int32_t* cells = nullptr;     // [n_tokens]: each token's KV cell
  const int32_t* out_rows = nullptr;  // [n_out]: the tokens that want logits, in batch order
  const int32_t* cell_pos = nullptr;  // [kv.active_cells()]
  const int32_t* cell_seq = nullptr;  // [kv.active_cells()]
};

// moe_route's working arrays (blocks.h), kept so that routing allocates nothing per token.
struct MoeRouteScratch {
  std::vector<float> probs, select, group_score;  // [n_expert], [n_expert], [n_group]
  std::vector<int32_t> best;                      // the best experts (or groups) so far, best first
  // With an expert cache (moe_ffn): the layer's distinct chosen experts, ascending; per expert, its
  // slice of each expert tensor in the cache (null: not in the group being run), as
  // Backend::matmul_id_ptrs takes them; the next layer's router output, choices and guessed experts.
  std::vector<int32_t> unique;
  std::vector<const void*> gate_data, up_data, down_data;
  std::vector<float> next_logits, next_w;
  std::vector<int32_t> next_ids, guess;
  int64_t guess_layer = -1;  // the layer `guess` is for; -1: none
};

class ForwardScratch {
 public:
  enum Slot {
    kX, kCur, kQ, kK, kV, kAttn, kGate, kUp, kRows, kLogits,
    // MLA and MoE (deepseek2.cpp)
    kKvPe, kQNope, kQAbs, kAttnV, kRouter, kMoeIn, kMoeGate, kMoeUp, kMoeDown, kMoeOut, kShared, kExpertWeights,
    kExpertIds, kHeadIds,
    // A block whose matrices sit on different devices (-ot moving some of them): their input and output there
    kFfnIn, kFfnOut, kMoeIds2, kMoeIds3,
    kNumSlots
  };

  // Starts a pass over `batch` (its cells and cache state as given): inputs() uploads afresh.
  void begin_pass(const Batch& batch, const std::vector<int32_t>& cells, const KvCache& kv);
  // Buffer `slot` on `b`, at least n floats; its contents survive while it does not grow.
  Result<float*> get(Backend& b, Slot slot, int64_t n);
  // The same for n int32 values (expert and head ids).
  Result<int32_t*> get_i32(Backend& b, Slot slot, int64_t n);
  // The pass's inputs on `b`: the host's own arrays on the CPU, copies (once per pass) elsewhere.
  Result<DeviceInputs> inputs(Backend& b);
  int64_t n_out() const { return int64_t(out_rows_.size()); }
  // n floats at src on `from`, as seen on `to`: src itself on the same device, else a copy in `slot` there.
  Result<float*> move(Backend& from, float* src, Backend& to, Slot slot, int64_t n);
  // Waits for every device this scratch has used; the first error any reported.
  Status synchronize();
  // Host arrays a model fills and uploads during a pass (router output, expert and head ids). A queued
  // upload reads its array later, so refill one only after a synchronize() that followed that upload.
  std::vector<float>& host_f32(Slot slot) { return host_f32_[slot]; }
  std::vector<int32_t>& host_i32(Slot slot) { return host_i32_[slot]; }
  MoeRouteScratch& moe_route() { return moe_route_; }
  // Where the MoE blocks count their routers' choices (null: not counted). Not owned.
  void set_expert_stats(ExpertStats* stats) { expert_stats_ = stats; }
  ExpertStats* expert_stats() const { return expert_stats_; }

 private:
  struct PerDevice {
    Backend* backend = nullptr;
    DeviceBuffer slots[kNumSlots];
    DeviceBuffer ints;  // the inputs, one after another
    bool uploaded = false;
    DeviceInputs in;
  };
  PerDevice& device(Backend& b);

  std::vector<PerDevice> devices_;
  std::vector<int32_t> host_ints_;  // tokens, pos, seq, cells, out_rows of the pass
  int64_t n_cells_ = 0;
  std::vector<int32_t> out_rows_;
  DeviceInputs host_in_;
  std::vector<uint8_t> staging_;  // host bytes between two devices the host cannot read
  std::vector<float> host_f32_[kNumSlots];
  std::vector<int32_t> host_i32_[kNumSlots];
  MoeRouteScratch moe_route_;
  ExpertStats* expert_stats_ = nullptr;
};

}  // namespace tandem::model
