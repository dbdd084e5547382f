// `isoflop curves`: every curve a figure of a fit draws (frontier and bootstrap band, loss
// surface, residuals, parabolas, power laws), evaluated by the fit library, as one JSON
// document for programs (the notebook and the dashboard draw these; docs/fit-json.md).
#include <iostream>

#include "command.h"
#include "isoflop/analysis/curves.h"
#include "isoflop/store/store.h"

namespace isoflop::cli {
namespace {

struct CurvesArgs {
  int64_t fit_id = 0;
  std::string sweep, observations;
};

// Exactly one source, and a fit id >= 1.
Status CheckFlags(const CurvesArgs& args) {
  const int given = (args.fit_id != 0) + !args.sweep.empty() + !args.observations.empty();
  if (given != 1) {
    return Status::InvalidArgument(
        "give exactly one of --fit ID, --sweep NAME or --observations NAME");
  }
  if (args.fit_id < 0) return Status::InvalidArgument("--fit: expected a fit id >= 1");
  return Status::Ok();
}

Status RunCurves(const Context& ctx, const CurvesArgs& args) {
  store::OpenOptions ro;
  ro.read_only = true;
  ISOFLOP_ASSIGN_OR_RETURN(auto db, store::Store::Open(ctx.db_path, ro));
  if (args.fit_id > 0) {
    ISOFLOP_ASSIGN_OR_RETURN(analysis::StoredFit fit, analysis::LoadFit(*db, args.fit_id));
    analysis::Source source;
    if (fit.source_kind == "sweep") {
      source.kind = analysis::Source::Kind::kSweep;
    } else if (fit.source_kind == "observations") {
      source.kind = analysis::Source::Kind::kObservations;
    } else {
      source.kind = analysis::Source::Kind::kCsv;
    }
    source.name = fit.source_name;
    analysis::LoadOptions lo;
    lo.convention = fit.record.convention;
    lo.curves = false;
    ISOFLOP_ASSIGN_OR_RETURN(analysis::Dataset data, analysis::LoadDataset(db.get(), source, lo));
    ISOFLOP_ASSIGN_OR_RETURN(nlohmann::json curves, analysis::FitCurves(fit, data));
    std::cout << curves.dump() << "\n";
    return Status::Ok();
  }
  analysis::Source source;
  source.kind =
      args.sweep.empty() ? analysis::Source::Kind::kObservations : analysis::Source::Kind::kSweep;
  source.name = args.sweep.empty() ? args.observations : args.sweep;
  // An unknown name is an error, not an empty document (a typo would look like "no fits yet").
  if (source.kind == analysis::Source::Kind::kSweep) {
    ISOFLOP_ASSIGN_OR_RETURN(auto sweep, db->GetSweep(source.name));
    if (!sweep) return Status::NotFound("no sweep named '" + source.name + "' in " + ctx.db_path);
  } else {
    ISOFLOP_RETURN_IF_ERROR(db->GetObservations(source.name).status());
  }
  ISOFLOP_ASSIGN_OR_RETURN(nlohmann::json curves, analysis::SourceCurves(*db, source));
  std::cout << curves.dump() << "\n";
  return Status::Ok();
}

void AddCurvesCommand(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<CurvesArgs>();
  CLI::App* cmd = app.add_subcommand(
      "curves", "Evaluated curves of a fit (frontier, band, surface, residuals) as JSON");
  cmd->add_option("--fit", args->fit_id, "A stored fit's id");
  cmd->add_option("--sweep", args->sweep, "The newest fit of each method of this sweep");
  cmd->add_option("--observations", args->observations,
                  "The newest fit of each method of this observation set");
  cmd->callback([&ctx, args] {
    if (FlagsOk(ctx, CheckFlags(*args))) ctx.status = RunCurves(ctx, *args);
  });
}

}  // namespace

ISOFLOP_REGISTER_COMMAND("curves", 75, AddCurvesCommand);

}  // namespace isoflop::cli
