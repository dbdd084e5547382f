// The throughput probe: runs the real isoflop-train for a few dozen optimizer steps on a sweep's
// shapes and measures tokens per second, for `sweep plan`'s time estimates and for choosing the
// CPU layout of `executor.cpus_per_run: auto`. On CPU the speed of tiny models depends on thread
// pools, caches and memory bandwidth more than on FLOPs, so it is measured, not modelled.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/sweep/config.h"
#include "isoflop/sweep/local_executor.h"
#include "isoflop/sweep/planner.h"

namespace isoflop::sweep {

// How to probe. Plain value; Validate() before use.
struct ProbeOptions {
  std::string train_binary;     // absolute path of isoflop-train; required
  std::string scratch_dir;      // temporary run folders go under it; "" = the system temp folder
  int warmup_steps = 10;        // first optimizer steps not measured (allocations, thread pools)
  int min_steps = 30;           // measured steps at least, after the warm-up
  int max_steps = 300;          // and at most (a model that overestimates speed stays short)
  double target_seconds = 0.5;  // measured work per probe, sized by the FLOP/s model
  int log_interval_steps = 5;   // metrics lines every this many steps: the measurement grain
  double timeout_seconds = 20;  // a probe still running then is stopped; its lines so far count
  int max_shapes = 3;           // distinct shapes probed per plan; the rest interpolated in log N
  double budget_seconds = 30;   // ProbePlan starts no further round after this much wall time
  int cores = 0;                // cores ProbePlan lays runs out on; 0 = this machine's

  // InvalidArgument naming the field when a value is out of range or train_binary is empty.
  Status Validate() const;
};

// What one probe run measured. Plain value.
struct ProbeFigure {
  double tokens_per_s = 0;      // training tokens/s after the warm-up, evaluation excluded
  double overhead_s = 0;        // process wall time not explained by training at that speed:
                                // LibTorch start-up, data building, warm-up, final eval, exit
  int64_t measured_tokens = 0;  // tokens the tokens/s figure rests on
  int64_t peak_memory_bytes = 0;  // the run's peak resident set (its status.json); 0: none written
};

// Runs the resolved run config (Cell::config) of every cell of `cells` at the same time as an
// isoflop-train child with `threads` threads on CPU, each for a short budget (warm-up plus
// measured steps sized by the FLOP/s model, no checkpoints, a one-batch evaluation) in a
// temporary run folder that is removed afterwards; children are started with StartTrainer (no
// shell). Returns one figure per cell, in order. Errors: FailedPrecondition when train_binary is
// not executable; Internal when a child fails or leaves too few metrics lines (the message has its
// train.log tail); IoError when a folder cannot be made or fork fails. Not thread-safe (it reaps
// its children).
Result<std::vector<ProbeFigure>> MeasureThroughput(const std::vector<Cell>& cells, int threads,
                                                   const ProbeOptions& opts);

// Training tokens/s from metrics.jsonl text: total tokens over total time of the lines after
// step `warmup_steps`, each line's time being its interval's tokens / its tokens_per_s; lines
// with a val_loss are skipped (their interval includes an evaluation), as is a torn last line.
// Sets *measured_tokens when not null. NotFound when no usable line remains; Corrupt for a line
// that is not a metrics object.
Result<double> TokensPerSecondFromMetrics(const std::string& metrics_text, int warmup_steps,
                                          int64_t* measured_tokens = nullptr);

// tokens/s at `n_total` parameters from probed (n_total, tokens/s) points, linear in
// (log N, log tokens/s) between neighbours and along the nearest segment outside them (a single
// point: FLOP/s held constant, tokens/s ∝ 1/N). `points` must be non-empty with positive values.
double InterpolateTokensPerSecond(std::vector<std::pair<double, double>> points, double n_total);

// One CPU layout and its measured aggregate throughput. Plain value.
struct LayoutFigure {
  int threads_per_run = 1;
  int runs = 1;             // concurrent runs during the measurement
  double tokens_per_s = 0;  // summed over the concurrent runs
};

// A chosen CPU layout. Plain value.
struct CpuLayout {
  int threads_per_run = 1;
  int slots = 1;            // runs at once
  double speedup = 1;       // its effective throughput over the first (all-cores) layout's
  std::string explanation;  // one line for people, with the figures
};

// Picks the layout for `cells` runs from measured `figures`, whose first entry is the baseline
// (all cores for one run). A layout of r concurrent runs achieves min(cells, r) / r of its
// measured aggregate (slots idle when fewer cells remain); a layout other than the baseline is
// chosen only when it is faster by more than `min_gain` (0.05 = 5%), because fewer concurrent
// runs use less memory and finish each cell sooner. Pure; `figures` must be non-empty.
CpuLayout ChooseCpuLayout(const std::vector<LayoutFigure>& figures, int cells,
                          double min_gain = 0.05);

// What ProbePlan did, for people. Plain value.
struct ProbeReport {
  struct ShapeFigure {
    std::string shape;  // "1x32h4"
    int64_t n_total = 0;
    double tokens_per_s = 0;
    bool probed = false;  // false: interpolated in log N
    int64_t peak_memory_bytes = 0;  // probed only: the probe's peak resident set
    int64_t memory_estimate = 0;    // the plan's estimate for the shape
  };
  std::vector<ShapeFigure> shapes;           // by n_total
  std::vector<LayoutFigure> layout_figures;  // when the layout was measured
  std::optional<CpuLayout> layout;           // when the layout was measured
  int threads_per_run = 1, slots = 1;        // the layout the estimates are for
  double seconds = 0;                        // wall time spent probing
  std::vector<std::string> notes;            // shapes whose probe failed, and why
};

// Probes the plan's CPU runs and replaces each cell's est_seconds with
// overhead + (tokens + evaluation tokens / 3) / tokens_per_s, marking est_source probed or
// interpolated, sets the measured peak memory (probed_peak_memory) of each probed cell whose
// estimate is the probed one's, and recomputes plan->total_est_seconds. Distinct shapes are those
// with distinct model, batch_tokens, micro_batch and data source; at most opts.max_shapes of them
// (spread over log N) are probed, `resources->cpu_slots` at a time with resources->threads_per_run
// threads each (padded with copies so the contention is the sweep's), the rest interpolated.
// `choose_layout` (cpus_per_run: auto): first measures one run on every core against
// concurrent one-thread runs on the costliest shape, applies ChooseCpuLayout and updates
// resources->threads_per_run and cpu_slots. Errors: FailedPrecondition on GPU resources (the
// probe runs on CPU only) or an empty plan; MeasureThroughput's errors when no shape could be
// probed; the plan and resources are then unchanged. Not thread-safe.
Result<ProbeReport> ProbePlan(Plan* plan, Resources* resources, bool choose_layout,
                              const ProbeOptions& opts);

}  // namespace isoflop::sweep
