// tandem probe: this machine's measured speeds, the figures plan and --fit predict with: memory read
// bandwidth per NUMA node for 1..N threads, the CPU matmul kernels' throughput per weight type (decode
// and prefill shapes, timed through the CPU backend), a file system's sequential and 4 MiB random read
// bandwidth, and each sim device's memory and host link. Measured once and cached as JSON in the user's
// cache directory with the date and a hash of the hardware; a cache from other hardware is ignored.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "gguf/types.h"
#include "placement/predict.h"

namespace tandem::placement {

struct ProbeOptions {
  bool quick = false;                 // smaller buffers and shapes, fewer repetitions: about a second per type
  std::string disk_path;              // a file on the file system to measure (the model); empty: no disk figures
  std::vector<uint64_t> sim_devices;  // --sim-device sizes: their links are measured
  std::vector<WeightType> types;      // weight types to time; empty: every type with a CPU kernel in kProbeTypes
};

// Read bandwidth of one NUMA node's CPUs reading their own node's memory.
struct NodeBandwidth {
  int node = 0;
  std::vector<int> threads;           // thread counts measured: 1, 2, 4, ..., the node's CPUs
  std::vector<double> bytes_per_s;    // one per entry of threads
};

// A weight type's matmul through the CPU backend, every thread: decode reads a matrix far beyond the
// caches with one token (bytes of weights per second: the kernel's streaming rate, at most the memory's);
// prefill multiplies a matrix by a micro-batch of tokens (multiply-adds x 2 per second).
struct MatmulRate {
  WeightType type = WeightType::F32;
  double decode_bytes_per_s = 0;
  double prefill_flops_per_s = 0;
  int64_t prefill_tokens = 0;
  double prefill_few_flops_per_s = 0;  // 64 tokens against the same matrix
  double decode_call_s = 0;  // what one call of a small matrix (128 rows) from DRAM takes beyond bytes / rate
  int64_t row_length = 4096;  // of the matrices timed: each type is timed at kProbeRowLengths
  // The routed experts' grouped matmul (the backend's matmul_id, as a MoE prefill runs it: the micro-
  // batch's picks grouped by expert, each pick's activations quantized, the results scattered back) at
  // kExpertTokens (predict.h) tokens per expert on average; 0: not timed (a probe cached before).
  double expert_few_flops_per_s = 0, expert_flops_per_s = 0;
};

// The row lengths each type is timed at: a kernel's per-row costs make short rows slower, and models
// range from 640 (Gemma 3 270M) to 7168 (DeepSeek-V3); predict.h interpolates between them.
inline constexpr int64_t kProbeRowLengths[] = {512, 4096};

// What a forward pass pays besides the matmuls, every thread: an elementwise op's fixed cost per call
// (SwiGLU of one token: waking and joining the threads) and its rate on a micro-batch (values/s), and
// attention's at two head shapes (8 heads of 128 over 2 KV heads; MLA's 16 heads over one latent of
// 576, values its first 512), as the engine runs it by default (flash where AVX-512 is), f16 cache.
struct OpCosts {
  double op_call_s = 0;
  double elementwise_per_s = 0;
  double gelu_per_s = 0;  // GeGLU (tanh GELU times up) on the same micro-batch: Gemma's FFN activation
  std::vector<AttentionRate> attention;  // by head_dim_k ascending
};

// One thread's prefill throughput of a weight type's kernel at one ISA level (the levels below the
// best show what --cpu-isa would give; types a level has no kernel of its own for are left out).
struct IsaRate {
  std::string isa;  // generic, avx2, avx512, amx
  WeightType type = WeightType::F32;
  double flops_per_s = 0;
};

struct DiskRate {
  std::string path;
  double sequential_bytes_per_s = 0;
  double random_bytes_per_s = 0;  // 4 MiB reads at random 4 MiB-aligned offsets
  bool direct = false;            // O_DIRECT (page cache bypassed); false: the file system refused it and
                                  // pages were dropped with posix_fadvise first
  uint64_t bytes_read = 0;        // the file may be smaller than the probe's reads would like
};

struct SimProbe {
  std::string name;               // SIM0, SIM1, ...
  uint64_t memory_bytes = 0;      // its budget; its memory is the host's, at the host's bandwidth
  double link_bytes_per_s = 0;    // host -> device copies of 64 MiB (quick: 8 MiB)
  double link_latency_s = 0;      // one 4 KiB copy, waited for: the link's latency and both threads' wake-ups
  // What an op costs queued to the device beyond the same op on the CPU backend of as many threads: the
  // queue, the hand-over to the device's thread and back (negative: not measured, a probe cached before).
  double op_handover_s = -1;
};

struct Probe {
  std::string date;               // UTC, ISO 8601
  std::string hardware;           // "AMD EPYC, 2 CPUs, 2 cores, 23.4 GiB, avx512": what the hash covers
  std::string hardware_hash;      // 16 hex digits (of the SHA-256 of `hardware`)
  bool quick = false;
  int n_threads = 0;              // threads of the matmul figures: the physical cores, as run's default -t
  std::vector<NodeBandwidth> bandwidth;
  std::vector<MatmulRate> matmul;
  OpCosts ops;                    // zeros in a probe cached before they were measured: not counted
  std::vector<IsaRate> per_isa;
  std::optional<DiskRate> disk;
  std::vector<SimProbe> sims;

  // The machine's read bandwidth: each node's best figure, summed.
  double read_bytes_per_s() const;
  const MatmulRate* rate(WeightType t) const;  // at the longest row length timed; null: not measured
};

// The weight types a full probe times: the plain types and every quantized type a mix uses (mix.h).
extern const WeightType kProbeTypes[];
extern const size_t kNumProbeTypes;

// CPU model, CPU count, physical cores, memory and the best SIMD level of this machine.
std::string hardware_description();
std::string hardware_hash(const std::string& description);

// Measures everything ProbeOptions asks for; `progress` gets a line per step (may be empty).
Result<Probe> run_probe(const ProbeOptions& options, const std::function<void(const std::string&)>& progress = {});

// $TANDEM_PROBE_FILE, else $XDG_CACHE_HOME/tandem/probe.json, else $HOME/.cache/tandem/probe.json.
std::string probe_cache_path();
Status save_probe(const Probe& p, const std::string& path);
// The cached probe if the file exists and was made on this hardware; nullopt otherwise (with the reason
// in *why when given); an unreadable or malformed file is an error naming it.
Result<std::optional<Probe>> load_probe(const std::string& path, std::string* why = nullptr);

std::string probe_to_json(const Probe& p);  // pretty-printed
std::string format_probe(const Probe& p);   // tandem probe --show

// The CPU's speeds from a probe: its read bandwidth, per weight type and row length its kernels' decode
// streaming rate and per-call cost and prefill throughput (a type it did not time gets the slowest
// prefill figure it has), and the other ops' costs.
DeviceSpeed cpu_speed(const Probe& p);

// The CPU's speeds for --fit: the cached probe's when there is one for this hardware, else the memory
// bandwidth of n_threads measured now (256 MiB read twice: a tenth of a second).
DeviceSpeed this_cpu_speed(int n_threads);

// A sim device of `budget` bytes, named SIM<index>, whose kernels run on n_threads threads (as run's
// -t): its link and its per-op hand-over (a few milliseconds; quick: fewer repetitions).
Result<SimProbe> probe_sim(size_t index, uint64_t budget, int n_threads, bool quick);

// This machine's memory read bandwidth in bytes/s with n_threads threads on `cpus` (empty: unpinned),
// each streaming its own first-touched buffer of bytes_per_thread; the best of `passes`.
double measure_read_bandwidth(int n_threads, const std::vector<int>& cpus, size_t bytes_per_thread, int passes);

}  // namespace tandem::placement
