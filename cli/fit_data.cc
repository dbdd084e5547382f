// Sweep runs -> fit observations and curves; fit results -> fits table rows.
#include "fit_data.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

namespace isoflop::cli {
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

}  // namespace

Result<SweepData> LoadSweepData(store::Store& db, const std::string& name,
                                const SweepDataOptions& options) {
  ISOFLOP_ASSIGN_OR_RETURN(auto found, db.GetSweep(name));
  if (!found) return Status::NotFound("no sweep named '" + name + "' in " + db.path());
  store::RunFilter filter;
  filter.sweep_name = name;
  ISOFLOP_ASSIGN_OR_RETURN(auto runs, db.ListRuns(filter));
  SweepData out;
  std::map<double, int64_t> budget_ids;
  for (const auto& r : runs) {
    if (r.budget_flops > 0) budget_ids.emplace(r.budget_flops, 0);
  }
  int64_t next = 0;
  for (auto& [c, id] : budget_ids) id = next++;
  for (const auto& r : runs) {
    if (options.only_keys && !options.only_keys->count(r.cell_key)) continue;
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
    o.c = r.flops_per_token_6n * o.d;
    if (r.budget_flops > 0) o.budget_id = budget_ids[r.budget_flops];
    out.obs.push_back(o);
    if (!options.curves) continue;
    ISOFLOP_ASSIGN_OR_RETURN(auto metrics, db.GetMetrics(r.id));
    fit::Curve curve = SmoothedTrainingCurve(metrics);
    curve.n = o.n;
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

std::string ExtrapolationSummary(const fit::FitRecord& rec) {
  const auto found = rec.result.find("extrapolation");
  if (found == rec.result.end() || !found->is_object()) return "";
  const nlohmann::json& e = *found;
  auto num = [&](const char* key) {
    const auto it = e.find(key);
    return it != e.end() && it->is_number() ? it->get<double>() : NAN;
  };
  const double c = num("held_out_c"), mean = num("mean_abs_rel_error"),
               max = num("max_abs_rel_error");
  if (!std::isfinite(c) || !std::isfinite(mean)) return "";
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "extrapolation check: fitted without the largest budget (C=%.3g), the law predicts "
                "its %d final losses within %.2f%% on average (max %.2f%%)",
                c, static_cast<int>(num("n_test")), 100 * mean, 100 * max);
  std::string out = buf;
  const double predicted = num("n_opt_predicted"), observed = num("n_opt_observed");
  if (std::isfinite(predicted) && std::isfinite(observed) && observed > 0) {
    std::snprintf(buf, sizeof buf, "; N_opt %.3g predicted, %.3g observed (isoFLOP minimum)",
                  predicted, observed);
    out += buf;
  }
  return out;
}

Result<int64_t> StoreFit(store::Store& db, const std::string& source_kind,
                         const std::string& source_name, const fit::FitRecord& rec,
                         const nlohmann::json& options) {
  store::FitRecord row;
  row.source_kind = source_kind;
  row.source_name = source_name;
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

}  // namespace isoflop::cli
