// Sentences about fits, shared by `isoflop fit` and `isoflop sweep run`.
#pragma once

#include <string>
#include <vector>

#include "isoflop/fit/fit_record.h"

namespace isoflop::cli {

// One line on a parametric fit's extrapolation check ("fitted without the largest budget of 3
// or more runs (C=.., n runs), the law predicts their final losses within x% (max y%); N_opt
// ..."), the reason it could not check, or "" when the fit has none.
std::string ExtrapolationSummary(const fit::FitRecord& rec);

// One warning line per bootstrap interval that does not contain its own point estimate
// (the record's result "excludes_point"): "warning: the 95% interval of alpha [24, 24] does
// not contain its estimate 0.389 ...". Empty when there is none (or no bootstrap).
std::vector<std::string> IntervalWarnings(const fit::FitRecord& rec);

// The same sentence for one quantity (also used by `isoflop optimal` on its answers).
std::string IntervalWarning(const std::string& name, double value, double lo, double hi);

}  // namespace isoflop::cli
