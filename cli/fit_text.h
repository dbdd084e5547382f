// Sentences about fits, shared by `isoflop fit` and `isoflop sweep run`.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "isoflop/fit/fit_record.h"

namespace isoflop::cli {

// One line on a parametric fit's extrapolation check ("fitted without the largest budget of 3
// or more runs (C=.., n runs), the law predicts their final losses within x% (max y%); N_opt
// ..."), the reason it could not check, or "" when the fit has none.
std::string ExtrapolationSummary(const fit::FitRecord& rec);

// A warning line when bootstrap refits were left out (failed, or a non-finite parameter:
// "warning: 35 of 1000 bootstrap refits failed: the intervals come from the other 965 ..."),
// then one per bootstrap interval that does not contain its own point estimate (the record's
// result "excludes_point"): "warning: the 95% interval of alpha [24, 24] does not contain its
// estimate 0.389 ..."). Empty when there is none (or no bootstrap).
std::vector<std::string> IntervalWarnings(const fit::FitRecord& rec);

// The warnings a fit stored with its result (parametric: an exponent fitted at or below zero;
// isoFLOP and envelope: fragmented budgets, exponent intervals crossing zero, failed bootstrap
// resamples), without the "warning: " prefix.
std::vector<std::string> PowerLawWarnings(const fit::FitRecord& rec);

// Warnings for predicted losses below what any model can reach: below the law's own fitted E,
// or below a known floor (the data's entropy, or a lower bound the user gave) named `floor_name`.
// `losses` maps a label ("loss@1e+21", "C=1e21") to a predicted loss. Empty when all are fine.
std::vector<std::string> LossFloorWarnings(
    const std::vector<std::pair<std::string, double>>& losses, double fitted_e, double floor,
    const std::string& floor_name);

// The same sentence for one quantity (also used by `isoflop optimal` on its answers).
std::string IntervalWarning(const std::string& name, double value, double lo, double hi);

}  // namespace isoflop::cli
