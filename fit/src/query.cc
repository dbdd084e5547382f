// Compute-optimal queries on a fitted law: the Chinchilla closed form, and bracketed 1-D
// searches (golden section over log N, bisection over log D or log C) where no closed form
// exists (other forms, non-linear FLOPs conventions, loss targets, inference-aware sizing).
#include "isoflop/fit/query.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

namespace isoflop::fit {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kLogMax = 92.1;  // ln(1e40): no query goes beyond 1e40 N, D or FLOPs

// Minimises f over [lo, hi]: a 200-point scan, then golden section around the best cell.
double MinimiseOnInterval(const std::function<double(double)>& f, double lo, double hi) {
  const int kScan = 200;
  int best = 0;
  double best_v = HUGE_VAL;
  for (int i = 0; i <= kScan; ++i) {
    const double v = f(lo + (hi - lo) * i / kScan);
    if (v < best_v) best_v = v, best = i;
  }
  double a = lo + (hi - lo) * std::max(0, best - 1) / kScan;
  double b = lo + (hi - lo) * std::min(kScan, best + 1) / kScan;
  const double r = (std::sqrt(5.0) - 1) / 2;
  double x1 = b - r * (b - a), x2 = a + r * (b - a);
  double f1 = f(x1), f2 = f(x2);
  for (int it = 0; it < 100 && b - a > 1e-12 * (1 + std::abs(a)); ++it) {
    if (f1 < f2) {
      b = x2, x2 = x1, f2 = f1, x1 = b - r * (b - a), f1 = f(x1);
    } else {
      a = x1, x1 = x2, f1 = f2, x2 = a + r * (b - a), f2 = f(x2);
    }
  }
  return 0.5 * (a + b);
}

// Root of an increasing function g on [lo, hi] by bisection (g(lo) < 0 < g(hi) assumed).
double Bisect(const std::function<double(double)>& g, double lo, double hi) {
  for (int it = 0; it < 200 && hi - lo > 1e-13 * (1 + std::abs(lo)); ++it) {
    const double m = 0.5 * (lo + hi);
    (g(m) < 0 ? lo : hi) = m;
  }
  return 0.5 * (lo + hi);
}

// D with flops(N, D) = c.
double TokensFor(const FlopsConvention& flops, double n, double c) {
  if (flops.IsLinear()) return c / (flops.k * n);
  return std::exp(
      Bisect([&](double x) { return flops.Flops(n, std::exp(x)) - c; }, -kLogMax, kLogMax));
}

Allocation Make(const ScalingLaw& law, double n, double d) {
  Allocation a;
  a.n = n;
  a.d = d;
  a.c = law.flops.Flops(n, d);
  a.tokens_per_param = d / n;
  a.loss = law.Loss(n, d);
  return a;
}

double Irreducible(const ScalingLaw& law) {
  auto form = GetForm(law.form);
  return form.ok() ? (*form)->Irreducible(law.params) : kNaN;
}

Status CheckLaw(const ScalingLaw& law) {
  ISOFLOP_ASSIGN_OR_RETURN(const Form* form, GetForm(law.form));
  if (static_cast<int>(law.params.size()) != form->NumParams())
    return Status::InvalidArgument("form '" + law.form + "' needs " +
                                   std::to_string(form->NumParams()) + " parameters, got " +
                                   std::to_string(law.params.size()));
  for (double p : law.params)
    if (!std::isfinite(p)) return Status::InvalidArgument("law parameters must be finite");
  return Status::Ok();
}

}  // namespace

double ScalingLaw::Loss(double n, double d) const {
  if (form == "chinchilla" && params.size() == 5)
    return params[0] + params[1] / std::pow(n, params[3]) + params[2] / std::pow(d, params[4]);
  auto f = GetForm(form);
  if (!f.ok()) return kNaN;
  return (*f)->Predict(params, n, d, g);
}

Result<ScalingLaw> ChinchillaLaw(const std::map<std::string, double>& named) {
  ScalingLaw law;
  for (const char* key : {"E", "A", "B", "alpha", "beta"}) {
    auto it = named.find(key);
    if (it == named.end())
      return Status::InvalidArgument(std::string("missing parameter '") + key +
                                     "': give E, A, B, alpha and beta");
    if (!(it->second > 0) || !std::isfinite(it->second))
      return Status::InvalidArgument(std::string("parameter '") + key + "' must be > 0");
    law.params.push_back(it->second);
  }
  return law;
}

Result<Allocation> ChinchillaClosedForm(const ScalingLaw& law, double c) {
  ISOFLOP_RETURN_IF_ERROR(CheckLaw(law));
  if (law.form != "chinchilla" || !law.flops.IsLinear())
    return Status::InvalidArgument("the closed form needs the chinchilla form and C = k·N·D");
  if (!(c > 0)) return Status::InvalidArgument("compute budget must be > 0");
  const double a = law.params[1], b = law.params[2], alpha = law.params[3], beta = law.params[4];
  const double s = alpha + beta;
  const double g = std::pow(alpha * a / (beta * b), 1 / s);  // Hoffmann 2022, eq. 4
  const double ck = c / law.flops.k;
  return Make(law, g * std::pow(ck, beta / s), std::pow(ck, alpha / s) / g);
}

Result<Allocation> ComputeOptimal(const ScalingLaw& law, double c, bool numeric_only) {
  ISOFLOP_RETURN_IF_ERROR(CheckLaw(law));
  if (!(c > 0) || !std::isfinite(c)) return Status::InvalidArgument("compute budget must be > 0");
  // The golden-section search would return an end of its interval, the closed form a NaN.
  ISOFLOP_ASSIGN_OR_RETURN(const Form* form, GetForm(law.form));
  for (int j = 0; j < form->NumParams(); ++j) {
    const ParamSpec& spec = form->params()[j];
    if (spec.axis != "N" && spec.axis != "D") continue;
    if (std::string s = NotFallingSentence(spec, law.params[j]); !s.empty())
      return Status::FailedPrecondition("the law's " + s +
                                        ", so no compute budget has an optimal split of N and D");
  }
  if (!numeric_only && law.form == "chinchilla" && law.flops.IsLinear())
    return ChinchillaClosedForm(law, c);
  // N from 1 to the size that leaves one token: loss along the isoFLOP curve, in log N.
  const double hi = std::log(std::max(1.0, c / law.flops.Flops(1.0, 1.0)));
  auto loss = [&](double x) {
    const double n = std::exp(x);
    return law.Loss(n, TokensFor(law.flops, n, c));
  };
  const double x = MinimiseOnInterval(loss, 0.0, std::max(hi, 1e-9));
  const double n = std::exp(x);
  return Make(law, n, TokensFor(law.flops, n, c));
}

Result<Allocation> BestDataForParams(const ScalingLaw& law, double n) {
  ISOFLOP_RETURN_IF_ERROR(CheckLaw(law));
  if (!(n > 0)) return Status::InvalidArgument("model size must be > 0");
  Status err;
  auto gap = [&](double log_c) {
    auto a = ComputeOptimal(law, std::exp(log_c));
    return a.ok() ? std::log(a->n) - std::log(n) : HUGE_VAL;
  };
  if (gap(0) > 0 || gap(kLogMax) < 0)
    return Status::FailedPrecondition("no budget up to 1e40 FLOPs makes a model of " +
                                      std::to_string(n) + " parameters compute-optimal");
  return ComputeOptimal(law, std::exp(Bisect(gap, 0, kLogMax)));
}

Result<Allocation> LeastComputeForLoss(const ScalingLaw& law, double loss) {
  ISOFLOP_RETURN_IF_ERROR(CheckLaw(law));
  const double floor = Irreducible(law);
  if (!(loss > floor))
    return Status::InvalidArgument("target loss " + std::to_string(loss) +
                                   " is not above the irreducible loss " + std::to_string(floor) +
                                   ": no budget reaches it");
  auto gap = [&](double log_c) {  // increasing in log C
    auto a = ComputeOptimal(law, std::exp(log_c));
    return a.ok() ? loss - a->loss : -HUGE_VAL;
  };
  if (gap(kLogMax) < 0)
    return Status::FailedPrecondition("target loss " + std::to_string(loss) +
                                      " needs more than 1e40 FLOPs");
  if (gap(0) > 0) return ComputeOptimal(law, 1.0);
  return ComputeOptimal(law, std::exp(Bisect(gap, 0, kLogMax)));
}

Result<InferenceAllocation> InferenceAware(const ScalingLaw& law, double c,
                                           double inference_tokens) {
  if (!(inference_tokens >= 0)) return Status::InvalidArgument("inference tokens must be >= 0");
  ISOFLOP_ASSIGN_OR_RETURN(Allocation ref, ComputeOptimal(law, c));
  const double target = ref.loss;
  // Tokens a model of size e^x needs to reach `target` (loss decreases in D); +inf if never.
  auto tokens = [&](double x) {
    const double n = std::exp(x);
    if (law.Loss(n, std::exp(kLogMax)) >= target) return HUGE_VAL;
    return std::exp(
        Bisect([&](double y) { return target - law.Loss(n, std::exp(y)); }, -kLogMax, kLogMax));
  };
  // Smallest feasible size: the loss floor at infinite data must be below the target.
  const double x_ref = std::log(ref.n);
  const double x_lo =
      Bisect([&](double x) { return target - law.Loss(std::exp(x), std::exp(kLogMax)); }, 0, x_ref);
  auto total = [&](double x) {
    const double d = tokens(x);
    if (!std::isfinite(d)) return HUGE_VAL;
    const double n = std::exp(x);
    return law.flops.Flops(n, d) + 2 * n * inference_tokens;
  };
  const double x = MinimiseOnInterval(total, x_lo + 1e-9 * (1 + std::abs(x_lo)), x_ref + 0.5);
  InferenceAllocation out;
  out.compute_optimal = ref;
  out.chosen = Make(law, std::exp(x), tokens(x));
  out.inference_tokens = inference_tokens;
  out.inference_flops = 2 * out.chosen.n * inference_tokens;
  out.total_flops = out.chosen.c + out.inference_flops;
  return out;
}

namespace {

// PercentileInterval over draws some of which are +inf (unbounded): an end is +inf when the
// percentile reaches into them, else the interpolated finite value; NaN draws are dropped.
Interval IntervalWithUnbounded(std::vector<double> xs, double level) {
  xs.erase(std::remove_if(xs.begin(), xs.end(), [](double v) { return std::isnan(v); }), xs.end());
  double max_finite = -HUGE_VAL;
  bool any_inf = false;
  for (double& x : xs) {
    if (std::isfinite(x)) {
      max_finite = std::max(max_finite, x);
    } else {
      any_inf = true;
      x = std::numeric_limits<double>::max();  // kept, sorting last
    }
  }
  Interval ci = PercentileInterval(std::move(xs), level);
  if (any_inf && ci.hi > max_finite) ci.hi = HUGE_VAL;
  if (any_inf && ci.lo > max_finite) ci.lo = HUGE_VAL;
  return ci;
}

}  // namespace

Result<Answer> AnswerQuery(const ScalingLaw& law, const Query& q,
                           const std::vector<std::vector<double>>& draws, double level) {
  // Answers one law; fills `values` with the named quantities.
  auto one = [&](const ScalingLaw& l, Answer* ans,
                 std::map<std::string, double>* values) -> Status {
    Allocation a;
    switch (q.kind) {
      case Query::Kind::kCompute: {
        ISOFLOP_ASSIGN_OR_RETURN(a, ComputeOptimal(l, q.value));
        break;
      }
      case Query::Kind::kParams: {
        ISOFLOP_ASSIGN_OR_RETURN(a, BestDataForParams(l, q.value));
        break;
      }
      case Query::Kind::kLoss: {
        ISOFLOP_ASSIGN_OR_RETURN(a, LeastComputeForLoss(l, q.value));
        break;
      }
      case Query::Kind::kInference: {
        ISOFLOP_ASSIGN_OR_RETURN(InferenceAllocation inf,
                                 InferenceAware(l, q.value, q.inference_tokens));
        a = inf.compute_optimal;
        if (ans) ans->inference = inf;
        (*values)["n_inference"] = inf.chosen.n;
        (*values)["d_inference"] = inf.chosen.d;
        (*values)["total_flops"] = inf.total_flops;
        break;
      }
    }
    if (ans) ans->point = a;
    (*values)["n"] = a.n;
    (*values)["d"] = a.d;
    (*values)["c"] = a.c;
    (*values)["tokens_per_param"] = a.tokens_per_param;
    (*values)["loss"] = a.loss;
    return Status::Ok();
  };
  Answer ans;
  ans.query = q;
  std::map<std::string, double> point;
  ISOFLOP_RETURN_IF_ERROR(one(law, &ans, &point));
  if (draws.empty()) return ans;
  std::map<std::string, std::vector<double>> samples;
  for (const auto& d : draws) {
    ScalingLaw l = law;
    l.params = d;
    std::map<std::string, double> v;
    if (!one(l, nullptr, &v).ok()) {
      // A draw whose law never reaches the loss (its floor is above it) needs unbounded N, D
      // and C: it stays in the upper tail instead of being dropped, which would cut that tail
      // off and report a finite upper end the draws do not support.
      if (q.kind == Query::Kind::kLoss &&
          !(l.Loss(std::exp(kLogMax), std::exp(kLogMax)) < q.value)) {
        ++ans.ci_draws_used;
        ++ans.ci_draws_unbounded;
        for (const char* k : {"n", "d", "c"}) samples[k].push_back(HUGE_VAL);
        samples["loss"].push_back(q.value);
      }
      continue;
    }
    ++ans.ci_draws_used;
    for (const auto& [k, x] : v) samples[k].push_back(x);
  }
  for (auto& [k, xs] : samples) ans.ci[k] = IntervalWithUnbounded(std::move(xs), level);
  return ans;
}

namespace {

// The dense N reaching `loss` with d tokens (loss decreases in N); NaN when even N -> 1e40
// does not reach it.
double ParamsForLossAtTokens(const ScalingLaw& law, double loss, double d) {
  if (!(law.Loss(std::exp(kLogMax), d) < loss)) return kNaN;
  if (law.Loss(1.0, d) <= loss) return 1.0;
  return std::exp(Bisect([&](double x) { return loss - law.Loss(std::exp(x), d); }, 0, kLogMax));
}

// One pair of laws; the point estimate and each bootstrap pair.
Result<DenseEquivalent> DenseEquivalentOne(const ScalingLaw& moe, const ScalingLaw& dense,
                                           double c) {
  DenseEquivalent out;
  out.c = c;
  ISOFLOP_ASSIGN_OR_RETURN(out.moe, ComputeOptimal(moe, c));
  ISOFLOP_RETURN_IF_ERROR(CheckLaw(dense));
  out.n_effective = ParamsForLossAtTokens(dense, out.moe.loss, out.moe.d);
  out.effective_ratio = out.n_effective / out.moe.n;
  if (std::isnan(out.n_effective)) {
    out.note = "no dense model reaches the MoE's loss with its " + std::to_string(out.moe.d) +
               " tokens";
  }
  Result<Allocation> least = LeastComputeForLoss(dense, out.moe.loss);
  if (least.ok()) {
    out.dense = *least;
    out.compute_multiplier = least->c / c;
  } else {
    out.dense.c = out.dense.n = out.dense.d = out.dense.loss = kNaN;
    out.compute_multiplier = kNaN;
    if (out.note.empty()) out.note = "dense law: " + least.status().message();
  }
  return out;
}

}  // namespace

Result<DenseEquivalent> DenseEquivalentAt(const ScalingLaw& moe, const ScalingLaw& dense, double c,
                                          const std::vector<std::vector<double>>& moe_draws,
                                          const std::vector<std::vector<double>>& dense_draws,
                                          double level) {
  ISOFLOP_ASSIGN_OR_RETURN(DenseEquivalent out, DenseEquivalentOne(moe, dense, c));
  const size_t pairs = std::min(moe_draws.size(), dense_draws.size());
  std::map<std::string, std::vector<double>> samples;
  for (size_t i = 0; i < pairs; ++i) {
    ScalingLaw m = moe, d = dense;
    m.params = moe_draws[i];
    d.params = dense_draws[i];
    Result<DenseEquivalent> r = DenseEquivalentOne(m, d, c);
    if (!r.ok()) continue;
    ++out.ci_draws_used;
    // A draw whose dense law never reaches the MoE's loss has an unbounded effective size: it
    // stays in the upper tail (as +inf) instead of being dropped.
    auto unbounded = [](double v) { return std::isnan(v) ? HUGE_VAL : v; };
    samples["n_effective"].push_back(unbounded(r->n_effective));
    samples["effective_ratio"].push_back(unbounded(r->effective_ratio));
    samples["compute_multiplier"].push_back(unbounded(r->compute_multiplier));
  }
  for (auto& [k, xs] : samples) out.ci[k] = IntervalWithUnbounded(std::move(xs), level);
  return out;
}

}  // namespace isoflop::fit
