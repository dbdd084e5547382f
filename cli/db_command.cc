// `isoflop db info`: where the store is, its schema version and how much it holds.
#include <iostream>

#include "command.h"
#include "isoflop/store/store.h"
#include "output.h"

namespace isoflop::cli {
namespace {

Status RunDbInfo(const Context& ctx, const std::string& format_name) {
  ISOFLOP_ASSIGN_OR_RETURN(Format format, ParseFormat(format_name));
  store::OpenOptions opts;
  opts.create_if_missing = false;
  ISOFLOP_ASSIGN_OR_RETURN(auto db, store::Store::Open(ctx.db_path, opts));
  ISOFLOP_ASSIGN_OR_RETURN(store::DbInfo info, db->Info());
  Table t;
  t.columns = {{"key", ""}, {"value", ""}};
  auto row = [&](const std::string& k, nlohmann::json v) { t.rows.push_back({k, std::move(v)}); };
  row("path", info.path);
  row("schema_version", info.schema_version);
  row("journal_mode", info.journal_mode);
  row("sweeps", info.sweeps);
  row("runs", info.runs);
  row("metrics", info.metrics);
  row("fits", info.fits);
  row("observation_sets", info.observation_sets);
  row("observations", info.observations);
  if (format == Format::kJson) {
    nlohmann::json obj;
    for (const auto& r : t.rows) obj[r[0].get<std::string>()] = r[1];
    std::cout << obj.dump(2) << "\n";
    return Status::Ok();
  }
  Print(std::cout, t, format);
  return Status::Ok();
}

void AddDbCommand(CLI::App& app, Context& ctx) {
  CLI::App* db = app.add_subcommand("db", "Inspect the SQLite store");
  db->require_subcommand(1);
  CLI::App* info = db->add_subcommand("info", "Path, schema version and row counts");
  auto format = std::make_shared<std::string>("table");
  info->add_option("--format", *format, "table | csv | json")
      ->check(OneOf({"table", "csv", "json"}))
      ->capture_default_str();
  info->callback([&ctx, format] { ctx.status = RunDbInfo(ctx, *format); });
}

}  // namespace

ISOFLOP_REGISTER_COMMAND("db", 90, AddDbCommand);

}  // namespace isoflop::cli
