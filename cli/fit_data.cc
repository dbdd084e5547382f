// Sweep runs -> fit observations and curves; fit results -> fits table rows.
#include "fit_data.h"

#include <cmath>
#include <map>

namespace isoflop::cli {
namespace {

double ParamsOf(const store::RunRecord& r, const std::string& convention) {
  if (convention == "non_embedding") return static_cast<double>(r.n_non_embedding);
  if (convention == "active") return static_cast<double>(r.n_active);
  return static_cast<double>(r.n_total);
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
    fit::Curve curve;
    curve.n = o.n;
    for (const auto& m : metrics) {
      const auto l = m.val_loss ? m.val_loss : m.train_loss;
      if (l && m.flops > 0 && *l > 0 && std::isfinite(*l)) curve.points.emplace_back(m.flops, *l);
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
