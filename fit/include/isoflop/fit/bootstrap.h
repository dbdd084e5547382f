// Bootstrap intervals: resample observations with replacement (seeded), refit, and take
// percentile intervals of parameters and derived quantities (exponents a, b of N_opt ∝ C^a,
// D_opt ∝ C^b; N_opt, D_opt, tokens per parameter and loss at chosen budgets). Also the
// extrapolation check: fit on all budgets but the largest and predict it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/fit/envelope.h"
#include "isoflop/fit/isoflop_profile.h"
#include "isoflop/fit/observation.h"
#include "isoflop/fit/parametric.h"
#include "isoflop/fit/power_law.h"

namespace isoflop::fit {

struct BootstrapOptions {
  int resamples = 1000;  // number of refits; 0 = no bootstrap
  uint64_t seed = 0;     // resample i draws from mt19937_64(seed + i): thread-independent
  double level = 0.95;   // central interval level
  int num_threads = 0;   // 0 = hardware concurrency
  // Parameter draws kept in the result (bands, `isoflop optimal` intervals): every one, so an
  // answer's interval comes from all --bootstrap N resamples, not a subset.
  int keep_draws = 100000;
  // Refits start from the full fit's reported optimum and up to this many of its other
  // distinct local optima: a resample's optimum lies near the full data's, so the 4,500-start
  // grid is not repeated.
  int starts_per_resample = 4;
  // Budgets at which N_opt, D_opt, tokens/param and loss get intervals (names "N_opt@<C>").
  std::vector<double> derived_at_compute;
  FlopsConvention flops;  // for the derived quantities (C = k·N·D by default)
  Status Validate() const;
};

struct ParametricBootstrap {
  int resamples = 0, failed = 0;
  // Refits that converged to a non-finite parameter (an A or B overflowing e^a): left out of
  // draws and intervals, and counted here (JSON has no infinity; a stored null broke plots).
  int non_finite = 0;
  double seconds = 0;
  std::vector<std::vector<double>> draws;      // reported parameters, up to keep_draws (first ones)
  std::vector<std::vector<double>> all_draws;  // every successful refit (not serialised)
  std::map<std::string, Interval> intervals;   // parameters and derived quantities
  // Quantities whose point estimate (from `full`) lies outside its own interval: the refits
  // found other optima than the fit. Empty when every interval contains its point.
  std::vector<IntervalExclusion> excludes_point;
};

// Every quantity a parametric bootstrap gives an interval for, at one parameter vector (reported
// units, `names` in form order): the parameters, the exponents "a" and "b" of N_opt ∝ C^a and
// D_opt ∝ C^b, and per budget of `at_compute` "N_opt@<C>", "D_opt@<C>", "tokens_per_param@<C>",
// "loss@<C>" (C printed with %g). The same function serves each draw and the point estimate.
// Quantities a law cannot answer (no optimum at a budget) are left out.
std::map<std::string, double> BootstrapQuantities(const std::string& form,
                                                  const std::vector<std::string>& names,
                                                  const std::vector<double>& params,
                                                  const FlopsConvention& flops,
                                                  const std::vector<double>& at_compute);

// Bootstraps a parametric fit. `full` is the fit on all of `obs` with `options`.
// Errors: InvalidArgument for bad options; those of FitParametric are counted in `failed`.
Result<ParametricBootstrap> BootstrapParametric(const std::vector<Observation>& obs,
                                                const ParametricOptions& options,
                                                const ParametricFit& full,
                                                const BootstrapOptions& bootstrap);

// Bootstraps isoFLOP profiles by resampling within each budget; fills `fit`'s power-law
// intervals (k_ci, a_ci) and returns named intervals ("a", "b", "k_n", "k_d").
Result<std::map<std::string, Interval>> BootstrapIsoflop(const std::vector<Observation>& obs,
                                                         const IsoflopOptions& options,
                                                         const BootstrapOptions& bootstrap,
                                                         IsoflopFit* fit);

// Bootstraps the training-curve envelope by resampling runs: within each budget (the curves
// ending within 5% of the same FLOPs) as many curves as it has, with replacement, so every
// resample spans the same FLOP levels. Fills `fit`'s power-law intervals and counts (a resample
// whose envelope one size wins throughout is left out, counted and warned about) and returns
// the named intervals ("a", "b", "k_n", "k_d").
Result<std::map<std::string, Interval>> BootstrapEnvelope(const std::vector<Curve>& curves,
                                                          const EnvelopeOptions& options,
                                                          const BootstrapOptions& bootstrap,
                                                          EnvelopeFit* fit);

struct ExtrapolationCheck {
  double held_out_c = 0;  // the held-out budget (recorded, else geometric-mean C)
  int n_train = 0, n_test = 0;
  std::vector<double> test_loss, predicted_loss;  // per held-out point
  double mean_abs_rel_error = 0;                  // mean |L̂ − L| / L over held-out points
  double max_abs_rel_error = 0;
  double n_opt_predicted = 0;  // from the law fitted without the held-out budget
  // The held-out budget's own interior minimum (isoFLOP profile); NaN (JSON null) when it has
  // none (too few sizes, not convex, or the minimum outside its sampled sizes).
  double n_opt_observed = 0;
  double n_opt_rel_error = 0;  // (predicted − observed) / observed; NaN without a minimum
};

// A held-out budget needs this many runs: a prediction of one or two losses says little.
inline constexpr int kMinHeldOutRuns = 3;

// Holds out the largest budget with at least kMinHeldOutRuns runs (grouping as `grouping`),
// fits on the others and predicts its losses and N_opt. InvalidArgument ("cannot check
// extrapolation: ...") with fewer than two budgets or no such budget above the smallest; fit
// errors pass through.
Result<ExtrapolationCheck> CheckExtrapolation(const std::vector<Observation>& obs,
                                              const ParametricOptions& options,
                                              const IsoflopOptions& grouping);

// Leave-one-budget-out: one ExtrapolationCheck per budget (ascending C), each fitted on all the
// other budgets. InvalidArgument with fewer than two budgets; a failed fit is an error naming
// the budget.
Result<std::vector<ExtrapolationCheck>> CrossValidateBudgets(const std::vector<Observation>& obs,
                                                             const ParametricOptions& options,
                                                             const IsoflopOptions& grouping);

}  // namespace isoflop::fit
