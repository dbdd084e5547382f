// Sources -> observations and curves; fit records <-> fits table rows.
#include "isoflop/analysis/dataset.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "isoflop/fit/isoflop_profile.h"

namespace isoflop::analysis {
namespace {

double ParamsOf(const store::RunRecord& r, const std::string& convention) {
  if (convention == "non_embedding") return static_cast<double>(r.n_non_embedding);
  if (convention == "active") return static_cast<double>(r.n_active);
  return static_cast<double>(r.n_total);
}

// The training loss against FLOPs so far, averaged over a centred window of logging points.
// Approach 1 takes the lowest loss across runs at each FLOP level; on raw per-interval losses
// that minimum picks up batch noise and sits below every curve's mean (Hoffmann et al. 2022
// smooth their training curves for the same reason). Evaluation lines are not mixed in: they
// measure a different set.
fit::Curve SmoothedTrainingCurve(const std::vector<store::MetricRow>& metrics) {
  constexpr int kHalfWindow = 2;
  std::vector<std::pair<double, double>> raw;
  for (const auto& m : metrics) {
    if (m.train_loss && m.flops > 0 && *m.train_loss > 0 && std::isfinite(*m.train_loss))
      raw.emplace_back(m.flops, *m.train_loss);
  }
  fit::Curve curve;
  for (size_t i = 0; i < raw.size(); ++i) {
    const size_t lo = i >= kHalfWindow ? i - kHalfWindow : 0;
    const size_t hi = std::min(raw.size() - 1, i + kHalfWindow);
    double sum = 0;
    for (size_t j = lo; j <= hi; ++j) sum += raw[j].second;
    curve.points.emplace_back(raw[i].first, sum / static_cast<double>(hi - lo + 1));
  }
  return curve;
}

Result<Dataset> LoadSweep(store::Store& db, const Source& source, const LoadOptions& options) {
  const std::string& name = source.name;
  ISOFLOP_ASSIGN_OR_RETURN(auto found, db.GetSweep(name));
  if (!found) return Status::NotFound("no sweep named '" + name + "' in " + db.path());
  store::RunFilter filter;
  filter.sweep_name = name;
  ISOFLOP_ASSIGN_OR_RETURN(auto runs, db.ListRuns(filter));
  Dataset out;
  out.source = source;
  std::map<double, int64_t> budget_ids;
  for (const auto& r : runs) {
    if (r.budget_flops > 0) budget_ids.emplace(r.budget_flops, 0);
  }
  int64_t next = 0;
  for (auto& [c, id] : budget_ids) id = next++;
  for (const auto& r : runs) {
    if (options.only_keys && !options.only_keys->count(r.cell_key)) continue;
    if (options.n_experts && r.n_experts != *options.n_experts) continue;
    if (r.data_entropy) out.entropy = r.data_entropy;
    if (r.status == "diverged" && !options.include_diverged) {
      out.excluded.push_back(r.cell_key + " (" + std::to_string(r.n_layer) + "x" +
                             std::to_string(r.d_model) + ", C=" + std::to_string(r.budget_flops) +
                             "): " + r.reason);
      continue;
    }
    if (r.status != "finished" && r.status != "diverged") continue;
    const auto loss = r.final_val_loss ? r.final_val_loss : r.final_train_loss;
    if (!loss || !(*loss > 0) || !std::isfinite(*loss)) continue;
    fit::Observation o;
    o.n = ParamsOf(r, options.convention);
    o.d = static_cast<double>(r.tokens_done > 0 ? r.tokens_done : r.target_tokens);
    o.loss = *loss;
    // C in the fit's own convention, 6·N·D with N counted as the law counts it, so that the
    // isoFLOP minima, the envelope and the extrapolation check are in the units of the law's
    // answer (D_opt = C / 6 N_opt). The trainer's count, 6·N_active·D, agrees whenever N is
    // N_active (active, or total on a dense model); the sweep's budgets still group the runs.
    o.c = 6 * o.n * o.d;
    if (r.budget_flops > 0) o.budget_id = budget_ids[r.budget_flops];
    o.budget = r.budget_flops > 0 ? r.budget_flops : 0;
    // An MoE run's granularity G (Krajewski et al. 2024): 1 when its experts are not split; a
    // dense run has none (the moe form refuses a set that mixes them in).
    std::optional<double> g;
    if (r.n_experts > 0) g = r.granularity > 0 ? r.granularity : 1.0;
    o.g = g.value_or(1.0);
    out.obs.push_back(o);
    if (std::find(out.expert_counts.begin(), out.expert_counts.end(), int(r.n_experts)) ==
        out.expert_counts.end()) {
      out.expert_counts.push_back(static_cast<int>(r.n_experts));
      std::sort(out.expert_counts.begin(), out.expert_counts.end());
    }
    out.points.push_back({o.n, o.d, o.c, o.loss, g, r.budget_flops > 0 ? r.budget_flops : o.c,
                          static_cast<double>(r.n_total), static_cast<double>(r.n_active)});
    if (!g) ++out.points_without_g;
    if (!options.curves) continue;
    ISOFLOP_ASSIGN_OR_RETURN(auto metrics, db.GetMetrics(r.id, store::Store::Extras::kOmit));
    fit::Curve curve = SmoothedTrainingCurve(metrics);
    curve.n = o.n;
    if (r.flops_per_token_6n > 0 && r.flops_per_token_6n != 6 * o.n) {  // the same convention
      for (auto& point : curve.points) point.first *= 6 * o.n / r.flops_per_token_6n;
    }
    if (!curve.points.empty()) out.curves.push_back(std::move(curve));
  }
  if (out.obs.empty()) {
    return Status::FailedPrecondition("sweep '" + name +
                                      "' has no finished runs with a final loss yet; run "
                                      "`isoflop sweep status " +
                                      name + "`");
  }
  return out;
}

}  // namespace

std::string Source::KindName() const {
  switch (kind) {
    case Kind::kSweep:
      return "sweep";
    case Kind::kObservations:
      return "observations";
    case Kind::kCsv:
      return "csv";
  }
  return "sweep";
}

Result<Dataset> LoadDataset(store::Store* db, const Source& source, const LoadOptions& options) {
  if (source.kind != Source::Kind::kCsv && db == nullptr) {
    return Status::Internal("loading a " + source.KindName() + " needs a store");
  }
  if (source.kind == Source::Kind::kSweep) return LoadSweep(*db, source, options);
  Dataset out;
  out.source = source;
  std::vector<store::Observation> imported;
  if (source.kind == Source::Kind::kCsv) {
    ISOFLOP_ASSIGN_OR_RETURN(
        imported, store::ReadObservations(source.name, source.csv_columns, &out.warnings));
  } else {
    ISOFLOP_ASSIGN_OR_RETURN(imported, db->GetObservations(source.name));
  }
  for (const auto& p : imported) {
    // G = 1 (dense) where none was recorded; only the moe form reads it.
    out.obs.push_back({p.n, p.d, p.loss, p.c, p.g.value_or(1.0), -1, p.budget.value_or(0.0)});
    out.points.push_back(
        {p.n, p.d, p.c > 0 ? p.c : 6 * p.n * p.d, p.loss, p.g, p.c > 0 ? p.c : 6 * p.n * p.d});
    if (!p.g) ++out.points_without_g;
  }
  // Each point's budget is the group the isoFLOP fit forms (fit::GroupBudgets: the recorded
  // budget, else C clustered in log space), at the recorded budget or the group's
  // geometric-mean C.
  for (const auto& group :
       fit::GroupByBudget(out.obs, fit::IsoflopOptions{}.budget_rel_tol, fit::FlopsConvention{})) {
    double log_sum = 0;
    for (size_t i : group) log_sum += std::log(out.points[i].c);
    const double budget = out.obs[group[0]].budget > 0
                              ? out.obs[group[0]].budget
                              : std::exp(log_sum / static_cast<double>(group.size()));
    for (size_t i : group) out.points[i].budget = budget;
  }
  return out;
}

Result<int64_t> StoreFit(store::Store& db, const Source& source, const fit::FitRecord& rec,
                         const nlohmann::json& options) {
  store::FitRecord row;
  row.source_kind = source.KindName();
  row.source_name = source.name;
  row.method = rec.method;
  row.form = rec.form;
  row.convention = rec.convention;
  row.flops_convention = rec.flops_convention;
  row.params_json = rec.ParamsJson().dump();
  row.ci_json = rec.CiJson().dump();
  if (std::isfinite(rec.objective)) row.objective = rec.objective;
  row.n_points = rec.n_points;
  row.result_json = rec.result.dump();
  row.options_json = options.dump();
  return db.InsertFit(row);
}

namespace {

Result<StoredFit> FromRow(const store::FitRecord& row) {
  StoredFit out;
  out.id = row.id;
  out.source_kind = row.source_kind;
  out.source_name = row.source_name;
  // A stored row is data another version (or a hand edit) may have left incomplete: every
  // missing or mistyped field is an error naming the fit, not a crash.
  Result<fit::FitRecord> rec = fit::FitRecord::FromColumns(
      row.method, row.form, row.convention, row.flops_convention, row.params_json, row.ci_json,
      row.objective.value_or(NAN), static_cast<int>(row.n_points), row.result_json);
  if (!rec.ok()) return rec.status().WithPrefix("stored fit " + std::to_string(row.id));
  out.record = std::move(*rec);
  const auto options = nlohmann::json::parse(row.options_json, nullptr, false);
  if (options.is_object()) out.options = options;
  return out;
}

}  // namespace

Result<StoredFit> LoadFit(store::Store& db, int64_t id) {
  ISOFLOP_ASSIGN_OR_RETURN(std::optional<store::FitRecord> row, db.GetFit(id));
  if (!row) return Status::NotFound("no fit with id " + std::to_string(id) + " in " + db.path());
  return FromRow(*row);
}

Result<std::optional<StoredFit>> LatestFit(store::Store& db, const std::string& source_kind,
                                           const std::string& source_name,
                                           const std::string& method, const std::string& form) {
  ISOFLOP_ASSIGN_OR_RETURN(std::optional<store::FitRecord> row,
                           db.LatestFit(source_kind, source_name, method, form));
  if (!row) return std::optional<StoredFit>();
  ISOFLOP_ASSIGN_OR_RETURN(StoredFit fit, FromRow(*row));
  if (!fit.options.contains("n_experts")) return std::optional<StoredFit>(std::move(fit));
  // The newest is one expert count's law: the source's own law is the newest over all runs.
  ISOFLOP_ASSIGN_OR_RETURN(std::vector<store::FitRecord> rows, db.ListFits());
  std::optional<StoredFit> best;
  for (const store::FitRecord& r : rows) {
    if (r.source_kind != source_kind || r.source_name != source_name || r.method != method ||
        (!form.empty() && r.form != form) || (best && best->id > r.id))
      continue;
    ISOFLOP_ASSIGN_OR_RETURN(StoredFit f, FromRow(r));
    if (!f.options.contains("n_experts")) best = std::move(f);
  }
  return best;
}

}  // namespace isoflop::analysis
