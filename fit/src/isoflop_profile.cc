// IsoFLOP profiles (Hoffmann et al. 2022, §3.2, Approach 2) and the small power-law and
// percentile helpers the other methods share.
#include "isoflop/fit/isoflop_profile.h"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>

namespace isoflop::fit {
namespace {

// Least-squares parabola y = p0 + p1·x + p2·x², solved on centred x for conditioning.
std::array<double, 3> FitParabola(const std::vector<double>& x, const std::vector<double>& y) {
  const int n = static_cast<int>(x.size());
  double mean = 0;
  for (double v : x) mean += v / n;
  Eigen::MatrixXd a(n, 3);
  Eigen::VectorXd b(n);
  for (int i = 0; i < n; ++i) {
    const double t = x[i] - mean;
    a(i, 0) = 1;
    a(i, 1) = t;
    a(i, 2) = t * t;
    b[i] = y[i];
  }
  const Eigen::Vector3d q = a.colPivHouseholderQr().solve(b);
  return {q[0] - q[1] * mean + q[2] * mean * mean, q[1] - 2 * q[2] * mean, q[2]};
}

double Eval(const std::array<double, 3>& p, double x) { return p[0] + p[1] * x + p[2] * x * x; }

}  // namespace

Interval PercentileInterval(std::vector<double> values, double level) {
  values.erase(
      std::remove_if(values.begin(), values.end(), [](double v) { return !std::isfinite(v); }),
      values.end());
  Interval out;
  out.level = level;
  if (values.empty()) return out;
  std::sort(values.begin(), values.end());
  auto at = [&](double q) {
    const double pos = q * (values.size() - 1);
    const size_t i = static_cast<size_t>(std::floor(pos));
    const size_t j = std::min(i + 1, values.size() - 1);
    return values[i] + (pos - i) * (values[j] - values[i]);
  };
  out.lo = at((1 - level) / 2);
  out.hi = at(1 - (1 - level) / 2);
  return out;
}

std::vector<IntervalExclusion> PointsOutsideIntervals(const std::map<std::string, double>& points,
                                                      const std::map<std::string, Interval>& ci) {
  std::vector<IntervalExclusion> out;
  for (const auto& [name, v] : points) {
    const auto it = ci.find(name);
    if (it == ci.end() || !std::isfinite(v)) continue;
    const Interval& iv = it->second;
    if (!std::isfinite(iv.lo) || !std::isfinite(iv.hi)) continue;
    const double slack = 1e-9 * std::max(std::abs(iv.lo), std::abs(iv.hi));
    if (v < iv.lo - slack || v > iv.hi + slack) out.push_back({name, v, iv.lo, iv.hi});
  }
  return out;
}

Result<PowerLaw> FitPowerLaw(const std::vector<double>& c, const std::vector<double>& y) {
  if (c.size() != y.size()) return Status::Internal("FitPowerLaw: size mismatch");
  std::set<double> distinct;
  double mx = 0, my = 0;
  const int n = static_cast<int>(c.size());
  for (int i = 0; i < n; ++i) {
    if (!(c[i] > 0) || !(y[i] > 0) || !std::isfinite(c[i]) || !std::isfinite(y[i]))
      return Status::InvalidArgument("power-law fit needs positive finite values");
    distinct.insert(c[i]);
    mx += std::log(c[i]) / n;
    my += std::log(y[i]) / n;
  }
  if (distinct.size() < 2)
    return Status::InvalidArgument("power-law fit needs at least two distinct budgets");
  double sxy = 0, sxx = 0;
  for (int i = 0; i < n; ++i) {
    const double dx = std::log(c[i]) - mx;
    sxy += dx * (std::log(y[i]) - my);
    sxx += dx * dx;
  }
  PowerLaw law;
  law.a = sxy / sxx;
  law.k = std::exp(my - law.a * mx);
  law.n_budgets = n;
  return law;
}

Status IsoflopOptions::Validate() const {
  if (!(budget_rel_tol >= 0 && budget_rel_tol < 1))
    return Status::InvalidArgument("budget_rel_tol must be in [0, 1)");
  if (estimator != "parabola" && estimator != "argmin")
    return Status::InvalidArgument("isoFLOP estimator '" + estimator +
                                   "' is not one of parabola, argmin");
  if (min_points_per_budget < 3)
    return Status::InvalidArgument(
        "min_points_per_budget must be >= 3 (a parabola has 3 "
        "coefficients)");
  return Status::Ok();
}

BudgetGroups GroupBudgets(const std::vector<Observation>& obs, double rel_tol,
                          const FlopsConvention& flops) {
  BudgetGroups out;
  auto& groups = out.groups;
  auto every = [&](auto pred) { return !obs.empty() && std::all_of(obs.begin(), obs.end(), pred); };
  if (every([](const auto& o) { return o.budget_id >= 0; })) {
    out.how = "budget_id";
    std::map<int64_t, std::vector<size_t>> m;
    for (size_t i = 0; i < obs.size(); ++i) m[obs[i].budget_id].push_back(i);
    for (auto& [id, g] : m) groups.push_back(std::move(g));
  } else if (every([](const auto& o) { return o.budget > 0; })) {
    out.how = "budget";
    std::map<double, std::vector<size_t>> m;
    for (size_t i = 0; i < obs.size(); ++i) m[obs[i].budget].push_back(i);
    for (auto& [b, g] : m) groups.push_back(std::move(g));
  } else {
    // Clustering of log C: a budget's runs sit close together, budgets are separated by wide
    // gaps. A new budget starts once the group spans more than ln(1 + rel_tol) and the gap to
    // the next run is wide: more than 5x the median gap (capped at ln 1.5), so budgets whose
    // runs' C scatter by tens of percent are not shredded, and runs a factor 1.5 apart are
    // always separate budgets.
    out.how = "clustered";
    std::vector<size_t> order(obs.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::vector<double> log_c(obs.size());
    for (size_t i = 0; i < obs.size(); ++i) log_c[i] = std::log(ComputeOf(obs[i], flops));
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return log_c[a] < log_c[b]; });
    std::vector<double> gaps;
    for (size_t k = 1; k < order.size(); ++k) gaps.push_back(log_c[order[k]] - log_c[order[k - 1]]);
    double median = 0;
    if (!gaps.empty()) {
      std::vector<double> sorted = gaps;
      std::nth_element(sorted.begin(), sorted.begin() + sorted.size() / 2, sorted.end());
      median = sorted[sorted.size() / 2];
    }
    const double window = std::log1p(rel_tol);
    const double wide = std::min(5 * median, std::log(1.5));
    double first = 0;
    for (size_t k = 0; k < order.size(); ++k) {
      const double x = log_c[order[k]];
      if (k == 0 || (x - first > window && gaps[k - 1] > wide)) {
        groups.emplace_back();
        first = x;
      }
      groups.back().push_back(order[k]);
    }
  }
  auto mean_log_c = [&](const std::vector<size_t>& g) {
    double s = 0;
    for (size_t i : g) s += std::log(ComputeOf(obs[i], flops));
    return s / g.size();
  };
  std::stable_sort(groups.begin(), groups.end(),
                   [&](const auto& a, const auto& b) { return mean_log_c(a) < mean_log_c(b); });
  // Many budgets of one or two runs: the runs' C do not match one budget each (their FLOPs
  // were counted otherwise than 6ND, or the budgets were never recorded).
  size_t small = 0;
  for (const auto& g : groups) small += g.size() <= 2;
  if (groups.size() >= 4 && 2 * small > groups.size()) {
    std::ostringstream w;
    w << "the " << obs.size() << " runs form " << groups.size() << " budgets, " << small
      << " of them with only 1-2 runs: ";
    if (out.how == "clustered")
      w << "no budget was recorded and the runs' C = 6ND scatter around their nominal budgets. "
           "Import the file's budget column (isoflop import --budget-column NAME; recognised: "
           "budget, compute_budget, or a repeated C/flops column beside D), or widen "
           "--budget-tol";
    else
      w << "check that each run's recorded budget is its isoFLOP budget";
    out.fragmented = w.str();
  }
  return out;
}

std::vector<std::vector<size_t>> GroupByBudget(const std::vector<Observation>& obs, double rel_tol,
                                               const FlopsConvention& flops) {
  return GroupBudgets(obs, rel_tol, flops).groups;
}

BudgetProfile ProfileBudget(const std::vector<Observation>& obs, const std::vector<size_t>& g,
                            const std::string& how, const IsoflopOptions& options) {
  BudgetProfile b;
  b.n_points = static_cast<int>(g.size());
  b.budget_id = obs[g[0]].budget_id;
  double log_c = 0;
  std::vector<double> xn, xd, y;
  std::set<double> distinct_n;
  b.n_lo = b.d_lo = HUGE_VAL;
  for (size_t i : g) {
    const Observation& o = obs[i];
    log_c += std::log(ComputeOf(o, options.flops)) / g.size();
    xn.push_back(std::log(o.n));
    xd.push_back(std::log(o.d));
    y.push_back(o.loss);
    distinct_n.insert(o.n);
    b.n_lo = std::min(b.n_lo, o.n);
    b.n_hi = std::max(b.n_hi, o.n);
    b.d_lo = std::min(b.d_lo, o.d);
    b.d_hi = std::max(b.d_hi, o.d);
  }
  b.c = how == "budget" ? obs[g[0]].budget : std::exp(log_c);
  if (static_cast<int>(distinct_n.size()) < options.min_points_per_budget) {
    b.note = "left out: only " + std::to_string(distinct_n.size()) +
             " distinct model size(s); need " + std::to_string(options.min_points_per_budget);
  } else if (options.estimator == "argmin") {
    // The budget's lowest-loss run (first of ties in input order).
    size_t best = g[0];
    for (size_t i : g)
      if (obs[i].loss < obs[best].loss) best = i;
    b.n_opt = obs[best].n;
    b.d_opt = obs[best].d;
    b.loss_at_n_opt = b.loss_at_d_opt = obs[best].loss;
    b.usable = true;
    if (b.n_opt == b.n_lo || b.n_opt == b.n_hi) {
      b.outside_range = true;
      b.note = std::string(options.drop_outside_range ? "left out" : "kept") +
               ": the lowest loss is at the " + (b.n_opt == b.n_lo ? "smallest" : "largest") +
               " sampled size, so the optimum may lie beyond it" +
               (options.drop_outside_range ? " (--keep-outside-range keeps it)" : "");
      if (options.drop_outside_range) b.usable = false;
    }
  } else {
    b.parabola_n = FitParabola(xn, y);
    b.parabola_d = FitParabola(xd, y);
    if (!(b.parabola_n[2] > 0) || !(b.parabola_d[2] > 0)) {
      b.note = "left out: loss is not convex in log N at this budget (no minimum)";
    } else {
      const double xn_opt = -b.parabola_n[1] / (2 * b.parabola_n[2]);
      const double xd_opt = -b.parabola_d[1] / (2 * b.parabola_d[2]);
      b.n_opt = std::exp(xn_opt);
      b.d_opt = std::exp(xd_opt);
      b.loss_at_n_opt = Eval(b.parabola_n, xn_opt);
      b.loss_at_d_opt = Eval(b.parabola_d, xd_opt);
      b.usable = true;
      if (b.n_opt < b.n_lo || b.n_opt > b.n_hi || b.d_opt < b.d_lo || b.d_opt > b.d_hi) {
        b.outside_range = true;
        char buf[320];
        std::snprintf(buf, sizeof buf,
                      "%s: the parabola's minimum N = %.3g lies outside the sampled sizes "
                      "[%.3g, %.3g] (extrapolated, so it can sit decades away)%s",
                      options.drop_outside_range ? "left out" : "kept", b.n_opt, b.n_lo, b.n_hi,
                      options.drop_outside_range ? "; --keep-outside-range keeps it" : "");
        b.note = buf;
        if (options.drop_outside_range) b.usable = false;
      }
    }
  }
  return b;
}

Result<IsoflopFit> FitIsoflop(const std::vector<Observation>& obs, const IsoflopOptions& options) {
  ISOFLOP_RETURN_IF_ERROR(options.Validate());
  ISOFLOP_RETURN_IF_ERROR(ValidateObservations(obs));
  const BudgetGroups grouping = GroupBudgets(obs, options.budget_rel_tol, options.flops);
  const auto& groups = grouping.groups;
  if (groups.size() < 2)
    return Status::InvalidArgument(
        "an isoFLOP fit needs at least two compute budgets; the " + std::to_string(obs.size()) +
        " observation(s) form " + std::to_string(groups.size()) +
        " budget(s). Add runs at another budget (or use --method parametric)");
  IsoflopFit fit;
  fit.n_points = static_cast<int>(obs.size());
  fit.estimator = options.estimator;
  fit.grouping = grouping.how;
  if (grouping.how == "clustered")
    fit.warnings.push_back(
        "no run records its budget: budgets found by clustering C = 6ND in "
        "log space (" +
        std::to_string(groups.size()) + " budgets)");
  if (!grouping.fragmented.empty()) fit.warnings.push_back(grouping.fragmented);
  std::vector<double> cs, ns, ds;
  std::ostringstream problems;
  for (const auto& g : groups) {
    BudgetProfile b = ProfileBudget(obs, g, grouping.how, options);
    if (b.usable) {
      cs.push_back(b.c);
      ns.push_back(b.n_opt);
      ds.push_back(b.d_opt);
    } else {
      problems << " C=" << b.c << ": " << b.note << ";";
    }
    fit.budgets.push_back(b);
  }
  if (cs.size() < 2)
    return Status::InvalidArgument(
        "an isoFLOP fit needs at least two budgets with a usable "
        "minimum; found " +
        std::to_string(cs.size()) + "." + problems.str() +
        (grouping.fragmented.empty() ? "" : " Likely cause: " + grouping.fragmented));
  ISOFLOP_ASSIGN_OR_RETURN(fit.n_opt, FitPowerLaw(cs, ns));
  ISOFLOP_ASSIGN_OR_RETURN(fit.d_opt, FitPowerLaw(cs, ds));
  return fit;
}

}  // namespace isoflop::fit
