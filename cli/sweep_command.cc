// `isoflop sweep plan|run|status|retry|cancel` and `isoflop sweeps`: sweep files in, runs and
// a compute-optimal answer out. The work is in sweep/ (planning, scheduling, ingestion) and
// fit/ (the fit at the end); this file wires them to the store and prints.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "command.h"
#include "fit_text.h"
#include "isoflop/analysis/sweep_report.h"
#include "isoflop/common/format.h"
#include "isoflop/fit/run_fit.h"
#include "isoflop/store/store.h"
#include "isoflop/sweep/config.h"
#include "isoflop/sweep/data_check.h"
#include "isoflop/sweep/local_executor.h"
#include "isoflop/sweep/manager.h"
#include "isoflop/sweep/planner.h"
#include "isoflop/sweep/slurm_executor.h"
#include "isoflop/sweep/throughput_probe.h"
#include "output.h"
#include "plot.h"
#include "stored_sweep.h"

namespace isoflop::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string Seconds(double s) {
  if (s >= 3600) return Fmt("%.1fh", s / 3600);
  if (s >= 60) return Fmt("%.1fm", s / 60);
  return Fmt("%.0fs", s);
}

sweep::PlanEnvironment EnvFor(const sweep::Resources& res) {
  sweep::PlanEnvironment env;
  env.gpu = res.gpu;
  env.threads_per_run = res.threads_per_run;
  if (res.gpu) {
    for (const auto& d : res.devices)
      env.device_memory_bytes = std::max<double>(env.device_memory_bytes, d.memory_bytes);
  } else {
    env.device_memory_bytes = res.host_memory_bytes;
  }
  return env;
}

// Where a SLURM sweep's cells run: the plan sees the job's resources, not this host's.
sweep::PlanEnvironment SlurmEnv(const sweep::ExecutorConfig& e) {
  sweep::PlanEnvironment env;
  env.gpu = e.slurm.gpus_per_run > 0;
  env.threads_per_run = std::max(1, e.cpus_per_run);
  if (e.device_memory_gib > 0) {
    env.device_memory_bytes = e.device_memory_gib * double(1LL << 30);
  } else if (auto mem = sweep::SlurmMemoryBytes(e.slurm.mem); mem && !env.gpu) {
    env.device_memory_bytes = double(*mem);
  }
  return env;
}

struct Loaded {
  sweep::SweepConfig config;
  sweep::Resources resources;
  sweep::Plan plan;
};

Result<Loaded> LoadAndPlan(const std::string& file, const std::vector<std::string>& sets) {
  Loaded l;
  ISOFLOP_ASSIGN_OR_RETURN(l.config, sweep::LoadSweepConfig(file, sets));
  if (l.config.executor.kind == "slurm") {
    ISOFLOP_ASSIGN_OR_RETURN(l.plan, sweep::PlanSweep(l.config, SlurmEnv(l.config.executor)));
    return l;
  }
  Result<sweep::Resources> res = sweep::DetectResources(l.config.executor);
  std::string note;
  if (!res.ok() && l.config.executor.device == "cuda") {
    // Planning a GPU sweep on a machine without one: estimate for one GPU as configured.
    sweep::Resources assumed;
    assumed.gpu = true;
    const double gib =
        l.config.executor.device_memory_gib > 0 ? l.config.executor.device_memory_gib : 80;
    assumed.devices.push_back({0, static_cast<int64_t>(gib * double(1LL << 30))});
    res = assumed;
    note = "no GPU is visible here: estimates assume one GPU with " + Fmt("%.0f", gib) + " GiB";
  }
  if (!res.ok()) return res.status();
  l.resources = *res;
  ISOFLOP_ASSIGN_OR_RETURN(l.plan, sweep::PlanSweep(l.config, EnvFor(l.resources)));
  if (!note.empty()) l.plan.warnings.insert(l.plan.warnings.begin(), note);
  return l;
}

// Replaces the plan's modelled time estimates with ones from a throughput probe (the real
// isoflop-train, briefly, on a few shapes) when runs go to CPU and isoflop-train is found, and
// decides the CPU layout for `cpus_per_run: auto`. Never fails: when the probe cannot run, the
// estimates stay modelled and the lines returned (for people) say why.
std::vector<std::string> ProbeEstimates(const Context& ctx, const sweep::SweepConfig& cfg,
                                        sweep::Plan* plan, sweep::Resources* res, bool probe) {
  const bool auto_cpus = cfg.executor.cpus_per_run == sweep::ExecutorConfig::kAutoCpusPerRun;
  std::vector<std::string> lines;
  auto fall_back = [&](const std::string& why) {
    lines.push_back("est_time from the throughput model, not measured: " + why);
    if (auto_cpus && !res->gpu) {
      lines.push_back("cpus_per_run auto: not measured; all " +
                      std::to_string(res->threads_per_run) + " cores for one run at a time");
    }
    return lines;
  };
  if (!probe) return fall_back("--no-probe");
  if (res->gpu) return fall_back("the probe runs on CPU only");
  Result<std::string> train = FindTrainBinary(ctx);
  if (!train.ok()) return fall_back(train.status().message());
  sweep::ProbeOptions po;
  po.train_binary = *train;
  Result<sweep::ProbeReport> r = sweep::ProbePlan(plan, res, auto_cpus, po);
  if (!r.ok()) return fall_back(r.status().message());
  if (r->layout) lines.push_back("cpus_per_run auto: " + r->layout->explanation);
  std::string shapes;
  int interpolated = 0;
  for (const auto& s : r->shapes) {
    if (!s.probed) {
      ++interpolated;
      continue;
    }
    shapes += (shapes.empty() ? "" : ", ") + s.shape + " " + Fmt("%.3g", s.tokens_per_s) + " tok/s";
  }
  lines.push_back("est_time probed in " + Fmt("%.1f", r->seconds) + " s with isoflop-train (" +
                  std::to_string(r->slots) + " run(s) x " + std::to_string(r->threads_per_run) +
                  " thread(s)): " + shapes +
                  (interpolated > 0 ? "; " + std::to_string(interpolated) +
                                          " other shape(s) interpolated in log N"
                                    : ""));
  // The probe's trainers measured their peak memory too: how the estimates compare.
  int probed = 0;
  int64_t lo = 0, hi = 0;
  double ratio_lo = 0, ratio_hi = 0;
  for (const auto& s : r->shapes) {
    if (!s.probed || s.peak_memory_bytes <= 0) continue;
    const double ratio = double(s.memory_estimate) / double(s.peak_memory_bytes);
    lo = probed ? std::min(lo, s.peak_memory_bytes) : s.peak_memory_bytes;
    hi = probed ? std::max(hi, s.peak_memory_bytes) : s.peak_memory_bytes;
    ratio_lo = probed ? std::min(ratio_lo, ratio) : ratio;
    ratio_hi = probed ? std::max(ratio_hi, ratio) : ratio;
    ++probed;
  }
  if (probed > 0) {
    auto range = [](const std::string& a, const std::string& b) {
      return a == b ? a : a + " to " + b;
    };
    lines.push_back(
        "memory probed on " + std::to_string(probed) + " shape(s): peak RSS " +
        range(Bytes(double(lo)), Bytes(double(hi))) + " (probe_peak), estimate / peak " +
        range(Fmt("%.2f", ratio_lo) + "x", Fmt("%.2f", ratio_hi) + "x") +
        "; a probe trains a few dozen steps, a long run's heap may grow a little beyond it");
  }
  for (const auto& n : r->notes) lines.push_back("probe: " + n);
  return lines;
}

// ---- sweep plan ----------------------------------------------------------------------------

struct PlanArgs {
  std::string file, format = "table";
  std::vector<std::string> sets;
  bool no_probe = false;
};

// True when people read `out` on a terminal that redraws.
bool LiveTerminal(int fd) {
  return isatty(fd) && std::getenv("TERM") && std::string(std::getenv("TERM")) != "dumb";
}

Status RunPlanCommand(const Context& ctx, const PlanArgs& args) {
  ISOFLOP_ASSIGN_OR_RETURN(Format format, ParseFormat(args.format));
  ISOFLOP_ASSIGN_OR_RETURN(Loaded l, LoadAndPlan(args.file, args.sets));
  {
    // The data files as `sweep run` will check them; a store that exists lends the scans it
    // remembers (read only: planning writes nothing).
    std::unique_ptr<store::Store> cache;
    if (fs::exists(ctx.db_path)) {
      store::OpenOptions ro;
      ro.read_only = true;
      ro.create_if_missing = false;
      if (auto db = store::Store::Open(ctx.db_path, ro); db.ok()) cache = std::move(*db);
    }
    sweep::DataCheckOptions dc;
    dc.cache = cache.get();
    dc.out = &std::cerr;
    dc.live = LiveTerminal(STDERR_FILENO);
    ISOFLOP_RETURN_IF_ERROR(sweep::CheckPlanData(l.config, l.plan, {}, dc).status());
  }
  const std::vector<std::string> notes =
      ProbeEstimates(ctx, l.config, &l.plan, &l.resources, !args.no_probe);
  const sweep::Plan& plan = l.plan;
  Table t;
  t.columns = {{"key", ""},
               {"budget", "%.3g"},
               {"shape", ""},
               {"n_total", ""},
               {"n_non_emb", ""},
               {"flops/tok_6n", "%.3g"},
               {"flops/tok_attn", "%.3g"},
               {"flops/tok_chin", "%.3g"},
               {"tokens", ""},
               {"c_6nd", "%.3g"},
               {"tok/param", "%.4g"},
               {"steps", ""},
               {"seed", ""},
               {"memory", ""},
               {"probe_peak", ""},
               {"est_time", ""},
               {"est_by", ""}};
  // MoE: active parameters per token beside the total (what C = 6 N D counts).
  const bool moe = l.config.family == "moe";
  if (moe) t.columns.insert(t.columns.begin() + 4, {"n_active", ""});
  for (const auto& a : l.config.parameters) t.columns.push_back({a.path, "%.4g"});
  for (const auto& c : plan.cells) {
    std::vector<json> row = {
        c.key,
        c.budget_flops,
        c.ShapeString(),
        c.n_total,
        c.n_non_embedding,
        c.flops_per_token_6n,
        c.flops_per_token_6n_attn,
        c.flops_per_token_chinchilla,
        c.tokens,
        c.flops_per_token_6n * double(c.tokens),
        c.tokens_per_param(),
        c.steps,
        c.seed,
        format == Format::kTable ? json(Bytes(c.memory.total)) : json(c.memory.total),
        BytesCell(c.probed_peak_memory, format),
        format == Format::kTable ? json(Seconds(c.est_seconds)) : json(c.est_seconds),
        sweep::ToString(c.est_source)};
    if (moe) row.insert(row.begin() + 4, c.n_active);
    for (const auto& a : l.config.parameters) {
      auto it = c.axes.find(a.path);
      row.push_back(it == c.axes.end() ? json() : it->second);
    }
    t.rows.push_back(std::move(row));
  }
  Print(std::cout, t, format);
  if (format != Format::kTable) {
    for (const auto& n : notes) std::cerr << n << "\n";
    for (const auto& w : plan.warnings) std::cerr << "warning: " << w << "\n";
    return Status::Ok();
  }
  int64_t max_mem = 0;
  for (const auto& c : plan.cells) max_mem = std::max(max_mem, c.memory.total);
  const bool slurm = l.config.executor.kind == "slurm";
  const int slots = slurm ? std::max(1, l.config.executor.max_parallel)
                    : l.resources.gpu ? std::max<int>(1, l.resources.devices.size())
                                      : l.resources.cpu_slots;
  const auto& ex = l.config.executor;
  const std::string where =
      slurm ? std::to_string(slots) + " SLURM job(s) at once (" +
                  (ex.slurm.gpus_per_run > 0 ? std::to_string(ex.slurm.gpus_per_run) + " GPU(s), "
                                             : std::string()) +
                  std::to_string(ex.cpus_per_run) + " CPU(s) each)"
      : l.resources.gpu ? std::to_string(slots) + " GPU(s)"
                        : std::to_string(slots) + " CPU slot(s) x " +
                              std::to_string(l.resources.threads_per_run) + " thread(s)";
  std::cout << "\nsweep " << l.config.name << ": " << plan.cells.size() << " cells, "
            << l.config.budgets.size() << " budgets, " << l.config.ladder.size()
            << " ladder sizes, " << l.config.seeds.size() << " seed(s)\n"
            << "total compute " << Fmt("%.3g", plan.total_flops) << " FLOPs (6ND), largest run "
            << Bytes(max_mem) << ", estimated time " << Seconds(plan.total_est_seconds)
            << " serial, ~" << Seconds(plan.total_est_seconds / slots) << " on " << where
            << "\nruns in " << l.config.output_dir << "\n";
  if (slurm && ex.slurm.mem == sweep::ExecutorConfig::Slurm::kAutoMem && !plan.cells.empty()) {
    int64_t lo = INT64_MAX, hi = 0;
    for (const auto& c : plan.cells) {
      const int64_t mib = sweep::AutoMemoryPerCpuMiB(c.memory.total, ex.cpus_per_run);
      lo = std::min(lo, mib);
      hi = std::max(hi, mib);
    }
    std::cout << "memory: mem auto asks SLURM for --mem-per-cpu " << lo << "M"
              << (hi > lo ? " to " + std::to_string(hi) + "M" : std::string()) << " ("
              << ex.cpus_per_run << " CPU(s) a rank; 1.25x each run's estimate)\n";
  }
  for (const auto& n : notes) std::cout << n << "\n";
  for (const auto& w : plan.warnings) std::cout << "warning: " << w << "\n";
  return Status::Ok();
}

// ---- the fit and the answer at the end of `sweep run` ---------------------------------------

std::string Ci(const fit::FitRecord& r, const std::string& name, const char* fmt = "%.3g") {
  auto it = r.ci.find(name);
  if (it == r.ci.end() || !std::isfinite(it->second.lo)) return "";
  return " [" + Fmt(fmt, it->second.lo) + ", " + Fmt(fmt, it->second.hi) + "]";
}

std::string AnsCi(const fit::Answer& a, const std::string& name) {
  auto it = a.ci.find(name);
  if (it == a.ci.end() || !std::isfinite(it->second.lo)) return "";
  return " [" + Fmt("%.3g", it->second.lo) + ", " + Fmt("%.3g", it->second.hi) + "]";
}

void PrintLaw(const fit::FitRecord& r) {
  auto p = [&](const char* k) { return r.params.count(k) ? r.params.at(k) : NAN; };
  std::cout << "  L(N, D) = " << Fmt("%.4g", p("E")) << " + " << Fmt("%.4g", p("A")) << " / N^"
            << Fmt("%.3f", p("alpha")) << " + " << Fmt("%.4g", p("B")) << " / D^"
            << Fmt("%.3f", p("beta")) << "\n";
  std::cout << "  alpha = " << Fmt("%.3f", p("alpha")) << Ci(r, "alpha", "%.3f")
            << "   beta = " << Fmt("%.3f", p("beta")) << Ci(r, "beta", "%.3f");
  if (r.ci.count("a"))
    std::cout << "   N_opt ~ C^" << Fmt("%.3f", p("beta") / (p("alpha") + p("beta")))
              << Ci(r, "a", "%.3f");
  std::cout << "\n";
}

// Prints the answer at one budget: "N = ... [lo, hi]" etc.
void PrintAllocation(const fit::Answer& a) {
  std::cout << "train N = " << Fmt("%.3g", a.point.n) << AnsCi(a, "n")
            << " parameters on D = " << Fmt("%.3g", a.point.d) << AnsCi(a, "d") << " tokens ("
            << Fmt("%.0f", a.point.tokens_per_param) << " tokens/param"
            << AnsCi(a, "tokens_per_param") << "), predicted loss " << Fmt("%.4f", a.point.loss);
}

// The end of `sweep run`: the fits the sweep file asks for (analysis::FitSweep runs and stores
// them), printed.
// What each MoE expert count is worth against the dense runs' law at the report budgets:
// the dense parameters reaching its loss on its tokens, and the dense compute reaching it.
void PrintDenseEquivalents(const analysis::SweepReport& report) {
  Table t;
  t.columns = {{"experts", ""},        {"compute", "%.3g"},       {"N_active", "%.3g"},
               {"loss", "%.4f"},       {"dense_N", "%.3g"},       {"dense_N_lo", "%.3g"},
               {"dense_N_hi", "%.3g"}, {"N_ratio", "%.2f"},       {"dense_C_ratio", "%.2f"},
               {"C_ratio_lo", "%.2f"}, {"C_ratio_hi", "%.2f"},    {"note", ""}};
  auto num = [](double v) { return std::isnan(v) ? json() : json(v); };
  auto bound = [&](const fit::DenseEquivalent& e, const char* key, bool lo) {
    const auto it = e.ci.find(key);
    if (it == e.ci.end()) return json();
    const double v = lo ? it->second.lo : it->second.hi;
    return std::isinf(v) ? json("inf") : num(v);
  };
  for (const analysis::ExpertCountFit& ef : report.by_experts) {
    for (const analysis::BudgetAnswer& a : ef.answers) {
      if (!a.dense_equivalent && a.dense_equivalent_error.empty()) continue;
      if (!a.dense_equivalent) {
        t.rows.push_back({std::to_string(ef.n_experts), a.c, json(), json(), json(), json(), json(), json(),
                          json(), json(), json(), a.dense_equivalent_error});
        continue;
      }
      const fit::DenseEquivalent& e = *a.dense_equivalent;
      t.rows.push_back({std::to_string(ef.n_experts), a.c, e.moe.n, e.moe.loss, num(e.n_effective),
                        bound(e, "n_effective", true), bound(e, "n_effective", false),
                        num(e.effective_ratio), num(e.compute_multiplier),
                        bound(e, "compute_multiplier", true), bound(e, "compute_multiplier", false),
                        e.note});
    }
  }
  if (t.rows.empty()) return;
  std::cout << "\neach MoE in dense terms: dense_N reaches the MoE's loss on its D tokens "
               "(N_ratio = dense_N / N_active), dense_C_ratio = dense compute for that loss / C "
               "(< 1: dense is better here; bootstrap intervals):\n";
  Print(std::cout, t, Format::kTable);
}

Status FitAndReport(store::Store& db, const sweep::SweepConfig& cfg, const sweep::Plan& plan) {
  analysis::SweepFitRequest req;
  req.sweep = cfg.name;
  req.config.method = cfg.fit.method;
  req.config.convention = cfg.fit.convention;
  req.config.parametric.form = cfg.fit.form;
  req.config.bootstrap.resamples = cfg.fit.bootstrap;
  req.config.bootstrap.derived_at_compute = cfg.report_budgets;
  req.include_diverged = cfg.fit.include_diverged;
  req.only_keys.emplace();
  for (const auto& c : plan.cells) req.only_keys->insert(c.key);
  req.fixed_entropy = cfg.fit.fixed_entropy;
  req.report_budgets = cfg.report_budgets;
  req.options = {{"bootstrap", cfg.fit.bootstrap}, {"from", "sweep run"}};
  ISOFLOP_ASSIGN_OR_RETURN(analysis::SweepReport report, analysis::FitSweep(db, req));
  const analysis::Dataset& data = report.data;
  if (!data.excluded.empty()) {
    std::cout << "\nexcluded from the fit (diverged; set fit.include_diverged to keep them):\n";
    for (const auto& e : data.excluded) std::cout << "  " << e << "\n";
  }
  const fit::FitRecord& rec = report.main.record;
  if (rec.method != "parametric") {
    std::cout << "\nfit #" << report.main.id << ": " << rec.method << " on " << data.obs.size()
              << " runs\n";
    std::cout << "  " << rec.ParamsJson().dump() << "\n";
    return Status::Ok();
  }
  std::cout << "\nfit #" << report.main.id << ": " << rec.method << " " << rec.form << " on "
            << data.obs.size() << " runs (N = " << cfg.fit.convention << " parameters, C = 6ND)\n";
  PrintLaw(rec);
  const double e = rec.params.count("E") ? rec.params.at("E") : NAN;
  std::cout << "  fitted E = " << Fmt("%.4f", e) << Ci(rec, "E", "%.4f");
  if (data.entropy) {
    std::cout << "   true data entropy = " << Fmt("%.4f", *data.entropy) << " nats/token";
  }
  std::cout << "\n";
  if (report.entropy_gap_budget_span > 0) {
    std::cout << "  note: the free E is " << (e < *data.entropy ? "below" : "above")
              << " the entropy: budgets spanning " << Fmt("%.0f", report.entropy_gap_budget_span)
              << "x cannot separate E from A/N^alpha and B/D^beta (that needs "
                 ">= 100x); the fit with E held at the entropy is the one to extrapolate\n";
  }
  for (const std::string& w : IntervalWarnings(rec)) std::cout << "  " << w << "\n";
  for (const std::string& w : PowerLawWarnings(rec)) std::cout << "  warning: " << w << "\n";
  if (const std::string x = ExtrapolationSummary(rec); !x.empty()) std::cout << "  " << x << "\n";
  for (const analysis::FitOutcome& o : report.others) {
    if (!o.fit) {
      std::cout << "  (" << o.method << " fit: " << o.error << ")\n";
      continue;
    }
    const auto& params = o.fit->record.params;
    auto param = [&](const char* k) { return params.count(k) ? params.at(k) : NAN; };
    // "0.713 [0.285, 1.02]" where the bootstrap gave the exponent an interval.
    auto exponent = [&](const char* k, const char* ci) {
      std::string out = Fmt("%.3f", param(k));
      const auto it = o.fit->record.ci.find(ci);
      if (it != o.fit->record.ci.end() && std::isfinite(it->second.lo) &&
          std::isfinite(it->second.hi))
        out += " [" + Fmt("%.3f", it->second.lo) + ", " + Fmt("%.3f", it->second.hi) + "]";
      return out;
    };
    std::cout << "  fit #" << o.fit->id << " "
              << (o.method == "isoflop" ? "isoFLOP profiles (Approach 2)"
                                        : "training-curve envelope (Approach 1)")
              << ": N_opt ~ C^" << exponent("n_opt_a", "a") << ", D_opt ~ C^"
              << exponent("d_opt_b", "b") << "\n";
    for (const std::string& w : PowerLawWarnings(o.fit->record))
      std::cout << "    warning: " << w << "\n";
  }
  if (report.fixed_entropy) {
    std::cout << "\nfit #" << report.fixed_entropy->id << " with E held at the true entropy "
              << Fmt("%.4f", *data.entropy) << ":\n";
    PrintLaw(report.fixed_entropy->record);
    if (const std::string x = ExtrapolationSummary(report.fixed_entropy->record); !x.empty())
      std::cout << "  " << x << "\n";
  } else if (!report.fixed_entropy_error.empty()) {
    std::cout << "\n(fit with E held at the true entropy failed: " << report.fixed_entropy_error
              << ")\n";
  }
  // The answer leads with a fit whose E respects the known entropy: the free fit's E below it
  // predicts losses no model can reach. The other fit is shown beside it.
  const bool lead_fixed = report.headline == "fixed_entropy";
  std::cout << "\ncompute-optimal allocation"
            << (lead_fixed ? " (fit #" + std::to_string(report.fixed_entropy->id) +
                                 ", E held at the true entropy " + Fmt("%.4f", *data.entropy) +
                                 ": the free fit's E is below it)"
                           : std::string())
            << (cfg.fit.bootstrap > 0 ? " (95% bootstrap intervals)"
                                      : " (no intervals: set fit.bootstrap for them)")
            << ":\n";
  auto brief = [](const fit::Answer& b) {
    return "N = " + Fmt("%.3g", b.point.n) + AnsCi(b, "n") + ", D = " + Fmt("%.3g", b.point.d) +
           AnsCi(b, "d") + ", " + Fmt("%.0f", b.point.tokens_per_param) +
           " tokens/param, predicted loss " + Fmt("%.4f", b.point.loss);
  };
  for (const analysis::BudgetAnswer& a : report.answers) {
    if (!a.answer) {
      std::cout << "  C = " << Fmt("%.3g", a.c) << ": " << a.error << "\n";
      continue;
    }
    std::cout << "  for budget C = " << Fmt("%.3g", a.c) << " FLOPs: ";
    if (lead_fixed && a.fixed_entropy) {
      PrintAllocation(*a.fixed_entropy);
      std::cout << "\n    (free fit: " << brief(*a.answer) << ")\n";
    } else {
      PrintAllocation(*a.answer);
      std::cout << "\n";
      if (a.fixed_entropy)
        std::cout << "    (E held at the entropy: " << brief(*a.fixed_entropy) << ")\n";
    }
    if (!a.far.empty()) std::cout << "    warning: " << a.far << "\n";
    // No model reaches a loss below the data's entropy.
    if (data.entropy && a.answer->point.loss < *data.entropy)
      std::cout << "    warning: the free fit predicts loss " << Fmt("%.4f", a.answer->point.loss)
                << ", below the data's entropy " << Fmt("%.4f", *data.entropy)
                << ": no model can reach it\n";
  }
  if (!report.by_experts.empty()) {
    // Dense and MoE side by side: the fit over every run above mixes expert counts.
    std::cout << "\none law per expert count (N = " << cfg.fit.convention << " parameters"
              << (data.entropy ? ", E held at the entropy " + Fmt("%.4f", *data.entropy) : "")
              << "); the fit above mixes them:\n";
    std::vector<double> cs;
    for (const auto& a : report.answers) cs.push_back(a.c);
    Table t;
    t.columns = {{"experts", ""}, {"runs", ""}, {"fit", ""}, {"alpha", "%.3f"}, {"beta", "%.3f"}};
    for (double c : cs) {
      const std::string at = " @" + Fmt("%.3g", c);
      t.columns.push_back({"loss" + at, "%.4f"});
      t.columns.push_back({"N_opt" + at, "%.3g"});
      t.columns.push_back({"D_opt" + at, "%.3g"});
    }
    t.columns.push_back({"note", ""});
    for (const analysis::ExpertCountFit& e : report.by_experts) {
      std::vector<json> row = {e.n_experts == 0 ? json("dense") : json(e.n_experts), e.runs};
      if (!e.fit) {
        row.insert(row.end(), {json(), json(), json()});
        for (size_t i = 0; i < cs.size(); ++i)
          row.insert(row.end(), {json(), json(), json()});
        row.push_back(e.error);
        t.rows.push_back(std::move(row));
        continue;
      }
      const auto& p = e.fit->record.params;
      row.push_back("#" + std::to_string(e.fit->id));
      row.push_back(p.count("alpha") ? json(p.at("alpha")) : json());
      row.push_back(p.count("beta") ? json(p.at("beta")) : json());
      for (const auto& a : e.answers) {
        if (!a.answer) {
          row.insert(row.end(), {json(), json(), json()});
          continue;
        }
        row.insert(row.end(), {a.answer->point.loss, a.answer->point.n, a.answer->point.d});
      }
      row.push_back("");
      t.rows.push_back(std::move(row));
    }
    Print(std::cout, t, Format::kTable);
    PrintDenseEquivalents(report);
  }
  return Status::Ok();
}

// ---- sweep run / retry ---------------------------------------------------------------------

struct RunArgs {
  std::string file, name;
  std::vector<std::string> sets;
  bool no_fit = false, no_plot = false, failed_only = false, no_probe = false;
  bool detach = false;  // slurm: submit and return (`sweep sync` follows up)
  bool sync = false;    // sweep sync: carry on a stored sweep without resetting any cell
  bool watch = false;   // sweep sync --watch: follow the jobs until every cell has ended
  int max_parallel = -1;
};

// Runs the plan on SLURM: submits job arrays and follows them until every cell ended, or, with
// `detach`, returns once everything is submitted.
Result<sweep::SweepOutcome> RunOnSlurm(store::Store& db, const sweep::SweepConfig& cfg,
                                       const sweep::Plan& plan, sweep::ManagerOptions mo,
                                       bool detach) {
  sweep::SlurmExecutor executor(mo.train_binary, cfg.executor, cfg.name, cfg.output_dir);
  ISOFLOP_RETURN_IF_ERROR(executor.Check());
  mo.detach = detach;
  mo.poll_seconds = 0.5;  // the loop's tick; the executor polls SLURM every poll_seconds
  return sweep::RunSweep(db, cfg, plan, executor, mo);
}

Status Execute(const Context& ctx, sweep::SweepConfig cfg, const std::string& plot_dir_hint,
               const RunArgs& args) {
  if (args.max_parallel >= 0) cfg.executor.max_parallel = args.max_parallel;
  const bool slurm = cfg.executor.kind == "slurm";
  if (args.detach && !slurm) {
    return Status::InvalidArgument(
        "--detach needs executor.kind: slurm (local runs are children of this process)");
  }
  sweep::Resources res;
  if (!slurm) {
    ISOFLOP_ASSIGN_OR_RETURN(res, sweep::DetectResources(cfg.executor));
  }
  ISOFLOP_ASSIGN_OR_RETURN(sweep::Plan plan,
                           sweep::PlanSweep(cfg, slurm ? SlurmEnv(cfg.executor) : EnvFor(res)));
  for (const auto& w : plan.warnings) std::cout << "warning: " << w << "\n";
  ISOFLOP_ASSIGN_OR_RETURN(std::string train, FindTrainBinary(ctx));
  ISOFLOP_ASSIGN_OR_RETURN(auto db, store::Store::Open(ctx.db_path));
  std::set<std::string> finished;
  {
    store::RunFilter f;
    f.sweep_name = cfg.name;
    ISOFLOP_ASSIGN_OR_RETURN(std::vector<store::RunRecord> runs, db->ListRuns(f));
    for (const auto& r : runs)
      if (r.status == "finished") finished.insert(r.cell_key);
  }
  const bool live = LiveTerminal(STDOUT_FILENO);
  {
    // Before any launch: a vocabulary too small for the data fails here once, not in every run.
    sweep::DataCheckOptions dc;
    dc.cache = db.get();
    dc.out = &std::cout;
    dc.live = live;
    ISOFLOP_RETURN_IF_ERROR(sweep::CheckPlanData(cfg, plan, finished, dc).status());
  }
  if (!slurm && cfg.executor.cpus_per_run == sweep::ExecutorConfig::kAutoCpusPerRun && !res.gpu) {
    // `auto` needs the layout measured, and the measurement gives the ETA its estimates; not
    // worth seconds when every cell is already finished.
    const bool work = std::any_of(plan.cells.begin(), plan.cells.end(),
                                  [&](const sweep::Cell& c) { return !finished.count(c.key); });
    if (work) {
      for (const auto& line : ProbeEstimates(ctx, cfg, &plan, &res, !args.no_probe))
        std::cout << line << "\n";
    }
  }
  sweep::ManagerOptions mo;
  mo.train_binary = train;
  mo.out = &std::cout;
  mo.live = live;
  ISOFLOP_ASSIGN_OR_RETURN(sweep::SweepOutcome o,
                           slurm ? RunOnSlurm(*db, cfg, plan, mo, args.detach)
                                 : sweep::RunSweep(*db, cfg, plan, res, mo));
  if (o.file_changed && !o.diff.removed.empty()) {
    std::cout << "cells no longer in the sweep file (kept in the store, not fitted):";
    for (const auto& k : o.diff.removed) std::cout << " " << k;
    std::cout << "\n";
  }
  std::cout << "\nsweep " << cfg.name << ": " << o.finished << " finished, " << o.failed
            << " failed, " << o.diverged << " diverged, " << o.pending << " not finished ("
            << o.launched << " launches this time)\n";
  for (const auto& p : o.problems) std::cout << "  " << p << "\n";
  if (o.running > 0) {
    std::cout << o.running << " cell(s) running on SLURM; `isoflop sweep sync " << cfg.name
              << "` ingests them, resubmits what needs it and fits when all are done "
                 "(--watch: until then); `isoflop sweep status " << cfg.name
              << "` shows their jobs\n";
    return Status::Ok();
  }
  if (o.cancelled) {
    std::cout << "cancelled: unfinished cells are marked cancelled; `isoflop sweep run "
              << cfg.file_path << "` resumes them\n";
    return Status::Ok();
  }
  if (o.interrupted) {
    std::cout << "interrupted: runs stopped at a checkpoint; run the same command again to "
                 "resume\n";
    return Status::FailedPrecondition("sweep interrupted before it finished");
  }
  if (!args.no_fit) {
    Status st = FitAndReport(*db, cfg, plan);
    if (!st.ok()) return st.WithPrefix("fit");
  }
  if (!args.no_plot) {
    PlotOptions po;
    po.db_path = ctx.db_path;
    po.sweep = cfg.name;
    po.quiet = true;
    if (Status dep = CheckPlotDependencies(po); !dep.ok()) {
      std::cout << "\nplots skipped: " << dep.message() << "\n";
    } else if (Status st = RunPlot(po); !st.ok()) {
      std::cout << "\nplots failed: " << st.message() << "\n";
    }
  }
  (void)plot_dir_hint;
  if (o.failed > 0) {
    return Status::FailedPrecondition(std::to_string(o.failed) +
                                      " cell(s) failed (see above; `isoflop sweep retry " +
                                      cfg.name + "` runs them again)");
  }
  return Status::Ok();
}

Result<std::unique_ptr<store::Store>> OpenRead(const Context& ctx) {
  store::OpenOptions o;
  o.create_if_missing = false;
  return store::Store::Open(ctx.db_path, o);
}

// A sweep's relative data paths resolve against the directory it was first run from, stored
// with it, whatever the current directory of a later run: against another they would name
// other files, and every cell key (which hashes the resolved data) would change, so the whole
// sweep would run again on data that is not there.
Status RunRunCommand(const Context& ctx, const RunArgs& args) {
  ISOFLOP_ASSIGN_OR_RETURN(sweep::SweepConfig cfg, sweep::LoadSweepConfig(args.file, args.sets));
  std::error_code ec;
  if (fs::exists(ctx.db_path, ec)) {
    ISOFLOP_ASSIGN_OR_RETURN(auto db, OpenRead(ctx));
    ISOFLOP_ASSIGN_OR_RETURN(auto stored, db->GetSweep(cfg.name));
    if (stored && !stored->base_dir.empty() && stored->base_dir != cfg.base_dir) {
      std::cout << "note: relative paths in " << args.file << " resolve against "
                << stored->base_dir << ", where sweep " << cfg.name << " was first run\n";
      ISOFLOP_ASSIGN_OR_RETURN(
          cfg, sweep::ParseSweepConfig(cfg.text, args.file, args.sets, stored->base_dir));
    }
  }
  return Execute(ctx, std::move(cfg), "", args);
}

// The stored file text and its --set overrides: a JSON array since schema 4; before, comment
// lines appended to the text ("\n# --set key=value"), split back off here.
void SplitStoredText(const store::SweepRecord& sweep, std::string* text,
                     std::vector<std::string>* sets) {
  const auto overrides = nlohmann::json::parse(sweep.overrides_json, nullptr, false);
  if (overrides.is_array() && !overrides.empty()) {
    *text = sweep.config_text;
    sets->clear();
    for (const auto& o : overrides)
      if (o.is_string()) sets->push_back(o.get<std::string>());
    return;
  }
  const std::string& stored = sweep.config_text;
  const std::string marker = "\n# --set ";
  // Collect trailing "# --set" lines.
  std::vector<std::string> found;
  std::string t = stored;
  while (true) {
    size_t at = t.rfind(marker);
    if (at == std::string::npos || t.find('\n', at + 1) != std::string::npos) break;
    found.insert(found.begin(), t.substr(at + marker.size()));
    t = t.substr(0, at);
  }
  *text = t;
  *sets = found;
}

}  // namespace

// (stored_sweep.h.) A store from before schema 7 did not record where the sweep was first run:
// its relative data paths resolve against the current directory, as they did then.
Result<sweep::SweepConfig> StoredSweepConfig(store::Store& db, const store::SweepRecord& sweep) {
  std::string text;
  std::vector<std::string> sets;
  SplitStoredText(sweep, &text, &sets);
  std::error_code ec;
  const std::string base = sweep.base_dir.empty() ? fs::current_path(ec).string() : sweep.base_dir;
  ISOFLOP_ASSIGN_OR_RETURN(sweep::SweepConfig cfg,
                           sweep::ParseSweepConfig(text, sweep.file_path, sets, base));
  store::RunFilter f;
  f.sweep_name = sweep.name;
  ISOFLOP_ASSIGN_OR_RETURN(auto runs, db.ListRuns(f));
  if (!runs.empty() && !runs.front().run_dir.empty()) {
    cfg.output_dir = fs::path(runs.front().run_dir).parent_path().string();
  }
  return cfg;
}

namespace {

// The tasks the queue holds for a stored SLURM sweep, recorded in the store or not (run folder
// -> "slurm:ID"); none for a local sweep. The parse error when its stored file no longer parses.
Result<std::map<std::string, std::string>> LiveSlurmJobs(store::Store& db,
                                                         const store::SweepRecord& sweep) {
  ISOFLOP_ASSIGN_OR_RETURN(sweep::SweepConfig cfg, StoredSweepConfig(db, sweep));
  if (cfg.executor.kind != "slurm") return std::map<std::string, std::string>();
  return sweep::SlurmExecutor("", cfg.executor, cfg.name, cfg.output_dir).LiveJobs();
}

// sweep retry (reset failed cells, then run) and sweep sync (run as stored): the stored sweep
// file and overrides, the run folders where they are; sync --watch follows the jobs to the end.
Status RunRetryCommand(const Context& ctx, RunArgs args) {
  store::OpenOptions oo;
  oo.create_if_missing = false;
  ISOFLOP_ASSIGN_OR_RETURN(auto db, store::Store::Open(ctx.db_path, oo));
  ISOFLOP_ASSIGN_OR_RETURN(auto sweep, db->GetSweep(args.name));
  if (!sweep) return Status::NotFound("no sweep named '" + args.name + "' in " + ctx.db_path);
  if (args.sync && sweep->status == "cancelled") {
    // A cancel stands until someone asks for the cells again: a sync (from cron, say) must not
    // resubmit what `sweep cancel` stopped.
    std::cout << "sweep " << args.name
              << " is cancelled: sync submits nothing (`isoflop sweep retry " << args.name
              << "` runs its cancelled cells again)\n";
    if (auto live = LiveSlurmJobs(*db, *sweep); live.ok() && !live->empty()) {
      std::cout << live->size() << " SLURM task(s) of it are still queued or running:";
      for (const auto& [dir, id] : *live) std::cout << " " << id.substr(id.find(':') + 1);
      std::cout << "; `isoflop sweep cancel " << args.name << "` stops them\n";
    }
    return Status::Ok();
  }
  if (!args.sync) {
    ISOFLOP_ASSIGN_OR_RETURN(int n, sweep::ResetCells(*db, args.name, args.failed_only));
    std::cout << "retrying " << n << " cell(s) of " << args.name << "\n";
  }
  ISOFLOP_ASSIGN_OR_RETURN(sweep::SweepConfig cfg, StoredSweepConfig(*db, *sweep));
  db.reset();
  // sync detaches only where the jobs outlive this process; a local sweep simply resumes.
  args.detach = args.sync && !args.watch && cfg.executor.kind == "slurm";
  return Execute(ctx, std::move(cfg), "", args);
}

// ---- status, sweeps, cancel ----------------------------------------------------------------

Status ListSweeps(const Context& ctx, const std::string& format_name) {
  ISOFLOP_ASSIGN_OR_RETURN(Format format, ParseFormat(format_name));
  ISOFLOP_ASSIGN_OR_RETURN(auto db, OpenRead(ctx));
  ISOFLOP_ASSIGN_OR_RETURN(auto sweeps, db->ListSweeps());
  Table t;
  t.columns = {{"name", ""},   {"status", ""},   {"cells", ""}, {"finished", ""}, {"running", ""},
               {"failed", ""}, {"diverged", ""}, {"other", ""}, {"file", ""},     {"updated", ""}};
  for (const auto& s : sweeps) {
    store::RunFilter f;
    f.sweep_name = s.name;
    ISOFLOP_ASSIGN_OR_RETURN(auto runs, db->ListRuns(f));
    std::map<std::string, int> n;
    for (const auto& r : runs) n[r.status]++;
    const int other =
        static_cast<int>(runs.size()) - n["finished"] - n["running"] - n["failed"] - n["diverged"];
    t.rows.push_back({s.name, s.status, runs.size(), n["finished"], n["running"], n["failed"],
                      n["diverged"], other, s.file_path, s.updated_at});
  }
  Print(std::cout, t, format);
  return Status::Ok();
}

Status SweepStatus(const Context& ctx, const std::string& name, const std::string& format_name) {
  if (name.empty()) return ListSweeps(ctx, format_name);
  ISOFLOP_ASSIGN_OR_RETURN(Format format, ParseFormat(format_name));
  ISOFLOP_ASSIGN_OR_RETURN(auto db, OpenRead(ctx));
  ISOFLOP_ASSIGN_OR_RETURN(auto sweep, db->GetSweep(name));
  if (!sweep) return Status::NotFound("no sweep named '" + name + "' in " + ctx.db_path);
  store::RunFilter f;
  f.sweep_name = name;
  ISOFLOP_ASSIGN_OR_RETURN(auto runs, db->ListRuns(f));
  std::sort(runs.begin(), runs.end(), [](const auto& a, const auto& b) {
    return a.budget_flops != b.budget_flops ? a.budget_flops < b.budget_flops
                                            : a.n_total < b.n_total;
  });
  Table t;
  t.columns = {{"cell", ""},     {"budget", "%.3g"},  {"shape", ""},          {"n_total", ""},
               {"tokens", ""},   {"status", ""},      {"progress", "%.0f%%"}, {"val_loss", "%.4f"},
               {"attempts", ""}, {"peak_memory", ""}, {"reason", ""}};
  // A running cell without a job: its array was submitted by a manager killed before it
  // recorded the ids. The queue still knows the task (shown here; `sweep sync` adopts it).
  if (std::any_of(runs.begin(), runs.end(),
                  [](const auto& r) { return r.status == "running" && r.job_id.empty(); })) {
    if (auto live = LiveSlurmJobs(*db, *sweep); live.ok()) {
      for (auto& r : runs) {
        const auto it = live->find(r.run_dir);
        if (r.status != "running" || !r.job_id.empty() || it == live->end()) continue;
        r.job_id = it->second;
        r.reason = "job not recorded (its manager was killed after sbatch); `isoflop sweep sync " +
                   name + "` adopts it";
      }
    }
  }
  // SLURM sweeps: each cell's job and what the scheduler says of it now.
  std::vector<std::string> slurm_ids;
  for (const auto& r : runs)
    if (r.job_id.rfind("slurm:", 0) == 0) slurm_ids.push_back(r.job_id.substr(6));
  std::optional<std::map<std::string, sweep::SlurmTaskState>> slurm_states;
  if (!slurm_ids.empty()) {
    t.columns.insert(t.columns.end() - 1, {{"job", ""}, {"slurm", ""}});
    slurm_states = sweep::QuerySlurm(slurm_ids);
  }
  std::map<std::string, int> counts;
  for (const auto& r : runs) {
    counts[r.status]++;
    std::vector<json> row = {r.cell_key,
                             r.budget_flops,
                             std::to_string(r.n_layer) + "x" + std::to_string(r.d_model) + "h" +
                                 std::to_string(r.n_head),
                             r.n_total,
                             r.target_tokens,
                             r.status,
                             r.target_tokens > 0 ? 100.0 * r.tokens_done / r.target_tokens : 0.0,
                             r.final_val_loss ? json(*r.final_val_loss) : json(),
                             r.attempts,
                             BytesCell(r.peak_memory, format)};
    if (!slurm_ids.empty()) {
      const bool has = r.job_id.rfind("slurm:", 0) == 0;
      row.push_back(has ? json(r.job_id.substr(6)) : json());
      std::string state;
      if (has && slurm_states) {
        auto it = slurm_states->find(r.job_id.substr(6));
        state = it == slurm_states->end() ? "(no record)" : it->second.state;
        if (it != slurm_states->end() && !it->second.reason.empty() &&
            it->second.state == "PENDING")
          state += " (" + it->second.reason + ")";
      } else if (has) {
        state = "(SLURM does not answer)";
      }
      row.push_back(has ? json(state) : json());
    }
    row.push_back(r.reason);
    t.rows.push_back(std::move(row));
  }
  Print(std::cout, t, format);
  if (format == Format::kTable) {
    std::cout << "\nsweep " << name << " (" << sweep->status << "): " << runs.size() << " cells";
    for (const auto& [s, n] : counts) std::cout << ", " << n << " " << s;
    std::cout << "\n";
  }
  return Status::Ok();
}

Status CancelCommand(const Context& ctx, const std::string& name) {
  store::OpenOptions o;
  o.create_if_missing = false;
  ISOFLOP_ASSIGN_OR_RETURN(auto db, store::Store::Open(ctx.db_path, o));
  ISOFLOP_ASSIGN_OR_RETURN(auto sweep, db->GetSweep(name));
  if (!sweep) return Status::NotFound("no sweep named '" + name + "' in " + ctx.db_path);
  // A SLURM sweep's queued and running tasks, recorded or not: a manager killed between sbatch
  // and recording the job ids left an array that only the queue knows of.
  auto live = LiveSlurmJobs(*db, *sweep);
  if (!live.ok()) {
    std::cout << "note: sweep " << name << "'s stored file does not parse now ("
              << live.status().message()
              << "); on SLURM, only the jobs the store recorded are cancelled\n";
  }
  ISOFLOP_ASSIGN_OR_RETURN(
      sweep::CancelOutcome c,
      sweep::CancelSweep(*db, name, live.ok() ? *live : std::map<std::string, std::string>()));
  if (!c.ended.empty()) {
    std::cout << "sweep " << name << " is " << c.ended << ": nothing to cancel"
              << (c.ended == "failed"
                      ? " (`isoflop sweep retry " + name + "` runs its failed cells again)"
                      : "")
              << "\n";
  } else if (c.manager_pid > 0) {
    std::cout << "asked the running manager (pid " << c.manager_pid << ") to stop sweep " << name
              << "; its runs stop at a checkpoint\n";
  } else {
    std::cout << "sweep " << name << " cancelled (no manager was running it)";
    if (!c.scancelled.empty()) {
      std::cout << "; scancel of " << c.scancelled.size() << " SLURM task(s):";
      for (const std::string& id : c.scancelled) std::cout << " " << id;
    }
    std::cout << "\n";
  }
  return Status::Ok();
}

void AddSweepCommand(CLI::App& app, Context& ctx) {
  CLI::App* sweep = app.add_subcommand(
      "sweep", "Plan and run scaling-law sweeps from sweep files (docs/sweep-files.md)");
  sweep->require_subcommand(1);

  auto plan = std::make_shared<PlanArgs>();
  CLI::App* p = sweep->add_subcommand(
      "plan", "Show the cells a sweep file expands to, with N, D, C, memory and time estimates");
  p->add_option("file", plan->file, "Sweep file (.yaml)")->required();
  p->add_option("--set", plan->sets, "Override a key: --set train.lr=1e-3 (repeatable)");
  p->add_option("--format", plan->format, "table | csv | json")
      ->check(OneOf({"table", "csv", "json"}))
      ->capture_default_str();
  p->add_flag("--no-probe", plan->no_probe,
              "Estimate time from the throughput model instead of probing isoflop-train (on CPU "
              "the probe trains a few shapes for a second each)");
  p->callback([&ctx, plan] { ctx.status = RunPlanCommand(ctx, *plan); });

  auto run = std::make_shared<RunArgs>();
  CLI::App* r = sweep->add_subcommand(
      "run",
      "Run every unfinished cell of a sweep file, ingest results, fit and print the "
      "compute-optimal answer. Safe to re-run: finished cells are skipped, interrupted ones "
      "resume from their checkpoints.");
  r->add_option("file", run->file, "Sweep file (.yaml)")->required();
  r->add_option("--set", run->sets, "Override a key: --set train.lr=1e-3 (repeatable)");
  r->add_option("--max-parallel", run->max_parallel,
                "Most runs at once, 0 = as many as devices allow (overrides the file)")
      ->check(CLI::Range(0, 4096).name(""));
  r->add_flag("--no-fit", run->no_fit, "Do not fit at the end");
  r->add_flag("--no-plot", run->no_plot, "Do not draw plots at the end");
  r->add_flag("--no-probe", run->no_probe,
              "With executor.cpus_per_run: auto, do not measure: all cores for one run");
  r->add_flag("--detach", run->detach,
              "executor.kind slurm: submit the job arrays and return; `isoflop sweep sync NAME` "
              "follows up");
  r->callback([&ctx, run] { ctx.status = RunRunCommand(ctx, *run); });

  auto sync = std::make_shared<RunArgs>();
  sync->sync = true;
  sync->detach = true;
  CLI::App* sy = sweep->add_subcommand(
      "sync",
      "Carry a stored sweep forward: ingest its runs, take over the jobs still running on SLURM, "
      "resubmit what needs it, fit when every cell is done. One pass and return (safe from cron), "
      "or with --watch until the sweep is done.");
  sy->add_option("name", sync->name, "Sweep name")->required();
  sy->add_flag("--watch", sync->watch, "Follow the jobs until every cell has ended");
  sy->add_flag("--no-fit", sync->no_fit, "Do not fit at the end");
  sy->add_flag("--no-plot", sync->no_plot, "Do not draw plots at the end");
  sy->callback([&ctx, sync] {
    RunArgs a = *sync;
    a.no_probe = true;
    ctx.status = RunRetryCommand(ctx, a);
  });

  auto status = std::make_shared<std::pair<std::string, std::string>>("", "table");
  CLI::App* s =
      sweep->add_subcommand("status", "Cells of a sweep and their state (all sweeps without NAME)");
  s->add_option("name", status->first, "Sweep name");
  s->add_option("--format", status->second, "table | csv | json")
      ->check(OneOf({"table", "csv", "json"}))
      ->capture_default_str();
  s->callback([&ctx, status] { ctx.status = SweepStatus(ctx, status->first, status->second); });

  auto retry = std::make_shared<RunArgs>();
  CLI::App* rt = sweep->add_subcommand(
      "retry", "Run a stored sweep's failed, diverged and cancelled cells again");
  rt->add_option("name", retry->name, "Sweep name")->required();
  rt->add_flag("--failed", retry->failed_only, "Only failed cells (not diverged or cancelled)");
  rt->add_option("--max-parallel", retry->max_parallel,
                 "Most runs at once, 0 = as many as devices allow")
      ->check(CLI::Range(0, 4096).name(""));
  rt->add_flag("--no-fit", retry->no_fit, "Do not fit at the end");
  rt->add_flag("--no-plot", retry->no_plot, "Do not draw plots at the end");
  rt->add_flag("--no-probe", retry->no_probe,
               "With executor.cpus_per_run: auto, do not measure: all cores for one run");
  rt->callback([&ctx, retry] { ctx.status = RunRetryCommand(ctx, *retry); });

  auto cancel = std::make_shared<std::string>();
  CLI::App* c = sweep->add_subcommand(
      "cancel", "Stop a running sweep at a checkpoint and mark its unfinished cells cancelled");
  c->add_option("name", *cancel, "Sweep name")->required();
  c->callback([&ctx, cancel] { ctx.status = CancelCommand(ctx, *cancel); });
}

void AddSweepsCommand(CLI::App& app, Context& ctx) {
  auto format = std::make_shared<std::string>("table");
  CLI::App* cmd = app.add_subcommand("sweeps", "List sweeps with their cell counts");
  cmd->add_option("--format", *format, "table | csv | json")
      ->check(OneOf({"table", "csv", "json"}))
      ->capture_default_str();
  cmd->callback([&ctx, format] { ctx.status = ListSweeps(ctx, *format); });
}

}  // namespace

ISOFLOP_REGISTER_COMMAND("sweep", 10, AddSweepCommand);
ISOFLOP_REGISTER_COMMAND("sweeps", 11, AddSweepsCommand);

}  // namespace isoflop::cli
