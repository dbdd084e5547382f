// Sentences about fits, shared by `isoflop fit` and `isoflop sweep run`.
#pragma once

#include <string>

#include "isoflop/fit/fit_record.h"

namespace isoflop::cli {

// One line on a parametric fit's extrapolation check ("fitted without the largest budget
// (C=..), it predicts that budget's n final losses within x% (mean), y% (max); N_opt ..."),
// or "" when the fit has none.
std::string ExtrapolationSummary(const fit::FitRecord& rec);

}  // namespace isoflop::cli
