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
  // Observations without a recorded budget (id or nominal budget) are clustered in log C:
  // sorted by C, a new budget starts once the group spans more than ln(1 + budget_rel_tol) and
  // the gap to the next run exceeds min(5 × the median gap, ln 1.5). 0.05: imported data
  // (e.g. Chinchilla's figure) lists budgets up to a few % apart; sweeps and files with a
  // budget column group by that instead.
  double budget_rel_tol = 0.05;
  // How each budget's optimum is estimated: "parabola" (Hoffmann et al. 2022, Approach 2: the
  // minimum of a parabola of loss in log N) or "argmin" (the lowest-loss run of the budget, as
  // in Stanford CS336's scaling assignment; an argmin at the smallest or largest sampled size
  // counts as outside the range).
  std::string estimator = "parabola";
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
  double c = 0;            // the budget: the recorded one, else the geometric mean of the C
  int64_t budget_id = -1;  // the id when grouped by id
  int n_points = 0;
  double n_lo = 0, n_hi = 0;  // sampled N range
  double d_lo = 0, d_hi = 0;  // sampled D range
  std::array<double, 3> parabola_n{}, parabola_d{};
  double n_opt = 0, loss_at_n_opt = 0;  // minimum of the log-N parabola
  double d_opt = 0, loss_at_d_opt = 0;  // minimum of the log-D parabola
  bool outside_range = false;           // a minimum lies outside [n_lo, n_hi] or [d_lo, d_hi]
  bool usable = false;  // in the power-law fits (a proper minimum, not left out as outside)
  std::string note;     // why not usable / what is flagged, empty when fine
};

struct IsoflopFit {
  std::vector<BudgetProfile> budgets;  // ascending C
  PowerLaw n_opt, d_opt;               // N_opt = k·C^a, D_opt = k'·C^b
  int n_points = 0;
  std::string estimator = "parabola";  // IsoflopOptions::estimator
  std::string grouping;                // how budgets were found (BudgetGroups::how)
  std::vector<std::string> warnings;   // fragmented budgets, exponent intervals crossing zero
  // BootstrapIsoflop's resamples and those whose fit failed (fewer than two budgets with a
  // minimum): the intervals come from the others. 0 and 0 without a bootstrap.
  int bootstrap_resamples = 0, bootstrap_failed = 0;
};

// Observations grouped into isoFLOP budgets. Plain value.
struct BudgetGroups {
  std::vector<std::vector<size_t>> groups;  // index lists, ascending C
  // "budget_id" (a sweep's cells), "budget" (each run's recorded nominal budget) or
  // "clustered" (C = 6ND clustered in log space: no budget was recorded).
  std::string how;
  std::string fragmented;  // a warning naming the fix when many budgets have 1-2 runs, else ""
};

// Groups observations into budgets: by budget_id when every observation has one, else by the
// recorded nominal `budget` when every observation has one, else by clustering log C (see
// IsoflopOptions::budget_rel_tol).
BudgetGroups GroupBudgets(const std::vector<Observation>& obs, double rel_tol,
                          const FlopsConvention& flops);
// GroupBudgets(...).groups.
std::vector<std::vector<size_t>> GroupByBudget(const std::vector<Observation>& obs, double rel_tol,
                                               const FlopsConvention& flops);

// One budget's profile from the observations `group` indexes (`how` as BudgetGroups::how: with
// "budget" its C is the recorded budget). Never fails: a budget without a proper minimum is
// returned with usable = false and a note saying why.
BudgetProfile ProfileBudget(const std::vector<Observation>& obs, const std::vector<size_t>& group,
                            const std::string& how, const IsoflopOptions& options);

// Errors: InvalidArgument for bad observations, when the data form a single budget, or when
// fewer than two budgets give a usable minimum (the message lists each budget's problem).
Result<IsoflopFit> FitIsoflop(const std::vector<Observation>& obs, const IsoflopOptions& options);

}  // namespace isoflop::fit
