// The files a worker writes for its manager (docs/run-protocol.md) besides run.json: one struct
// each for status.json, info.json and a metrics.jsonl line, with the JSON written by the trainer
// and read by the sweep manager's ingestion through the same code. The exit-code contract and
// the failure classes it carries live here too. Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "isoflop/common/status.h"

namespace isoflop::trainer {

// Exit codes of isoflop-train. 128 + signal: stopped by SIGTERM/SIGINT/SIGUSR2 after a
// checkpoint (resumable).
inline constexpr int kExitFinished = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitBadConfig = 2;
inline constexpr int kExitDiverged = 3;
// Another live worker holds the run directory's lock: this one touched nothing and left.
inline constexpr int kExitBusy = 4;
// The device or host ran out of memory (status.json says which allocation).
inline constexpr int kExitOutOfMemory = 5;

// What an exit code says about a run, the one place codes are interpreted.
enum class ExitClass {
  kFinished,     // 0
  kFailed,       // 1: a data-file error, a full disk, a LibTorch error...: another try may work
  kBadConfig,    // 2: the same config fails the same way: never retried
  kDiverged,     // 3: a result (the loss blew up), not an error
  kBusy,         // 4: another worker owns the folder
  kOutOfMemory,  // 5: the same cell fails the same way on the same device: never retried
  kStopped,      // 128 + signal: checkpointed on a stop signal; resumable
  kCrashed,      // anything else (a signal that was not handled, an abort)
};
ExitClass ClassOfExit(int exit_code);
// "finished", "failed", "bad config", "diverged", "busy", "out of memory", "preempted",
// "crashed".
const char* ExitClassName(ExitClass c);

// DIR/status.json, written atomically at exit. Plain value.
struct StatusFile {
  std::string state;  // finished | diverged | failed | preempted
  std::string reason;
  std::optional<int64_t> step, tokens;  // unknown when the run failed before its first step
  std::optional<double> final_val_loss;
  std::optional<int> exit_code;  // absent in files of very old trainers
  std::optional<double> wall_s;
  // The worker process's peak memory (this attempt's, if the run resumed): `peak_memory_of`
  // says what was measured, "host_rss" (the peak resident set, getrusage) on CPU or
  // "cuda_reserved" (the caching allocator's peak reserved bytes on the run's GPU: the CUDA
  // context is not in it). Absent in files of older trainers. Under data parallel it is the
  // largest of `peak_memory_by_rank`, each rank's peak by rank: rank 0's at exit, the others'
  // as of the last step where every rank evaluated, checkpointed or stopped (empty for one
  // process, and when no such step came).
  std::optional<int64_t> peak_memory_bytes;
  std::string peak_memory_of;
  std::vector<int64_t> peak_memory_by_rank;
  // The most bytes held in tensors at once (the largest over the ranks under data parallel): on
  // CPU counted at LibTorch's CPU allocator (tensor_bytes.h), on a GPU the caching allocator's
  // peak allocated bytes. Absent in files of older trainers.
  std::optional<int64_t> peak_tensor_bytes;
  // The worker's peak resident set in host memory on any device (the largest rank's): on CPU
  // the same figure as peak_memory_bytes; on a GPU what the host side (libraries, pinned
  // batches, the checkpoint's host copies) took, which SLURM's --mem limits. Absent in files
  // of older trainers.
  std::optional<int64_t> peak_host_memory_bytes;

  std::string ToJson() const;  // one line, with the trailing newline
  // Corrupt when `text` is not an object with a string "state" in the states above.
  static Result<StatusFile> Parse(const std::string& text);
};

// DIR/info.json, written atomically when the run starts. Plain value.
struct InfoFile {
  int64_t n_total = 0, n_non_embedding = 0;
  // Parameters a token uses (MoE: router, shared and k routed experts); = n_total for dense.
  // Absent (nullopt) in files of trainers older than MoE.
  std::optional<int64_t> n_active, n_active_non_embedding;
  double flops_per_token_6n = 0, flops_per_token_6n_attn = 0, flops_per_token_chinchilla = 0;
  std::string device, precision, host, torch_version;
  int threads = 0;
  std::optional<double> data_entropy_nats;  // synthetic data only: the exact entropy rate
  // The planner's memory estimate (accounting/memory.h) for this run's shape, micro-batch,
  // precision, attention and device, as the scheduler packs it; status.json's peak is the
  // measured counterpart. Absent in files of older trainers.
  std::optional<int64_t> memory_estimate_bytes;
  // Its tensor terms alone (weights, gradients, optimizer, activations, attention, logits:
  // without the allocator's slack and the runtime), the counterpart of status.json's
  // peak_tensor_bytes. Absent in files of older trainers.
  std::optional<int64_t> memory_estimate_tensor_bytes;

  std::string ToJson() const;
  // Corrupt when `text` is not a JSON object; missing fields keep their defaults.
  static Result<InfoFile> Parse(const std::string& text);
};

// One line of DIR/metrics.jsonl. Plain value.
struct MetricsLine {
  int64_t step = 0;    // the optimizer step just finished, 1-based
  int64_t tokens = 0;  // training tokens so far
  double flops = 0;    // tokens x flops_per_token_6n
  // Non-finite values are written as null and read back as absent.
  std::optional<double> train_loss, val_loss, lr, grad_norm, tokens_per_s, wall_s;
  std::vector<std::pair<std::string, double>> extra;  // named metrics, numbers only

  std::string ToJson() const;  // one line, without the newline
  // Corrupt (without a line number: the caller knows it) unless `line` is a JSON object with
  // an integer "step".
  static Result<MetricsLine> Parse(const std::string& line);
};

// One complete line of metrics.jsonl text, as ForEachMetricsLine hands it over.
struct MetricsLineAt {
  int64_t line_no = 0;  // 1-based; blank lines count
  int64_t offset = 0;   // the byte the line starts at
  int64_t end = 0;      // the byte after its newline
  std::string text;     // without the newline
  Result<MetricsLine> parsed = Status::Internal("not parsed");
};

// The one reading of metrics.jsonl text, for the trainer's resume truncation and the manager's
// ingestion: each complete (newline-ended) line that is not blank, in order, parsed, goes to
// `visit`, which returns false to stop there. A torn last line (no newline: still being written)
// is never handed over. Returns the byte after the last line passed: handed over with `visit`
// returning true, or blank; the text before it need not be read again.
int64_t ForEachMetricsLine(const std::string& text,
                           const std::function<bool(MetricsLineAt&)>& visit);

}  // namespace isoflop::trainer
