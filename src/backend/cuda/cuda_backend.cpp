// CudaBackend: backend.h on one NVIDIA GPU. Memory is cudaMalloc; the queue is one stream; host copies
// pass through a ring of pinned staging memory so they are asynchronous DMA; events are host callbacks
// on the stream (backend.h's Event is a host object). Errors are CUDA's: asynchronous and sticky, the
// first one kept and returned by every synchronize() after it, as the sim device does.
// Nothing here has run on a GPU yet (issue 17; docs/cuda.md lists what is unverified).
#include "backend/cuda/cuda_backend.h"

#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <utility>

#include "backend/cuda/cublas.h"
#include "backend/cuda/kernels.h"
#include "core/progress.h"

namespace tandem::cuda {
namespace {

Status cuda_status(cudaError_t e, const std::string& what) {
  const std::string msg = what + ": " + cudaGetErrorString(e);
  return e == cudaErrorMemoryAllocation ? Status(StatusCode::OutOfMemory, msg) : Status(StatusCode::IoError, msg);
}

// Pinned host memory handed out in order, wrapping around; a region is reused only after the copy
// that used it has run (an event per region, waited for on the host when the ring comes round).
class PinnedRing {
 public:
  static constexpr size_t kBytes = size_t(32) << 20;
  static constexpr size_t kMaxChunk = kBytes / 4;  // copies are split into chunks of at most this

  Status init() {
    const cudaError_t e = cudaHostAlloc(reinterpret_cast<void**>(&base_), kBytes, cudaHostAllocDefault);
    return e == cudaSuccess ? Status::ok() : cuda_status(e, "pinned staging memory");
  }
  ~PinnedRing() {
    for (auto& r : in_flight_) cudaEventDestroy(r.done);
    for (cudaEvent_t e : spare_) cudaEventDestroy(e);
    if (base_) cudaFreeHost(base_);
  }

  // `bytes` (at most kMaxChunk) no queued copy still uses; blocks on the oldest copies if needed.
  uint8_t* take(size_t bytes) {
    bytes = (bytes + 255) / 256 * 256;
    if (head_ + bytes > kBytes) head_ = 0;
    const size_t begin = head_, end = head_ + bytes;
    while (!in_flight_.empty() && in_flight_.front().begin < end && begin < in_flight_.front().end) {
      cudaEventSynchronize(in_flight_.front().done);
      spare_.push_back(in_flight_.front().done);
      in_flight_.pop_front();
    }
    head_ = end;
    last_ = {begin, end, nullptr};
    return base_ + begin;
  }
  // Marks the region take() gave last as in use until what is queued on `stream` so far has run.
  void queued_on(cudaStream_t stream) {
    if (spare_.empty()) {
      cudaEvent_t e;
      if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess) {
        cudaStreamSynchronize(stream);  // no event to track it with: wait now instead
        return;
      }
      spare_.push_back(e);
    }
    last_.done = spare_.back();
    spare_.pop_back();
    cudaEventRecord(last_.done, stream);
    in_flight_.push_back(last_);
  }

 private:
  struct Region {
    size_t begin, end;
    cudaEvent_t done;
  };
  uint8_t* base_ = nullptr;
  size_t head_ = 0;
  Region last_{};
  std::deque<Region> in_flight_;  // oldest first
  std::vector<cudaEvent_t> spare_;
};

// Device memory grown on demand, for an op's intermediates (the f16 tiles of a GEMM, the experts'
// gate and up rows). Growing waits for the stream: queued work may still read the old block.
class Scratch {
 public:
  ~Scratch() {
    if (p_) cudaFree(p_);
  }
  Result<void*> get(size_t bytes, cudaStream_t stream) {
    if (bytes <= bytes_) return p_;
    cudaStreamSynchronize(stream);
    if (p_) cudaFree(p_);
    p_ = nullptr;
    bytes_ = 0;
    const cudaError_t e = cudaMalloc(&p_, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();  // an allocation failure is not sticky: clear it
      p_ = nullptr;
      return cuda_status(e, format("scratch of %s", human_bytes(bytes).c_str()));
    }
    bytes_ = bytes;
    return p_;
  }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

struct HostCopy {  // a download's last leg, run by the stream's host callback
  void* dst;
  const void* src;
  size_t bytes;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, const Cublas& blas) : device_(device), name_("CUDA" + std::to_string(device)), blas_(blas) {}
  Status init();
  ~CudaBackend() override;

  std::string name() const override { return name_; }
  void set_batch_invariant(bool on) override { batch_invariant_ = on; }
  Result<void*> alloc(size_t bytes) override;
  void free(void* p) override;
  bool host_accessible() const override { return false; }
  void copy_from_host(void* dst, const void* src, size_t bytes) override;
  void copy_to_host(void* dst, const void* src, size_t bytes) override;
  Result<const void*> place_weight(const void* host, size_t bytes) override;
  std::shared_ptr<Event> record() override;
  void wait(const std::shared_ptr<Event>& e) override;
  Status synchronize() override;
  LinkStats link_stats() const { return {bytes_from_host_, bytes_to_host_}; }

  void matmul(const Weight& w, const float* x, int64_t n_tokens, float* y, const Weight* bias) override;
  void matmul_id(const Weight& w, const float* x, bool x_per_slot, const int32_t* ids, int64_t n_tokens, int n_used,
                 float* y) override;
  void matmul_id_swiglu(const Weight& gate, const Weight* up, const float* x, const int32_t* ids, int64_t n_tokens,
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
  // At most this many tokens take the matrix-vector kernels; more go to cuBLAS (unless batch-invariant,
  // where every token takes the same kernel whatever its batch). Unmeasured: llama.cpp switches at 8.
  static constexpr int64_t kMaxMatvecTokens = 8;
  static constexpr size_t kGemmTileBytes = size_t(64) << 20;  // f16 weight rows dequantized per GEMM

  // Makes this device current for the calling thread; false after a failure (the op is dropped).
  bool ready();
  void fail(Status s);
  void check(const char* op);  // records a launch error
  void fail_type(const char* op, const Weight& w);
  void matvec(const char* op, MatVec m);
  // The experts' matmul for a prefill batch (grouped expert GEMM): the columns (token, slot) sorted by
  // expert, each expert's inputs gathered and multiplied by its rows in one cuBLAS GEMM (f16 tiles, as
  // gemm), the results scattered back. Each expert's weights are read once, not once per column.
  // group_by_expert reads the ids back to the host (a wait for the stream, once per op in prefill) and
  // fills order_ (device) and group_offsets_; false after a failure (recorded).
  bool group_by_expert(const int32_t* ids, int64_t n_cols, int64_t n_expert);
  void grouped_gemm(const char* op, const MatVec& m);
  // The experts' matmul by either path: the grouped GEMM for more than kMaxMatvecTokens tokens (not
  // batch-invariant, as gemm), else the matrix-vector kernels. grouped: group_by_expert has run for m.ids.
  void expert_matmul(const char* op, const MatVec& m, bool grouped);
  bool use_grouped(const Weight& w, int64_t n_tokens) const {
    return n_tokens > kMaxMatvecTokens && !batch_invariant_ && w.type != WeightType::F32;
  }
  void gemm(const Weight& w, const float* x, int64_t n_tokens, float* y);
  // Bytes from p to the end of the allocation holding it; 0 if none does.
  size_t bytes_after(const void* p) const;

  int device_;
  std::string name_;
  const Cublas& blas_;
  cublasHandle_t handle_ = nullptr;
  cudaStream_t stream_ = nullptr;
  FaultWord* fault_host_ = nullptr;  // mapped pinned memory: kernels write it, the host reads it after a sync
  FaultWord* fault_device_ = nullptr;
  PinnedRing staging_;
  Scratch q8_, f16_weights_, f16_x_, gate_, up_, mla_partials_, order_, grouped_y_;
  std::vector<int32_t> ids_host_, order_host_;
  std::vector<int64_t> group_offsets_;  // [n_expert + 1]: expert e's columns are order_[off[e], off[e + 1])
  std::map<const uint8_t*, size_t> allocations_;  // base -> bytes (the KV stores' bounds)
  Status error_;
  bool batch_invariant_ = false;
  uint64_t bytes_from_host_ = 0, bytes_to_host_ = 0;  // the calling thread's copies: a backend is not shared
};

Status CudaBackend::init() {
  cudaError_t e = cudaSetDevice(device_);
  if (e != cudaSuccess) return cuda_status(e, name_ + ": select device");
  if ((e = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)) != cudaSuccess)
    return cuda_status(e, name_ + ": create stream");
  if ((e = cudaHostAlloc(reinterpret_cast<void**>(&fault_host_), sizeof(FaultWord), cudaHostAllocMapped)) != cudaSuccess)
    return cuda_status(e, name_ + ": fault word");
  *fault_host_ = {0, 0};
  if ((e = cudaHostGetDevicePointer(reinterpret_cast<void**>(&fault_device_), fault_host_, 0)) != cudaSuccess)
    return cuda_status(e, name_ + ": fault word");
  TANDEM_TRY(staging_.init());
  if (blas_.create(&handle_) != CUBLAS_STATUS_SUCCESS) return io_error("%s: cublasCreate failed", name_.c_str());
  if (blas_.set_stream(handle_, stream_) != CUBLAS_STATUS_SUCCESS)
    return io_error("%s: cublasSetStream failed", name_.c_str());
  return Status::ok();
}

CudaBackend::~CudaBackend() {
  cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  if (handle_) blas_.destroy(handle_);
  for (const auto& [p, bytes] : allocations_) cudaFree(const_cast<uint8_t*>(p));
  if (fault_host_) cudaFreeHost(fault_host_);
  if (stream_) cudaStreamDestroy(stream_);
}

bool CudaBackend::ready() {
  if (!error_.is_ok()) return false;
  const cudaError_t e = cudaSetDevice(device_);
  if (e != cudaSuccess) fail(cuda_status(e, name_ + ": select device"));
  return error_.is_ok();
}

void CudaBackend::fail(Status s) {
  if (!error_.is_ok()) return;
  std::fprintf(stderr, "error: %s\n", s.message().c_str());  // loud at once: the caller may sync much later
  error_ = std::move(s);
}

void CudaBackend::check(const char* op) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail(cuda_status(e, name_ + ": " + op));
}

void CudaBackend::fail_type(const char* op, const Weight& w) {
  fail(unsupported("%s: %s: %s is %s, which has no CUDA kernel yet (issue 17); place it on the CPU (-ot)",
                   name_.c_str(), op, w.name.c_str(), type_name(w.type).data()));
}

size_t CudaBackend::bytes_after(const void* p) const {
  const auto* b = static_cast<const uint8_t*>(p);
  auto it = allocations_.upper_bound(b);
  if (it == allocations_.begin()) return 0;
  --it;
  return b < it->first + it->second ? size_t(it->first + it->second - b) : 0;
}

Result<void*> CudaBackend::alloc(size_t bytes) {
  if (!ready()) return error_;
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 1));
  if (e != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it so later calls do not see it
    size_t free_bytes = 0, total = 0;
    cudaMemGetInfo(&free_bytes, &total);
    return out_of_memory("%s: cannot allocate %s: %s of its %s are free (%s)", name_.c_str(), human_bytes(bytes).c_str(),
                         human_bytes(free_bytes).c_str(), human_bytes(total).c_str(), cudaGetErrorString(e));
  }
  allocations_[static_cast<const uint8_t*>(p)] = bytes;
  return p;
}

void CudaBackend::free(void* p) {
  if (!p) return;
  cudaSetDevice(device_);
  cudaStreamSynchronize(stream_);  // backend.h: free() waits for the queued ops that may use p
  const auto it = allocations_.find(static_cast<const uint8_t*>(p));
  if (it == allocations_.end()) {
    std::fprintf(stderr, "error: %s: free(%p): not an allocation of this device\n", name_.c_str(), p);
    std::abort();  // a double free or a foreign pointer: a programmer error, as in CONVENTIONS.md
  }
  allocations_.erase(it);
  const cudaError_t e = cudaFree(p);
  if (e != cudaSuccess) fail(cuda_status(e, name_ + ": free"));
}

void CudaBackend::copy_from_host(void* dst, const void* src, size_t bytes) {
  if (!ready()) return;
  bytes_from_host_ += bytes;
  // Staged at once (the host bytes are final when the copy is queued), so the DMA runs from pinned memory.
  for (size_t off = 0; off < bytes; off += PinnedRing::kMaxChunk) {
    const size_t n = std::min(PinnedRing::kMaxChunk, bytes - off);
    uint8_t* stage = staging_.take(n);
    std::memcpy(stage, static_cast<const uint8_t*>(src) + off, n);
    cudaMemcpyAsync(static_cast<uint8_t*>(dst) + off, stage, n, cudaMemcpyHostToDevice, stream_);
    staging_.queued_on(stream_);
  }
  check("copy_from_host");
}

void CudaBackend::copy_to_host(void* dst, const void* src, size_t bytes) {
  if (!ready()) return;
  bytes_to_host_ += bytes;
  for (size_t off = 0; off < bytes; off += PinnedRing::kMaxChunk) {
    const size_t n = std::min(PinnedRing::kMaxChunk, bytes - off);
    uint8_t* stage = staging_.take(n);
    cudaMemcpyAsync(stage, static_cast<const uint8_t*>(src) + off, n, cudaMemcpyDeviceToHost, stream_);
    // The last leg, pinned -> destination, on the stream's host thread once the DMA has landed.
    auto* leg = new HostCopy{static_cast<uint8_t*>(dst) + off, stage, n};
    cudaLaunchHostFunc(stream_, [](void* p) {
      auto* c = static_cast<HostCopy*>(p);
      std::memcpy(c->dst, c->src, c->bytes);
      delete c;
    }, leg);
    staging_.queued_on(stream_);
  }
  check("copy_to_host");
}

Result<const void*> CudaBackend::place_weight(const void* host, size_t bytes) {
  TANDEM_ASSIGN(void* p, alloc(bytes));
  copy_from_host(p, host, bytes);  // staged before it returns: the host bytes need not outlive it
  if (!error_.is_ok()) return error_;
  return static_cast<const void*>(p);
}

std::shared_ptr<Event> CudaBackend::record() {
  auto e = std::make_shared<Event>();
  if (!ready()) {
    e->signal();  // nothing more will run here: no waiter may hang on it
    return e;
  }
  auto* held = new std::shared_ptr<Event>(e);
  const cudaError_t err = cudaLaunchHostFunc(stream_, [](void* p) {
    auto* h = static_cast<std::shared_ptr<Event>*>(p);
    (*h)->signal();
    delete h;
  }, held);
  if (err != cudaSuccess) {
    delete held;
    e->signal();
    fail(cuda_status(err, name_ + ": record"));
  }
  return e;
}

void CudaBackend::wait(const std::shared_ptr<Event>& e) {
  if (!ready()) return;
  // The stream's host thread blocks until the other device reaches the event. That stalls this
  // device's later host callbacks too; a CPU event is already signalled, so it returns at once.
  auto* held = new std::shared_ptr<Event>(e);
  const cudaError_t err = cudaLaunchHostFunc(stream_, [](void* p) {
    auto* h = static_cast<std::shared_ptr<Event>*>(p);
    (*h)->wait_host();
    delete h;
  }, held);
  if (err != cudaSuccess) {
    delete held;
    fail(cuda_status(err, name_ + ": wait"));
  }
}

Status CudaBackend::synchronize() {
  if (!error_.is_ok()) return error_;
  cudaSetDevice(device_);
  const cudaError_t e = cudaStreamSynchronize(stream_);
  if (e != cudaSuccess) fail(cuda_status(e, name_ + ": a queued op or copy failed"));
  switch (DeviceFault(fault_host_->code)) {
    case DeviceFault::None: break;
    case DeviceFault::RowId:
      fail(invalid_argument("%s: get_rows: id %d is outside the table", name_.c_str(), fault_host_->value));
      break;
    case DeviceFault::ExpertId:
      fail(invalid_argument("%s: matmul_id: expert id %d is outside the weight's experts", name_.c_str(),
                            fault_host_->value));
      break;
    case DeviceFault::CacheCell:
      fail(invalid_argument("%s: kv_store: cell %d is outside the cache", name_.c_str(), fault_host_->value));
      break;
  }
  return error_;
}

void CudaBackend::matvec(const char* op, MatVec m) {
  // gridDim.y holds the columns: split past 65535 at a multiple of x_group, so each piece's columns
  // start a token.
  const int64_t step = 65535 / m.x_group * m.x_group;
  for (int64_t c0 = 0; c0 < m.n_cols; c0 += step) {
    MatVec part = m;
    part.n_cols = std::min(step, m.n_cols - c0);
    part.x = m.x + c0 / m.x_group * m.n;
    part.y = m.y + c0 * m.n_rows;
    if (m.ids) part.ids = m.ids + c0;
    auto q8 = q8_.get(matvec_q8_bytes(part.n_cols, m.n), stream_);
    if (!q8) return fail(q8.status());
    launch_matvec(stream_, part, *q8, fault_device_);
  }
  check(op);
}

void CudaBackend::gemm(const Weight& w, const float* x, int64_t n_tokens, float* y) {
  // y [n_tokens, n_rows] row-major is cuBLAS's column-major n_rows x n_tokens; W [n_rows, n] row-major
  // is column-major n x n_rows, so C = op(A) B with A = W transposed.
  const int64_t n_rows = w.n_rows(), n = w.row_length();
  const float one = 1, zero = 0;
  cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
  if (w.type == WeightType::F32) {
    st = blas_.gemm_ex(handle_, CUBLAS_OP_T, CUBLAS_OP_N, int(n_rows), int(n_tokens), int(n), &one, w.data, CUDA_R_32F,
                       int(w.row_stride / 4), x, CUDA_R_32F, int(n), &zero, y, CUDA_R_32F, int(n_rows),
                       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  } else {
    auto x16 = f16_x_.get(size_t(n_tokens * n) * 2, stream_);
    if (!x16) return fail(x16.status());
    launch_f32_to_f16(stream_, x, n_tokens * n, *x16);
    // F16 rows are read in place; other types are dequantized to f16 a tile of rows at a time.
    const bool in_place = w.type == WeightType::F16;
    const int64_t tile = in_place ? n_rows : std::max<int64_t>(1, int64_t(kGemmTileBytes / size_t(2 * n)));
    for (int64_t r0 = 0; r0 < n_rows && st == CUBLAS_STATUS_SUCCESS; r0 += tile) {
      const int64_t rows = std::min(tile, n_rows - r0);
      const void* a = w.data;
      int lda = int(w.row_stride / 2);
      if (!in_place) {
        auto w16 = f16_weights_.get(size_t(std::min(tile, n_rows)) * size_t(n) * 2, stream_);
        if (!w16) return fail(w16.status());
        launch_dequantize_f16(stream_, w.type, static_cast<const uint8_t*>(w.data) + size_t(r0) * w.row_stride,
                              w.row_stride, rows, n, *w16);
        a = *w16;
        lda = int(n);
      }
      st = blas_.gemm_ex(handle_, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(n_tokens), int(n), &one, a, CUDA_R_16F, lda,
                         *x16, CUDA_R_16F, int(n), &zero, y + r0, CUDA_R_32F, int(n_rows), CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT);
    }
  }
  if (st != CUBLAS_STATUS_SUCCESS)
    fail(io_error("%s: matmul %s: cublasGemmEx failed (status %d)", name_.c_str(), w.name.c_str(), int(st)));
  check("matmul");
}

bool CudaBackend::group_by_expert(const int32_t* ids, int64_t n_cols, int64_t n_expert) {
  ids_host_.resize(size_t(n_cols));
  cudaMemcpyAsync(ids_host_.data(), ids, size_t(n_cols) * 4, cudaMemcpyDeviceToHost, stream_);
  const cudaError_t e = cudaStreamSynchronize(stream_);
  if (e != cudaSuccess) {
    fail(cuda_status(e, name_ + ": matmul_id: reading the expert ids"));
    return false;
  }
  group_offsets_.assign(size_t(n_expert) + 1, 0);
  for (int32_t id : ids_host_) {
    if (id < 0 || id >= n_expert) {
      fail(invalid_argument("%s: matmul_id: expert id %d is outside the weight's experts", name_.c_str(), id));
      return false;
    }
    ++group_offsets_[size_t(id) + 1];
  }
  for (size_t i = 1; i < group_offsets_.size(); ++i) group_offsets_[i] += group_offsets_[i - 1];
  order_host_.resize(size_t(n_cols));
  std::vector<int64_t> next(group_offsets_.begin(), group_offsets_.end() - 1);
  for (int64_t c = 0; c < n_cols; ++c) order_host_[size_t(next[size_t(ids_host_[size_t(c)])]++)] = int32_t(c);
  auto order = order_.get(size_t(n_cols) * 4, stream_);
  if (!order) {
    fail(order.status());
    return false;
  }
  copy_from_host(*order, order_host_.data(), size_t(n_cols) * 4);
  return error_.is_ok();
}

void CudaBackend::grouped_gemm(const char* op, const MatVec& m) {
  auto x16 = f16_x_.get(size_t(m.n_cols * m.n) * 2, stream_);
  if (!x16) return fail(x16.status());
  auto y_sorted = grouped_y_.get(size_t(m.n_cols * m.n_rows) * 4, stream_);
  if (!y_sorted) return fail(y_sorted.status());
  auto order = order_.get(size_t(m.n_cols) * 4, stream_);  // filled by group_by_expert
  if (!order) return fail(order.status());
  const auto* ord = static_cast<const int32_t*>(*order);
  launch_gather_f16(stream_, m.x, m.x_group, m.n, ord, m.n_cols, *x16);
  const bool in_place = m.type == WeightType::F16;
  const int64_t tile = in_place ? m.n_rows : std::max<int64_t>(1, int64_t(kGemmTileBytes / size_t(2 * m.n)));
  const float one = 1, zero = 0;
  for (size_t e = 0; e + 1 < group_offsets_.size(); ++e) {
    const int64_t c0 = group_offsets_[e], count = group_offsets_[e + 1] - c0;
    if (count == 0) continue;
    const auto* we = static_cast<const uint8_t*>(m.w) + e * m.expert_stride;
    for (int64_t r0 = 0; r0 < m.n_rows; r0 += tile) {
      const int64_t rows = std::min(tile, m.n_rows - r0);
      const void* a = we + size_t(r0) * m.row_stride;
      int lda = int(m.row_stride / 2);
      if (!in_place) {
        auto w16 = f16_weights_.get(size_t(std::min(tile, m.n_rows)) * size_t(m.n) * 2, stream_);
        if (!w16) return fail(w16.status());
        launch_dequantize_f16(stream_, m.type, a, m.row_stride, rows, m.n, *w16);
        a = *w16;
        lda = int(m.n);
      }
      // As gemm: column-major y_sorted[c0 .. c0 + count) of n_rows, rows r0 .. r0 + rows.
      const cublasStatus_t st = blas_.gemm_ex(
          handle_, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(count), int(m.n), &one, a, CUDA_R_16F, lda,
          static_cast<const uint8_t*>(*x16) + size_t(c0 * m.n) * 2, CUDA_R_16F, int(m.n), &zero,
          static_cast<float*>(*y_sorted) + c0 * m.n_rows + r0, CUDA_R_32F, int(m.n_rows), CUBLAS_COMPUTE_32F,
          CUBLAS_GEMM_DEFAULT);
      if (st != CUBLAS_STATUS_SUCCESS)
        return fail(io_error("%s: %s: cublasGemmEx failed for expert %zu (status %d)", name_.c_str(), op, e, int(st)));
    }
  }
  launch_scatter_rows(stream_, static_cast<const float*>(*y_sorted), ord, m.n_cols, m.n_rows, m.y);
  check(op);
}

void CudaBackend::expert_matmul(const char* op, const MatVec& m, bool grouped) {
  if (grouped) grouped_gemm(op, m);
  else matvec(op, m);
}

void CudaBackend::matmul(const Weight& w, const float* x, int64_t n_tokens, float* y, const Weight* bias) {
  if (!ready()) return;
  if (!has_matvec(w.type)) return fail_type("matmul", w);
  if (n_tokens <= kMaxMatvecTokens || batch_invariant_) {
    MatVec m;
    m.type = w.type;
    m.w = w.data;
    m.row_stride = w.row_stride;
    m.n_rows = w.n_rows();
    m.n = w.row_length();
    m.x = x;
    m.n_cols = n_tokens;
    m.y = y;
    matvec("matmul", m);
  } else {
    gemm(w, x, n_tokens, y);
  }
  if (bias) {
    if (bias->type != WeightType::F32) return fail_type("matmul bias", *bias);
    launch_add_bias(stream_, y, static_cast<const float*>(bias->data), n_tokens, w.n_rows());
    check("matmul bias");
  }
}

void CudaBackend::matmul_id(const Weight& w, const float* x, bool x_per_slot, const int32_t* ids, int64_t n_tokens,
                            int n_used, float* y) {
  if (!ready()) return;
  if (!has_matvec(w.type)) return fail_type("matmul_id", w);
  MatVec m;
  m.type = w.type;
  m.w = w.data;
  m.row_stride = w.row_stride;
  m.expert_stride = size_t(w.expert_rows()) * w.row_stride;
  m.n_rows = w.expert_rows();
  m.n = w.row_length();
  m.ids = ids;
  m.n_expert = w.n_expert();
  m.x = x;
  m.x_group = x_per_slot ? 1 : n_used;
  m.n_cols = n_tokens * n_used;
  m.y = y;
  const bool grouped = use_grouped(w, n_tokens);
  if (grouped && !group_by_expert(ids, m.n_cols, m.n_expert)) return;
  expert_matmul("matmul_id", m, grouped);
}

void CudaBackend::matmul_id_swiglu(const Weight& gate, const Weight* up, const float* x, const int32_t* ids,
                                   int64_t n_tokens, int n_used, float* y) {
  if (!ready()) return;
  if (!has_matvec(gate.type)) return fail_type("matmul_id_swiglu", gate);
  if (up && !has_matvec(up->type)) return fail_type("matmul_id_swiglu", *up);
  const int64_t n_ff = up ? gate.expert_rows() : gate.expert_rows() / 2, n_slots = n_tokens * n_used;
  auto g_mem = gate_.get(size_t(n_slots * n_ff) * 4, stream_);
  if (!g_mem) return fail(g_mem.status());
  auto u_mem = up_.get(size_t(n_slots * n_ff) * 4, stream_);
  if (!u_mem) return fail(u_mem.status());
  float* g = static_cast<float*>(*g_mem);
  float* u = static_cast<float*>(*u_mem);
  const bool grouped = use_grouped(gate, n_tokens) && (!up || use_grouped(*up, n_tokens));
  if (grouped && !group_by_expert(ids, n_slots, gate.n_expert())) return;
  MatVec m;
  m.type = gate.type;
  m.w = gate.data;
  m.row_stride = gate.row_stride;
  m.expert_stride = size_t(gate.expert_rows()) * gate.row_stride;
  m.n_rows = n_ff;
  m.n = gate.row_length();
  m.ids = ids;
  m.n_expert = gate.n_expert();
  m.x = x;
  m.x_group = n_used;
  m.n_cols = n_slots;
  m.y = g;
  expert_matmul("matmul_id_swiglu gate", m, grouped);
  if (up) {
    m.type = up->type;
    m.w = up->data;
    m.row_stride = up->row_stride;
    m.expert_stride = size_t(up->expert_rows()) * up->row_stride;
  } else {  // fused ffn_gate_up_exps: each expert's up rows follow its gate rows
    m.w = static_cast<const uint8_t*>(gate.data) + size_t(n_ff) * gate.row_stride;
  }
  m.y = u;
  expert_matmul("matmul_id_swiglu up", m, grouped);
  launch_swiglu(stream_, g, u, n_slots * n_ff, y);
  check("matmul_id_swiglu");
}

void CudaBackend::get_rows(const Weight& table, std::span<const int32_t> ids, float* out) {
  if (!ready()) return;
  if (!launch_get_rows(stream_, table.type, table.data, table.row_stride, table.n_rows(), table.row_length(),
                       ids.data(), int64_t(ids.size()), out, fault_device_))
    return fail_type("get_rows", table);
  check("get_rows");
}

void CudaBackend::rms_norm(const float* x, const Weight* weight, int64_t n_rows, int64_t n, float eps, float* y) {
  if (!ready()) return;
  if (weight && weight->type != WeightType::F32) return fail_type("rms_norm", *weight);
  launch_rms_norm(stream_, x, weight ? static_cast<const float*>(weight->data) : nullptr, n_rows, n, eps, y);
  check("rms_norm");
}

void CudaBackend::rope(float* x, int64_t n_tokens, int n_head, int head_dim, const int32_t* pos, const RopeParams& p) {
  if (!ready()) return;
  launch_rope(stream_, x, n_tokens, n_head, head_dim, pos, p);
  check("rope");
}

void CudaBackend::attention(const AttentionArgs& a) {
  if (!ready()) return;
  if (!attention_supported(a.k_type, a.v_type))
    return fail(unsupported("%s: attention over a %s K / %s V cache has no CUDA kernel yet (issue 17)", name_.c_str(),
                            type_name(a.k_type).data(), type_name(a.v_type).data()));
  if (a.head_dim_k > 576 || a.head_dim_v > 576)
    return fail(unsupported("%s: attention: head sizes %d/%d exceed the kernel's 576", name_.c_str(), a.head_dim_k,
                            a.head_dim_v));
  int v_off = 0;
  if (mla_attention_supported(a, &v_off)) {  // DeepSeek's latent cache: each tile read once for 16 heads
    void* partials = nullptr;
    if (const size_t bytes = mla_attention_scratch_bytes(a)) {
      auto p = mla_partials_.get(bytes, stream_);
      if (!p) return fail(p.status());
      partials = *p;
    }
    launch_mla_attention(stream_, a, v_off, partials);
  } else {
    launch_attention(stream_, a);
  }
  check("attention");
}

void CudaBackend::kv_store(const float* k, const float* v, int64_t n_tokens, int64_t row_k, int64_t row_v,
                           const int32_t* cells, WeightType k_type, WeightType v_type, void* cache_k, void* cache_v) {
  if (!ready()) return;
  for (const auto& [t, used] : {std::pair{k_type, true}, std::pair{v_type, row_v > 0}})
    if (used && !kv_store_supported(t))
      return fail(unsupported("%s: kv_store: a %s cache has no CUDA kernel yet (issue 17)", name_.c_str(),
                              type_name(t).data()));
  // The cells' bound is the cache allocation's size: cells are device data, checked by the kernel.
  launch_kv_store(stream_, k, n_tokens, row_k, cells, k_type, cache_k,
                  int64_t(bytes_after(cache_k) / row_bytes(k_type, row_k)), fault_device_);
  if (row_v > 0)
    launch_kv_store(stream_, v, n_tokens, row_v, cells, v_type, cache_v,
                    int64_t(bytes_after(cache_v) / row_bytes(v_type, row_v)), fault_device_);
  check("kv_store");
}

void CudaBackend::swiglu(const float* gate, const float* up, int64_t n, float* out) {
  if (!ready()) return;
  launch_swiglu(stream_, gate, up, n, out);
  check("swiglu");
}

void CudaBackend::geglu(const float* gate, const float* up, int64_t n, float* out) {
  if (!ready()) return;
  launch_geglu(stream_, gate, up, n, out);
  check("geglu");
}

void CudaBackend::add(const float* a, const float* b, int64_t n, float* out) {
  if (!ready()) return;
  launch_add(stream_, a, b, n, out);
  check("add");
}

void CudaBackend::copy_2d(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t n_rows,
                          int64_t width) {
  if (!ready() || n_rows == 0 || width == 0) return;
  cudaMemcpy2DAsync(dst, size_t(dst_stride) * 4, src, size_t(src_stride) * 4, size_t(width) * 4, size_t(n_rows),
                    cudaMemcpyDeviceToDevice, stream_);
  check("copy_2d");
}

void CudaBackend::weighted_sum(const float* x, const float* w, int64_t n_rows, int n_terms, int64_t n, float* out) {
  if (!ready()) return;
  launch_weighted_sum(stream_, x, w, n_rows, n_terms, n, out);
  check("weighted_sum");
}

void CudaBackend::hadamard(float* x, int64_t n_rows, int64_t n, int block) {
  if (!ready()) return;
  if (block > 2048) return fail(unsupported("%s: hadamard: block %d exceeds the kernel's 2048", name_.c_str(), block));
  launch_hadamard(stream_, x, n_rows, n, block);
  check("hadamard");
}

void CudaBackend::scale(float* x, int64_t n, float s) {
  if (!ready()) return;
  launch_scale(stream_, x, n, s);
  check("scale");
}

void CudaBackend::softcap(float* x, int64_t n, float cap) {
  if (!ready()) return;
  launch_softcap(stream_, x, n, cap);
  check("softcap");
}

Probe run_probe() {
  Probe p;
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    p.reason = cudaGetErrorString(e);  // "no CUDA-capable device is detected", ...
    // The runtime says "driver version is insufficient" when there is no driver at all: say which.
    if (e == cudaErrorInsufficientDriver) {
      if (void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL)) dlclose(driver);
      else p.reason = "no NVIDIA driver (libcuda.so.1 not found)";
    }
    return p;
  }
  if (n == 0) {
    p.reason = "the driver reports no device";
    return p;
  }
  if (auto blas = cublas(); !blas) {
    p.reason = blas.status().message();
    return p;
  }
  std::vector<std::string> skipped;
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    DeviceInfo d;
    d.index = i;
    d.name = prop.name;
    d.cc_major = prop.major;
    d.cc_minor = prop.minor;
    const int cc = d.cc_major * 10 + d.cc_minor;
    if (cc < 61) {  // __dp4a arrived with sm_61
      skipped.push_back(format("%s is sm_%d, below the sm_61 the kernels need", prop.name, cc));
      continue;
    }
    if (cc < TANDEM_CUDA_MIN_ARCH) {  // no code for it in this binary: its first kernel would fail
      skipped.push_back(format("%s is sm_%d, below this build's lowest architecture sm_%d (CMAKE_CUDA_ARCHITECTURES; "
                               "CUDA 13 cannot build sm_61, a CUDA 12 toolkit can)", prop.name, cc, TANDEM_CUDA_MIN_ARCH));
      continue;
    }
    if (cudaSetDevice(i) == cudaSuccess) cudaMemGetInfo(&d.free_bytes, &d.total_bytes);
    cudaGetLastError();
    p.devices.push_back(d);
  }
  if (p.devices.empty()) {
    p.reason.clear();
    for (const auto& s : skipped) p.reason += (p.reason.empty() ? "" : "; ") + s;
  }
  return p;
}

}  // namespace

const Probe& probe() {
  static const Probe p = run_probe();
  return p;
}

Result<std::unique_ptr<Backend>> create_backend(int index) {
  const Probe& p = probe();
  const auto it = std::find_if(p.devices.begin(), p.devices.end(), [&](const DeviceInfo& d) { return d.index == index; });
  if (it == p.devices.end())
    return not_found("CUDA%d: no such device (%s)", index,
                     p.devices.empty() ? p.reason.c_str() : format("%zu found", p.devices.size()).c_str());
  TANDEM_ASSIGN(const Cublas* blas, cublas());
  auto b = std::make_unique<CudaBackend>(index, *blas);
  TANDEM_TRY(b->init());
  return std::unique_ptr<Backend>(std::move(b));
}

LinkStats link_stats(const Backend& b) {
  const auto* c = dynamic_cast<const CudaBackend*>(&b);
  return c ? c->link_stats() : LinkStats{};
}

std::string describe_devices() {
  const Probe& p = probe();
  if (p.devices.empty()) return "  CUDA: no device (" + p.reason + ")\n";
  std::string out;
  for (const DeviceInfo& d : p.devices)
    out += format("  CUDA%d: %s (sm_%d%d, %s, %s free)\n", d.index, d.name.c_str(), d.cc_major, d.cc_minor,
                  human_bytes(d.total_bytes).c_str(), human_bytes(d.free_bytes).c_str());
  return out;
}

}  // namespace tandem::cuda
