// The backend interface: a device's memory, its queue, and the fixed list of operations the forward
// passes use. A model's forward pass calls these and never asks which device it runs on; a backend never
// knows which model runs. Activations are f32 rows in the backend's memory, shapes outermost first.
//
// Execution model (what a CUDA stream gives): a backend runs its ops and copies in the order they are
// called, possibly after the call returns. Every pointer an op receives (activations, weights, the KV
// cache, positions, cell tables) is memory of that backend; the host reads results only after
// synchronize() or an Event, and crosses devices only by the copies below (backend/buffer.h has the
// helpers). The CPU backend runs everything at once on the calling thread's pool and its memory is the
// host's; the sim device (backend/sim) queues, checks every pointer and delays copies like a PCIe link.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"
#include "gguf/types.h"

namespace tandem {

class Backend;

// A point in one backend's queue: reached when every op queued before it has run.
class Event {
 public:
  void signal() {
    std::lock_guard lock(mu_);
    done_ = true;
    cv_.notify_all();
  }
  void wait_host() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return done_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

// A weight on its home device. Rows of `row_length` elements, `row_stride` bytes apart.
struct Weight {
  std::string name;
  WeightType type = WeightType::F32;
  std::vector<int64_t> shape;  // outermost first
  const void* data = nullptr;  // device memory of `backend`
  size_t row_stride = 0;
  Backend* backend = nullptr;
  size_t size_bytes = 0;

  int64_t row_length() const { return shape.back(); }
  int64_t n_rows() const {
    int64_t n = 1;
    for (size_t i = 0; i + 1 < shape.size(); ++i) n *= shape[i];
    return n;
  }
  // Expert weights ([n_expert, expert_rows, row_length], MoE) hold one matrix per expert, its rows
  // contiguous; any other weight is one expert.
  int64_t n_expert() const { return shape.size() == 3 ? shape[0] : 1; }
  int64_t expert_rows() const { return n_rows() / n_expert(); }
  const void* expert_data(int64_t e) const {
    return static_cast<const uint8_t*>(data) + size_t(e * expert_rows()) * row_stride;
  }
};

enum class RopeKind { Normal, Neox };  // adjacent pairs (Llama) or halves (NeoX: Qwen, Gemma)

struct RopeParams {
  RopeKind kind = RopeKind::Normal;
  int n_rot = 0;             // rotated dimensions per head (the rest pass through)
  float freq_base = 10000;
  float freq_scale = 1;      // linear scaling: positions multiplied by this
  const float* freq_factors = nullptr;  // per pair divisor of the frequency (Llama 3.1 rope_freqs), or null
  // YaRN (ext_factor > 0): as llama.cpp's rope_yarn, with the original training context.
  float ext_factor = 0, attn_factor = 1, beta_fast = 32, beta_slow = 1;
  int n_ctx_orig = 0;
};

// One attention call: queries of a batch against one layer's KV cache.
struct AttentionArgs {
  const float* q = nullptr;       // [n_tokens, n_head, head_dim_k]
  float* out = nullptr;           // [n_tokens, n_head, head_dim_v]
  int64_t n_tokens = 0;
  int n_head = 0, n_head_kv = 0, head_dim_k = 0, head_dim_v = 0;
  float scale = 1;                // applied to q·k
  float softcap = 0;              // > 0: scores = softcap * tanh(scores / softcap)
  int sliding_window = 0;         // > 0: a token at position p sees cells with p - pos < window
  const int32_t* token_pos = nullptr;  // [n_tokens]
  const int32_t* token_seq = nullptr;  // [n_tokens]
  // The layer's cache: K and V rows of n_head_kv * head_dim elements per cell, in k_type / v_type
  // (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL; head dims a multiple of the block size).
  WeightType k_type = WeightType::F16, v_type = WeightType::F16;
  const void* k = nullptr;
  const void* v = nullptr;
  // Elements from one cell's row to the next; 0: n_head_kv * head_dim_k (_v). A latent cache (MLA) has
  // no V of its own: v points into the K rows and v_stride is K's row.
  int64_t k_stride = 0, v_stride = 0;
  int64_t n_cells = 0;
  const int32_t* cell_pos = nullptr;   // [n_cells], -1 for an empty cell
  const int32_t* cell_seq = nullptr;   // [n_cells]
  // Flash attention: K/V tiles streamed through an online softmax, never a full row of scores; the
  // plain path (false) keeps ggml's non-flash roundings (q and probabilities through f16).
  bool flash = false;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // Batch invariance (issue 11): on, a token's results are the same bits whatever else shares its
  // calls (other sequences, other tokens of its own, their number, the thread count). Attention is
  // invariant either way; on also selects matmul kernels that may prefill more slowly (BENCHMARKS.md).
  virtual void set_batch_invariant(bool on) = 0;

  // Device memory: valid until free() or the backend's destruction. free() waits for queued ops
  // first, so nothing queued can touch memory after it is released.
  virtual Result<void*> alloc(size_t bytes) = 0;
  virtual void free(void* p) = 0;
  // Whether the host may dereference this device's memory (the CPU's is the host's).
  virtual bool host_accessible() const = 0;
  // Queued copies: the host side must stay valid and unchanged until they have run (synchronize() or
  // an event recorded after them).
  virtual void copy_from_host(void* dst, const void* src, size_t bytes) = 0;
  virtual void copy_to_host(void* dst, const void* src, size_t bytes) = 0;
  // A weight's bytes on this device for the model's lifetime: the CPU uses the host bytes in place
  // (the file mapping), another device uploads them.
  virtual Result<const void*> place_weight(const void* host, size_t bytes) = 0;
  // Lays a placed matrix (or expert weight: matmul_id and matmul_id_swiglu use the copy too) out again for
  // this device's matmul kernels, in memory of its own beside w, which stays valid (other ops, such as get_rows, read w). Returns the bytes that took: 0 where the device
  // keeps w's layout (the CPU repacks only where its kernels gain: kernels.h). Before any matmul of w.
  virtual Result<size_t> repack(const Weight& w) { return size_t(0); }
  // Frees what repack(w) took; matmul reads w as placed again. For an owner about to let w's memory go.
  virtual void release_repack(const Weight& w) {}
  // An event reached once everything queued so far has run; wait(e) makes later ops wait for it (on
  // the CPU, whose ops run at once, the calling thread waits).
  virtual std::shared_ptr<Event> record() = 0;
  virtual void wait(const std::shared_ptr<Event>& e) = 0;
  // Waits for every queued op and copy; returns the first error any of them met (asynchronous
  // failures surface here, as CUDA's do; a device may keep returning it, as CUDA's sticky errors).
  virtual Status synchronize() = 0;

  // y[t, :] = W x[t, :] (+ bias) for n_tokens rows. x: [n_tokens, row_length], y: [n_tokens, n_rows].
  virtual void matmul(const Weight& w, const float* x, int64_t n_tokens, float* y, const Weight* bias = nullptr) = 0;
  // The experts' matmul (ggml's mul_mat_id): y[t, j, :] = W[ids[t, j]] x[t(, j), :] for the n_used experts
  // chosen per token. w: [n_expert, n_rows, row_length]; ids: [n_tokens, n_used], each in [0, n_expert);
  // x: [n_tokens, row_length], one input for all of a token's experts (x_per_slot false: the FFN's gate
  // and up), or [n_tokens, n_used, row_length] (true: its down); y: [n_tokens, n_used, n_rows].
  virtual void matmul_id(const Weight& w, const float* x, bool x_per_slot, const int32_t* ids, int64_t n_tokens,
                         int n_used, float* y) = 0;
  // The experts' gated half in one pass over the routed tokens (llama.cpp's build_moe_ffn from ffn_moe_gate
  // and ffn_moe_up to ffn_moe_swiglu): y[t, j, :] = silu(G x[t, :]) * (U x[t, :]) with G, U expert ids[t, j]'s
  // matrices. Split form: gate and up [n_expert, n_ff, row_length], both on this device; fused form (up
  // null): gate is ffn_gate_up_exps, [n_expert, 2 n_ff, row_length], each expert's gate rows then its up
  // rows. x: [n_tokens, row_length]; ids: [n_tokens, n_used]; y: [n_tokens, n_used, n_ff]. The same bits
  // as matmul_id on each matrix followed by swiglu.
  virtual void matmul_id_swiglu(const Weight& gate, const Weight* up, const float* x, const int32_t* ids,
                                int64_t n_tokens, int n_used, float* y) = 0;
  // The same two ops with expert e's matrix at expert_data[e] (host memory: the expert cache's slots)
  // instead of its slice of w.data; w gives type and shape. The same kernels, so the same bits. A null
  // entry leaves the rows of y of the (token, slot) pairs routed to that expert as they were, so a
  // caller with room for only some experts at a time runs them in groups. Only a backend whose memory
  // is the host's takes them (the loader keeps cached experts on the CPU); others must not be called.
  virtual void matmul_id_ptrs(const Weight& w, const void* const* expert_data, const float* x, bool x_per_slot,
                              const int32_t* ids, int64_t n_tokens, int n_used, float* y) {
    TANDEM_CHECK(!"matmul_id_ptrs: experts from the expert cache run on the CPU backend only");
  }
  virtual void matmul_id_swiglu_ptrs(const Weight& gate, const void* const* gate_data, const Weight* up,
                                     const void* const* up_data, const float* x, const int32_t* ids,
                                     int64_t n_tokens, int n_used, float* y) {
    TANDEM_CHECK(!"matmul_id_swiglu_ptrs: experts from the expert cache run on the CPU backend only");
  }
  // out[t, :] = row ids[t] of the table, dequantized to f32.
  virtual void get_rows(const Weight& table, std::span<const int32_t> ids, float* out) = 0;
  // y = x / rms(x) * weight (weight may be null), per row of n elements.
  virtual void rms_norm(const float* x, const Weight* weight, int64_t n_rows, int64_t n, float eps, float* y) = 0;
  // In place on x: [n_tokens, n_head, head_dim], token t at position pos[t].
  virtual void rope(float* x, int64_t n_tokens, int n_head, int head_dim, const int32_t* pos, const RopeParams& p) = 0;
  virtual void attention(const AttentionArgs& args) = 0;
  // Writes K and V rows of n_tokens tokens into cells[t] of a layer's cache (converting to the types);
  // row_v 0: K only (a latent cache, whose V is a view of K).
  virtual void kv_store(const float* k, const float* v, int64_t n_tokens, int64_t row_k, int64_t row_v,
                        const int32_t* cells, WeightType k_type, WeightType v_type, void* cache_k, void* cache_v) = 0;
  // out = act(gate) * up, elementwise over n values; act is SiLU (SwiGLU) or tanh-GELU (GeGLU).
  virtual void swiglu(const float* gate, const float* up, int64_t n, float* out) = 0;
  virtual void geglu(const float* gate, const float* up, int64_t n, float* out) = 0;
  virtual void add(const float* a, const float* b, int64_t n, float* out) = 0;
  // A strided view copied: dst[r * dst_stride + i] = src[r * src_stride + i] for r < n_rows, i < width
  // (strides in floats; the two regions must not overlap).
  virtual void copy_2d(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t n_rows,
                       int64_t width) = 0;
  // out[r, :] = sum_j w[r, j] * x[r, j, :], summed in j order (ggml's mul then adds, for the experts'
  // outputs). x: [n_rows, n_terms, n], w: [n_rows, n_terms], out: [n_rows, n].
  virtual void weighted_sum(const float* x, const float* w, int64_t n_rows, int n_terms, int64_t n, float* out) = 0;
  // In place: every consecutive `block` values of each row of n (block a power of two dividing n) times
  // the orthonormal Walsh-Hadamard matrix of that size (Sylvester order; symmetric, its own inverse).
  virtual void hadamard(float* x, int64_t n_rows, int64_t n, int block) = 0;
  virtual void scale(float* x, int64_t n, float s) = 0;
  virtual void softcap(float* x, int64_t n, float cap) = 0;
};

}  // namespace tandem
