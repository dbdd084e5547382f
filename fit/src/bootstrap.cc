// Bootstrap intervals (resample with replacement, refit, percentiles) for parametric fits and
// isoFLOP power laws, and the hold-out-the-largest-budget extrapolation check.
#include "isoflop/fit/bootstrap.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>
#include <random>
#include <thread>

#include "isoflop/fit/query.h"

namespace isoflop::fit {
namespace {

int Threads(int requested) {
  return requested > 0 ? requested : std::max(1u, std::thread::hardware_concurrency());
}

// Runs work(i) for i in [0, count) on `threads` threads.
template <typename Work>
void ParallelFor(int count, int threads, Work work) {
  std::atomic<int> next{0};
  auto body = [&] {
    for (int i = next++; i < count; i = next++) work(i);
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < std::min(threads, count); ++t) pool.emplace_back(body);
  body();
  for (auto& t : pool) t.join();
}

std::string AtC(const char* name, double c) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s@%g", name, c);
  return buf;
}

// Exponents of N_opt ∝ C^a and D_opt ∝ C^b: closed form for chinchilla (Hoffmann 2022,
// eq. 4), else the log-log slope between 1e20 and 1e22 FLOPs.
void Exponents(const ScalingLaw& law, double* a, double* b) {
  if (law.form == "chinchilla") {
    if (!(law.params[3] > 0) || !(law.params[4] > 0)) {  // no optimum to scale (ComputeOptimal)
      *a = *b = NAN;
      return;
    }
    const double s = law.params[3] + law.params[4];
    *a = law.params[4] / s;
    *b = law.params[3] / s;
    return;
  }
  auto lo = ComputeOptimal(law, 1e20), hi = ComputeOptimal(law, 1e22);
  if (!lo.ok() || !hi.ok()) {
    *a = *b = NAN;
    return;
  }
  *a = std::log(hi->n / lo->n) / std::log(100.0);
  *b = std::log(hi->d / lo->d) / std::log(100.0);
}

// The power-law bootstrap of an isoFLOP or envelope fit: resample i runs fit_one(rng_i), which
// returns the resample's {a, b, k_n, k_d} (N_opt's exponent, D_opt's, their constants) or
// nullopt when its fit failed. Sets *into's intervals, counts and, when some failed, a warning
// naming `why`; returns the intervals as "a", "b", "k_n", "k_d".
template <typename Fit, typename FitOne>
std::map<std::string, Interval> PowerLawBootstrap(const BootstrapOptions& bootstrap,
                                                  const FitOne& fit_one, const std::string& why,
                                                  Fit* into) {
  const int resamples = bootstrap.resamples;
  std::vector<std::optional<std::array<double, 4>>> results(resamples);
  ParallelFor(resamples, Threads(bootstrap.num_threads), [&](int i) {
    std::mt19937_64 rng(bootstrap.seed + static_cast<uint64_t>(i));
    results[i] = fit_one(rng);
  });
  std::array<std::vector<double>, 4> q;
  int failed = 0;
  for (const auto& r : results) {
    if (!r) {
      ++failed;
      continue;
    }
    for (int k = 0; k < 4; ++k) q[k].push_back((*r)[k]);
  }
  std::map<std::string, Interval> out;
  out["a"] = into->n_opt.a_ci = PercentileInterval(q[0], bootstrap.level);
  out["b"] = into->d_opt.a_ci = PercentileInterval(q[1], bootstrap.level);
  out["k_n"] = into->n_opt.k_ci = PercentileInterval(q[2], bootstrap.level);
  out["k_d"] = into->d_opt.k_ci = PercentileInterval(q[3], bootstrap.level);
  into->bootstrap_resamples = resamples;
  into->bootstrap_failed = failed;
  if (failed > 0) {
    into->warnings.push_back(std::to_string(failed) + " of " + std::to_string(resamples) +
                             " bootstrap resamples " + why + " and were left out" +
                             (failed == resamples ? ": no intervals"
                                                  : "; the intervals come from the other " +
                                                        std::to_string(resamples - failed) +
                                                        " and understate the uncertainty"));
  }
  return out;
}

template <typename Fit>
std::array<double, 4> PowerLawQuantities(const Fit& f) {
  return {f.n_opt.a, f.d_opt.a, f.n_opt.k, f.d_opt.k};
}

}  // namespace

std::map<std::string, double> BootstrapQuantities(const std::string& form,
                                                  const std::vector<std::string>& names,
                                                  const std::vector<double>& params,
                                                  const FlopsConvention& flops,
                                                  const std::vector<double>& at_compute) {
  std::map<std::string, double> q;
  for (size_t j = 0; j < params.size() && j < names.size(); ++j) q[names[j]] = params[j];
  ScalingLaw law;
  law.form = form;
  law.params = params;
  law.flops = flops;
  double a, b;
  Exponents(law, &a, &b);
  q["a"] = a;
  q["b"] = b;
  for (double c : at_compute) {
    auto alloc = ComputeOptimal(law, c);
    if (!alloc.ok()) continue;
    q[AtC("N_opt", c)] = alloc->n;
    q[AtC("D_opt", c)] = alloc->d;
    q[AtC("tokens_per_param", c)] = alloc->tokens_per_param;
    q[AtC("loss", c)] = alloc->loss;
  }
  return q;
}

Status BootstrapOptions::Validate() const {
  if (resamples < 0) return Status::InvalidArgument("bootstrap resamples must be >= 0");
  if (!(level > 0 && level < 1)) return Status::InvalidArgument("interval level must be in (0,1)");
  if (num_threads < 0) return Status::InvalidArgument("num_threads must be >= 0");
  if (keep_draws < 0 || starts_per_resample < 1)
    return Status::InvalidArgument("keep_draws must be >= 0 and starts_per_resample >= 1");
  for (double c : derived_at_compute)
    if (!(c > 0)) return Status::InvalidArgument("derived_at_compute budgets must be > 0");
  return Status::Ok();
}

Result<ParametricBootstrap> BootstrapParametric(const std::vector<Observation>& obs,
                                                const ParametricOptions& options,
                                                const ParametricFit& full,
                                                const BootstrapOptions& bootstrap) {
  const auto t0 = std::chrono::steady_clock::now();
  ISOFLOP_RETURN_IF_ERROR(bootstrap.Validate());
  ISOFLOP_RETURN_IF_ERROR(options.Validate());
  ParametricOptions refit = options;
  // The reported optimum seeds every resample, whatever `optima` holds: a resample's optimum
  // lies near the full data's, and without it the refits can all fall into a worse basin.
  refit.starts.clear();
  if (!full.internal.empty()) refit.starts.push_back(full.internal);
  for (const auto& o : full.optima) {
    if (static_cast<int>(refit.starts.size()) > bootstrap.starts_per_resample) break;
    if (IsDistinct(o, refit.starts)) refit.starts.push_back(o);
  }
  refit.num_threads = 1;  // parallel over resamples instead
  refit.prune_after = 0;
  refit.keep_optima = 1;

  std::vector<std::vector<double>> draws(bootstrap.resamples);
  std::vector<char> ok(bootstrap.resamples, 0);
  ParallelFor(bootstrap.resamples, Threads(bootstrap.num_threads), [&](int i) {
    std::mt19937_64 rng(bootstrap.seed + static_cast<uint64_t>(i));
    std::uniform_int_distribution<size_t> pick(0, obs.size() - 1);
    std::vector<Observation> sample(obs.size());
    for (auto& o : sample) o = obs[pick(rng)];
    auto fit = FitParametric(sample, refit);
    if (!fit.ok()) return;
    draws[i] = fit->params;
    ok[i] = 1;
  });

  ParametricBootstrap out;
  out.resamples = bootstrap.resamples;
  for (int i = 0; i < bootstrap.resamples; ++i) {
    if (!ok[i]) {
      ++out.failed;
      continue;
    }
    if (!std::all_of(draws[i].begin(), draws[i].end(), [](double x) { return std::isfinite(x); })) {
      ++out.non_finite;
      continue;
    }
    out.all_draws.push_back(draws[i]);
    if (static_cast<int>(out.draws.size()) < bootstrap.keep_draws) out.draws.push_back(draws[i]);
  }
  // Intervals of every parameter and of the derived quantities.
  std::map<std::string, std::vector<double>> samples;
  for (const auto& d : out.all_draws)
    for (const auto& [name, v] : BootstrapQuantities(full.form, full.param_names, d,
                                                     bootstrap.flops, bootstrap.derived_at_compute))
      samples[name].push_back(v);
  for (auto& [name, xs] : samples)
    out.intervals[name] = PercentileInterval(std::move(xs), bootstrap.level);
  out.excludes_point =
      PointsOutsideIntervals(BootstrapQuantities(full.form, full.param_names, full.params,
                                                 bootstrap.flops, bootstrap.derived_at_compute),
                             out.intervals);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

Result<std::map<std::string, Interval>> BootstrapIsoflop(const std::vector<Observation>& obs,
                                                         const IsoflopOptions& options,
                                                         const BootstrapOptions& bootstrap,
                                                         IsoflopFit* fit) {
  ISOFLOP_RETURN_IF_ERROR(bootstrap.Validate());
  const BudgetGroups grouping = GroupBudgets(obs, options.budget_rel_tol, options.flops);
  const auto& groups = grouping.groups;
  const auto fit_one = [&](std::mt19937_64& rng) -> std::optional<std::array<double, 4>> {
    std::vector<Observation> sample;
    for (size_t gi = 0; gi < groups.size(); ++gi) {  // stratified: each budget keeps its size
      const auto& g = groups[gi];
      std::uniform_int_distribution<size_t> pick(0, g.size() - 1);
      for (size_t k = 0; k < g.size(); ++k) {
        Observation o = obs[g[pick(rng)]];
        if (o.budget_id < 0 && o.c == 0) o.c = ComputeOf(o, options.flops);
        // Clustered budgets stay the full fit's: a resample's repeated draws add zero gaps in
        // log C, which shrink the median gap and would split its budgets when clustered anew.
        if (grouping.how == "clustered") o.budget_id = static_cast<int64_t>(gi);
        sample.push_back(o);
      }
    }
    auto f = FitIsoflop(sample, options);
    if (!f.ok()) return std::nullopt;
    return PowerLawQuantities(*f);
  };
  IsoflopFit scratch;
  // A resample fails where a budget drew too few distinct sizes for a minimum: the intervals
  // are those of the resamples that had one, narrower than the truth.
  return PowerLawBootstrap(bootstrap, fit_one, "had fewer than two budgets with a minimum",
                           fit ? fit : &scratch);
}

Result<std::map<std::string, Interval>> BootstrapEnvelope(const std::vector<Curve>& curves,
                                                          const EnvelopeOptions& options,
                                                          const BootstrapOptions& bootstrap,
                                                          EnvelopeFit* fit) {
  ISOFLOP_RETURN_IF_ERROR(bootstrap.Validate());
  ISOFLOP_RETURN_IF_ERROR(ValidateCurves(curves));
  // Budgets: curves sorted by where they end, a new group wherever the next ends 5% later.
  std::vector<std::pair<double, size_t>> ends;
  for (size_t i = 0; i < curves.size(); ++i) {
    double end = 0;
    for (const auto& [c, loss] : curves[i].points) end = std::max(end, c);
    ends.emplace_back(end, i);
  }
  std::sort(ends.begin(), ends.end());
  std::vector<std::vector<size_t>> groups;
  for (size_t k = 0; k < ends.size(); ++k) {
    if (k == 0 || ends[k].first > 1.05 * ends[k - 1].first) groups.emplace_back();
    groups.back().push_back(ends[k].second);
  }
  const auto fit_one = [&](std::mt19937_64& rng) -> std::optional<std::array<double, 4>> {
    std::vector<Curve> sample;
    for (const auto& g : groups) {
      std::uniform_int_distribution<size_t> pick(0, g.size() - 1);
      for (size_t k = 0; k < g.size(); ++k) sample.push_back(curves[g[pick(rng)]]);
    }
    auto f = FitEnvelope(sample, options);
    if (!f.ok()) return std::nullopt;
    return PowerLawQuantities(*f);
  };
  EnvelopeFit scratch;
  return PowerLawBootstrap(bootstrap, fit_one, "had one model size win the whole envelope",
                           fit ? fit : &scratch);
}

namespace {

// Fits on every budget but groups[held], predicts the held-out runs' losses and the budget's
// N_opt; the observed N_opt is the budget's own interior minimum (NaN without one).
Result<ExtrapolationCheck> HoldOut(const std::vector<Observation>& obs,
                                   const ParametricOptions& options, const IsoflopOptions& grouping,
                                   const BudgetGroups& groups, size_t held) {
  std::vector<Observation> train, test;
  for (size_t g = 0; g < groups.groups.size(); ++g)
    for (size_t i : groups.groups[g]) (g == held ? test : train).push_back(obs[i]);
  ISOFLOP_ASSIGN_OR_RETURN(ParametricFit fit, FitParametric(train, options));
  ISOFLOP_ASSIGN_OR_RETURN(const Form* form, GetForm(fit.form));
  ExtrapolationCheck out;
  out.n_train = static_cast<int>(train.size());
  out.n_test = static_cast<int>(test.size());
  for (const Observation& o : test) {
    const double pred = form->Predict(fit.params, o.n, o.d, o.g);  // at the point's own G (MoE)
    out.test_loss.push_back(o.loss);
    out.predicted_loss.push_back(pred);
    const double rel = std::abs(pred - o.loss) / o.loss;
    out.mean_abs_rel_error += rel / test.size();
    out.max_abs_rel_error = std::max(out.max_abs_rel_error, rel);
  }
  const BudgetProfile profile = ProfileBudget(obs, groups.groups[held], groups.how, grouping);
  out.held_out_c = profile.c;
  ScalingLaw law;
  law.form = fit.form;
  law.params = fit.params;
  law.flops = grouping.flops;
  auto alloc = ComputeOptimal(law, out.held_out_c);
  out.n_opt_predicted = alloc.ok() ? alloc->n : NAN;
  out.n_opt_observed = NAN;
  out.n_opt_rel_error = NAN;
  if (profile.usable && !profile.outside_range) {
    out.n_opt_observed = profile.n_opt;
    out.n_opt_rel_error = (out.n_opt_predicted - out.n_opt_observed) / out.n_opt_observed;
  }
  return out;
}

}  // namespace

Result<ExtrapolationCheck> CheckExtrapolation(const std::vector<Observation>& obs,
                                              const ParametricOptions& options,
                                              const IsoflopOptions& grouping) {
  ISOFLOP_RETURN_IF_ERROR(ValidateObservations(obs));
  const BudgetGroups groups = GroupBudgets(obs, grouping.budget_rel_tol, grouping.flops);
  if (groups.groups.size() < 2)
    return Status::InvalidArgument(
        "cannot check extrapolation: it needs at least two budgets; the data form " +
        std::to_string(groups.groups.size()));
  // The largest budget with enough runs to judge a prediction by; one or two runs say little.
  for (size_t g = groups.groups.size(); g-- > 1;) {
    if (groups.groups[g].size() >= static_cast<size_t>(kMinHeldOutRuns))
      return HoldOut(obs, options, grouping, groups, g);
  }
  const auto& last = groups.groups.back();
  char buf[300];
  std::snprintf(buf, sizeof buf,
                "cannot check extrapolation: no budget above the smallest has %d or more runs to "
                "hold out (the largest, C=%.3g, has %zu)",
                kMinHeldOutRuns, ProfileBudget(obs, last, groups.how, grouping).c, last.size());
  return Status::InvalidArgument(buf);
}

Result<std::vector<ExtrapolationCheck>> CrossValidateBudgets(const std::vector<Observation>& obs,
                                                             const ParametricOptions& options,
                                                             const IsoflopOptions& grouping) {
  ISOFLOP_RETURN_IF_ERROR(ValidateObservations(obs));
  const BudgetGroups groups = GroupBudgets(obs, grouping.budget_rel_tol, grouping.flops);
  if (groups.groups.size() < 2)
    return Status::InvalidArgument(
        "leave-one-budget-out needs at least two budgets; the data "
        "form " +
        std::to_string(groups.groups.size()));
  std::vector<ExtrapolationCheck> out;
  for (size_t g = 0; g < groups.groups.size(); ++g) {
    Result<ExtrapolationCheck> check = HoldOut(obs, options, grouping, groups, g);
    if (!check.ok()) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "holding out budget %zu: ", g + 1);
      return check.status().WithPrefix(buf);
    }
    out.push_back(std::move(*check));
  }
  return out;
}

}  // namespace isoflop::fit
