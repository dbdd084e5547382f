// A fit's data, from wherever it lives: a sweep's runs in the store, an imported observation
// set, or a CSV file; and a fit's row in the store. The one place that decides what N, D, C and
// loss of a run are (D is the tokens trained, not the target), so `isoflop fit`, `sweep run`,
// `plot` and `serve` all fit and draw the same points.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/fit/fit_record.h"
#include "isoflop/fit/observation.h"
#include "isoflop/store/observations_csv.h"
#include "isoflop/store/store.h"

namespace isoflop::analysis {

// Where observations come from. Plain value.
struct Source {
  enum class Kind { kSweep, kObservations, kCsv };
  Kind kind = Kind::kSweep;
  std::string name;               // sweep name, observation set name, or CSV path
  store::CsvColumns csv_columns;  // kCsv only
  // "sweep" | "observations" | "csv": the fits table's source_kind.
  std::string KindName() const;
};

struct LoadOptions {
  std::string convention = "total";  // N per observation: total | non_embedding | active
  bool include_diverged = false;     // sweeps: diverged runs are left out (and listed)
  // Sweeps: only runs whose cell key is in this set (the cells of the current sweep file;
  // cells of an older version of the file stay in the store but out of the fit).
  std::optional<std::set<std::string>> only_keys;
  bool curves = true;  // sweeps: also read every run's metrics as a training curve
  // Sweeps: only runs with this many routed experts (0 = the dense runs of an MoE sweep).
  std::optional<int> n_experts;
};

// One observation as the figures show it. Plain value.
struct Point {
  double n = 0, d = 0, c = 0, loss = 0;
  std::optional<double> g;  // MoE granularity when recorded
  double budget = 0;        // its isoFLOP budget: the sweep cell's C, else its own C
  // Sweeps: the run's total and active parameters whatever the convention (an MoE's total
  // counts every expert); 0 for imported points.
  double n_total = 0, n_active = 0;
};

struct Dataset {
  Source source;
  std::vector<fit::Observation> obs;  // what the fit library takes; budget ids ascending by C
  std::vector<Point> points;          // the same observations, in the same order
  std::vector<fit::Curve> curves;     // sweeps: (FLOPs so far, smoothed training loss) per run
  std::vector<std::string> excluded;  // "key (shape, C): reason" of diverged runs left out
  std::optional<double> entropy;      // the data's entropy rate, when the runs know it
  // G was recorded for some points only, or none (an imported set or CSV without a G column).
  size_t points_without_g = 0;
  // Sweeps: the routed-expert counts of the runs loaded (0 = dense), ascending.
  std::vector<int> expert_counts;
  // For a person: a file's text column that looks like an experiment label (the reader's notes).
  std::vector<std::string> warnings;
};

// Loads `source`. Sweeps: D = tokens trained (the target when not recorded), C = 6·N·D with N
// in the options' convention (training curves' FLOPs rescaled to match), loss = final validation
// loss (training loss if none), budget = the cell's. Imported points: C as imported (flops(N, D)
// when 0). Errors: NotFound for an unknown sweep or set; FailedPrecondition when a sweep has no
// finished run with a loss; the CSV reader's errors. `db` may be null for a CSV source (nothing
// else needs a store).
Result<Dataset> LoadDataset(store::Store* db, const Source& source, const LoadOptions& options);

// Stores `rec` in the fits table for `source` with the options it ran with; returns the id.
Result<int64_t> StoreFit(store::Store& db, const Source& source, const fit::FitRecord& rec,
                         const nlohmann::json& options);

// A stored fit back as a record (with its id). NotFound for an unknown id.
struct StoredFit {
  int64_t id = 0;
  std::string source_kind, source_name;
  fit::FitRecord record;
  nlohmann::json options = nlohmann::json::object();
};
Result<StoredFit> LoadFit(store::Store& db, int64_t id);
// The newest fit of a source for a method (form "" = any), or nullopt. Fits of one expert count
// of an MoE sweep (options "n_experts", see FitSweep and `fit --n-experts`) are not the
// source's law and are passed over.
Result<std::optional<StoredFit>> LatestFit(store::Store& db, const std::string& source_kind,
                                           const std::string& source_name,
                                           const std::string& method, const std::string& form = "");

}  // namespace isoflop::analysis
