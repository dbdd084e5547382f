// The planner: a SweepConfig -> the deterministic list of cells (one training run each) with
// every N and FLOP convention, the run.json each cell gets, resource estimates and warnings.
// Same file, same cells and keys, on any machine.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/sweep/config.h"
#include "isoflop/sweep/memory_estimate.h"
#include "isoflop/trainer/accounting.h"

namespace isoflop::sweep {

// One training run of the sweep. Plain value.
struct Cell {
  std::string key;          // first 16 hex digits of SHA-256(canonical JSON of `config`)
  int budget_index = 0;     // index into SweepConfig::budgets
  double budget_flops = 0;  // C
  accounting::Shape shape;
  uint64_t seed = 0;
  std::map<std::string, nlohmann::json> axes;  // parameters-block values of this cell
  int64_t n_total = 0, n_non_embedding = 0;
  int64_t n_active = 0;  // per token (MoE: router, shared and top-k experts); = n_total if dense
  double flops_per_token_6n = 0, flops_per_token_6n_attn = 0, flops_per_token_chinchilla = 0;
  int64_t tokens = 0;         // D = round(C / flops_per_token_6n)
  int64_t steps = 0;          // optimizer steps: ceil(D / batch_tokens)
  int64_t warmup_tokens = 0;  // as the trainer will compute it
  // The resolved run config (run.json without "name" and the machine-specific train.threads
  // and train.device): what the key hashes.
  nlohmann::json config;
  MemoryEstimate memory;
  double est_seconds = 0;  // at the estimated throughput of one run
  // Where est_seconds comes from: the FLOP/s model (EstimateFlopsPerSecond), a throughput probe
  // of this cell's shape, or probes of other shapes interpolated in log N (ProbePlan).
  enum class EstimateSource { kModel, kProbed, kInterpolated };
  EstimateSource est_source = EstimateSource::kModel;
  // The peak memory a throughput probe of this cell's shape measured (host RSS, bytes; the
  // measured counterpart of `memory`); 0 when its shape was not probed.
  int64_t probed_peak_memory = 0;

  // Tokens per active parameter (what a token costs; for a dense model per parameter).
  double tokens_per_param() const { return n_active > 0 ? double(tokens) / n_active : 0; }
  std::string ShapeString() const;  // "2x64h4"
};

// "model", "probed", "interpolated".
const char* ToString(Cell::EstimateSource source);

struct Plan {
  std::vector<Cell> cells;            // by budget, then size, then seed, then axes
  std::vector<std::string> warnings;  // for people; planning still succeeded
  bool gpu = false;                   // estimates assume GPUs (else CPU threads)
  double device_memory_bytes = 0;     // memory of one device used for the fit warning
  double total_flops = 0;             // sum of D * flops_per_token_6n
  double total_est_seconds = 0;       // serial sum of the estimates
};

// Machine facts the plan's estimates and warnings depend on (not the keys). Plain value.
struct PlanEnvironment {
  bool gpu = false;                // runs will use GPUs
  double device_memory_bytes = 0;  // one GPU's memory, or the host's RAM on CPU; 0 = unknown
  int threads_per_run = 2;         // CPU threads one run gets
};

// The most cells one sweep may plan (budgets x sizes x seeds x every parameter axis's values,
// counted before sizes are selected per budget).
inline constexpr int kMaxCells = 100000;

// Expands `config` into cells. InvalidArgument when a cell cannot be built (the message names
// the budget and shape) or the grid could exceed kMaxCells; an empty selection is a warning, not
// an error.
Result<Plan> PlanSweep(const SweepConfig& config, const PlanEnvironment& env);

// The run.json text for `cell` as the manager writes it: config plus name, threads, device,
// resolved and written by the trainer's run-config library. InvalidArgument names the field
// when the trainer would refuse it (PlanSweep has checked every cell, so only a config edited
// since could).
Result<std::string> RunJson(const Cell& cell, const std::string& name, int threads,
                            const std::string& device);

// Cell-key differences between an old and a new plan (for a changed sweep file).
struct PlanDiff {
  std::vector<std::string> kept, added, removed;
};
PlanDiff DiffKeys(const std::vector<std::string>& old_keys, const std::vector<Cell>& cells);

}  // namespace isoflop::sweep
