// `isoflop fit` (read observations from a sweep, an imported set or a CSV; run the fit library;
// store the fit) and `isoflop fits` (list stored fits).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "command.h"
#include "fit_text.h"
#include "isoflop/analysis/dataset.h"
#include "isoflop/analysis/moe_sizing.h"
#include "isoflop/fit/form.h"
#include "isoflop/fit/run_fit.h"
#include "isoflop/store/observations_csv.h"
#include "isoflop/store/store.h"
#include "output.h"
#include "stored_sweep.h"

namespace isoflop::cli {
namespace {

struct FitArgs {
  std::string sweep, observations, csv;
  store::CsvColumns csv_columns;
  std::string method = "parametric", form = "chinchilla", convention = "total";
  std::string format = "table";
  int bootstrap = 0, exclude_top_loss = 0, threads = 0;
  double budget_tol = 0.05;
  bool keep_outside_range = false, cross_validate = false;
  std::string isoflop_estimator = "parabola";
  uint64_t seed = 0;
  std::vector<std::string> fix;
  bool no_store = false;
  std::string loss = "huber";
  double huber_delta = 1e-3;
  double loss_floor = 0;  // a known lower bound of the loss (the data's entropy); 0 = none
  int n_experts = -1;     // sweeps: only the runs with this many routed experts (-1 = all)
  std::string at;         // --at C,...: budgets of the N_opt, D_opt and loss intervals
};

// The budgets the bootstrap gives N_opt, D_opt, tokens per parameter and the loss at, without
// --at: a sweep's report budgets (those `sweep run` answers for: its next budget up); else
// Chinchilla's scale, 1e19, 1e21 and 1e23.
Result<std::vector<double>> DefaultDerivedBudgets(const std::string& sweep_name, store::Store* db) {
  if (!sweep_name.empty() && db != nullptr) {
    ISOFLOP_ASSIGN_OR_RETURN(auto sweep, db->GetSweep(sweep_name));
    if (sweep) {
      Result<sweep::SweepConfig> cfg = StoredSweepConfig(*db, *sweep);
      if (cfg.ok() && !cfg->report_budgets.empty()) return cfg->report_budgets;
    }
  }
  return std::vector<double>{1e19, 1e21, 1e23};
}

// Parses "--fix E=1.7" (fixed value) and "--fix beta=alpha" (tie) into the options. A value
// that is neither a number nor a parameter of the form is named as such (not as a bad tie).
Status ParseFixes(const std::vector<std::string>& fixes, const std::string& form_name,
                  fit::ParametricOptions* opt) {
  for (const std::string& f : fixes) {
    const auto eq = f.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == f.size())
      return Status::InvalidArgument("--fix '" + f + "': expected NAME=VALUE or NAME=OTHER");
    const std::string name = f.substr(0, eq), value = f.substr(eq + 1);
    char* end = nullptr;
    const double v = std::strtod(value.c_str(), &end);
    if (end == value.c_str() + value.size()) {
      opt->fixed[name] = v;
      continue;
    }
    if (Result<const fit::Form*> form = fit::GetForm(form_name);
        form.ok() && (*form)->IndexOf(value) < 0) {
      std::string names;
      for (const fit::ParamSpec& p : (*form)->params())
        names += (names.empty() ? "" : ", ") + p.name;
      return Status::InvalidArgument("--fix '" + f + "': '" + value +
                                     "' is neither a number nor a parameter of the " + form_name +
                                     " form (" + names + ")");
    }
    opt->ties.emplace_back(value, name);
  }
  return Status::Ok();
}

// options_json "fix": each held parameter's value, each tied one's leader ({"E": 1.7,
// "beta": "alpha"}), the shape `sweep run` stores too.
nlohmann::json FixJson(const fit::ParametricOptions& p) {
  nlohmann::json fix = nlohmann::json::object();
  for (const auto& [name, value] : p.fixed) fix[name] = value;
  for (const auto& [lead, follow] : p.ties) fix[follow] = lead;
  return fix;
}

// The moe form (Krajewski et al. 2024) fits how loss falls with granularity G: without a G for
// every observation, or with one G for all, its γ and g are not identified. Returns
// FailedPrecondition saying how to supply G, else Ok. `source` names the data in messages.
Status CheckGranularity(const analysis::Dataset& data, const std::string& source,
                        const std::string& fix) {
  const size_t missing = data.points_without_g;
  std::set<double> values;
  for (const auto& p : data.points)
    if (p.g) values.insert(*p.g);
  if (missing > 0) {
    return Status::FailedPrecondition(
        "--form moe needs the MoE granularity G of every observation, but " + source + " has " +
        (missing == data.points.size() ? std::string("none")
                                       : "none for " + std::to_string(missing) + " of " +
                                             std::to_string(data.points.size()) + " points") +
        "; " + fix);
  }
  if (values.size() < 2) {
    return Status::FailedPrecondition(
        "--form moe needs observations at two or more granularities "
        "G to fit gamma, but every point of " +
        source + " has " +
        (values.empty() ? std::string("no G") : "G = " + Human(*values.begin(), 6)));
  }
  return Status::Ok();
}

// The loss a parametric fit minimised, from its result_json: "summed Huber (delta 0.001)" or
// "log-MSE (1/2 sum r^2)"; brief: "huber(0.001)" or "mse". "" for other methods. Fits stored
// before the loss was recorded are Huber fits.
std::string LossLabel(const nlohmann::json& result, bool brief) {
  const auto p = result.find("parametric");
  if (p == result.end() || !p->is_object()) return "";
  if (p->value("loss", std::string("huber")) == "mse")
    return brief ? "mse" : "log-MSE (1/2 sum r^2)";
  const auto d = p->find("huber_delta");
  const std::string delta =
      d != p->end() && d->is_number() ? Human(d->get<double>(), 3) : std::string("?");
  return brief ? "huber(" + delta + ")" : "summed Huber (delta " + delta + ")";
}

// The record as `--format json` prints it: every column, with its store id (0: not stored).
nlohmann::json RecordJson(const fit::FitRecord& r, int64_t id) {
  nlohmann::json j = fit::ToJson(r);
  j["id"] = id;
  return j;
}

// The point value beside which a table prints the interval `name`: a parameter, a derived
// quantity of a parametric fit (result "derived": a, b, N_opt@C, loss@C, ...), or the isoFLOP
// power law's own names for its exponents and coefficients.
nlohmann::json PointOf(const fit::FitRecord& r, const std::string& name) {
  if (auto it = r.params.find(name); it != r.params.end()) return it->second;
  if (auto d = r.result.find("derived"); d != r.result.end() && d->is_object()) {
    if (auto v = d->find(name); v != d->end() && v->is_number()) return *v;
  }
  return nullptr;
}

// isoFLOP and envelope fits name their power laws n_opt_a, d_opt_b, n_opt_k, d_opt_k; their
// bootstrap intervals are a, b, k_n, k_d. One row each, the interval beside its value.
const char* IntervalNameOf(const std::string& param) {
  if (param == "n_opt_a") return "a";
  if (param == "d_opt_b") return "b";
  if (param == "n_opt_k") return "k_n";
  if (param == "d_opt_k") return "k_d";
  return nullptr;
}

// Predicted losses of a parametric record below its fitted E or below `floor` (0 = none).
std::vector<std::string> FloorWarnings(const fit::FitRecord& r, double floor) {
  std::vector<std::pair<std::string, double>> losses;
  if (auto d = r.result.find("derived"); d != r.result.end() && d->is_object())
    for (const auto& [k, v] : d->items())
      if (k.rfind("loss@", 0) == 0 && v.is_number()) losses.emplace_back(k, v.get<double>());
  const auto e = r.params.find("E");
  return LossFloorWarnings(losses, e != r.params.end() ? e->second : NAN, floor > 0 ? floor : NAN,
                           "the given --loss-floor");
}

void PrintRecord(const fit::FitRecord& r, int64_t id, Format format, double floor) {
  if (format == Format::kJson) {
    std::cout << RecordJson(r, id).dump(2) << "\n";
    for (const std::string& w : FloorWarnings(r, floor)) std::cerr << w << "\n";
    return;
  }
  std::cout << (id > 0 ? "fit " + std::to_string(id) : std::string("fit (not stored)")) << ": "
            << r.method << (r.form.empty() ? "" : " " + r.form) << ", " << r.n_points
            << " points, N convention " << r.convention << ", FLOPs " << r.flops_convention;
  if (std::isfinite(r.objective))
    std::cout << ", " << LossLabel(r.result, false) << " objective " << r.objective;
  std::cout << "\n";
  // `result` is const: operator[] on a missing key would be undefined, so find() and value().
  if (auto p = r.result.find("parametric"); p != r.result.end() && p->is_object()) {
    auto count = [&](const char* key) {
      auto it = p->find(key);
      return it != p->end() && it->is_number() ? std::to_string(it->get<int64_t>())
                                               : std::string("?");
    };
    std::cout << "starts: " << count("starts_total") << " total, " << count("starts_converged")
              << " converged, " << count("starts_at_best") << " at the best, "
              << count("starts_pruned") << " pruned\n";
  }
  Table t;
  t.columns = {{"quantity", ""}, {"value", "%.6g"}, {"ci_lo", "%.6g"}, {"ci_hi", "%.6g"}};
  std::set<std::string> shown;
  auto bound = [](const fit::Interval& iv, bool lo) {
    const double v = lo ? iv.lo : iv.hi;
    return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
  };
  for (const auto& [k, v] : r.params) {
    const char* alias = IntervalNameOf(k);
    auto it = r.ci.find(k);
    if (it == r.ci.end() && alias) it = r.ci.find(alias);
    if (it != r.ci.end()) shown.insert(it->first);
    t.rows.push_back({alias && it != r.ci.end() ? k + " (" + alias + ")" : k, v,
                      it != r.ci.end() ? bound(it->second, true) : nlohmann::json(),
                      it != r.ci.end() ? bound(it->second, false) : nlohmann::json()});
  }
  for (const auto& [k, v] : r.ci)
    if (!shown.count(k)) t.rows.push_back({k, PointOf(r, k), bound(v, true), bound(v, false)});
  Print(std::cout, t, format);
  for (const std::string& w : IntervalWarnings(r)) std::cout << w << "\n";
  for (const std::string& w : FloorWarnings(r, floor)) std::cout << w << "\n";
  if (const std::string e = ExtrapolationSummary(r); !e.empty()) std::cout << e << "\n";
  if (auto cv = r.result.find("cross_validation"); cv != r.result.end() && cv->is_object())
    std::cout << "leave-one-budget-out: " << cv->value("skipped", std::string("not run")) << "\n";
  if (auto cv = r.result.find("cross_validation"); cv != r.result.end() && cv->is_array()) {
    std::cout
        << "\nleave-one-budget-out (each budget predicted by the law fitted on the others):\n";
    Table f;
    f.columns = {{"held_out_c", "%.3g"},      {"runs", ""},
                 {"loss_mean_err_%", "%.2f"}, {"loss_max_err_%", "%.2f"},
                 {"n_opt_predicted", "%.3g"}, {"n_opt_observed", "%.3g"},
                 {"n_opt_err_%", "%+.1f"}};
    auto get = [](const nlohmann::json& j, const char* k, double scale = 1) {
      const auto it = j.find(k);
      return it != j.end() && it->is_number() ? nlohmann::json(scale * it->get<double>())
                                              : nlohmann::json();
    };
    for (const auto& fold : *cv) {
      if (!fold.is_object()) continue;
      f.rows.push_back({get(fold, "held_out_c"), fold.value("n_test", 0),
                        get(fold, "mean_abs_rel_error", 100), get(fold, "max_abs_rel_error", 100),
                        get(fold, "n_opt_predicted"), get(fold, "n_opt_observed"),
                        get(fold, "n_opt_rel_error", 100)});
    }
    Print(std::cout, f, format);
  }
  for (const std::string& w : PowerLawWarnings(r)) std::cout << "warning: " << w << "\n";
  if (auto iso = r.result.find("isoflop"); iso != r.result.end() && iso->is_object()) {
    const nlohmann::json budgets = iso->value("budgets", nlohmann::json::array());
    for (const auto& b : budgets) {
      if (!b.is_object()) continue;
      const auto note = b.find("note");
      const auto c = b.find("c");
      if (note == b.end() || !note->is_string() || note->get<std::string>().empty()) continue;
      std::cout << "budget C=" << (c != b.end() && c->is_number() ? Human(c->get<double>()) : "?")
                << ": " << note->get<std::string>() << "\n";
    }
  }
}

Status RunFitCommand(const Context& ctx, const FitArgs& args) {
  ISOFLOP_ASSIGN_OR_RETURN(Format format, ParseFormat(args.format));
  const int sources = !args.sweep.empty() + !args.observations.empty() + !args.csv.empty();
  if (sources != 1)
    return Status::InvalidArgument("give exactly one of --sweep, --observations or --csv");
  if (args.n_experts >= 0 && args.sweep.empty())
    return Status::InvalidArgument("--n-experts: only with --sweep (runs record their experts)");
  fit::FitConfig cfg;
  cfg.convention = args.convention;
  cfg.exclude_top_loss = args.exclude_top_loss;
  cfg.parametric.form = args.form;
  cfg.parametric.num_threads = args.threads;
  cfg.parametric.loss = args.loss;
  cfg.parametric.huber_delta = args.huber_delta;
  ISOFLOP_RETURN_IF_ERROR(ParseFixes(args.fix, args.form, &cfg.parametric));
  if (!(args.loss_floor >= 0) || !std::isfinite(args.loss_floor))
    return Status::InvalidArgument("--loss-floor: expected a loss >= 0 (0 = none), got " +
                                   Human(args.loss_floor, 6));
  cfg.isoflop.budget_rel_tol = args.budget_tol;
  cfg.isoflop.drop_outside_range = !args.keep_outside_range;
  cfg.isoflop.estimator = args.isoflop_estimator;
  cfg.cross_validate = args.cross_validate;
  cfg.bootstrap.resamples = args.bootstrap;
  cfg.bootstrap.seed = args.seed;
  cfg.bootstrap.num_threads = args.threads;
  if (!args.at.empty()) {
    ISOFLOP_ASSIGN_OR_RETURN(cfg.bootstrap.derived_at_compute, ParseBudgetList(args.at, "--at"));
  }
  ISOFLOP_RETURN_IF_ERROR(cfg.Validate());

  // A CSV fitted without storing needs no store (and must not create one).
  std::unique_ptr<store::Store> db;
  if (args.csv.empty() || !args.no_store) {
    ISOFLOP_ASSIGN_OR_RETURN(db, store::Store::Open(ctx.db_path));
  }
  if (args.at.empty()) {
    ISOFLOP_ASSIGN_OR_RETURN(cfg.bootstrap.derived_at_compute,
                             DefaultDerivedBudgets(args.sweep, db.get()));
  }
  const bool moe = args.form == "moe" && (args.method == "parametric" || args.method == "all");
  analysis::Source source;
  if (!args.sweep.empty()) {
    source.kind = analysis::Source::Kind::kSweep, source.name = args.sweep;
  } else if (!args.csv.empty()) {
    source.kind = analysis::Source::Kind::kCsv, source.name = args.csv;
    source.csv_columns = args.csv_columns;
  } else {
    source.kind = analysis::Source::Kind::kObservations, source.name = args.observations;
  }
  analysis::LoadOptions lo;
  lo.convention = args.convention;
  if (args.n_experts >= 0) lo.n_experts = args.n_experts;
  ISOFLOP_ASSIGN_OR_RETURN(analysis::Dataset data, analysis::LoadDataset(db.get(), source, lo));
  // One expert count of an MoE sweep: a per-count law, as `sweep run` stores one (the report's
  // per-count curves pick it up), with how the runs' total parameters follow their active ones.
  nlohmann::json expert_options = nlohmann::json::object();
  if (args.n_experts >= 0) {
    expert_options["n_experts"] = args.n_experts;
    if (std::optional<analysis::MoeSizing> sizing = analysis::FitMoeSizing(data))
      expert_options["moe_sizing"] = sizing->ToJson();
  }
  for (const std::string& w : data.warnings) std::cerr << "warning: " << w << "\n";
  if (moe) {
    std::string what, fix;
    switch (source.kind) {
      case analysis::Source::Kind::kCsv:
        what = "CSV file " + args.csv;
        fix = "add a column named g or granularity, or name it with --g-column NAME";
        break;
      case analysis::Source::Kind::kObservations:
        what = "observation set '" + args.observations + "'";
        fix = "re-import it with its G column: `isoflop import FILE --name " + args.observations +
              " --replace --g-column NAME`";
        break;
      case analysis::Source::Kind::kSweep:
        what = "sweep '" + args.sweep + "'";
        fix =
            "dense runs have no G; fit MoE runs trained at two or more "
            "model.moe.granularity values";
        break;
    }
    ISOFLOP_RETURN_IF_ERROR(CheckGranularity(data, what, fix));
  }
  const std::vector<fit::Observation>& obs = data.obs;
  const std::vector<fit::Curve>& curves = data.curves;
  // A loss no model goes below (a --fix of the irreducible term, or --loss-floor) above every
  // observed loss contradicts the data: refused. Above some: those points cannot be reached.
  std::vector<std::pair<std::string, double>> floors;
  const char* irreducible = args.form == "moe" ? "c" : args.form == "chinchilla" ? "E" : nullptr;
  if (args.method == "parametric" || args.method == "all") {
    if (auto it = irreducible ? cfg.parametric.fixed.find(irreducible) : cfg.parametric.fixed.end();
        it != cfg.parametric.fixed.end())
      floors.emplace_back("--fix " + it->first + "=" + Human(it->second, 6), it->second);
    if (args.loss_floor > 0)
      floors.emplace_back("--loss-floor " + Human(args.loss_floor, 6), args.loss_floor);
  }
  for (const auto& [said, floor] : floors) {
    if (obs.empty()) break;
    size_t below = 0;
    double max_loss = obs[0].loss;
    for (const fit::Observation& o : obs) {
      below += o.loss < floor;
      max_loss = std::max(max_loss, o.loss);
    }
    if (below == obs.size())
      return Status::InvalidArgument(said + ": every observed loss is below it (the highest is " +
                                     Human(max_loss, 6) + "): no law with that floor fits them");
    if (below > 0)
      std::cerr << "warning: " << said << ": " << below << " of " << obs.size()
                << " observed losses are below it; the law cannot reach them\n";
  }

  std::vector<std::string> methods = {args.method};
  if (args.method == "all") {
    methods = {"parametric", "isoflop"};
    if (!curves.empty()) methods.push_back("envelope");
  }
  // --method all: every method runs even when one fails, and --format json prints one document,
  // an object keyed by method ({"error": "..."} for a failed one); the exit status says whether
  // any failed.
  const bool all = args.method == "all";
  nlohmann::json doc = nlohmann::json::object();
  std::vector<std::string> failed;
  for (const std::string& method : methods) {
    cfg.method = method;
    Result<fit::FitRecord> rec = fit::RunFit(obs, curves, cfg);
    int64_t id = 0;
    if (rec.ok() && !args.no_store) {
      nlohmann::json options = {{"bootstrap", args.bootstrap},
                                {"seed", args.seed},
                                {"exclude_top_loss", args.exclude_top_loss},
                                {"fix", FixJson(cfg.parametric)},
                                {"loss", args.loss}};
      if (args.loss_floor > 0) options["loss_floor"] = args.loss_floor;
      options.update(expert_options);
      Result<int64_t> stored = analysis::StoreFit(*db, source, *rec, options);
      if (!stored.ok()) return stored.status();
      id = *stored;
    }
    if (!rec.ok()) {
      if (!all) return rec.status();
      failed.push_back(method + ": " + rec.status().message());
      if (format == Format::kJson)
        doc[method] = {{"method", method}, {"error", rec.status().message()}};
      else
        std::cout << method << " fit failed: " << rec.status().message() << "\n";
      continue;
    }
    // --loss-floor X and a free E below it: the fit with E held at X leads the answer, stored
    // after the free one so `optimal` (the latest fit) answers with it; the free fit is shown
    // beside it with its note. A user's own --fix E is left alone.
    const auto free_e = rec->params.find("E");
    const bool below_floor = method == "parametric" && args.loss_floor > 0 &&
                             !cfg.parametric.fixed.count("E") && free_e != rec->params.end() &&
                             free_e->second < args.loss_floor;
    std::optional<fit::FitRecord> held;
    int64_t held_id = 0;
    std::string held_error;
    if (below_floor) {
      fit::FitConfig hc = cfg;
      hc.parametric.fixed["E"] = args.loss_floor;
      Result<fit::FitRecord> h = fit::RunFit(obs, curves, hc);
      if (h.ok()) {
        held = std::move(*h);
        if (!args.no_store) {
          nlohmann::json options = {{"bootstrap", args.bootstrap},
                                    {"seed", args.seed},
                                    {"exclude_top_loss", args.exclude_top_loss},
                                    {"fix", FixJson(hc.parametric)},
                                    {"loss", args.loss},
                                    {"loss_floor", args.loss_floor}};
          ISOFLOP_ASSIGN_OR_RETURN(held_id, analysis::StoreFit(*db, source, *held, options));
        }
      } else {
        held_error = h.status().message();
      }
    }
    const std::string free_note =
        below_floor ? "its E = " + Human(free_e->second, 5) + " is below the --loss-floor " +
                          Human(args.loss_floor, 5) + ": no model reaches a loss under the floor"
                    : "";
    if (format == Format::kJson) {
      // The record stays the free fit (its shape does not depend on the data); the fit that
      // leads is named by "headline".
      nlohmann::json j = RecordJson(*rec, id);
      if (args.loss_floor > 0 && method == "parametric") {
        j["headline"] = held ? "loss_floor_fit" : "free";
        if (below_floor) j["free_fit_note"] = free_note;
        if (held) j["loss_floor_fit"] = RecordJson(*held, held_id);
        if (!held_error.empty()) j["loss_floor_fit_error"] = held_error;
      }
      for (const std::string& w : FloorWarnings(*rec, args.loss_floor)) std::cerr << w << "\n";
      if (all) {
        doc[method] = j;
      } else {
        std::cout << j.dump(2) << "\n";
      }
      continue;
    }
    if (held) {
      std::cout << "E held at the --loss-floor " << Human(args.loss_floor, 5)
                << " (the free fit's E = " << Human(free_e->second, 5)
                << " is below it); this fit leads:\n";
      PrintRecord(*held, held_id, format, args.loss_floor);
      std::cout << "\nfree fit, beside it (" << free_note << "):\n";
    } else if (!held_error.empty()) {
      std::cout << "(fit with E held at the --loss-floor failed: " << held_error << ")\n";
    }
    PrintRecord(*rec, id, format, args.loss_floor);
    if (method == "parametric" && args.loss_floor > 0 && !below_floor &&
        free_e != rec->params.end() && !cfg.parametric.fixed.count("E")) {
      std::cout << "E = " << Human(free_e->second, 5) << " respects the --loss-floor "
                << Human(args.loss_floor, 5) << "\n";
    }
    if (all && method != methods.back()) std::cout << "\n";
  }
  if (all && format == Format::kJson) std::cout << doc.dump(2) << "\n";
  if (!failed.empty()) {
    std::string msg = "--method all: " + std::to_string(failed.size()) + " of " +
                      std::to_string(methods.size()) + " fits failed (the others are " +
                      (args.no_store ? "printed" : "stored") + ")";
    for (const auto& f : failed) msg += "; " + f;
    return Status::FailedPrecondition(msg);
  }
  return Status::Ok();
}

struct FitsArgs {
  std::string format = "table";
};

Status RunFits(const Context& ctx, const FitsArgs& args) {
  ISOFLOP_ASSIGN_OR_RETURN(Format format, ParseFormat(args.format));
  store::OpenOptions opts;
  opts.create_if_missing = false;
  ISOFLOP_ASSIGN_OR_RETURN(auto db, store::Store::Open(ctx.db_path, opts));
  ISOFLOP_ASSIGN_OR_RETURN(auto fits, db->ListFits());
  Table t;
  t.columns = {{"id", ""},       {"created_at", ""}, {"source", ""},
               {"method", ""},   {"form", ""},       {"convention", ""},
               {"n_points", ""}, {"loss", ""},       {"objective", "%.6g"},
               {"fixed", ""},    {"params", ""}};
  for (const auto& f : fits) {
    // Parameters held fixed or tied (--fix, or E at the data's entropy in `sweep run`): an
    // object of values and leaders; fits stored before it hold "NAME=VALUE" strings.
    std::string fixed;
    auto o = nlohmann::json::parse(f.options_json, nullptr, false);
    if (o.is_object() && o.contains("fix")) {
      const auto& fix = o["fix"];
      if (fix.is_object()) {
        for (const auto& [k, v] : fix.items())
          fixed += (fixed.empty() ? "" : " ") + k + "=" +
                   (v.is_number()   ? Human(v.get<double>(), 5)
                    : v.is_string() ? v.get<std::string>()
                                    : v.dump());
      } else if (fix.is_array()) {
        for (const auto& v : fix)
          if (v.is_string()) fixed += (fixed.empty() ? "" : " ") + v.get<std::string>();
      }
    }
    std::string params;
    auto p = nlohmann::json::parse(f.params_json, nullptr, false);
    if (p.is_object())
      for (const auto& [k, v] : p.items())
        params += (params.empty() ? "" : " ") + k + "=" +
                  (v.is_number() ? Human(v.get<double>(), 4) : "-");
    // The loss a parametric fit minimised (huber with its delta, or mse).
    const auto res = nlohmann::json::parse(f.result_json, nullptr, false);
    const std::string label = res.is_object() ? LossLabel(res, true) : "";
    const nlohmann::json loss = label.empty() ? nlohmann::json() : nlohmann::json(label);
    t.rows.push_back({f.id, f.created_at, f.source_kind + ":" + f.source_name, f.method, f.form,
                      f.convention, f.n_points, loss,
                      f.objective ? nlohmann::json(*f.objective) : nlohmann::json(),
                      fixed.empty() ? nlohmann::json() : nlohmann::json(fixed), params});
  }
  Print(std::cout, t, format);
  return Status::Ok();
}

void AddFitCommand(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<FitArgs>();
  CLI::App* cmd = app.add_subcommand(
      "fit", "Fit a scaling law to a sweep, an imported observation set or a CSV; store it");
  cmd->add_option("--sweep", args->sweep, "Fit the finished runs of this sweep");
  cmd->add_option("--observations", args->observations, "Fit this imported observation set");
  CLI::Option* csv = cmd->add_option(
      "--csv", args->csv, "Fit the observations in this CSV or JSON file (N, D or C, loss)");
  csv->type_name("FILE");
  AddCsvColumnOptions(cmd, &args->csv_columns, csv);
  cmd->add_option("--method", args->method,
                  "parametric | isoflop | envelope | all (all: with --format json, one object "
                  "keyed by method; a failed method is {\"error\": ...} and the exit status 1)")
      ->check(OneOf({"parametric", "isoflop", "envelope", "all"}))
      ->capture_default_str();
  cmd->add_option("--form", args->form,
                  "chinchilla | kaplan | moe (parametric; moe needs each observation's "
                  "granularity G: `isoflop import --g-column`)")
      ->check(OneOf({"chinchilla", "kaplan", "moe"}))
      ->capture_default_str();
  cmd->add_option("--bootstrap", args->bootstrap, "Bootstrap resamples for intervals (0 = none)")
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "Bootstrap seed")->capture_default_str();
  cmd->add_option("--at", args->at,
                  "Budgets C,... to give N_opt, D_opt and the loss at, with intervals (default: a "
                  "sweep's report budgets, else 1e19,1e21,1e23)");
  cmd->add_option("--exclude-top-loss", args->exclude_top_loss,
                  "Drop the K highest-loss observations first (the Chinchilla replication: 5)")
      ->capture_default_str();
  cmd->add_option("--fix", args->fix,
                  "Hold a parameter: NAME=VALUE (e.g. E=1.7) or tie NAME=OTHER (beta=alpha)");
  cmd->add_option("--loss", args->loss,
                  "Parametric loss on log residuals: huber (Hoffmann 2022, Besiroglu 2024) | mse "
                  "(log-MSE, as Llama 3 and several reproductions)")
      ->capture_default_str();
  cmd->add_option("--huber-delta", args->huber_delta,
                  "Huber threshold on log residuals (--loss huber)")
      ->capture_default_str();
  cmd->add_option("--loss-floor", args->loss_floor,
                  "A known lower bound of the loss (e.g. the data's entropy): when the free fit's "
                  "E is below it, a fit with E held at it is stored too and leads the answer, "
                  "the free fit beside it; predicted losses below it are warned about (stored "
                  "with the fit; `optimal` warns too)");
  cmd->add_option("--n-experts", args->n_experts,
                  "Sweeps: fit only the runs with this many routed experts (0 = the dense runs "
                  "of an MoE sweep); stored as that count's law")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--convention", args->convention,
                  "Parameter count of sweep runs: total | non_embedding | active")
      ->capture_default_str();
  cmd->add_option("--budget-tol", args->budget_tol,
                  "isoFLOP grouping of runs without a recorded budget (sweeps and files with a "
                  "budget column group by it): C = 6ND clustered in log space, splitting at gaps "
                  "wider than this relative amount (and 5x the median gap, capped at 1.5x)")
      ->capture_default_str();
  cmd->add_flag("--cross-validate", args->cross_validate,
                "Parametric: leave-one-budget-out scoring of every budget (one refit each): "
                "relative error of its losses and its N_opt, as a table and in the JSON");
  cmd->add_flag("--keep-outside-range", args->keep_outside_range,
                "isoFLOP: keep budgets whose minimum lies outside their sampled sizes in the "
                "power-law fits (left out by default: an extrapolated minimum can sit decades "
                "away)");
  cmd->add_option("--isoflop-estimator", args->isoflop_estimator,
                  "isoFLOP optimum per budget: parabola (Hoffmann et al. 2022, Approach 2) | "
                  "argmin (the budget's lowest-loss run, as in CS336)")
      ->check(OneOf({"parabola", "argmin"}))
      ->capture_default_str();
  cmd->add_option("--threads", args->threads, "Worker threads (0 = all cores)");
  cmd->add_flag("--no-store", args->no_store, "Print the fit without storing it");
  cmd->add_option("--format", args->format, "table | json")
      ->check(OneOf({"table", "json"}))
      ->capture_default_str();
  cmd->callback([&ctx, args] { ctx.status = RunFitCommand(ctx, *args); });
}

void AddFitsCommand(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<FitsArgs>();
  CLI::App* cmd = app.add_subcommand("fits", "List stored fits");
  cmd->add_option("--format", args->format, "table | csv | json")
      ->check(OneOf({"table", "csv", "json"}))
      ->capture_default_str();
  cmd->callback([&ctx, args] { ctx.status = RunFits(ctx, *args); });
}

}  // namespace

ISOFLOP_REGISTER_COMMAND("fit", 40, AddFitCommand);
ISOFLOP_REGISTER_COMMAND("fits", 41, AddFitsCommand);

}  // namespace isoflop::cli
