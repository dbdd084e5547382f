// The live view of the store (see sweep_view.h): sweep summaries, cell progress, thinned
// training curves and the compute-optimal answer, all read-only.
#include "isoflop/analysis/sweep_view.h"

#include <algorithm>
#include <cmath>

#include "isoflop/analysis/dataset.h"
#include "isoflop/analysis/sweep_report.h"
#include "isoflop/fit/run_fit.h"

namespace isoflop::analysis {

using nlohmann::json;

namespace {

json Opt(const std::optional<double>& v) {
  return v && std::isfinite(*v) ? json(*v) : json(nullptr);
}

std::string Shape(const store::RunRecord& r) {
  return std::to_string(r.n_layer) + "x" + std::to_string(r.d_model) + "h" +
         std::to_string(r.n_head);
}

}  // namespace

json SweepSummary::ToJson() const {
  return {{"name", sweep.name},
          {"status", sweep.status},
          {"file", sweep.file_path},
          {"created_at", sweep.created_at},
          {"updated_at", sweep.updated_at},
          {"cells", cells},
          {"by_status", by_status},
          {"tokens_done", tokens_done},
          {"tokens_total", tokens_total}};
}

Result<std::vector<SweepSummary>> ListSweepSummaries(store::Store& db) {
  ISOFLOP_ASSIGN_OR_RETURN(std::vector<store::SweepRecord> sweeps, db.ListSweeps());
  std::vector<SweepSummary> out;
  for (auto& s : sweeps) {
    store::RunFilter f;
    f.sweep_name = s.name;
    ISOFLOP_ASSIGN_OR_RETURN(std::vector<store::RunRecord> runs, db.ListRuns(f));
    SweepSummary sum;
    sum.cells = static_cast<int>(runs.size());
    for (const auto& r : runs) {
      sum.by_status[r.status]++;
      sum.tokens_done += std::min(r.tokens_done, r.target_tokens);
      sum.tokens_total += r.target_tokens;
    }
    sum.sweep = std::move(s);
    out.push_back(std::move(sum));
  }
  return out;
}

json CellView::ToJson() const {
  const store::RunRecord& r = run;
  return {{"run_id", r.id},
          {"cell", r.cell_key},
          {"status", r.status},
          {"reason", r.reason},
          {"family", r.family},
          {"shape", shape},
          {"n_layer", r.n_layer},
          {"d_model", r.d_model},
          {"n_head", r.n_head},
          {"n_total", r.n_total},
          {"n_non_embedding", r.n_non_embedding},
          {"n_active", r.n_active},
          {"budget", r.budget_flops},
          {"tokens_target", r.target_tokens},
          {"flops_target", r.target_flops},
          {"tokens_done", r.tokens_done},
          {"progress", progress},
          {"tokens_per_s", Opt(tokens_per_s)},
          {"eta_s", Opt(eta_s)},
          {"latest_step", latest_step},
          {"latest_loss", Opt(latest_loss)},
          {"final_val_loss", Opt(r.final_val_loss)},
          {"final_train_loss", Opt(r.final_train_loss)},
          {"attempts", r.attempts},
          // Bytes; null until known: the estimate the scheduler packed the run by, and the peak
          // its worker measured (peak_memory_of: host_rss or cuda_reserved).
          {"memory_estimate", r.memory_estimate > 0 ? json(r.memory_estimate) : json()},
          {"peak_memory", r.peak_memory > 0 ? json(r.peak_memory) : json()},
          {"peak_memory_of", r.peak_memory_of},
          {"started_at", r.started_at},
          {"finished_at", r.finished_at}};
}

Result<std::vector<CellView>> SweepCells(store::Store& db, const std::string& name) {
  ISOFLOP_ASSIGN_OR_RETURN(std::optional<store::SweepRecord> sweep, db.GetSweep(name));
  if (!sweep) return Status::NotFound("no sweep named '" + name + "' in " + db.path());
  store::RunFilter f;
  f.sweep_name = name;
  ISOFLOP_ASSIGN_OR_RETURN(std::vector<store::RunRecord> runs, db.ListRuns(f));
  std::sort(runs.begin(), runs.end(), [](const auto& a, const auto& b) {
    if (a.budget_flops != b.budget_flops) return a.budget_flops < b.budget_flops;
    if (a.n_total != b.n_total) return a.n_total < b.n_total;
    return a.cell_key < b.cell_key;
  });
  std::vector<CellView> out;
  for (auto& r : runs) {
    CellView v;
    ISOFLOP_ASSIGN_OR_RETURN(std::optional<store::MetricRow> last, db.LatestMetric(r.id));
    v.shape = Shape(r);
    v.progress = r.target_tokens > 0
                     ? std::clamp(double(r.tokens_done) / double(r.target_tokens), 0.0, 1.0)
                     : 0.0;
    if (last) {
      v.latest_step = last->step;
      v.latest_loss = last->train_loss;
      v.tokens_per_s = last->tokens_per_s;
      // A run that has ended: its mean rate over its training time (wall_s adds up its
      // lifetimes), not its last interval's, which holds the final evaluation.
      if (r.status != "running" && last->wall_s && *last->wall_s > 0 && last->tokens > 0)
        v.tokens_per_s = double(last->tokens) / *last->wall_s;
    }
    if (r.status == "running" && v.tokens_per_s && *v.tokens_per_s > 0) {
      v.eta_s = std::max<double>(0, double(r.target_tokens - r.tokens_done)) / *v.tokens_per_s;
    }
    v.run = std::move(r);
    out.push_back(std::move(v));
  }
  return out;
}

json RunSeries::ToJson() const {
  json train_loss_j = json::array();
  for (const auto& v : train_loss) train_loss_j.push_back(Opt(v));
  return {{"run_id", run_id},
          {"rows", rows},
          {"step", step},
          {"tokens", tokens},
          {"flops", flops},
          {"train_loss", train_loss_j},
          {"val",
           {{"step", val_step}, {"tokens", val_tokens}, {"flops", val_flops}, {"loss", val_loss}}}};
}

namespace {

// Indices 0, k, 2k, ... and the last of `n` items, at most max_points of them.
std::vector<size_t> ThinIndices(size_t n, int max_points) {
  std::vector<size_t> idx;
  if (n == 0) return idx;
  const size_t cap = static_cast<size_t>(max_points);
  // k chosen so that the strided indices plus the last fit in max_points.
  const size_t k = n <= cap ? 1 : (n - 1 + (cap - 2)) / (cap - 1);
  for (size_t i = 0; i < n; i += k) idx.push_back(i);
  if (idx.back() != n - 1) {
    if (idx.size() >= cap) idx.pop_back();
    idx.push_back(n - 1);
  }
  return idx;
}

}  // namespace

Result<RunSeries> DownsampleMetrics(int64_t run_id, const std::vector<store::MetricRow>& rows,
                                    int max_points) {
  if (max_points < 2) {
    return Status::InvalidArgument("max_points: expected at least 2 points per curve, got " +
                                   std::to_string(max_points));
  }
  RunSeries s;
  s.run_id = run_id;
  s.rows = static_cast<int64_t>(rows.size());
  for (size_t i : ThinIndices(rows.size(), max_points)) {
    const store::MetricRow& m = rows[i];
    s.step.push_back(m.step);
    s.tokens.push_back(m.tokens);
    s.flops.push_back(m.flops);
    s.train_loss.push_back(m.train_loss);
  }
  std::vector<const store::MetricRow*> val;
  for (const auto& m : rows)
    if (m.val_loss && std::isfinite(*m.val_loss)) val.push_back(&m);
  for (size_t i : ThinIndices(val.size(), max_points)) {
    s.val_step.push_back(val[i]->step);
    s.val_tokens.push_back(val[i]->tokens);
    s.val_flops.push_back(val[i]->flops);
    s.val_loss.push_back(*val[i]->val_loss);
  }
  return s;
}

Result<RunSeries> LoadRunSeries(store::Store& db, int64_t run_id, int max_points) {
  if (max_points < 2) return DownsampleMetrics(run_id, {}, max_points);
  ISOFLOP_ASSIGN_OR_RETURN(std::optional<store::RunRecord> run, db.GetRun(run_id));
  if (!run)
    return Status::NotFound("no run with id " + std::to_string(run_id) + " in " + db.path());
  ISOFLOP_ASSIGN_OR_RETURN(std::vector<store::MetricRow> rows,
                           db.GetMetrics(run_id, store::Store::Extras::kOmit));
  return DownsampleMetrics(run_id, rows, max_points);
}

json OptimalView::ToJson() const {
  json j = AnswerJson(answer);
  j["c"] = answer.query.value;  // the budget asked for, as `isoflop optimal` echoes it
  j["fit_id"] = fit_id;
  j["form"] = form;
  if (!warning.empty()) j["warning"] = warning;
  return j;
}

Result<OptimalView> OptimalAt(store::Store& db, const std::string& source_kind,
                              const std::string& source_name, double c) {
  if (!(c > 0) || !std::isfinite(c)) {
    return Status::InvalidArgument("budget: expected a positive number of FLOPs, e.g. 1e21");
  }
  ISOFLOP_ASSIGN_OR_RETURN(std::optional<StoredFit> stored,
                           LatestFit(db, source_kind, source_name, "parametric"));
  if (!stored) {
    return Status::NotFound("no parametric fit of " + source_kind + " '" + source_name + "' in " +
                            db.path() + "; run `isoflop fit --" + source_kind + " " + source_name +
                            "` first");
  }
  Result<fit::RecordLaw> law = fit::LawFromRecord(stored->record);
  if (!law.ok()) return law.status().WithPrefix("stored fit " + std::to_string(stored->id));
  ISOFLOP_ASSIGN_OR_RETURN(
      fit::Answer a,
      fit::AnswerQuery(law->law, {fit::Query::Kind::kCompute, c, 0}, law->draws, law->ci_level));
  OptimalView v;
  v.fit_id = stored->id;
  v.form = stored->record.form;
  v.warning = fit::FarComputeWarning(*law, a.point.c);
  v.answer = std::move(a);
  return v;
}

}  // namespace isoflop::analysis
