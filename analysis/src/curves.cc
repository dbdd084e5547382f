// Evaluates a stored fit's curves over the ranges its data span (see curves.h).
#include "isoflop/analysis/curves.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "isoflop/fit/power_law.h"
#include "isoflop/fit/query.h"
#include "isoflop/fit/run_fit.h"

namespace isoflop::analysis {
namespace {

using nlohmann::json;

json Num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

std::vector<double> LogSpace(double lo, double hi, int n) {
  std::vector<double> out;
  for (int i = 0; i < n; ++i) {
    const double t = n > 1 ? double(i) / (n - 1) : 0;
    out.push_back(std::exp(std::log(lo) + t * (std::log(hi) - std::log(lo))));
  }
  return out;
}

json Array(const std::vector<double>& v) {
  json a = json::array();
  for (double x : v) a.push_back(Num(x));
  return a;
}

// The parametric law's frontier, band, surface and residuals.
json ParametricCurves(const fit::RecordLaw& law, const Dataset& data,
                      const std::vector<double>& c_grid, const std::vector<double>& n_grid,
                      const CurveOptions& o) {
  json frontier = {{"c", Array(c_grid)}};
  std::vector<double> n_opt, d_opt, loss;
  for (double c : c_grid) {
    Result<fit::Allocation> a = fit::ComputeOptimal(law.law, c);
    n_opt.push_back(a.ok() ? a->n : NAN);
    d_opt.push_back(a.ok() ? a->d : NAN);
    loss.push_back(a.ok() ? a->loss : NAN);
  }
  frontier["n_opt"] = Array(n_opt);
  frontier["d_opt"] = Array(d_opt);
  frontier["loss"] = Array(loss);

  // The band: each bootstrap draw's frontier, percentiles per C (the same percentile rule as
  // the fit's own intervals).
  json band = nullptr;
  const size_t n_draws = std::min<size_t>(law.draws.size(), size_t(o.max_band_draws));
  if (n_draws >= 10) {
    std::vector<std::vector<double>> ns(c_grid.size()), ds(c_grid.size());
    for (size_t k = 0; k < n_draws; ++k) {
      fit::ScalingLaw drawn = law.law;
      drawn.params = law.draws[k];
      for (size_t i = 0; i < c_grid.size(); ++i) {
        Result<fit::Allocation> a = fit::ComputeOptimal(drawn, c_grid[i]);
        if (a.ok()) ns[i].push_back(a->n), ds[i].push_back(a->d);
      }
    }
    std::vector<double> n_lo, n_hi, d_lo, d_hi;
    for (size_t i = 0; i < c_grid.size(); ++i) {
      const fit::Interval in = fit::PercentileInterval(ns[i], law.ci_level);
      const fit::Interval id = fit::PercentileInterval(ds[i], law.ci_level);
      n_lo.push_back(in.lo), n_hi.push_back(in.hi), d_lo.push_back(id.lo), d_hi.push_back(id.hi);
    }
    band = {{"level", law.ci_level}, {"draws_used", n_draws}, {"n_lo", Array(n_lo)},
            {"n_hi", Array(n_hi)},   {"d_lo", Array(d_lo)},   {"d_hi", Array(d_hi)}};
  }

  // The loss surface L(N, C / (k N)) for contours: loss[i][j] at n_grid[i], c_grid_s[j].
  const std::vector<double> c_surface = LogSpace(c_grid.front(), c_grid.back(), o.surface_points);
  json surface_rows = json::array();
  for (double n : n_grid) {
    std::vector<double> row;
    for (double c : c_surface) {
      // D from C = k·N·D (stored fits name a linear convention; a custom one has no inverse).
      row.push_back(law.law.flops.IsLinear() ? law.law.Loss(n, c / (law.law.flops.k * n)) : NAN);
    }
    surface_rows.push_back(Array(row));
  }

  // Each observation's prediction (at its own G for the moe form) and log residual.
  json points = json::array();
  for (size_t i = 0; i < data.obs.size(); ++i) {
    const fit::Observation& ob = data.obs[i];
    fit::ScalingLaw at = law.law;
    at.g = ob.g;
    const double predicted = at.Loss(ob.n, ob.d);
    points.push_back({{"n", ob.n},
                      {"d", ob.d},
                      {"c", data.points[i].c},
                      {"loss", ob.loss},
                      {"budget", data.points[i].budget},
                      {"predicted", Num(predicted)},
                      {"log_residual", Num(std::log(ob.loss) - std::log(predicted))}});
  }
  return {{"frontier", frontier},
          {"band", band},
          {"surface", {{"n", Array(n_grid)}, {"c", Array(c_surface)}, {"loss", surface_rows}}},
          {"points", points}};
}

// A power law k·C^a stored under result.<method>.<name> as {"k":..,"a":..} over the C grid.
json PowerLawCurve(const json& result, const char* method, const char* name,
                   const std::vector<double>& c_grid) {
  const auto m = result.find(method);
  if (m == result.end() || !m->is_object()) return nullptr;
  const auto p = m->find(name);
  if (p == m->end() || !p->is_object()) return nullptr;
  fit::PowerLaw pl;
  if (!fit::FromJson(*p, &pl).ok()) return nullptr;
  std::vector<double> y;
  for (double c : c_grid) y.push_back(pl.k * std::pow(c, pl.a));
  return {{"c", Array(c_grid)}, {"value", Array(y)}, {"k", pl.k}, {"a", pl.a}};
}

// The isoFLOP parabolas over each budget's sampled N and D range: loss = p0 + p1 x + p2 x^2 in
// x = ln N (or ln D).
json Parabolas(const json& result, const CurveOptions& o) {
  json out = json::array();
  const auto iso = result.find("isoflop");
  if (iso == result.end() || !iso->is_object()) return out;
  fit::IsoflopFit f;
  if (!fit::FromJson(*iso, &f).ok()) return out;
  auto eval = [](const std::array<double, 3>& p, double x) {
    return p[0] + p[1] * x + p[2] * x * x;
  };
  for (const fit::BudgetProfile& b : f.budgets) {
    json entry = {{"c", b.c},
                  {"budget_id", b.budget_id},
                  {"usable", b.usable},
                  {"outside_range", b.outside_range},
                  {"note", b.note},
                  {"n_opt", Num(b.n_opt)},
                  {"d_opt", Num(b.d_opt)}};
    for (const auto& [var, lo, hi, p] : {std::tuple{"n", b.n_lo, b.n_hi, b.parabola_n},
                                         std::tuple{"d", b.d_lo, b.d_hi, b.parabola_d}}) {
      if (!(lo > 0 && hi > lo)) continue;
      const std::vector<double> xs = LogSpace(lo, hi, o.parabola_points);
      std::vector<double> ys;
      for (double x : xs) ys.push_back(eval(p, std::log(x)));
      entry[std::string(var)] = Array(xs);
      entry[std::string("loss_") + var] = Array(ys);
    }
    out.push_back(entry);
  }
  return out;
}

}  // namespace

Result<json> FitCurves(const StoredFit& stored, const Dataset& data, const CurveOptions& o) {
  if (data.obs.empty()) return Status::FailedPrecondition("no observations to draw a fit over");
  double c_lo = INFINITY, c_hi = 0, n_lo = INFINITY, n_hi = 0;
  for (const Point& p : data.points) {
    c_lo = std::min(c_lo, p.c), c_hi = std::max(c_hi, p.c);
    n_lo = std::min(n_lo, p.n), n_hi = std::max(n_hi, p.n);
  }
  const std::vector<double> c_grid =
      LogSpace(c_lo / o.c_below, c_hi * o.c_above, o.frontier_points);
  const std::vector<double> n_grid = LogSpace(n_lo / o.n_below, n_hi * o.n_above, o.surface_points);
  const fit::FitRecord& rec = stored.record;
  json out = {{"fit_id", stored.id},
              {"method", rec.method},
              {"form", rec.form},
              {"convention", rec.convention},
              {"flops_convention", rec.flops_convention}};
  if (rec.method == "parametric") {
    ISOFLOP_ASSIGN_OR_RETURN(fit::RecordLaw law, fit::LawFromRecord(rec));
    out["parametric"] = ParametricCurves(law, data, c_grid, n_grid, o);
  }
  const char* method = rec.method == "isoflop" ? "isoflop" : "envelope";
  if (rec.method != "parametric") {
    out["n_opt"] = PowerLawCurve(rec.result, method, "n_opt", c_grid);
    out["d_opt"] = PowerLawCurve(rec.result, method, "d_opt", c_grid);
  }
  if (rec.method == "isoflop") out["parabolas"] = Parabolas(rec.result, o);
  return out;
}

namespace {

// A sweep's per-expert-count laws (`sweep run` stores one per routed-expert count, its options
// naming the count): the newest of each, evaluated over that count's runs only.
Result<json> ExpertCountCurves(store::Store& db, const Source& source, const CurveOptions& options) {
  json out = json::array();
  if (source.kind != Source::Kind::kSweep) return out;
  ISOFLOP_ASSIGN_OR_RETURN(std::vector<store::FitRecord> fits, db.ListFits());
  std::map<int, int64_t> newest;  // expert count -> fit id
  for (const store::FitRecord& f : fits) {
    if (f.source_kind != "sweep" || f.source_name != source.name || f.method != "parametric")
      continue;
    const json o = json::parse(f.options_json, nullptr, /*allow_exceptions=*/false);
    if (!o.is_object() || !o.contains("n_experts") || !o["n_experts"].is_number_integer()) continue;
    int64_t& id = newest[o["n_experts"].get<int>()];
    id = std::max(id, f.id);
  }
  for (const auto& [k, id] : newest) {
    json entry = {{"n_experts", k}, {"fit_id", id}};
    ISOFLOP_ASSIGN_OR_RETURN(StoredFit fit, LoadFit(db, id));
    LoadOptions lo;
    lo.convention = fit.record.convention;
    lo.curves = false;
    lo.n_experts = k;
    Result<Dataset> data = LoadDataset(&db, source, lo);
    Result<json> curves = data.ok() ? FitCurves(fit, *data, options) : Result<json>(data.status());
    if (curves.ok()) {
      entry["curves"] = *curves;
    } else {
      entry["error"] = curves.status().message();
    }
    out.push_back(std::move(entry));
  }
  return out;
}

}  // namespace

Result<json> SourceCurves(store::Store& db, const Source& source, const CurveOptions& options) {
  json out = json::object();
  // The source's points with the budget each belongs to (the sweep cell's, or the isoFLOP
  // grouping of imported points), so no figure groups budgets itself.
  {
    LoadOptions lo;
    lo.curves = false;
    Result<Dataset> data = LoadDataset(&db, source, lo);
    json points = json::array();
    if (data.ok()) {
      for (const Point& p : data->points) {
        points.push_back(
            {{"n", p.n}, {"d", p.d}, {"c", p.c}, {"loss", p.loss}, {"budget", p.budget}});
      }
    }
    out["points"] = points;
  }
  const std::string kind = source.KindName();
  for (const char* method : {"parametric", "isoflop", "envelope"}) {
    std::optional<StoredFit> fit;
    if (std::string(method) == "parametric") {
      ISOFLOP_ASSIGN_OR_RETURN(fit, LatestFit(db, kind, source.name, method, "chinchilla"));
    }
    if (!fit) {
      ISOFLOP_ASSIGN_OR_RETURN(fit, LatestFit(db, kind, source.name, method));
    }
    if (!fit) {
      out[method] = nullptr;
      continue;
    }
    LoadOptions lo;
    lo.convention = fit->record.convention;
    lo.curves = false;
    Result<Dataset> data = LoadDataset(&db, source, lo);
    if (!data.ok()) {
      out[method] = {{"fit_id", fit->id}, {"error", data.status().message()}};
      continue;
    }
    Result<json> curves = FitCurves(*fit, *data, options);
    out[method] =
        curves.ok() ? *curves : json{{"fit_id", fit->id}, {"error", curves.status().message()}};
  }
  ISOFLOP_ASSIGN_OR_RETURN(out["by_expert_count"], ExpertCountCurves(db, source, options));
  return out;
}

}  // namespace isoflop::analysis
