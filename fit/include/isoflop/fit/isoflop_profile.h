// IsoFLOP profiles (Hoffmann et al. 2022, Approach 2): group runs by compute budget, fit a
// parabola of loss in log N (and in log D) per budget, take its minimum, then fit
// N_opt = k·C^a and D_opt = k'·C^b across budgets.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/fit/observation.h"
#include "isoflop/fit/power_law.h"

namespace isoflop::fit {

struct IsoflopOptions {
  // Observations without a budget id are grouped when their C values differ by at most this
  // relative amount from the group's smallest C. 0.05: imported data (e.g. Chinchilla's
  // figure) lists budgets up to a few % apart; exact sweep budgets should carry ids.
  double budget_rel_tol = 0.05;
  int min_points_per_budget = 3;  // a parabola needs 3 distinct N
  // true: budgets whose minimum is extrapolated beyond the sampled sizes stay out of the
  // power-law fits (they are always flagged). An extrapolated minimum of a flat parabola can
  // sit decades away (Chinchilla's C=2.3e20 budget: D_opt=1.7e28) and drag the exponent.
  bool drop_outside_range = true;
  FlopsConvention flops;  // derives C when an observation has none

  Status Validate() const;
};

// One budget's profile. x = ln N (or ln D); loss ≈ p[0] + p[1]·x + p[2]·x².
struct BudgetProfile {
  double c = 0;            // the budget (geometric mean of the group's C)
  int64_t budget_id = -1;  // the id when grouped by id
  int n_points = 0;
  double n_lo = 0, n_hi = 0;  // sampled N range
  double d_lo = 0, d_hi = 0;  // sampled D range
  std::array<double, 3> parabola_n{}, parabola_d{};
  double n_opt = 0, loss_at_n_opt = 0;  // minimum of the log-N parabola
  double d_opt = 0, loss_at_d_opt = 0;  // minimum of the log-D parabola
  bool outside_range = false;           // a minimum lies outside [n_lo, n_hi] or [d_lo, d_hi]
  bool usable = false;                  // has a proper minimum (enough points, upward parabola)
  std::string note;                     // why not usable / what is flagged, empty when fine
};

struct IsoflopFit {
  std::vector<BudgetProfile> budgets;  // ascending C
  PowerLaw n_opt, d_opt;               // N_opt = k·C^a, D_opt = k'·C^b
  int n_points = 0;
};

// Groups observations into budgets: by budget_id when every observation has one, else by C
// within `rel_tol`. Returns index lists in ascending C.
std::vector<std::vector<size_t>> GroupByBudget(const std::vector<Observation>& obs, double rel_tol,
                                               const FlopsConvention& flops);

// Errors: InvalidArgument for bad observations, when the data form a single budget, or when
// fewer than two budgets give a usable minimum (the message lists each budget's problem).
Result<IsoflopFit> FitIsoflop(const std::vector<Observation>& obs, const IsoflopOptions& options);

}  // namespace isoflop::fit
