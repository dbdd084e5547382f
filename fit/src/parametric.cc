// Multi-start Levenberg–Marquardt fit of any Form with the summed Huber objective
// (Hoffmann et al. 2022, Approach 3; Besiroglu et al. 2024, §2). ceres::TinySolver does the
// iterations; this file maps free parameters (fixed and tied ones removed), turns Huber into
// least squares, spreads starts over threads and prunes hopeless starts.
#include "isoflop/fit/parametric.h"

#include <ceres/tiny_solver.h>

#include <Eigen/Dense>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>
#include <thread>

namespace isoflop::fit {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Residuals f_i = sign(r_i)·sqrt(2·Huber_δ(r_i)) with r_i = log L_i − log L̂_i, so that
// ½‖f‖² = Σ Huber_δ(r_i) exactly and ∂f/∂r = 1 (|r| ≤ δ) or δ/|f| (|r| > δ). The Jacobian is
// analytic (chain rule through Form::LogPredict). Not thread-safe (scratch buffers): one per
// thread.
class HuberResiduals {
 public:
  using Scalar = double;
  enum { NUM_RESIDUALS = Eigen::Dynamic, NUM_PARAMETERS = Eigen::Dynamic };

  HuberResiduals(const Form& form, const LogColumns& cols, const std::vector<double>& log_loss,
                 double delta, std::vector<int> source, std::vector<double> base, int num_free)
      : form_(form),
        cols_(cols),
        log_loss_(log_loss),
        delta_(delta),
        source_(std::move(source)),
        base_(std::move(base)),
        num_free_(num_free),
        x_(base_),
        log_pred_(cols.size()),
        jac_(cols.size() * base_.size()) {}

  int NumResiduals() const { return static_cast<int>(cols_.size()); }
  int NumParameters() const { return num_free_; }

  bool operator()(const double* z, double* f, double* jac) const {
    const size_t n = cols_.size();
    ExpandInto(z, &x_);
    form_.LogPredict(x_.data(), cols_, log_pred_.data(), jac ? jac_.data() : nullptr);
    if (jac) std::fill(jac, jac + n * num_free_, 0.0);
    for (size_t i = 0; i < n; ++i) {
      const double r = log_loss_[i] - log_pred_[i];
      double dfdr = 1;
      if (std::abs(r) <= delta_) {
        f[i] = r;
      } else {
        const double mag = std::sqrt(2 * delta_ * std::abs(r) - delta_ * delta_);
        f[i] = r > 0 ? mag : -mag;
        dfdr = delta_ / mag;
      }
      if (!jac) continue;
      for (size_t j = 0; j < source_.size(); ++j) {
        if (source_[j] < 0) continue;
        jac[i + n * source_[j]] -= dfdr * jac_[i + n * j];  // ∂r/∂x = −∂ log L̂/∂x
      }
    }
    return true;
  }

  // Full internal vector from free values z.
  void ExpandInto(const double* z, std::vector<double>* x) const {
    *x = base_;
    for (size_t j = 0; j < source_.size(); ++j)
      if (source_[j] >= 0) (*x)[j] = z[source_[j]];
  }

 private:
  const Form& form_;
  const LogColumns& cols_;
  const std::vector<double>& log_loss_;
  const double delta_;
  const std::vector<int> source_;   // per full parameter: its free index, or -1 when fixed
  const std::vector<double> base_;  // full internal vector holding the fixed values
  const int num_free_;
  mutable std::vector<double> x_, log_pred_, jac_;
};

using Solver = ceres::TinySolver<HuberResiduals>;

struct StartOutcome {
  Eigen::VectorXd z;  // free parameters
  double cost = kInf;
  bool converged = false;
  bool pruned = false;
  bool done = false;
};

// How free parameters map to the full vector (fixed values and ties applied).
struct Mapping {
  std::vector<int> source;
  std::vector<double> base;
  int num_free = 0;
};

Result<Mapping> BuildMapping(const Form& form, const ParametricOptions& options) {
  const int p = form.NumParams();
  Mapping m;
  m.source.assign(p, 0);
  m.base.assign(p, 0.0);
  for (const auto& [name, value] : options.fixed) {
    const int j = form.IndexOf(name);
    m.source[j] = -1;
    m.base[j] = form.params()[j].log_scale ? std::log(value) : value;
  }
  std::vector<int> leader(p, -1);
  for (const auto& [lead, follow] : options.ties) leader[form.IndexOf(follow)] = form.IndexOf(lead);
  for (int j = 0; j < p; ++j) {
    if (m.source[j] < 0 || leader[j] >= 0) continue;
    m.source[j] = m.num_free++;
  }
  for (int j = 0; j < p; ++j)
    if (leader[j] >= 0) m.source[j] = m.source[leader[j]];
  return m;
}

// Starts in free units: the cartesian product of the (free) grid axes, or explicit starts.
std::vector<Eigen::VectorXd> BuildStarts(const Form& form, const ParametricOptions& options,
                                         const Mapping& m) {
  const int p = form.NumParams();
  std::vector<Eigen::VectorXd> starts;
  if (!options.starts.empty()) {
    for (const auto& s : options.starts) {
      Eigen::VectorXd z(m.num_free);
      for (int j = 0; j < p; ++j)
        if (m.source[j] >= 0) z[m.source[j]] = s[j];
      if (z.allFinite()) starts.push_back(z);
    }
    return starts;
  }
  // Axes of the free parameters only (the first parameter mapped to each free index).
  std::vector<std::vector<double>> axes(m.num_free);
  std::vector<bool> seen(m.num_free, false);
  for (int j = 0; j < p; ++j) {
    const int s = m.source[j];
    if (s < 0 || seen[s]) continue;
    seen[s] = true;
    axes[s] = options.grid.empty() ? form.params()[j].grid : options.grid[j];
  }
  size_t total = 1;
  for (const auto& a : axes) total *= a.size();
  starts.reserve(total);
  std::vector<size_t> idx(m.num_free, 0);
  for (size_t k = 0; k < total; ++k) {
    Eigen::VectorXd z(m.num_free);
    for (int s = 0; s < m.num_free; ++s) z[s] = axes[s][idx[s]];
    starts.push_back(z);
    for (int s = m.num_free - 1; s >= 0; --s) {
      if (++idx[s] < axes[s].size()) break;
      idx[s] = 0;
    }
  }
  return starts;
}

LogColumns Columns(const std::vector<Observation>& obs, std::vector<double>* log_loss) {
  LogColumns cols;
  for (const Observation& o : obs) {
    cols.log_n.push_back(std::log(o.n));
    cols.log_d.push_back(std::log(o.d));
    cols.log_g.push_back(std::log(o.g));
    log_loss->push_back(std::log(o.loss));
  }
  return cols;
}

// Runs `work(i, solver, residuals)` for i in [0, count) on `threads` threads.
template <typename Work>
void ParallelFor(size_t count, int threads, const HuberResiduals& prototype, Work work) {
  std::atomic<size_t> next{0};
  auto body = [&] {
    HuberResiduals residuals = prototype;  // own scratch buffers
    Solver solver;
    for (size_t i = next++; i < count; i = next++) work(i, solver, residuals);
  };
  const int n = std::max(1, std::min<int>(threads, static_cast<int>(count)));
  std::vector<std::thread> pool;
  for (int t = 1; t < n; ++t) pool.emplace_back(body);
  body();
  for (auto& t : pool) t.join();
}

// Runs up to `iterations` LM iterations from outcome->z, updating it.
void Advance(Solver& solver, const HuberResiduals& residuals, int iterations, double tol,
             StartOutcome* outcome) {
  solver.options.max_num_iterations = iterations;
  solver.options.parameter_tolerance = tol;
  // Scale-dependent criteria off: only the relative step size (and the cap) stop a start.
  solver.options.gradient_tolerance = 0;
  solver.options.function_tolerance = 0;
  solver.options.cost_threshold = 0;
  const auto& summary = solver.Solve(residuals, &outcome->z);
  outcome->cost =
      std::isfinite(summary.final_cost) && outcome->z.allFinite() ? summary.final_cost : kInf;
  outcome->converged = std::isfinite(outcome->cost) && summary.status != Solver::HIT_MAX_ITERATIONS;
  outcome->done = outcome->converged || !std::isfinite(outcome->cost);
}

}  // namespace

bool IsDistinct(const std::vector<double>& x, const std::vector<std::vector<double>>& kept) {
  for (const auto& k : kept) {
    double diff = 0;
    for (size_t j = 0; j < x.size() && j < k.size(); ++j)
      diff = std::max(diff, std::abs(x[j] - k[j]));
    if (diff < 1e-3) return false;
  }
  return true;
}

Status ParametricOptions::Validate() const {
  ISOFLOP_ASSIGN_OR_RETURN(const Form* f, GetForm(form));
  if (loss != "huber" && loss != "mse")
    return Status::InvalidArgument("loss '" + loss + "' is not one of huber, mse");
  if (!(huber_delta > 0) || !std::isfinite(huber_delta))
    return Status::InvalidArgument("huber_delta must be a finite number > 0");
  if (!grid.empty() && static_cast<int>(grid.size()) != f->NumParams())
    return Status::InvalidArgument("grid must have one axis per parameter of form '" + form +
                                   "' (" + std::to_string(f->NumParams()) + ")");
  for (const auto& axis : grid)
    if (axis.empty()) return Status::InvalidArgument("grid axes must not be empty");
  for (const auto& s : starts)
    if (static_cast<int>(s.size()) != f->NumParams())
      return Status::InvalidArgument("each start must have " + std::to_string(f->NumParams()) +
                                     " values (internal units)");
  for (const auto& [name, value] : fixed) {
    const int j = f->IndexOf(name);
    if (j < 0)
      return Status::InvalidArgument("cannot fix '" + name + "': form '" + form +
                                     "' has no such parameter");
    if (!std::isfinite(value) || (f->params()[j].log_scale && value < 0))
      return Status::InvalidArgument("fixed value of '" + name + "' must be finite" +
                                     (f->params()[j].log_scale ? " and >= 0" : ""));
    // At 0 an exponent's term is a constant that the others absorb (E + A, or g + a: not
    // identified); below 0 the loss grows along its axis.
    if (!f->params()[j].log_scale && !(value > 0))
      return Status::InvalidArgument("fixed value of '" + name + "' must be > 0: it is the " +
                                     "exponent with which the loss falls with " +
                                     f->params()[j].axis);
  }
  for (const auto& [lead, follow] : ties) {
    const int a = f->IndexOf(lead), b = f->IndexOf(follow);
    if (a < 0 || b < 0 || a == b)
      return Status::InvalidArgument("bad tie '" + follow + "=" + lead +
                                     "': both must be distinct parameters of '" + form + "'");
    if (f->params()[a].log_scale != f->params()[b].log_scale)
      return Status::InvalidArgument("cannot tie '" + follow + "' to '" + lead +
                                     "': one is a coefficient, the other an exponent");
    if (fixed.count(follow) || fixed.count(lead))
      return Status::InvalidArgument("'" + follow + "' cannot be both tied and fixed");
  }
  if (num_threads < 0) return Status::InvalidArgument("num_threads must be >= 0");
  if (max_iterations < 2) return Status::InvalidArgument("max_iterations must be >= 2");
  if (!(parameter_tolerance > 0)) return Status::InvalidArgument("parameter_tolerance must be > 0");
  if (prune_after < 0 || !(prune_ratio >= 1))
    return Status::InvalidArgument("prune_after must be >= 0 and prune_ratio >= 1");
  return Status::Ok();
}

double ParametricFit::Param(const std::string& name) const {
  for (size_t i = 0; i < param_names.size(); ++i)
    if (param_names[i] == name) return params[i];
  return std::numeric_limits<double>::quiet_NaN();
}

Result<ParametricFit> FitParametric(const std::vector<Observation>& obs,
                                    const ParametricOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  ISOFLOP_RETURN_IF_ERROR(options.Validate());
  ISOFLOP_RETURN_IF_ERROR(ValidateObservations(obs));
  ISOFLOP_ASSIGN_OR_RETURN(const Form* form, GetForm(options.form));
  ISOFLOP_ASSIGN_OR_RETURN(Mapping map, BuildMapping(*form, options));
  if (map.num_free == 0)
    return Status::InvalidArgument("every parameter is fixed or tied: nothing to fit");
  if (static_cast<int>(obs.size()) < map.num_free)
    return Status::InvalidArgument("too few points to fit: " + std::to_string(obs.size()) +
                                   " observation(s) for " + std::to_string(map.num_free) +
                                   " free parameter(s) of form '" + options.form +
                                   "'; add runs or fix parameters");
  // One model size (or one token count) leaves a flat direction: E + A/N^α is one number for
  // every (A, α), so the fit would report whichever α its start had, with tight intervals.
  const auto number = [](double v) {
    char text[32];
    std::snprintf(text, sizeof text, "%.4g", v);
    return std::string(text);
  };
  const auto distinct = [&](auto field) {
    std::set<double> seen;
    for (const Observation& o : obs) seen.insert(field(o));
    return seen.size();
  };
  if (distinct([](const Observation& o) { return o.n; }) < 2)
    return Status::InvalidArgument(
        "a parametric fit needs runs of at least two model sizes; all " +
        std::to_string(obs.size()) + " have N = " + number(obs[0].n) +
        ", which cannot tell A from alpha (add sizes, or use --method isoflop)");
  if (distinct([](const Observation& o) { return o.d; }) < 2)
    return Status::InvalidArgument(
        "a parametric fit needs runs of at least two token counts; all " +
        std::to_string(obs.size()) + " have D = " + number(obs[0].d) +
        ", which cannot tell B from beta");
  if (form->name() == "moe" && distinct([](const Observation& o) { return o.g; }) < 2)
    return Status::InvalidArgument(
        "the moe form needs runs of at least two granularities G: with one, g/G^gamma + a is a "
        "single number that cannot tell g, a and gamma apart (add a granularity axis, or use "
        "--form chinchilla)");

  std::vector<double> log_loss;
  const LogColumns cols = Columns(obs, &log_loss);
  // mse is Huber with an infinite threshold: every residual is in the quadratic part.
  const double delta = options.loss == "mse" ? kInf : options.huber_delta;
  const HuberResiduals prototype(*form, cols, log_loss, delta, map.source, map.base, map.num_free);
  std::vector<Eigen::VectorXd> starts = BuildStarts(*form, options, map);
  if (starts.empty()) return Status::InvalidArgument("no finite starting point");
  const int threads = options.num_threads > 0 ? options.num_threads
                                              : std::max(1u, std::thread::hardware_concurrency());

  std::vector<StartOutcome> out(starts.size());
  for (size_t i = 0; i < starts.size(); ++i) out[i].z = starts[i];
  const bool prune = options.prune_after > 0 && options.prune_after < options.max_iterations;
  const int first = prune ? options.prune_after : options.max_iterations;
  ParallelFor(out.size(), threads, prototype, [&](size_t i, Solver& s, const HuberResiduals& r) {
    Advance(s, r, first, options.parameter_tolerance, &out[i]);
  });
  int pruned = 0;
  if (prune) {
    double best = kInf;
    for (const auto& o : out) best = std::min(best, o.cost);
    std::vector<size_t> keep;
    for (size_t i = 0; i < out.size(); ++i) {
      if (out[i].done) continue;
      if (out[i].cost > options.prune_ratio * best) {
        out[i].pruned = true;
        ++pruned;
      } else {
        keep.push_back(i);
      }
    }
    ParallelFor(keep.size(), threads, prototype, [&](size_t k, Solver& s, const HuberResiduals& r) {
      Advance(s, r, options.max_iterations - first, options.parameter_tolerance, &out[keep[k]]);
    });
  }

  std::vector<size_t> order(out.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return out[a].cost < out[b].cost; });
  if (!std::isfinite(out[order[0]].cost))
    return Status::Internal("no start of the '" + options.form +
                            "' fit reached a finite objective; check the data's scale");

  // Polish the best start once more (a fresh trust region) before reporting it.
  StartOutcome best = out[order[0]];
  {
    HuberResiduals r = prototype;
    Solver s;
    StartOutcome polished = best;
    Advance(s, r, options.max_iterations, options.parameter_tolerance, &polished);
    if (polished.cost <= best.cost) best = polished;
  }

  ParametricFit fit;
  fit.form = options.form;
  fit.loss = options.loss;
  fit.huber_delta =
      options.loss == "mse" ? std::numeric_limits<double>::quiet_NaN() : options.huber_delta;
  fit.n_points = static_cast<int>(obs.size());
  fit.starts_total = static_cast<int>(out.size());
  fit.starts_pruned = pruned;
  fit.objective = best.cost;
  for (const auto& o : out) {
    fit.starts_converged += o.converged;
    fit.starts_at_best += o.cost <= best.cost * (1 + options.best_rel_tol) + 1e-300;
  }
  prototype.ExpandInto(best.z.data(), &fit.internal);
  fit.params = form->ToReported(fit.internal);
  for (int j = 0; j < form->NumParams(); ++j) {
    fit.param_names.push_back(form->params()[j].name);
    fit.is_fixed.push_back(map.source[j] < 0 ||
                           (j > 0 && std::find(map.source.begin(), map.source.begin() + j,
                                               map.source[j]) != map.source.begin() + j));
  }
  // The reported optimum is always the first: when every start that reached it stopped at the
  // iteration cap, keeping converged starts only left it out, and the bootstrap refits (seeded
  // from these) fell into worse basins (intervals that excluded their own point estimate).
  fit.optima.push_back(fit.internal);
  fit.optima_objectives.push_back(fit.objective);
  for (size_t k = 0; k < order.size() && static_cast<int>(fit.optima.size()) < options.keep_optima;
       ++k) {
    const StartOutcome& o = out[order[k]];
    if (!std::isfinite(o.cost) || !o.converged) continue;
    std::vector<double> x;
    prototype.ExpandInto(o.z.data(), &x);
    if (!IsDistinct(x, fit.optima)) continue;
    fit.optima.push_back(x);
    fit.optima_objectives.push_back(o.cost);
  }
  fit.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return fit;
}

Result<double> HuberObjective(const std::vector<Observation>& obs, const std::string& form_name,
                              const std::vector<double>& reported, double huber_delta) {
  ISOFLOP_RETURN_IF_ERROR(ValidateObservations(obs));
  ISOFLOP_ASSIGN_OR_RETURN(const Form* form, GetForm(form_name));
  if (static_cast<int>(reported.size()) != form->NumParams())
    return Status::InvalidArgument("form '" + form_name + "' needs " +
                                   std::to_string(form->NumParams()) + " parameters");
  std::vector<double> log_loss;
  const LogColumns cols = Columns(obs, &log_loss);
  const std::vector<double> x = form->ToInternal(reported);
  std::vector<double> log_pred(obs.size());
  form->LogPredict(x.data(), cols, log_pred.data(), nullptr);
  double sum = 0;
  for (size_t i = 0; i < obs.size(); ++i) {
    const double r = std::abs(log_loss[i] - log_pred[i]);
    sum += !(r > huber_delta) ? 0.5 * r * r : huber_delta * (r - 0.5 * huber_delta);
  }
  return sum;
}

Result<std::vector<ProfilePoint>> ProfileParameter(const std::vector<Observation>& obs,
                                                   const ParametricOptions& options,
                                                   const std::string& param,
                                                   const std::vector<double>& values) {
  ISOFLOP_ASSIGN_OR_RETURN(const Form* form, GetForm(options.form));
  if (form->IndexOf(param) < 0)
    return Status::InvalidArgument("cannot profile '" + param + "': form '" + options.form +
                                   "' has no such parameter");
  std::vector<ProfilePoint> profile;
  for (double v : values) {
    ParametricOptions o = options;
    o.fixed[param] = v;
    ISOFLOP_ASSIGN_OR_RETURN(ParametricFit fit, FitParametric(obs, o));
    profile.push_back({v, fit.objective, fit.params});
  }
  return profile;
}

std::vector<double> Linspace(double lo, double hi, int count) {
  std::vector<double> v;
  if (count == 1) return {lo};
  for (int i = 0; i < count; ++i) v.push_back(lo + (hi - lo) * i / (count - 1));
  return v;
}

}  // namespace isoflop::fit
