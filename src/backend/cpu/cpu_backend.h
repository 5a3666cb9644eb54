// The CPU backend: weights stay where the GGUF mapping put them (zero copy); ops are multi-threaded
// over a ThreadPool and done when they return; matmuls go through the per-ISA kernel table. Not
// thread-safe: ops keep scratch in the backend, so one thread drives it at a time.
#pragma once

#include <memory>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_matmul.h"
#include "backend/cpu/ops.h"
#include "core/thread_pool.h"

namespace tandem::cpu {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int n_threads, std::string name = "cpu", const ThreadPoolOptions& pool_options = {});
  ~CpuBackend() override;

  std::string name() const override { return name_; }
  ThreadPool& pool() { return pool_; }

  void set_batch_invariant(bool on) override { batch_invariant_ = on; }
  Result<void*> alloc(size_t bytes) override;
  void free(void* p) override;
  bool host_accessible() const override { return true; }
  void copy_from_host(void* dst, const void* src, size_t bytes) override;
  void copy_to_host(void* dst, const void* src, size_t bytes) override;
  Result<const void*> place_weight(const void* host, size_t bytes) override { return host; }
  Result<size_t> repack(const Weight& w) override;
  void release_repack(const Weight& w) override { packed_.erase(w.data); }
  std::shared_ptr<Event> record() override;
  void wait(const std::shared_ptr<Event>& e) override { e->wait_host(); }
  Status synchronize() override { return Status::ok(); }
  void matmul(const Weight& w, const float* x, int64_t n_tokens, float* y, const Weight* bias) override;
  void matmul_id(const Weight& w, const float* x, bool x_per_slot, const int32_t* ids, int64_t n_tokens, int n_used,
                 float* y) override;
  void matmul_id_swiglu(const Weight& gate, const Weight* up, const float* x, const int32_t* ids, int64_t n_tokens,
                        int n_used, float* y) override;
  void matmul_id_ptrs(const Weight& w, const void* const* expert_data, const float* x, bool x_per_slot,
                      const int32_t* ids, int64_t n_tokens, int n_used, float* y) override;
  void matmul_id_swiglu_ptrs(const Weight& gate, const void* const* gate_data, const Weight* up,
                             const void* const* up_data, const float* x, const int32_t* ids, int64_t n_tokens,
                             int n_used, float* y) override;
  void get_rows(const Weight& table, std::span<const int32_t> ids, float* out) override;
  void rms_norm(const float* x, const Weight* weight, int64_t n_rows, int64_t n, float eps, float* y) override;
  void rope(float* x, int64_t n_tokens, int n_head, int head_dim, const int32_t* pos, const RopeParams& p) override;
  void attention(const AttentionArgs& a) override;
  void kv_store(const float* k, const float* v, int64_t n_tokens, int64_t row_k, int64_t row_v, const int32_t* cells,
                WeightType k_type, WeightType v_type, void* cache_k, void* cache_v) override;
  void swiglu(const float* gate, const float* up, int64_t n, float* out) override;
  void geglu(const float* gate, const float* up, int64_t n, float* out) override;
  void add(const float* a, const float* b, int64_t n, float* out) override;
  void copy_2d(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t n_rows,
               int64_t width) override;
  void weighted_sum(const float* x, const float* w, int64_t n_rows, int n_terms, int64_t n, float* out) override;
  void hadamard(float* x, int64_t n_rows, int64_t n, int block) override;
  void scale(float* x, int64_t n, float s) override;
  void softcap(float* x, int64_t n, float cap) override;

 private:
  // Elementwise work below this many floats runs on the calling thread: a fork-join costs more.
  static constexpr int64_t kMinElemsPerTask = 8192;

  // cos/sin per token for the rope parameters and positions (cached: Q and K, and layers, share it).
  const float* rope_table(int64_t n_tokens, const int32_t* pos, const RopeParams& p);
  void plain_attention(const AttentionArgs& a);
  void flash_attention(const AttentionArgs& a);  // flash_attention.cpp

  std::string name_;
  ThreadPool pool_;
  const CpuOps& ops_;
  struct RopeCache {
    bool valid = false;
    RopeParams params;
    std::vector<int32_t> pos;
    std::vector<float> table;
  };
  RopeCache rope_cache_[2];
  int rope_cache_next_ = 0;
  std::vector<std::vector<float>> attn_scratch_;  // per thread
  std::vector<std::vector<int32_t>> attn_cells_;  // per thread
  // Sorts cells by their position (then index): attention sums in that order, the same whichever cells
  // the cache happened to give a sequence (batch invariance, issue 11).
  static void order_by_position(int32_t* cells, int64_t n, const int32_t* cell_pos);
  struct FlashBlock {
    int64_t t0 = 0, n = 0;        // batch tokens [t0, t0 + n), one sequence
    std::vector<int32_t> cells;   // cells any of them sees, by position
    std::vector<int64_t> chunks;  // where each chunk of positions starts in cells, then cells.size()
  };
  std::vector<FlashBlock> flash_blocks_;
  std::vector<float> flash_partials_;
  std::unordered_map<void*, std::unique_ptr<uint8_t[]>> allocations_;
  std::vector<uint8_t> act_buffer_;  // activations quantized for the integer dot kernels
  std::unordered_map<const void*, PackedWeight> packed_;  // by the weight's data: repack()'s copies
  const PackedWeight* packed(const Weight& w) const;      // w's copy, or null
  MatmulIdScratch matmul_id_scratch_;
  bool batch_invariant_ = false;
};

}  // namespace tandem::cpu
