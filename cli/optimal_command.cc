// `isoflop optimal`: compute-optimal N and D (with bootstrap intervals) from the latest stored
// parametric fit, a chosen fit (--fit ID) or given parameters (--given E=..,A=..,...).
#include <cmath>
#include <optional>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "command.h"
#include "fit_text.h"
#include "isoflop/analysis/dataset.h"
#include "isoflop/analysis/moe_sizing.h"
#include "isoflop/fit/run_fit.h"
#include "isoflop/store/store.h"
#include "output.h"

namespace isoflop::cli {
namespace {

struct OptimalArgs {
  std::string compute, compute_range, given, sweep, observations, format = "table";
  double params = 0, loss = 0, inference_tokens = 0;
  double loss_floor = 0;  // a known lower bound of the loss; 0 = the stored fit's, if any
  double granularity = 0;  // moe form: the G to answer at; 0 = 1 (said so)
  int64_t fit_id = 0;
  bool fit_given = false;  // --fit was on the command line
  bool params_given = false, loss_given = false;  // likewise --params, --loss (0 = not asked)
};

// Most budgets one command answers: a table for people or a curve for a program; one more
// digit of COUNT (1e8) allocated gigabytes and died of std::bad_alloc.
constexpr int kMaxBudgets = 10000;

// Budgets from --compute a,b,c or --compute-range lo:hi:count (log-spaced).
Result<std::vector<double>> Budgets(const OptimalArgs& args) {
  std::vector<double> cs;
  if (!args.compute.empty()) {
    ISOFLOP_ASSIGN_OR_RETURN(cs, ParseBudgetList(args.compute, "--compute", kMaxBudgets));
  }
  if (!args.compute_range.empty()) {
    const auto parts = Split(args.compute_range, ':');
    if (parts.size() != 3)
      return Status::InvalidArgument("--compute-range: expected LO:HI:COUNT, e.g. 1e19:1e23:5");
    ISOFLOP_ASSIGN_OR_RETURN(double lo, ParseNumber(parts[0], "--compute-range"));
    ISOFLOP_ASSIGN_OR_RETURN(double hi, ParseNumber(parts[1], "--compute-range"));
    ISOFLOP_ASSIGN_OR_RETURN(double count, ParseNumber(parts[2], "--compute-range"));
    if (hi < lo) {
      return Status::InvalidArgument("--compute-range: HI " + parts[1] + " is below LO " +
                                     parts[0] + "; expected LO:HI:COUNT with LO <= HI");
    }
    if (count != std::floor(count) || count > kMaxBudgets) {
      return Status::InvalidArgument("--compute-range: COUNT '" + parts[2] +
                                     "' must be a whole number of budgets from 1 to " +
                                     std::to_string(kMaxBudgets));
    }
    const int k = static_cast<int>(count);
    for (int i = 0; i < k; ++i)
      cs.push_back(k == 1 ? lo
                          : std::exp(std::log(lo) + (std::log(hi) - std::log(lo)) * i / (k - 1)));
  }
  return cs;
}

// The stored fit's known loss floor: the data's entropy (`sweep run`) or --loss-floor of
// `isoflop fit`, from the options it was stored with; NaN when none.
double StoredFloor(const nlohmann::json& options, std::string* name) {
  for (const char* key : {"entropy", "loss_floor"}) {
    const auto it = options.find(key);
    if (it != options.end() && it->is_number() && it->get<double>() > 0) {
      *name = std::string(key) == "entropy" ? "the data's entropy" : "the fit's --loss-floor";
      return it->get<double>();
    }
  }
  return NAN;
}

// The law of --given E=..,A=..,B=..,alpha=..,beta=..: each parameter once, nothing else.
Result<fit::ScalingLaw> GivenLaw(const std::string& given) {
  std::map<std::string, double> named;
  for (const auto& kv : Split(given, ',')) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos)
      return Status::InvalidArgument("--given: '" + kv + "' is not NAME=VALUE");
    const std::string key = kv.substr(0, eq);
    if (key != "E" && key != "A" && key != "B" && key != "alpha" && key != "beta") {
      return Status::InvalidArgument("--given: '" + key +
                                     "' is not a parameter of the law (E, A, B, alpha, beta)");
    }
    if (named.count(key)) return Status::InvalidArgument("--given: " + key + " given twice");
    ISOFLOP_ASSIGN_OR_RETURN(named[key], ParseNumber(kv.substr(eq + 1), "--given " + key));
  }
  return fit::ChinchillaLaw(named);
}

Result<fit::RecordLaw> LoadLaw(const Context& ctx, const OptimalArgs& args, double* floor,
                               std::string* floor_name,
                               std::optional<analysis::MoeSizing>* sizing) {
  if (!args.given.empty()) {
    ISOFLOP_ASSIGN_OR_RETURN(fit::ScalingLaw law, GivenLaw(args.given));
    return fit::RecordLaw{law, {}, 0.95};
  }
  store::OpenOptions opts;
  opts.create_if_missing = false;
  ISOFLOP_ASSIGN_OR_RETURN(auto db, store::Store::Open(ctx.db_path, opts));
  std::optional<analysis::StoredFit> stored;
  if (args.fit_id > 0) {
    ISOFLOP_ASSIGN_OR_RETURN(stored, analysis::LoadFit(*db, args.fit_id));
  } else if (!args.sweep.empty() || !args.observations.empty()) {
    const std::string kind = args.sweep.empty() ? "observations" : "sweep";
    const std::string name = args.sweep.empty() ? args.observations : args.sweep;
    ISOFLOP_ASSIGN_OR_RETURN(stored, analysis::LatestFit(*db, kind, name, "parametric"));
    if (!stored)
      return Status::NotFound("no parametric fit of " + kind + " '" + name + "' in " + ctx.db_path +
                              "; run `isoflop fit --" + kind + " " + name + "` first");
  } else {
    ISOFLOP_ASSIGN_OR_RETURN(auto fits, db->ListFits());
    int64_t newest = 0;
    for (const auto& f : fits)
      if (f.method == "parametric") newest = std::max(newest, f.id);
    if (newest == 0)
      return Status::NotFound("no parametric fit stored in " + ctx.db_path +
                              "; run `isoflop fit` first or pass --given E=..,A=..,B=..,alpha=..,"
                              "beta=..");
    ISOFLOP_ASSIGN_OR_RETURN(stored, analysis::LoadFit(*db, newest));
  }
  *floor = StoredFloor(stored->options, floor_name);
  // An MoE fit (N = active parameters) carries how its sweep's total parameters follow.
  if (const auto it = stored->options.find("moe_sizing"); it != stored->options.end()) {
    Result<analysis::MoeSizing> s = analysis::MoeSizing::FromJson(*it);
    if (!s.ok()) return s.status().WithPrefix("stored fit " + std::to_string(stored->id));
    *sizing = *s;
  }
  Result<fit::RecordLaw> law = fit::LawFromRecord(stored->record);
  if (!law.ok()) return law.status().WithPrefix("stored fit " + std::to_string(stored->id));
  return law;
}

nlohmann::json Ci(const fit::Answer& a, const char* key, bool lo) {
  auto it = a.ci.find(key);
  if (it == a.ci.end()) return nullptr;
  return lo ? it->second.lo : it->second.hi;
}

// The numeric options CLI11 parsed: each must be a finite number in its range.
Status ValidateArgs(const OptimalArgs& args) {
  auto non_negative = [](double v, const char* flag, const char* what) -> Status {
    if (v >= 0 && std::isfinite(v)) return Status::Ok();
    return Status::InvalidArgument(std::string(flag) + ": expected " + what + ", got " +
                                   Human(v, 6));
  };
  ISOFLOP_RETURN_IF_ERROR(non_negative(args.inference_tokens, "--inference-tokens",
                                       "a number of tokens >= 0 (0 = no inference)"));
  // 0 stands for "not asked" in the struct; on the command line it is a question with no answer.
  auto positive = [&](double v, bool given, const char* flag, const char* what) -> Status {
    if (given && v == 0)
      return Status::InvalidArgument(std::string(flag) + ": expected " + what + ", got 0");
    return non_negative(v, flag, what);
  };
  ISOFLOP_RETURN_IF_ERROR(
      positive(args.params, args.params_given, "--params", "a number of parameters > 0"));
  ISOFLOP_RETURN_IF_ERROR(positive(args.loss, args.loss_given, "--loss", "a loss > 0"));
  ISOFLOP_RETURN_IF_ERROR(non_negative(args.loss_floor, "--loss-floor", "a loss >= 0 (0 = none)"));
  ISOFLOP_RETURN_IF_ERROR(
      non_negative(args.granularity, "--granularity", "a granularity G > 0 (moe form)"));
  if (args.fit_id < 0 || (args.fit_given && args.fit_id == 0)) {
    return Status::InvalidArgument(
        "--fit: expected a stored fit id >= 1 (see `isoflop fits`), got " +
        std::to_string(args.fit_id));
  }
  return Status::Ok();
}

// The queries the flags ask for; InvalidArgument (a usage error) for a flag out of range, an
// unreadable budget list or --given law, or no query at all.
Result<std::vector<fit::Query>> Queries(const OptimalArgs& args) {
  ISOFLOP_RETURN_IF_ERROR(ValidateArgs(args));
  if (!args.given.empty()) ISOFLOP_RETURN_IF_ERROR(GivenLaw(args.given).status());
  ISOFLOP_ASSIGN_OR_RETURN(std::vector<double> budgets, Budgets(args));
  std::vector<fit::Query> queries;
  using Kind = fit::Query::Kind;
  for (double c : budgets)
    queries.push_back(
        {args.inference_tokens > 0 ? Kind::kInference : Kind::kCompute, c, args.inference_tokens});
  if (args.params > 0) queries.push_back({Kind::kParams, args.params, 0});
  if (args.loss > 0) queries.push_back({Kind::kLoss, args.loss, 0});
  if (queries.empty())
    return Status::InvalidArgument("give --compute, --compute-range, --params or --loss");
  return queries;
}

Status RunOptimal(const Context& ctx, const OptimalArgs& args,
                  const std::vector<fit::Query>& queries) {
  using Kind = fit::Query::Kind;
  ISOFLOP_ASSIGN_OR_RETURN(Format format, ParseFormat(args.format));
  double floor = NAN;
  std::string floor_name;
  std::optional<analysis::MoeSizing> moe;
  ISOFLOP_ASSIGN_OR_RETURN(fit::RecordLaw law, LoadLaw(ctx, args, &floor, &floor_name, &moe));
  if (args.loss_floor > 0) floor = args.loss_floor, floor_name = "the given --loss-floor";
  // The moe form (Krajewski et al. 2024) answers at one granularity G.
  if (law.law.form == "moe") {
    law.law.g = args.granularity > 0 ? args.granularity : 1.0;
    std::cerr << "moe form: answered at granularity G = " << Human(law.law.g)
              << (args.granularity > 0 ? "" : " (--granularity G for another)") << "\n";
  } else if (args.granularity > 0) {
    return Status::InvalidArgument("--granularity: only for a fit of the moe form; this one is " +
                                   law.law.form);
  }
  double fitted_e = NAN;
  if (law.law.form == "chinchilla" && !law.law.params.empty()) fitted_e = law.law.params[0];
  Table t;
  // Sizes to 4 significant digits with an exponent, trailing zeros kept ("1.420e+05" beside
  // "7.072e+04", "2.825e+03" rather than "2825."): a column of estimates and bounds reads alike.
  const char* sig4 = "%.3e";
  t.columns = {{"query", ""},  {"compute", "%.4g"}, {"n_opt", sig4},
               {"n_lo", sig4}, {"n_hi", sig4},      {"d_opt", sig4},
               {"d_lo", sig4}, {"d_hi", sig4},      {"tokens_per_param", "%.2f"},
               {"loss", "%.4f"}, {"loss_lo", "%.4f"}, {"loss_hi", "%.4f"}};
  const bool inference = args.inference_tokens > 0;
  if (inference)
    t.columns.insert(t.columns.end(),
                     {{"n_inference", sig4}, {"d_inference", sig4}, {"total_flops", "%.4g"}});
  // An MoE fit: n_opt is active parameters; the model to build holds every expert.
  if (moe)
    t.columns.insert(t.columns.end(), {{"n_total", sig4},
                                       {"n_total_lo", sig4},
                                       {"n_total_hi", sig4},
                                       {"train_state_gib", "%.4g"},
                                       {"serve_gib", "%.4g"}});
  std::vector<std::string> warnings;
  for (const auto& q : queries) {
    ISOFLOP_ASSIGN_OR_RETURN(fit::Answer a, fit::AnswerQuery(law.law, q, law.draws, law.ci_level));
    const char* name = q.kind == Kind::kParams ? "params"
                       : q.kind == Kind::kLoss ? "loss"
                                               : "compute";
    // A budget the user gave is echoed exactly, not recomputed as 6·N·D.
    const bool budget_query = q.kind == Kind::kCompute || q.kind == Kind::kInference;
    std::vector<nlohmann::json> row = {name,
                                       budget_query ? q.value : a.point.c,
                                       a.point.n,
                                       Ci(a, "n", true),
                                       Ci(a, "n", false),
                                       a.point.d,
                                       Ci(a, "d", true),
                                       Ci(a, "d", false),
                                       a.point.tokens_per_param,
                                       a.point.loss,
                                       Ci(a, "loss", true),
                                       Ci(a, "loss", false)};
    if (inference) {
      if (q.kind == Kind::kInference) {
        row.insert(row.end(),
                   {a.inference.chosen.n, a.inference.chosen.d, a.inference.total_flops});
      } else {
        row.insert(row.end(), {nullptr, nullptr, nullptr});
      }
    }
    if (moe) {
      const double total = moe->Total(a.point.n);
      auto total_at = [&](const nlohmann::json& n) {
        return n.is_number() ? nlohmann::json(moe->Total(n.get<double>())) : nlohmann::json();
      };
      constexpr double kGiB = 1024.0 * 1024 * 1024;
      row.insert(row.end(),
                 {total, total_at(Ci(a, "n", true)), total_at(Ci(a, "n", false)),
                  total * analysis::kTrainStateBytesPerParam / kGiB,
                  total * analysis::kServeBytesPerParam / kGiB});
    }
    t.rows.push_back(row);
    if (a.ci_draws_unbounded > 0) {
      warnings.push_back("loss " + Human(q.value) + ": " + std::to_string(a.ci_draws_unbounded) +
                         " of " + std::to_string(a.ci_draws_used) +
                         " bootstrap draws never reach it (their law's floor is above it): they "
                         "count as unbounded N and D, so an upper end may be inf");
    }
    // An interval that misses its own point came from draws in other optima than the fit's.
    for (const fit::IntervalExclusion& e :
         fit::PointsOutsideIntervals({{"n", a.point.n},
                                      {"d", a.point.d},
                                      {"tokens_per_param", a.point.tokens_per_param},
                                      {"loss", a.point.loss}},
                                     a.ci))
      warnings.push_back(std::string(name) + " " + Human(budget_query ? q.value : a.point.c) +
                         ": " + IntervalWarning(e.name, e.value, e.lo, e.hi));
    // Far beyond the fitted range nothing checks the law (its extrapolation check holds out
    // one budget inside it): said, not refused.
    if (const std::string far = fit::FarComputeWarning(law, a.point.c); !far.empty())
      warnings.push_back("warning: " + std::string(name) + " " +
                         Human(budget_query ? q.value : a.point.c) + ": " + far);
    for (const std::string& w : LossFloorWarnings(
             {{std::string(name) + " " + Human(budget_query ? q.value : a.point.c), a.point.loss}},
             fitted_e, floor, floor_name))
      warnings.push_back(w);
  }
  Print(std::cout, t, format);
  if (moe) {
    std::cerr << "MoE fit (" << moe->n_experts
              << " routed experts): n_opt is active parameters per token; n_total counts every "
                 "expert, from the sweep's "
              << moe->runs << " runs (log-log line over N_active " << Human(moe->n_active_lo)
              << ".." << Human(moe->n_active_hi) << ", within "
              << Human(100 * moe->max_rel_error, 2)
              << "% of them; extrapolated outside); train_state_gib = fp32 weights, gradients "
                 "and AdamW moments of n_total (16 bytes each, activations extra); serve_gib = "
                 "bf16 weights\n";
  }
  for (const std::string& w : warnings) std::cerr << w << "\n";
  return Status::Ok();
}

void AddOptimalCommand(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<OptimalArgs>();
  CLI::App* cmd = app.add_subcommand(
      "optimal", "Compute-optimal N and D (with bootstrap intervals) from a stored fit");
  cmd->add_option("--compute", args->compute, "Budget(s) in FLOPs, comma-separated: 1e21,1e22");
  cmd->add_option("--compute-range", args->compute_range, "LO:HI:COUNT log-spaced budgets");
  auto* params_opt =
      cmd->add_option("--params", args->params, "Best D (and budget) for a model of N parameters");
  auto* loss_opt =
      cmd->add_option("--loss", args->loss, "Least compute (and N, D) reaching this loss");
  cmd->add_option("--granularity", args->granularity,
                  "moe form: answer at this MoE granularity G (default 1)");
  cmd->add_option("--inference-tokens", args->inference_tokens,
                  "Also size for T inference tokens (Sardana 2023: minimise 6ND + 2NT)");
  auto* fit_opt =
      cmd->add_option("--fit", args->fit_id, "Use this stored fit id (default: latest parametric)");
  auto* sweep_opt =
      cmd->add_option("--sweep", args->sweep, "Use the latest parametric fit of this sweep")
          ->excludes(fit_opt);
  cmd->add_option("--observations", args->observations,
                  "Use the latest parametric fit of this observation set")
      ->excludes(fit_opt)
      ->excludes(sweep_opt);
  cmd->add_option("--given", args->given, "Use these parameters: E=..,A=..,B=..,alpha=..,beta=..");
  cmd->add_option("--loss-floor", args->loss_floor,
                  "A known lower bound of the loss (the data's entropy): warn when a predicted "
                  "loss is below it (default: the one stored with the fit, if any)");
  cmd->add_option("--format", args->format, "table | csv | json")
      ->check(OneOf({"table", "csv", "json"}))
      ->capture_default_str();
  cmd->callback([&ctx, args, fit_opt, params_opt, loss_opt] {
    args->fit_given = fit_opt->count() > 0;
    args->params_given = params_opt->count() > 0;
    args->loss_given = loss_opt->count() > 0;
    Result<std::vector<fit::Query>> queries = Queries(*args);
    if (FlagsOk(ctx, queries.status())) ctx.status = RunOptimal(ctx, *args, *queries);
  });
}

}  // namespace

ISOFLOP_REGISTER_COMMAND("optimal", 42, AddOptimalCommand);

}  // namespace isoflop::cli
