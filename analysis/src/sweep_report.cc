// The fitting policy of `isoflop sweep run` (see sweep_report.h).
#include "isoflop/analysis/sweep_report.h"

#include <algorithm>
#include <cmath>

#include "isoflop/analysis/moe_sizing.h"

namespace isoflop::analysis {
namespace {

using nlohmann::json;

json FitJson(const StoredFit& f) {
  json j = fit::ToJson(f.record);
  j["id"] = f.id;
  return j;
}

}  // namespace

json AnswerJson(const fit::Answer& a) {
  json ci = json::object();
  for (const auto& [k, v] : a.ci) ci[k] = fit::ToJson(v);
  return {{"c", a.point.c},
          {"n", a.point.n},
          {"d", a.point.d},
          {"tokens_per_param", a.point.tokens_per_param},
          {"loss", a.point.loss},
          {"ci", ci},
          {"ci_draws_used", a.ci_draws_used}};
}

json DenseEquivalentJson(const fit::DenseEquivalent& e) {
  // NaN (no dense model reaches the loss) and an unbounded interval end are null in JSON.
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  json ci = json::object();
  for (const auto& [k, v] : e.ci) ci[k] = {{"lo", num(v.lo)}, {"hi", num(v.hi)}, {"level", v.level}};
  return {{"c", e.c},
          {"moe", {{"n", e.moe.n}, {"d", e.moe.d}, {"loss", e.moe.loss}}},
          {"n_effective", num(e.n_effective)},
          {"effective_ratio", num(e.effective_ratio)},
          {"dense", {{"c", num(e.dense.c)}, {"n", num(e.dense.n)}, {"d", num(e.dense.d)}}},
          {"compute_multiplier", num(e.compute_multiplier)},
          {"note", e.note},
          {"ci", ci},
          {"ci_draws_used", e.ci_draws_used}};
}

json SweepReport::ToJson() const {
  json others_j = json::array();
  for (const auto& o : others) {
    others_j.push_back({{"method", o.method},
                        {"fit", o.fit ? FitJson(*o.fit) : json(nullptr)},
                        {"error", o.error}});
  }
  json answers_j = json::array();
  for (const auto& a : answers) {
    answers_j.push_back(
        {{"c", a.c},
         {"answer", a.answer ? AnswerJson(*a.answer) : json(nullptr)},
         {"error", a.error},
         {"fixed_entropy", a.fixed_entropy ? AnswerJson(*a.fixed_entropy) : json(nullptr)}});
  }
  return {{"sweep", data.source.name},
          {"n_points", data.obs.size()},
          {"excluded", data.excluded},
          {"entropy", data.entropy ? json(*data.entropy) : json(nullptr)},
          {"fit", FitJson(main)},
          {"fixed_entropy", fixed_entropy ? FitJson(*fixed_entropy) : json(nullptr)},
          {"fixed_entropy_error", fixed_entropy_error},
          {"others", others_j},
          {"answers", answers_j},
          {"entropy_gap_budget_span", entropy_gap_budget_span},
          {"headline", headline},
          {"by_expert_count", [&] {
             json arr = json::array();
             for (const auto& e : by_experts) {
               json ans = json::array();
               for (const auto& a : e.answers)
                 ans.push_back({{"c", a.c},
                                {"answer", a.answer ? AnswerJson(*a.answer) : json(nullptr)},
                                {"error", a.error},
                                {"dense_equivalent", a.dense_equivalent
                                                         ? DenseEquivalentJson(*a.dense_equivalent)
                                                         : json(nullptr)},
                                {"dense_equivalent_error", a.dense_equivalent_error}});
               arr.push_back({{"n_experts", e.n_experts},
                              {"runs", e.runs},
                              {"fit", e.fit ? FitJson(*e.fit) : json(nullptr)},
                              {"error", e.error},
                              {"answers", ans}});
             }
             return arr;
           }()}};
}

Result<SweepReport> FitSweep(store::Store& db, const SweepFitRequest& req) {
  Source source;
  source.kind = Source::Kind::kSweep;
  source.name = req.sweep;
  LoadOptions lo;
  lo.convention = req.config.convention;
  lo.include_diverged = req.include_diverged;
  lo.only_keys = req.only_keys;
  SweepReport report;
  ISOFLOP_ASSIGN_OR_RETURN(report.data, LoadDataset(&db, source, lo));
  const Dataset& data = report.data;
  if (data.obs.size() < 5) {
    return Status::FailedPrecondition("only " + std::to_string(data.obs.size()) +
                                      " finished runs with a final loss; a fit needs at least 5");
  }
  ISOFLOP_RETURN_IF_ERROR(req.config.Validate());
  ISOFLOP_ASSIGN_OR_RETURN(fit::FitRecord rec, fit::RunFit(data.obs, {}, req.config));
  if (rec.method != "parametric") {
    ISOFLOP_ASSIGN_OR_RETURN(report.main.id, StoreFit(db, source, rec, req.options));
    report.main.record = std::move(rec);
    return report;
  }
  ISOFLOP_ASSIGN_OR_RETURN(fit::RecordLaw law, fit::LawFromRecord(rec));
  // The known entropy is stored with each fit, so `optimal` can warn about losses below it.
  json options = req.options;
  if (data.entropy) options["entropy"] = *data.entropy;
  // An MoE sweep of one expert count: `optimal` can then say what its N_active means in total
  // parameters and memory.
  if (std::optional<MoeSizing> sizing = FitMoeSizing(data)) options["moe_sizing"] = sizing->ToJson();

  // E held at the data's entropy; stored beside the free fit below, the headline one last.
  std::optional<fit::RecordLaw> fixed_law;
  std::optional<StoredFit> fixed_pending;  // not stored yet
  if (req.fixed_entropy && data.entropy) {
    fit::FitConfig fe = req.config;
    fe.parametric.fixed["E"] = *data.entropy;
    // Its own extrapolation check too: when it leads, the report draws it.
    fe.extrapolation_check = req.config.extrapolation_check;
    Result<fit::FitRecord> r = fit::RunFit(data.obs, {}, fe);
    if (r.ok()) {
      StoredFit f;
      f.options = options;
      f.options["fix"] = {{"E", *data.entropy}};
      Result<fit::RecordLaw> fl = fit::LawFromRecord(*r);
      if (fl.ok()) fixed_law = *fl;
      f.record = std::move(*r);
      fixed_pending = std::move(f);
    } else {
      report.fixed_entropy_error = r.status().message();
    }
  }
  // One law per expert count, when the sweep has several; stored before the main fits (and
  // never taken for the sweep's own law: LatestFit passes them over).
  if (data.expert_counts.size() > 1) {
    std::optional<fit::RecordLaw> dense_law;
    std::vector<std::pair<int, fit::RecordLaw>> expert_laws;
    for (int k : data.expert_counts) {
      ExpertCountFit ef;
      ef.n_experts = k;
      LoadOptions klo = lo;
      klo.n_experts = k;
      klo.curves = false;
      Result<Dataset> kd = LoadDataset(&db, source, klo);
      if (!kd.ok()) {
        ef.error = kd.status().message();
        report.by_experts.push_back(std::move(ef));
        continue;
      }
      ef.runs = kd->obs.size();
      if (kd->obs.size() < 4) {
        ef.error = "only " + std::to_string(kd->obs.size()) + " finished run(s); a law needs 4";
        report.by_experts.push_back(std::move(ef));
        continue;
      }
      fit::FitConfig kc = req.config;
      kc.method = "parametric";
      kc.extrapolation_check = false;
      // Each count's bootstrap draws its own resamples: the MoE-vs-dense intervals pair draw i
      // of one fit with draw i of the other as independent (query.h), and with one seed, fits
      // of equally many runs in the same order would resample the same cells.
      kc.bootstrap.seed = req.config.bootstrap.seed + 0x9E3779B97F4A7C15ull * uint64_t(k + 1);
      json o = options;
      o["n_experts"] = k;
      if (data.entropy) {
        kc.parametric.fixed["E"] = *data.entropy;
        o["fix"] = {{"E", *data.entropy}};
      }
      Result<fit::FitRecord> r = fit::RunFit(kd->obs, {}, kc);
      Result<fit::RecordLaw> kl = r.ok() ? fit::LawFromRecord(*r) : Result<fit::RecordLaw>(r.status());
      if (!r.ok() || !kl.ok()) {
        ef.error = (r.ok() ? kl.status() : r.status()).message();
        report.by_experts.push_back(std::move(ef));
        continue;
      }
      if (k > 0) {
        if (std::optional<MoeSizing> sizing = FitMoeSizing(*kd)) o["moe_sizing"] = sizing->ToJson();
      }
      StoredFit f;
      ISOFLOP_ASSIGN_OR_RETURN(f.id, StoreFit(db, source, *r, o));
      f.options = o;
      f.record = std::move(*r);
      ef.fit = std::move(f);
      for (double c : req.report_budgets) {
        BudgetAnswer a;
        a.c = c;
        Result<fit::Answer> ans =
            fit::AnswerQuery(kl->law, {fit::Query::Kind::kCompute, c}, kl->draws, kl->ci_level);
        if (ans.ok()) {
          a.answer = *ans;
        } else {
          a.error = ans.status().message();
        }
        ef.answers.push_back(std::move(a));
      }
      if (k == 0) dense_law = *kl;
      expert_laws.emplace_back(k, std::move(*kl));
      report.by_experts.push_back(std::move(ef));
    }
    // Each MoE law against the dense one (the dense count sorts first: 0).
    if (dense_law) {
      for (ExpertCountFit& ef : report.by_experts) {
        if (ef.n_experts == 0 || !ef.fit) continue;
        const auto it = std::find_if(expert_laws.begin(), expert_laws.end(),
                                     [&](const auto& e) { return e.first == ef.n_experts; });
        for (BudgetAnswer& a : ef.answers) {
          Result<fit::DenseEquivalent> eq =
              fit::DenseEquivalentAt(it->second.law, dense_law->law, a.c, it->second.draws,
                                     dense_law->draws, it->second.ci_level);
          if (eq.ok()) {
            a.dense_equivalent = *eq;
          } else {
            a.dense_equivalent_error = eq.status().message();
          }
        }
      }
    }
  }

  // The fit the answer leads with is stored last, so `optimal --sweep` and `plot` (the newest
  // parametric fit) answer with it: the E-held fit when the free E lies below the entropy.
  const double free_e = rec.params.count("E") ? rec.params.at("E") : NAN;
  if (fixed_pending && data.entropy && free_e < *data.entropy) report.headline = "fixed_entropy";
  auto store_fixed = [&]() -> Status {
    if (!fixed_pending) return Status::Ok();
    ISOFLOP_ASSIGN_OR_RETURN(fixed_pending->id,
                             StoreFit(db, source, fixed_pending->record, fixed_pending->options));
    report.fixed_entropy = std::move(fixed_pending);
    fixed_pending.reset();
    return Status::Ok();
  };
  if (report.headline != "fixed_entropy") ISOFLOP_RETURN_IF_ERROR(store_fixed());
  ISOFLOP_ASSIGN_OR_RETURN(report.main.id, StoreFit(db, source, rec, options));
  report.main.options = options;
  if (report.headline == "fixed_entropy") ISOFLOP_RETURN_IF_ERROR(store_fixed());
  if (data.entropy) {
    const double e = free_e;
    if (std::abs(e - *data.entropy) > 0.02 * *data.entropy) {
      double lo = INFINITY, hi = 0;
      for (const auto& p : data.points) lo = std::min(lo, p.budget), hi = std::max(hi, p.budget);
      report.entropy_gap_budget_span = hi / lo;
    }
  }
  report.main.record = std::move(rec);

  // Approach 2 (isoFLOP parabolas) and Approach 1 (training-curve envelope) beside it, with
  // the sweep's bootstrap for their exponents' intervals.
  for (const char* method : {"isoflop", "envelope"}) {
    fit::FitConfig fc;
    fc.method = method;
    fc.convention = req.config.convention;
    fc.bootstrap = req.config.bootstrap;
    fc.bootstrap.derived_at_compute.clear();
    FitOutcome o;
    o.method = method;
    Result<fit::FitRecord> r = fit::RunFit(data.obs, data.curves, fc);
    if (!r.ok()) {
      o.error = r.status().message();
    } else {
      // How it was run, as `isoflop fit` records it (the bootstrap behind its intervals).
      const json opts = {{"from", req.options.value("from", "sweep run")},
                         {"bootstrap", fc.bootstrap.resamples},
                         {"seed", fc.bootstrap.seed}};
      Result<int64_t> id = StoreFit(db, source, *r, opts);
      if (!id.ok()) {
        o.error = "not stored: " + id.status().message();
      } else {
        o.fit = StoredFit{*id, source.KindName(), source.name, std::move(*r), opts};
      }
    }
    report.others.push_back(std::move(o));
  }

  for (double c : req.report_budgets) {
    BudgetAnswer a;
    a.c = c;
    Result<fit::Answer> ans =
        fit::AnswerQuery(law.law, {fit::Query::Kind::kCompute, c}, law.draws, law.ci_level);
    if (ans.ok()) {
      a.answer = *ans;
      a.far = fit::FarComputeWarning(law, ans->point.c);
    } else {
      a.error = ans.status().message();
    }
    if (fixed_law) {
      Result<fit::Answer> b = fit::AnswerQuery(fixed_law->law, {fit::Query::Kind::kCompute, c},
                                               fixed_law->draws, fixed_law->ci_level);
      if (b.ok()) a.fixed_entropy = *b;
    }
    report.answers.push_back(std::move(a));
  }
  return report;
}

}  // namespace isoflop::analysis
