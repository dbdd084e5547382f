// The bridge between the store and the fit library, shared by `isoflop fit` and `isoflop
// sweep run`: a sweep's runs as fit observations and training curves, and a fit result as a
// row of the fits table. Only cli/ knows both parts (the fit library never sees a database).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/fit/run_fit.h"
#include "isoflop/store/store.h"

namespace isoflop::cli {

struct SweepDataOptions {
  std::string convention = "total";  // N per observation: total | non_embedding | active
  bool include_diverged = false;     // diverged runs are left out (and listed) by default
  // When set, only runs whose cell key is in this set (the cells of the current sweep file;
  // cells of an older version of the file stay in the store but out of the fit).
  std::optional<std::set<std::string>> only_keys;
  bool curves = true;  // also read every run's metrics as a training curve
};

struct SweepData {
  std::vector<fit::Observation> obs;  // one per finished run; budget ids by ascending budget
  std::vector<fit::Curve> curves;     // (FLOPs so far, training loss averaged over 5 logging
                                      // points) per run
  std::vector<std::string> excluded;  // "key (shape, C): reason" of diverged runs left out
  std::optional<double> entropy;      // the data's entropy rate, when the runs know it
};

// Reads the runs of sweep `name`. D is the tokens trained (the target when not recorded), C
// = FLOPs per token (6N) × D, loss = final validation loss (training loss if none). NotFound
// for an unknown sweep; FailedPrecondition when no run has finished with a loss.
Result<SweepData> LoadSweepData(store::Store& db, const std::string& name,
                                const SweepDataOptions& options);

// Stores `rec` in the fits table with its source and the options it ran with; returns the id.
Result<int64_t> StoreFit(store::Store& db, const std::string& source_kind,
                         const std::string& source_name, const fit::FitRecord& rec,
                         const nlohmann::json& options);

// One line on a parametric fit's extrapolation check ("fitted without the largest budget
// (C=..), it predicts that budget's n final losses within x% (mean), y% (max); N_opt ..."),
// or "" when the fit has none.
std::string ExtrapolationSummary(const fit::FitRecord& rec);

}  // namespace isoflop::cli
