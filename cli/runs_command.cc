// `isoflop runs` (one line per run, for people) and `isoflop export` (runs or an observation
// set with every N and C convention, for programs).
#include <iostream>
#include <map>

#include "command.h"
#include "isoflop/store/store.h"
#include "output.h"

namespace isoflop::cli {
namespace {

nlohmann::json Opt(const std::optional<double>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json();
}

Result<std::unique_ptr<store::Store>> OpenForReading(const Context& ctx) {
  store::OpenOptions opts;
  opts.create_if_missing = false;
  return store::Store::Open(ctx.db_path, opts);
}

// The states a run can be in (the store's runs.status); --status must name one, or a typo
// would list nothing and look like an empty sweep.
const char* const kRunStates[] = {"planned",  "running",   "finished", "failed",
                                  "diverged", "preempted", "cancelled"};

Status CheckRunState(const std::string& status) {
  std::string all;
  for (const char* s : kRunStates) {
    if (status == s) return Status::Ok();
    all += (all.empty() ? "" : " ") + std::string(s);
  }
  return Status::InvalidArgument("--status: '" + status + "' is not a run state (expected one of " +
                                 all + ")");
}

Result<std::vector<store::RunRecord>> LoadRuns(store::Store& db, const std::string& sweep,
                                               const std::string& status,
                                               std::map<int64_t, std::string>* sweep_names) {
  ISOFLOP_ASSIGN_OR_RETURN(auto sweeps, db.ListSweeps());
  for (const auto& s : sweeps) (*sweep_names)[s.id] = s.name;
  store::RunFilter filter;
  if (!sweep.empty()) {
    ISOFLOP_ASSIGN_OR_RETURN(auto found, db.GetSweep(sweep));
    if (!found) return Status::NotFound("no sweep named '" + sweep + "' in " + db.path());
    filter.sweep_name = sweep;
  }
  if (!status.empty()) filter.status = status;
  return db.ListRuns(filter);
}

struct RunsArgs {
  std::string sweep, status, format = "table";
};

Status RunRuns(const Context& ctx, const RunsArgs& args) {
  ISOFLOP_ASSIGN_OR_RETURN(Format format, ParseFormat(args.format));
  if (!args.status.empty()) ISOFLOP_RETURN_IF_ERROR(CheckRunState(args.status));
  ISOFLOP_ASSIGN_OR_RETURN(auto db, OpenForReading(ctx));
  std::map<int64_t, std::string> names;
  ISOFLOP_ASSIGN_OR_RETURN(auto runs, LoadRuns(*db, args.sweep, args.status, &names));
  Table t;
  t.columns = {{"id", ""},
               {"sweep", ""},
               {"cell", ""},
               {"status", ""},
               {"budget_flops", "%.3g"},
               {"shape", ""},
               {"n_total", ""},
               {"tokens", ""},
               {"tokens_per_param", "%.1f"},
               {"progress", "%.0f%%"},
               {"val_loss", "%.4f"},
               {"attempts", ""},
               {"memory", ""},
               {"peak_memory", ""}};
  for (const auto& r : runs) {
    std::string shape = std::to_string(r.n_layer) + "x" + std::to_string(r.d_model) + "h" +
                        std::to_string(r.n_head);
    if (r.n_experts > 0) shape += " e" + std::to_string(r.n_experts);
    double progress = r.target_tokens > 0 ? 100.0 * r.tokens_done / r.target_tokens : 0.0;
    t.rows.push_back(
        {r.id, names[r.sweep_id], r.cell_key, r.status, r.budget_flops, shape, r.n_total,
         r.target_tokens,
         r.n_total > 0 ? nlohmann::json(double(r.target_tokens) / r.n_total) : nlohmann::json(),
         progress, Opt(r.final_val_loss), r.attempts, BytesCell(r.memory_estimate, format),
         BytesCell(r.peak_memory, format)});
  }
  Print(std::cout, t, format);
  return Status::Ok();
}

struct ExportArgs {
  std::string sweep, observations, status, format = "csv";
};

Status RunExport(const Context& ctx, const ExportArgs& args) {
  ISOFLOP_ASSIGN_OR_RETURN(Format format, ParseFormat(args.format));
  if (!args.status.empty()) ISOFLOP_RETURN_IF_ERROR(CheckRunState(args.status));
  ISOFLOP_ASSIGN_OR_RETURN(auto db, OpenForReading(ctx));
  Table t;
  if (!args.observations.empty()) {
    ISOFLOP_ASSIGN_OR_RETURN(auto points, db->GetObservations(args.observations));
    // New columns go last, so columns that programs index by position keep their place; g
    // empty without G, budget empty when the import recorded none (a re-import reads it back).
    t.columns = {{"n", "%.6g"},    {"d", "%.6g"}, {"c", "%.6g"},      {"loss", "%.6g"},
                 {"line", ""},     {"g", "%.6g"}, {"budget", "%.6g"}};
    for (const auto& p : points)
      t.rows.push_back({p.n, p.d, p.c, p.loss, p.line, Opt(p.g), Opt(p.budget)});
    Print(std::cout, t, format);
    return Status::Ok();
  }
  std::map<int64_t, std::string> names;
  ISOFLOP_ASSIGN_OR_RETURN(auto runs, LoadRuns(*db, args.sweep, args.status, &names));
  t.columns = {{"run_id", ""},
               {"sweep", ""},
               {"cell_key", ""},
               {"status", ""},
               {"family", ""},
               {"n_layer", ""},
               {"d_model", ""},
               {"n_head", ""},
               {"d_ff", ""},
               {"vocab_size", ""},
               {"seq_len", ""},
               {"n_experts", ""},
               {"top_k", ""},
               {"n_total", ""},
               {"n_non_embedding", ""},
               {"n_active", ""},
               {"flops_per_token_6n", "%.6g"},
               {"flops_per_token_6n_attn", "%.6g"},
               {"flops_per_token_chinchilla", "%.6g"},
               {"budget_flops", "%.6g"},
               {"tokens", ""},
               {"c_6n", "%.6g"},
               {"c_6n_attn", "%.6g"},
               {"c_chinchilla", "%.6g"},
               {"seed", ""},
               {"final_val_loss", "%.6g"},
               {"final_train_loss", "%.6g"},
               {"data_entropy", "%.6g"},
               {"attempts", ""},
               {"exit_code", ""},
               {"reason", ""},
               {"run_dir", ""}};
  // Mixture-of-Experts settings and the final logged router metrics, last so that columns
  // programs index by position keep their place; empty for dense runs.
  static const char* const kRouterMetrics[] = {"aux_loss", "z_loss", "load_max_over_mean",
                                               "dropped_fraction", "router_entropy"};
  for (const char* c : {"granularity", "n_shared_experts", "expert_d_ff", "router"})
    t.columns.push_back({c, ""});
  t.columns.push_back({"expansion_rate", "%.6g"});
  for (const char* m : kRouterMetrics) t.columns.push_back({std::string("final_") + m, "%.6g"});
  // Memory in bytes: the estimate the scheduler packed the run by, the peak its worker measured
  // and what that peak is (host_rss or cuda_reserved); empty before either is known.
  for (const char* c : {"memory_estimate_bytes", "peak_memory_bytes", "peak_memory_of"})
    t.columns.push_back({c, ""});
  auto positive = [](int64_t v) { return v > 0 ? nlohmann::json(v) : nlohmann::json(); };
  for (const auto& r : runs) {
    double d = static_cast<double>(r.target_tokens);
    std::vector<nlohmann::json> moe(4 + 1 + std::size(kRouterMetrics));
    if (r.n_experts > 0) {
      moe[0] = r.granularity;
      moe[1] = r.n_shared_experts;
      moe[2] = r.expert_d_ff;
      moe[3] = r.router;
      moe[4] = r.expansion_rate;
      ISOFLOP_ASSIGN_OR_RETURN(auto extras, db->LatestExtras(r.id));
      for (size_t k = 0; k < std::size(kRouterMetrics); ++k) {
        for (const auto& [name, value] : extras)
          if (name == kRouterMetrics[k]) moe[5 + k] = value;
      }
    }
    t.rows.push_back({r.id,
                      names[r.sweep_id],
                      r.cell_key,
                      r.status,
                      r.family,
                      r.n_layer,
                      r.d_model,
                      r.n_head,
                      r.d_ff,
                      r.vocab_size,
                      r.seq_len,
                      r.n_experts,
                      r.top_k,
                      r.n_total,
                      r.n_non_embedding,
                      r.n_active,
                      r.flops_per_token_6n,
                      r.flops_per_token_6n_attn,
                      r.flops_per_token_chinchilla,
                      r.budget_flops,
                      r.target_tokens,
                      r.flops_per_token_6n * d,
                      r.flops_per_token_6n_attn * d,
                      r.flops_per_token_chinchilla * d,
                      r.seed,
                      Opt(r.final_val_loss),
                      Opt(r.final_train_loss),
                      Opt(r.data_entropy),
                      r.attempts,
                      r.exit_code ? nlohmann::json(*r.exit_code) : nlohmann::json(),
                      r.reason,
                      r.run_dir});
    t.rows.back().insert(t.rows.back().end(), moe.begin(), moe.end());
    t.rows.back().insert(
        t.rows.back().end(),
        {positive(r.memory_estimate), positive(r.peak_memory),
         r.peak_memory_of.empty() ? nlohmann::json() : nlohmann::json(r.peak_memory_of)});
  }
  Print(std::cout, t, format);
  return Status::Ok();
}

void AddRunsCommand(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<RunsArgs>();
  CLI::App* cmd = app.add_subcommand("runs", "List training runs (one line each)");
  cmd->add_option("--sweep", args->sweep, "Only runs of this sweep");
  cmd->add_option("--status", args->status,
                  "Only runs in this state: planned, running, finished, failed, diverged, "
                  "preempted or cancelled")
      ->check(OneOf(
          {"planned", "running", "finished", "failed", "diverged", "preempted", "cancelled"}));
  cmd->add_option("--format", args->format, "table | csv | json")
      ->check(OneOf({"table", "csv", "json"}))
      ->capture_default_str();
  cmd->callback([&ctx, args] { ctx.status = RunRuns(ctx, *args); });
}

void AddExportCommand(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<ExportArgs>();
  CLI::App* cmd = app.add_subcommand(
      "export", "Export runs (final losses, every N and C convention) or an observation set");
  auto* sweep = cmd->add_option("--sweep", args->sweep, "Only runs of this sweep");
  cmd->add_option("--observations", args->observations,
                  "Export this imported observation set instead of runs (columns n,d,c,loss,"
                  "line,g,budget; g and budget empty when the set has none)")
      ->excludes(sweep);
  cmd->add_option("--status", args->status,
                  "Only runs in this state (planned, running, finished, failed, diverged, "
                  "preempted, cancelled)")
      ->check(OneOf(
          {"planned", "running", "finished", "failed", "diverged", "preempted", "cancelled"}));
  cmd->add_option("--format", args->format, "csv | json | table")
      ->check(OneOf({"csv", "json", "table"}))
      ->capture_default_str();
  cmd->callback([&ctx, args] { ctx.status = RunExport(ctx, *args); });
}

}  // namespace

ISOFLOP_REGISTER_COMMAND("runs", 30, AddRunsCommand);
ISOFLOP_REGISTER_COMMAND("export", 70, AddExportCommand);

}  // namespace isoflop::cli
