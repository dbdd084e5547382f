// What a live view of the store shows (the `isoflop serve` dashboard): each sweep with its cell
// counts, each cell's state and progress (tokens/s now, ETA), a run's training curve thinned to
// a drawable number of points, and the compute-optimal answer at a budget from the same fit
// `isoflop optimal` reads. Reads only; every number comes from the store and the fit library.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/fit/query.h"
#include "isoflop/store/store.h"

namespace isoflop::analysis {

// One sweep and how many of its cells are in each state. Plain value.
struct SweepSummary {
  store::SweepRecord sweep;
  int cells = 0;
  std::map<std::string, int> by_status;  // status -> cells (only states that occur)
  int64_t tokens_done = 0, tokens_total = 0;
  nlohmann::json ToJson() const;
};

// Every sweep in the store, in the store's order (by id). Store errors.
Result<std::vector<SweepSummary>> ListSweepSummaries(store::Store& db);

// One cell (= one run) as the cell table shows it. Plain value.
struct CellView {
  store::RunRecord run;
  std::string shape;                   // "LxDhH", as `isoflop sweep status` prints it
  double progress = 0;                 // tokens_done / target_tokens, 0..1
  std::optional<double> tokens_per_s;  // running: the latest row's; ended: tokens / wall_s
  std::optional<double> eta_s;         // running cells: tokens left / tokens_per_s
  std::optional<double> latest_loss;   // the latest row's train loss
  int64_t latest_step = 0;
  nlohmann::json ToJson() const;
};

// The cells of sweep `name` sorted by budget, then N. NotFound for an unknown sweep; store
// errors otherwise.
Result<std::vector<CellView>> SweepCells(store::Store& db, const std::string& name);

// A run's metric series, downsampled to at most `max_points` training-loss points: the first
// and the last row always, and between them every k-th row (k = ceil(rows / max_points)), so a
// curve keeps its shape and end. Validation-loss rows are thinned the same way on their own.
// Plain value.
struct RunSeries {
  int64_t run_id = 0;
  int64_t rows = 0;  // rows in the store before thinning
  std::vector<int64_t> step, tokens;
  std::vector<double> flops;
  std::vector<std::optional<double>> train_loss;
  std::vector<int64_t> val_step, val_tokens;
  std::vector<double> val_flops, val_loss;
  nlohmann::json ToJson() const;
};

// Thins `rows` (ordered by step) as RunSeries describes. InvalidArgument when max_points < 2.
Result<RunSeries> DownsampleMetrics(int64_t run_id, const std::vector<store::MetricRow>& rows,
                                    int max_points);

// The series of run `run_id`; NotFound for an unknown run, InvalidArgument for max_points < 2.
Result<RunSeries> LoadRunSeries(store::Store& db, int64_t run_id, int max_points);

// The compute-optimal N, D and loss at budget `c` FLOPs, with bootstrap intervals, from the
// newest parametric fit of the source (`source_kind` "sweep" | "observations"): the fit and the
// query `isoflop optimal --sweep NAME --compute C` uses, so both print the same numbers.
// InvalidArgument for c not a positive finite number; NotFound when the source has no
// parametric fit; the query's errors otherwise.
struct OptimalView {
  // ToJson: AnswerJson (sweep_report.h) with c = the budget asked for, fit_id and form, and
  // "warning" when there is one.
  int64_t fit_id = 0;
  std::string form;
  fit::Answer answer;
  std::string warning;  // fit::FarComputeWarning: the optimum far outside the fitted compute
  nlohmann::json ToJson() const;
};
Result<OptimalView> OptimalAt(store::Store& db, const std::string& source_kind,
                              const std::string& source_name, double c);

}  // namespace isoflop::analysis
