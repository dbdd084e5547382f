// Small shared result pieces: percentile intervals and the power laws N_opt = k·C^a that
// approaches 1 and 2 end with (Hoffmann et al. 2022, Table 2).
#pragma once

#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "isoflop/common/status.h"

namespace isoflop::fit {

// A two-sided percentile interval. NaN bounds mean "not computed".
struct Interval {
  double lo = std::numeric_limits<double>::quiet_NaN();
  double hi = std::numeric_limits<double>::quiet_NaN();
  double level = 0.95;
};

// Percentile interval of `values` (NaNs/infinities skipped) at `level` (e.g. 0.95 -> 2.5%,
// 97.5%, linear interpolation). Returns NaN bounds when no finite value is left.
Interval PercentileInterval(std::vector<double> values, double level);

// A point estimate its own interval does not contain (a bootstrap whose refits fell into
// other optima than the fit's): what the table, the JSON and the report warn about.
struct IntervalExclusion {
  std::string name;
  double value = 0, lo = 0, hi = 0;
};

// The quantities of `points` whose interval in `ci` (same name) has finite bounds and does
// not contain the point (with a relative slack of 1e-9 for rounding). Names missing from
// either map are skipped. Ordered by name.
std::vector<IntervalExclusion> PointsOutsideIntervals(const std::map<std::string, double>& points,
                                                      const std::map<std::string, Interval>& ci);

// y = k·C^a fitted by least squares in log-log space over `n_budgets` points.
struct PowerLaw {
  double k = std::numeric_limits<double>::quiet_NaN();
  double a = std::numeric_limits<double>::quiet_NaN();
  int n_budgets = 0;
  Interval k_ci, a_ci;  // filled by a bootstrap when one ran
  double Eval(double c) const { return k * std::pow(c, a); }
};

// Least-squares fit of log y = log k + a·log c. InvalidArgument when fewer than two distinct
// c values or a non-positive value is given.
Result<PowerLaw> FitPowerLaw(const std::vector<double>& c, const std::vector<double>& y);

}  // namespace isoflop::fit
