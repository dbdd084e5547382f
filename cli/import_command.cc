// `isoflop import FILE.csv --name NAME`: (N, D or C, loss[, G]) points from papers or other
// tools, stored as an observation set that `isoflop fit --observations NAME` can fit.
#include <algorithm>
#include <iostream>
#include <set>

#include "command.h"
#include "isoflop/store/observations_csv.h"
#include "isoflop/store/store.h"
#include "output.h"

namespace isoflop::cli {
namespace {

struct ImportArgs {
  std::string file, name;
  store::CsvColumns columns;
  bool replace = false;
};

Status RunImport(const Context& ctx, const ImportArgs& args) {
  // Parse everything before touching the store: a bad line imports nothing.
  std::vector<std::string> notes;
  ISOFLOP_ASSIGN_OR_RETURN(auto points, store::ReadObservations(args.file, args.columns, &notes));
  for (const std::string& n : notes) std::cerr << "warning: " << n << "\n";
  ISOFLOP_ASSIGN_OR_RETURN(auto db, store::Store::Open(ctx.db_path));
  ISOFLOP_ASSIGN_OR_RETURN(int64_t id,
                           db->ImportObservations(args.name, args.file, points, args.replace));
  double min_loss = points[0].loss, max_loss = points[0].loss;
  for (const auto& p : points) {
    min_loss = std::min(min_loss, p.loss);
    max_loss = std::max(max_loss, p.loss);
  }
  std::cout << "imported " << points.size() << " observations from " << args.file << " as set '"
            << args.name << "' (id " << id << ") into " << db->path() << "; loss " << min_loss
            << " .. " << max_loss;
  // G and the budget are per row: a row's empty cell records none.
  auto rows_without = [&](size_t with) {
    return with == points.size() ? std::string()
                                 : " (none on " + std::to_string(points.size() - with) + " of " +
                                       std::to_string(points.size()) + " rows)";
  };
  std::set<double> gs, budgets;
  size_t with_g = 0, with_budget = 0;
  for (const auto& p : points) {
    if (p.g) gs.insert(*p.g), ++with_g;
    if (p.budget) budgets.insert(*p.budget), ++with_budget;
  }
  if (!gs.empty())
    std::cout << "; granularity G " << *gs.begin() << " .. " << *gs.rbegin()
              << rows_without(with_g);
  if (!budgets.empty()) {
    std::cout << "; " << budgets.size() << " isoFLOP budgets recorded" << rows_without(with_budget);
  } else {
    std::cout << "; no isoFLOP budgets recorded (the isoFLOP fit will cluster C = 6ND; a "
                 "budget column holds them: --budget-column)";
  }
  std::cout << "\n";
  return Status::Ok();
}

void AddImportCommand(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<ImportArgs>();
  CLI::App* cmd = app.add_subcommand(
      "import",
      "Import (N, D or C, loss[, G, budget]) observations from a CSV or JSON file as a named set");
  cmd->add_option("file", args->file,
                  "CSV file with a header line, or JSON: an array of objects or JSON lines "
                  "(.json, .jsonl)")
      ->required();
  cmd->add_option("--name", args->name, "Name of the observation set")->required();
  AddCsvColumnOptions(cmd, &args->columns);
  cmd->add_flag("--replace", args->replace, "Replace an existing set of the same name");
  cmd->callback([&ctx, args] { ctx.status = RunImport(ctx, *args); });
}

Status RunListObservations(const Context& ctx, const std::string& format_name) {
  ISOFLOP_ASSIGN_OR_RETURN(Format format, ParseFormat(format_name));
  store::OpenOptions opts;
  opts.create_if_missing = false;
  ISOFLOP_ASSIGN_OR_RETURN(auto db, store::Store::Open(ctx.db_path, opts));
  ISOFLOP_ASSIGN_OR_RETURN(auto sets, db->ListObservationSets());
  Table t;
  t.columns = {{"id", ""}, {"name", ""}, {"points", ""}, {"source_file", ""}, {"created_at", ""}};
  for (const auto& s : sets)
    t.rows.push_back({s.id, s.name, s.n_points, s.source_file, s.created_at});
  Print(std::cout, t, format);
  return Status::Ok();
}

void AddObservationsCommand(CLI::App& app, Context& ctx) {
  auto format = std::make_shared<std::string>("table");
  CLI::App* cmd = app.add_subcommand("observations", "List imported observation sets");
  cmd->add_option("--format", *format, "table | csv | json")
      ->check(OneOf({"table", "csv", "json"}))
      ->capture_default_str();
  cmd->callback([&ctx, format] { ctx.status = RunListObservations(ctx, *format); });
}

}  // namespace

ISOFLOP_REGISTER_COMMAND("import", 60, AddImportCommand);
ISOFLOP_REGISTER_COMMAND("observations", 61, AddObservationsCommand);

void AddCsvColumnOptions(CLI::App* cmd, store::CsvColumns* columns, CLI::Option* needs) {
  std::vector<CLI::Option*> added = {
      cmd->add_option("--n-column", columns->n, "Column holding N (parameters)"),
      cmd->add_option("--d-column", columns->d, "Column holding D (training tokens)"),
      cmd->add_option("--c-column", columns->c,
                      "Column holding C (training FLOPs); D = C / (k N) when there is no D column"),
      cmd->add_option("--loss-column", columns->loss, "Column holding the final loss"),
      cmd->add_option("--g-column", columns->g,
                      "Column holding the MoE granularity G (optional; recognised: g, "
                      "granularity); needed by `isoflop fit --form moe`"),
      cmd->add_option("--budget-column", columns->budget,
                      "Column holding each run's nominal isoFLOP budget (recognised: budget, "
                      "compute_budget, budget_flops, isoflop_budget; or a C/flops column beside "
                      "D whose values repeat); the isoFLOP fit groups by it"),
      cmd->add_option("--where", columns->where,
                      "COLUMN=VALUE: read only the rows whose COLUMN is VALUE (repeatable, all "
                      "must hold): one experiment of a file that mixes several"),
      cmd->add_option("--flops-per-param-token", columns->flops_per_param_token,
                      "k in C = k N D used to derive D from C")
          ->capture_default_str()};
  if (needs) {
    for (CLI::Option* o : added) o->needs(needs);
  }
}

}  // namespace isoflop::cli
