// RunFit: the single entry point that runs a configured method over observations and packs
// the outcome as a FitRecord (one row of the fits table); LawFromRecord turns a stored
// parametric record back into a queryable law.
#include "isoflop/fit/run_fit.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

namespace isoflop::fit {
namespace {

// N_opt = k·C^a and D_opt = k'·C^b implied by a parametric law, read off its optimum at 1e18
// and 1e24 FLOPs (exact for chinchilla with C = k·N·D, where both are power laws).
void ImpliedPowerLaws(const ScalingLaw& law, PowerLaw* n_law, PowerLaw* d_law) {
  auto lo = ComputeOptimal(law, 1e18), hi = ComputeOptimal(law, 1e24);
  if (!lo.ok() || !hi.ok()) return;
  auto n = FitPowerLaw({1e18, 1e24}, {lo->n, hi->n});
  auto d = FitPowerLaw({1e18, 1e24}, {lo->d, hi->d});
  if (n.ok()) *n_law = *n;
  if (d.ok()) *d_law = *d;
}

void PutPowerLaws(const PowerLaw& n, const PowerLaw& d, FitRecord* r) {
  r->params["n_opt_k"] = n.k;
  r->params["n_opt_a"] = n.a;
  r->params["d_opt_k"] = d.k;
  r->params["d_opt_b"] = d.a;
}

// After a bootstrap of N_opt = k·C^a and D_opt: the estimates outside their own intervals into
// r's result, and a warning for an exponent whose interval holds zero (the budgets do not
// determine how the optimum scales).
void PutPowerLawIntervals(const PowerLaw& n, const PowerLaw& d, std::vector<std::string>* warnings,
                          FitRecord* r) {
  r->result["excludes_point"] =
      ToJson(PointsOutsideIntervals({{"a", n.a}, {"b", d.a}, {"k_n", n.k}, {"k_d", d.k}}, r->ci));
  for (const char* name : {"a", "b"}) {
    const auto it = r->ci.find(name);
    if (it != r->ci.end() && it->second.lo < 0 && it->second.hi > 0) {
      char buf[240];
      std::snprintf(buf, sizeof buf,
                    "the interval of the exponent %s [%.3g, %.3g] crosses zero: these budgets "
                    "do not determine how the optimum scales",
                    name, it->second.lo, it->second.hi);
      warnings->push_back(buf);
    }
  }
}

Result<FitRecord> RunParametric(const std::vector<Observation>& obs, const FitConfig& cfg) {
  ISOFLOP_ASSIGN_OR_RETURN(ParametricFit fit, FitParametric(obs, cfg.parametric));
  FitRecord r;
  r.method = "parametric";
  r.form = fit.form;
  r.objective = fit.objective;
  r.n_points = fit.n_points;
  for (size_t i = 0; i < fit.params.size(); ++i) r.params[fit.param_names[i]] = fit.params[i];
  r.result["parametric"] = ToJson(fit);
  // What the law was fitted on, so a query far outside it can say so.
  {
    auto span = [&](auto value) {
      double lo = HUGE_VAL, hi = -HUGE_VAL;
      for (const Observation& o : obs) lo = std::min(lo, value(o)), hi = std::max(hi, value(o));
      return nlohmann::json::array({lo, hi});
    };
    r.result["observed"] = {
        {"n", span([](const Observation& o) { return o.n; })},
        {"d", span([](const Observation& o) { return o.d; })},
        {"c", span([&](const Observation& o) { return cfg.flops.Flops(o.n, o.d); })}};
  }
  // An exponent fitted at or below zero: the data do not show the loss falling along that axis
  // (too narrow a range, or noise), and the allocation it implies would be meaningless.
  nlohmann::json warnings = nlohmann::json::array();
  ISOFLOP_ASSIGN_OR_RETURN(const Form* form, GetForm(fit.form));
  for (int j = 0; j < form->NumParams(); ++j) {
    const std::string s = NotFallingSentence(form->params()[j], fit.params[j]);
    if (s.empty()) continue;
    warnings.push_back(s + " in these observations" +
                       (form->params()[j].axis == "G"
                            ? std::string(": this fit says granularity does not help")
                            : std::string(": no compute-optimal N and D follow from this fit "
                                          "(runs over a wider range of sizes and token counts, "
                                          "or --fix the exponent)")));
  }
  if (!warnings.empty()) r.result["parametric"]["warnings"] = warnings;

  ScalingLaw law;
  law.form = fit.form;
  law.params = fit.params;
  law.flops = cfg.flops;
  PowerLaw n_law, d_law;
  ImpliedPowerLaws(law, &n_law, &d_law);
  // Point values of the derived quantities, beside which tables print their intervals.
  nlohmann::json derived = nlohmann::json::object();
  for (const auto& [name, v] : BootstrapQuantities(fit.form, fit.param_names, fit.params, cfg.flops,
                                                   cfg.bootstrap.derived_at_compute))
    if (!r.params.count(name) && std::isfinite(v)) derived[name] = v;
  r.result["derived"] = derived;
  if (cfg.bootstrap.resamples > 0) {
    BootstrapOptions b = cfg.bootstrap;
    b.flops = cfg.flops;
    ISOFLOP_ASSIGN_OR_RETURN(ParametricBootstrap boot,
                             BootstrapParametric(obs, cfg.parametric, fit, b));
    r.ci = boot.intervals;
    if (r.ci.count("a")) n_law.a_ci = r.ci["a"];
    if (r.ci.count("b")) d_law.a_ci = r.ci["b"];
    r.result["bootstrap"] = ToJson(boot);
    r.result["excludes_point"] = ToJson(boot.excludes_point);
  }
  r.result["n_opt"] = ToJson(n_law);
  r.result["d_opt"] = ToJson(d_law);
  if (cfg.extrapolation_check) {
    auto check = CheckExtrapolation(obs, cfg.parametric, cfg.isoflop);
    r.result["extrapolation"] =
        check.ok() ? ToJson(*check) : nlohmann::json{{"skipped", check.status().message()}};
  }
  if (cfg.cross_validate) {
    // Like the extrapolation check, a scoring that cannot run is noted, not a failed fit.
    auto folds = CrossValidateBudgets(obs, cfg.parametric, cfg.isoflop);
    nlohmann::json cv = nlohmann::json::array();
    if (folds.ok())
      for (const auto& f : *folds) cv.push_back(ToJson(f));
    r.result["cross_validation"] =
        folds.ok() ? cv : nlohmann::json{{"skipped", folds.status().message()}};
  }
  return r;
}

}  // namespace

Status FitConfig::Validate() const {
  if (method != "parametric" && method != "isoflop" && method != "envelope")
    return Status::InvalidArgument("unknown fit method '" + method +
                                   "': expected parametric, isoflop or envelope");
  if (convention != "total" && convention != "non_embedding" && convention != "active")
    return Status::InvalidArgument("convention: '" + convention +
                                   "' is not one of total, non_embedding, active (the parameter "
                                   "count N of the observations)");
  if (exclude_top_loss < 0) return Status::InvalidArgument("exclude_top_loss must be >= 0");
  ISOFLOP_RETURN_IF_ERROR(parametric.Validate());
  ISOFLOP_RETURN_IF_ERROR(isoflop.Validate());
  ISOFLOP_RETURN_IF_ERROR(envelope.Validate());
  return bootstrap.Validate();
}

std::vector<Observation> ExcludeTopLoss(const std::vector<Observation>& obs, int k) {
  if (k <= 0) return obs;
  std::vector<size_t> order(obs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return obs[a].loss > obs[b].loss; });
  std::vector<bool> drop(obs.size(), false);
  for (size_t i = 0; i < order.size() && i < static_cast<size_t>(k); ++i) drop[order[i]] = true;
  std::vector<Observation> out;
  for (size_t i = 0; i < obs.size(); ++i)
    if (!drop[i]) out.push_back(obs[i]);
  return out;
}

Result<FitRecord> RunFit(const std::vector<Observation>& all, const std::vector<Curve>& curves,
                         const FitConfig& input) {
  ISOFLOP_RETURN_IF_ERROR(input.Validate());
  FitConfig cfg = input;
  cfg.isoflop.flops = cfg.flops;  // one convention for the whole fit
  cfg.envelope.flops = cfg.flops;
  const std::vector<Observation> obs = ExcludeTopLoss(all, cfg.exclude_top_loss);
  FitRecord r;
  if (cfg.method == "parametric") {
    ISOFLOP_ASSIGN_OR_RETURN(r, RunParametric(obs, cfg));
  } else if (cfg.method == "isoflop") {
    ISOFLOP_ASSIGN_OR_RETURN(IsoflopFit fit, FitIsoflop(obs, cfg.isoflop));
    if (cfg.bootstrap.resamples > 0) {
      ISOFLOP_ASSIGN_OR_RETURN(r.ci, BootstrapIsoflop(obs, cfg.isoflop, cfg.bootstrap, &fit));
      PutPowerLawIntervals(fit.n_opt, fit.d_opt, &fit.warnings, &r);
    }
    r.method = "isoflop";
    r.n_points = fit.n_points;
    PutPowerLaws(fit.n_opt, fit.d_opt, &r);
    r.result["isoflop"] = ToJson(fit);
  } else {
    ISOFLOP_ASSIGN_OR_RETURN(EnvelopeFit fit, FitEnvelope(curves, cfg.envelope));
    if (cfg.bootstrap.resamples > 0) {
      ISOFLOP_ASSIGN_OR_RETURN(r.ci, BootstrapEnvelope(curves, cfg.envelope, cfg.bootstrap, &fit));
      PutPowerLawIntervals(fit.n_opt, fit.d_opt, &fit.warnings, &r);
    }
    r.method = "envelope";
    r.n_points = fit.n_curves;
    PutPowerLaws(fit.n_opt, fit.d_opt, &r);
    r.result["envelope"] = ToJson(fit);
  }
  r.convention = cfg.convention;
  r.flops_convention = cfg.flops.name;
  r.result["excluded_top_loss"] = cfg.exclude_top_loss;
  return r;
}

std::string FarComputeWarning(const RecordLaw& law, double c) {
  if (!(law.observed_c_hi > 0) || !(law.observed_c_lo > 0) || !std::isfinite(c) || !(c > 0))
    return "";
  const bool above = c > kFarCompute * law.observed_c_hi;
  if (!above && !(c < law.observed_c_lo / kFarCompute)) return "";
  char text[300];
  std::snprintf(text, sizeof text,
                "the optimum's C = %.3g is %.3gx %s C of the fit's observations (%.3g): that far "
                "out, nothing has checked the law",
                c, above ? c / law.observed_c_hi : law.observed_c_lo / c,
                above ? "above the largest" : "below the smallest",
                above ? law.observed_c_hi : law.observed_c_lo);
  return text;
}

Result<RecordLaw> LawFromRecord(const FitRecord& record) {
  if (record.method != "parametric")
    return Status::FailedPrecondition("fit is a '" + record.method +
                                      "' fit; queries need a parametric fit");
  ISOFLOP_ASSIGN_OR_RETURN(const Form* form, GetForm(record.form));
  RecordLaw out;
  out.law.form = record.form;
  for (const ParamSpec& p : form->params()) {
    auto it = record.params.find(p.name);
    if (it == record.params.end() || !std::isfinite(it->second))
      return Status::InvalidArgument("no finite value for parameter '" + p.name + "' of the " +
                                     record.form + " form");
    out.law.params.push_back(it->second);
  }
  ISOFLOP_ASSIGN_OR_RETURN(out.law.flops, FlopsConvention::FromName(record.flops_convention));
  if (auto o = record.result.find("observed"); o != record.result.end() && o->is_object()) {
    if (auto c = o->find("c"); c != o->end() && c->is_array() && c->size() == 2 &&
                               (*c)[0].is_number() && (*c)[1].is_number()) {
      out.observed_c_lo = (*c)[0].get<double>();
      out.observed_c_hi = (*c)[1].get<double>();
    }
  }
  if (record.result.contains("bootstrap")) {
    ParametricBootstrap boot;
    ISOFLOP_RETURN_IF_ERROR(FromJson(record.result.at("bootstrap"), &boot));
    out.draws = boot.draws;
    for (const auto& [k, v] : boot.intervals) {
      out.ci_level = v.level;
      break;
    }
  }
  return out;
}

}  // namespace isoflop::fit
