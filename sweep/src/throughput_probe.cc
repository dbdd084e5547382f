// The throughput probe: short real isoflop-train runs in temporary folders, their metrics read
// back into tokens/s, the CPU layout decision, and the per-cell time estimates built from them.
#include "isoflop/sweep/throughput_probe.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "isoflop/sweep/ingest.h"
#include "isoflop/sweep/memory_estimate.h"
#include "isoflop/trainer/run_config.h"

namespace isoflop::sweep {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string Rate(double tokens_per_s) {
  char buf[32];
  if (tokens_per_s >= 1e6) {
    std::snprintf(buf, sizeof(buf), "%.2fM", tokens_per_s / 1e6);
  } else if (tokens_per_s >= 1e3) {
    std::snprintf(buf, sizeof(buf), "%.1fk", tokens_per_s / 1e3);
  } else {
    std::snprintf(buf, sizeof(buf), "%.0f", tokens_per_s);
  }
  return std::string(buf) + " tok/s";
}

std::string LayoutName(int runs, int threads) {
  return std::to_string(runs) + (runs == 1 ? " run" : " runs") + " x " + std::to_string(threads) +
         (threads == 1 ? " thread" : " threads");
}

volatile std::sig_atomic_t g_probe_signal = 0;
extern "C" void OnProbeSignal(int sig) { g_probe_signal = sig; }

// While a probe runs, SIGINT, SIGTERM and SIGHUP only set a flag: the probe stops its trainers
// and removes its folder. On scope exit the previous handlers come back and a signal that
// arrived is raised again, so Ctrl-C still ends `isoflop sweep plan` (with nothing left behind).
class ScopedStopSignals {
 public:
  ScopedStopSignals() {
    g_probe_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = OnProbeSignal;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < kSignals.size(); ++i) sigaction(kSignals[i], &sa, &old_[i]);
  }
  ~ScopedStopSignals() {
    for (size_t i = 0; i < kSignals.size(); ++i) sigaction(kSignals[i], &old_[i], nullptr);
    if (g_probe_signal != 0) std::raise(g_probe_signal);
  }
  ScopedStopSignals(const ScopedStopSignals&) = delete;
  ScopedStopSignals& operator=(const ScopedStopSignals&) = delete;
  int received() const { return g_probe_signal; }

 private:
  static constexpr std::array<int, 3> kSignals = {SIGINT, SIGTERM, SIGHUP};
  std::array<struct sigaction, 3> old_{};
};

// Removes a temporary folder tree when it goes out of scope.
struct ScratchFolder {
  std::string path;
  ~ScratchFolder() {
    std::error_code ec;
    if (!path.empty()) fs::remove_all(path, ec);
  }
};

// Optimizer steps a probe of `cell` trains: warm-up plus enough to fill target_seconds at the
// modelled speed, within [min_steps, max_steps].
int64_t ProbeSteps(const Cell& cell, int threads, const ProbeOptions& o) {
  const int64_t batch = cell.config["train"]["batch_tokens"].get<int64_t>();
  const double model_tokens_per_s =
      EstimateFlopsPerSecond(cell.n_active, /*gpu=*/false, threads, 0) /
      std::max(cell.flops_per_token_6n, 1.0);
  const double steps = std::ceil(o.target_seconds * model_tokens_per_s / double(batch));
  return o.warmup_steps +
         std::clamp<int64_t>(static_cast<int64_t>(steps), o.min_steps, o.max_steps);
}

// The probe's run.json: the cell's run with a short budget, one small evaluation at the end
// (eval_interval beyond the last step), no checkpoints.
std::string ProbeRunJson(const Cell& cell, int threads, int64_t steps, const ProbeOptions& o) {
  json j = cell.config;
  json& t = j["train"];
  const int64_t batch = t["batch_tokens"].get<int64_t>();
  const int64_t seq_len = j["model"]["seq_len"].get<int64_t>();
  j["name"] = "throughput-probe";
  t["tokens"] = steps * batch;
  t["eval_interval_steps"] = steps + 1;
  t["eval_tokens"] = seq_len * t["micro_batch"].get<int64_t>();
  t["log_interval_steps"] = o.log_interval_steps;
  t["ckpt_interval_steps"] = steps + 1;
  t["threads"] = threads;
  t["device"] = "cpu";
  // Written by the trainer's run-config library, like every run.json; a config it refuses is
  // passed on as it is, so the probe's trainer reports the field.
  Result<trainer::RunConfig> parsed = trainer::ParseRunConfig(j.dump());
  return parsed.ok() ? trainer::RunConfigToJson(*parsed) : j.dump(2) + "\n";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Distinct shapes of a plan: cells that train the same model on the same batch at the same
// speed.
struct ShapeGroup {
  std::string key;
  std::vector<size_t> cells;  // indices into plan->cells
  int64_t n_total = 0;
  double cost = 0;  // summed modelled seconds: where the sweep's time goes
};

std::vector<ShapeGroup> GroupShapes(const Plan& plan) {
  std::map<std::string, ShapeGroup> by_key;
  for (size_t i = 0; i < plan.cells.size(); ++i) {
    const Cell& c = plan.cells[i];
    const json& t = c.config["train"];
    const std::string key = json{{"model", c.config["model"]},
                                 {"batch_tokens", t["batch_tokens"]},
                                 {"micro_batch", t["micro_batch"]},
                                 {"source", c.config["data"].value("source", "")}}
                                .dump();
    ShapeGroup& g = by_key[key];
    g.key = key;
    g.cells.push_back(i);
    g.n_total = c.n_total;
    g.cost += c.est_seconds;
  }
  std::vector<ShapeGroup> out;
  for (auto& [k, g] : by_key) out.push_back(std::move(g));
  std::stable_sort(out.begin(), out.end(),
                   [](const ShapeGroup& a, const ShapeGroup& b) { return a.n_total < b.n_total; });
  return out;
}

// Seconds a cell takes at `tokens_per_s`: start-up overhead, training, and its evaluations
// (every eval_interval_steps and at the end; a forward pass is about a third of a training
// step's work, Kaplan et al. 2020 sec. 2.1).
double CellSeconds(const Cell& c, double tokens_per_s, double overhead_s) {
  const json& t = c.config["train"];
  const int64_t interval = std::max<int64_t>(1, t.value("eval_interval_steps", int64_t{50}));
  const int64_t evals = c.steps / interval + (c.steps % interval != 0 ? 1 : 0);
  const double eval_tokens = double(evals) * t.value("eval_tokens", int64_t{0});
  return overhead_s + (double(c.tokens) + eval_tokens / 3.0) / tokens_per_s;
}

}  // namespace

Status ProbeOptions::Validate() const {
  auto bad = [](const std::string& field, const std::string& what) {
    return Status::InvalidArgument("probe option " + field + ": " + what);
  };
  if (train_binary.empty()) return bad("train_binary", "required (the isoflop-train path)");
  if (warmup_steps < 0) return bad("warmup_steps", "must be >= 0");
  if (min_steps < 1) return bad("min_steps", "must be >= 1");
  if (max_steps < min_steps) return bad("max_steps", "must be >= min_steps");
  if (!(target_seconds > 0)) return bad("target_seconds", "must be > 0");
  if (log_interval_steps < 1) return bad("log_interval_steps", "must be >= 1");
  if (log_interval_steps > min_steps) return bad("log_interval_steps", "must be <= min_steps");
  if (!(timeout_seconds > 0)) return bad("timeout_seconds", "must be > 0");
  if (max_shapes < 1) return bad("max_shapes", "must be >= 1");
  if (!(budget_seconds > 0)) return bad("budget_seconds", "must be > 0");
  if (cores < 0) return bad("cores", "must be >= 0 (0 = this machine's)");
  return Status::Ok();
}

Result<double> TokensPerSecondFromMetrics(const std::string& text, int warmup_steps,
                                          int64_t* measured_tokens) {
  int64_t consumed = 0;
  ISOFLOP_ASSIGN_OR_RETURN(std::vector<store::MetricRow> rows, ParseMetricsLines(text, &consumed));
  int64_t tokens = 0, prev_tokens = 0;
  double seconds = 0;
  for (const store::MetricRow& r : rows) {
    const int64_t interval = r.tokens - prev_tokens;
    prev_tokens = r.tokens;
    if (r.step <= warmup_steps || r.val_loss.has_value()) continue;
    if (!r.tokens_per_s || !(*r.tokens_per_s > 0) || interval <= 0) continue;
    tokens += interval;
    seconds += double(interval) / *r.tokens_per_s;
  }
  if (measured_tokens != nullptr) *measured_tokens = tokens;
  if (tokens == 0 || !(seconds > 0)) {
    return Status::NotFound("no metrics line after the first " + std::to_string(warmup_steps) +
                            " steps");
  }
  return double(tokens) / seconds;
}

double InterpolateTokensPerSecond(std::vector<std::pair<double, double>> points, double n) {
  std::sort(points.begin(), points.end());
  // Average points at the same N (the same shape probed twice).
  std::vector<std::pair<double, double>> p;
  for (size_t i = 0; i < points.size();) {
    size_t j = i;
    double log_sum = 0;
    for (; j < points.size() && points[j].first == points[i].first; ++j)
      log_sum += std::log(points[j].second);
    p.emplace_back(points[i].first, std::exp(log_sum / double(j - i)));
    i = j;
  }
  if (p.size() == 1) return p[0].second * p[0].first / n;  // FLOP/s held constant
  size_t b = 1;
  while (b + 1 < p.size() && p[b].first < n) ++b;
  const size_t a = b - 1;
  const double x =
      (std::log(n) - std::log(p[a].first)) / (std::log(p[b].first) - std::log(p[a].first));
  return std::exp(std::log(p[a].second) + x * (std::log(p[b].second) - std::log(p[a].second)));
}

CpuLayout ChooseCpuLayout(const std::vector<LayoutFigure>& figures, int cells, double min_gain) {
  cells = std::max(cells, 1);
  auto effective = [&](const LayoutFigure& f) {
    const int runs = std::max(f.runs, 1);
    return f.tokens_per_s * double(std::min(cells, runs)) / double(runs);
  };
  const double base = effective(figures.front());
  size_t best = 0;
  for (size_t i = 1; i < figures.size(); ++i) {
    const double e = effective(figures[i]);
    if (e > base * (1 + min_gain) && e > effective(figures[best])) best = i;
  }
  CpuLayout out;
  out.threads_per_run = figures[best].threads_per_run;
  out.slots = std::max(figures[best].runs, 1);
  out.speedup = base > 0 ? effective(figures[best]) / base : 1;
  std::string text;
  for (const LayoutFigure& f : figures) {
    if (!text.empty()) text += "; ";
    text += LayoutName(f.runs, f.threads_per_run) + ": " + Rate(f.tokens_per_s) +
            (f.runs > 1 ? " in all" : "");
    if (f.runs > cells) text += " (" + std::to_string(cells) + " cell(s) use only part of it)";
  }
  char gain[64];
  std::snprintf(gain, sizeof(gain), "%.2fx", out.speedup);
  text += " -> " + LayoutName(out.slots, out.threads_per_run);
  if (best != 0) {
    text += std::string(" (") + gain + " the throughput of " +
            LayoutName(figures[0].runs, figures[0].threads_per_run) + ")";
  } else if (figures.size() > 1) {
    text += " (the others are not faster by more than " +
            std::to_string(static_cast<int>(std::lround(min_gain * 100))) + "%)";
  }
  out.explanation = text;
  return out;
}

Result<std::vector<ProbeFigure>> MeasureThroughput(const std::vector<Cell>& cells, int threads,
                                                   const ProbeOptions& opts) {
  ISOFLOP_RETURN_IF_ERROR(opts.Validate());
  if (::access(opts.train_binary.c_str(), X_OK) != 0) {
    return Status::FailedPrecondition(opts.train_binary + ": not an executable file");
  }
  if (cells.empty()) return std::vector<ProbeFigure>{};
  std::error_code ec;
  fs::path base =
      opts.scratch_dir.empty() ? fs::temp_directory_path(ec) : fs::path(opts.scratch_dir);
  if (ec) base = "/tmp";
  // Declared before the folder: its destructor (re-raising a stop signal) runs after the
  // folder's (removing it).
  ScopedStopSignals signals;
  std::string tmpl = (base / "isoflop-probe-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return Status::IoError("cannot make a probe folder under " + base.string() + ": " +
                           std::strerror(errno));
  }
  ScratchFolder scratch{tmpl};

  struct Child {
    std::string dir;
    pid_t pid = -1;
    Clock::time_point started, stop_asked;
    double elapsed = 0;
    int status = 0;
    bool done = false, stopped = false;
  };
  std::vector<Child> children(cells.size());
  for (size_t i = 0; i < cells.size(); ++i) {
    children[i].dir = scratch.path + "/" + std::to_string(i);
    fs::create_directories(children[i].dir, ec);
    const int64_t steps = ProbeSteps(cells[i], threads, opts);
    std::ofstream(children[i].dir + "/run.json") << ProbeRunJson(cells[i], threads, steps, opts);
  }
  // Start them together: the measurement is of runs sharing the machine as the sweep's will.
  Status start_error;
  for (Child& c : children) {
    if (signals.received()) break;
    Result<pid_t> pid = StartTrainer(opts.train_binary, c.dir, "");
    if (!pid.ok()) {
      start_error = pid.status();
      break;
    }
    c.pid = *pid;
    c.started = Clock::now();
  }
  const auto begin = Clock::now();
  for (size_t left = children.size(); left > 0;) {
    left = 0;
    for (Child& c : children) {
      if (c.pid < 0 || c.done) continue;
      pid_t r = waitpid(c.pid, &c.status, WNOHANG);
      if (r == c.pid || (r < 0 && errno != EINTR)) {
        c.done = true;
        c.elapsed = SecondsSince(c.started);
        continue;
      }
      ++left;
      // Too slow (or stuck), or told to stop: stop it; the trainer writes its lines so far and
      // exits. One that ignores SIGTERM for 15 s is killed.
      const bool stop = !start_error.ok() || SecondsSince(begin) > opts.timeout_seconds ||
                        signals.received() != 0;
      if (stop && !c.stopped) {
        kill(c.pid, SIGTERM);
        c.stopped = true;
        c.stop_asked = Clock::now();
      }
      if (c.stopped && SecondsSince(c.stop_asked) > 15) kill(c.pid, SIGKILL);
    }
    if (left > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ISOFLOP_RETURN_IF_ERROR(start_error);
  if (signals.received()) {
    return Status::Internal("throughput probe stopped by signal " +
                            std::to_string(signals.received()));
  }

  std::vector<ProbeFigure> out;
  for (size_t i = 0; i < cells.size(); ++i) {
    const Child& c = children[i];
    const std::string what = "throughput probe of " + cells[i].ShapeString();
    const bool exited_ok = WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0;
    if (!exited_ok && !c.stopped) {
      const std::string how = WIFEXITED(c.status)
                                  ? "exit code " + std::to_string(WEXITSTATUS(c.status))
                                  : "signal " + std::to_string(WTERMSIG(c.status));
      return Status::Internal(what + " failed (" + how + "): " + TailOfLog(c.dir));
    }
    ProbeFigure f;
    const std::string metrics = ReadFile(c.dir + "/metrics.jsonl");
    Result<double> rate =
        TokensPerSecondFromMetrics(metrics, opts.warmup_steps, &f.measured_tokens);
    if (!rate.ok()) {
      return Status::Internal(
          what + ": " + rate.status().message() +
          (c.stopped ? " before the " + std::to_string(static_cast<int>(opts.timeout_seconds)) +
                           " s timeout"
                     : "") +
          (metrics.empty() ? ": " + TailOfLog(c.dir) : ""));
    }
    f.tokens_per_s = *rate;
    int64_t consumed = 0, trained = 0;
    if (auto rows = ParseMetricsLines(metrics, &consumed); rows.ok() && !rows->empty())
      trained = rows->back().tokens;
    f.overhead_s = std::max(0.0, c.elapsed - double(trained) / f.tokens_per_s);
    if (auto st = ReadRunStatus(c.dir); st.ok() && *st && (*st)->peak_memory_bytes)
      f.peak_memory_bytes = *(*st)->peak_memory_bytes;
    out.push_back(f);
  }
  return out;
}

Result<ProbeReport> ProbePlan(Plan* plan, Resources* resources, bool choose_layout,
                              const ProbeOptions& opts) {
  if (resources->gpu) {
    return Status::FailedPrecondition("the throughput probe runs on CPU only");
  }
  if (plan->cells.empty()) return Status::FailedPrecondition("the plan has no cells");
  ISOFLOP_RETURN_IF_ERROR(opts.Validate());
  const auto begin = Clock::now();
  const std::vector<ShapeGroup> groups = GroupShapes(*plan);
  Resources res = *resources;
  ProbeReport report;
  std::map<size_t, ProbeFigure> figures;  // by index into groups
  auto first_cell = [&](size_t g) { return plan->cells[groups[g].cells.front()]; };

  if (choose_layout) {
    // On the shape where the sweep spends most time: one run on every core, then the same
    // cores as 2, 4, 8... concurrent runs of fewer threads, up to one run per core
    // (executor.max_parallel caps how many).
    const int cores = opts.cores > 0
                          ? opts.cores
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    size_t rep = 0;
    for (size_t g = 1; g < groups.size(); ++g)
      if (groups[g].cost > groups[rep].cost) rep = g;
    ISOFLOP_ASSIGN_OR_RETURN(std::vector<ProbeFigure> one,
                             MeasureThroughput({first_cell(rep)}, cores, opts));
    report.layout_figures.push_back({cores, 1, one[0].tokens_per_s});
    std::map<int, ProbeFigure> per_run_by_runs = {{1, one[0]}};
    // Then 2, 4, 8... concurrent runs splitting the cores evenly, and as many runs as allowed.
    const int max_runs = res.max_parallel > 0 ? std::min(cores, res.max_parallel) : cores;
    std::vector<int> layouts;
    for (int r = 2; r < max_runs; r *= 2)
      if (cores % r == 0) layouts.push_back(r);
    if (max_runs > 1) layouts.push_back(max_runs);
    for (const int runs : layouts) {
      if (SecondsSince(begin) > opts.budget_seconds) {
        report.notes.push_back("layouts of " + std::to_string(runs) +
                               "+ concurrent runs not measured: the probe's time budget is spent");
        break;
      }
      Result<std::vector<ProbeFigure>> many = MeasureThroughput(
          std::vector<Cell>(runs, first_cell(rep)), std::max(1, cores / runs), opts);
      if (!many.ok()) {
        report.notes.push_back(std::to_string(runs) +
                               " concurrent runs: " + many.status().message());
        continue;
      }
      ProbeFigure mean;
      double total = 0;
      for (const ProbeFigure& f : *many) {
        total += f.tokens_per_s;
        mean.overhead_s += f.overhead_s / runs;
        mean.peak_memory_bytes = std::max(mean.peak_memory_bytes, f.peak_memory_bytes);
      }
      mean.tokens_per_s = total / runs;
      report.layout_figures.push_back({std::max(1, cores / runs), runs, total});
      per_run_by_runs[runs] = mean;
    }
    report.layout = ChooseCpuLayout(report.layout_figures, static_cast<int>(plan->cells.size()));
    res.threads_per_run = report.layout->threads_per_run;
    res.cpu_slots = report.layout->slots;
    figures[rep] = per_run_by_runs[report.layout->slots];
  }

  // Shapes to probe: max_shapes spread evenly over the N-sorted shapes (the ends included, so
  // the rest are interpolated, not extrapolated).
  std::vector<size_t> unprobed;
  const size_t k = std::min<size_t>(opts.max_shapes, groups.size());
  for (size_t i = 0; i < k; ++i) {
    const size_t g =
        k == 1 ? groups.size() / 2
               : static_cast<size_t>(std::lround(double(i) * (groups.size() - 1) / double(k - 1)));
    if (!figures.count(g) && std::find(unprobed.begin(), unprobed.end(), g) == unprobed.end())
      unprobed.push_back(g);
  }
  // In rounds of cpu_slots concurrent runs, padded with copies so each round loads the machine
  // as the sweep will.
  const int concurrent =
      res.max_parallel > 0 ? std::min(res.cpu_slots, res.max_parallel) : res.cpu_slots;
  const size_t slots = static_cast<size_t>(std::max(1, concurrent));
  Status first_error;
  for (size_t at = 0; at < unprobed.size(); at += slots) {
    if (!figures.empty() && SecondsSince(begin) > opts.budget_seconds) {
      report.notes.push_back("stopped after " +
                             std::to_string(static_cast<int>(opts.budget_seconds)) +
                             " s; the other shapes are interpolated");
      break;
    }
    std::vector<Cell> round;
    for (size_t j = at; j < std::min(unprobed.size(), at + slots); ++j)
      round.push_back(first_cell(unprobed[j]));
    const size_t real = round.size();
    while (round.size() < slots) round.push_back(round.front());
    Result<std::vector<ProbeFigure>> r = MeasureThroughput(round, res.threads_per_run, opts);
    if (!r.ok()) {
      if (first_error.ok()) first_error = r.status();
      report.notes.push_back(r.status().message());
      continue;
    }
    for (size_t j = 0; j < real; ++j) figures[unprobed[at + j]] = (*r)[j];
  }
  if (figures.empty()) return first_error;

  std::vector<std::pair<double, double>> points;
  double overhead = 0;
  for (const auto& [g, f] : figures) {
    points.emplace_back(double(groups[g].n_total), f.tokens_per_s);
    overhead += f.overhead_s / double(figures.size());
  }
  plan->total_est_seconds = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    auto it = figures.find(g);
    const bool probed = it != figures.end();
    const double rate = probed ? it->second.tokens_per_s
                               : InterpolateTokensPerSecond(points, double(groups[g].n_total));
    const double g_overhead = probed ? it->second.overhead_s : overhead;
    for (size_t ci : groups[g].cells) {
      Cell& c = plan->cells[ci];
      c.est_seconds = CellSeconds(c, rate, g_overhead);
      c.est_source = probed ? Cell::EstimateSource::kProbed : Cell::EstimateSource::kInterpolated;
      // (A cell whose estimate differs from the probed one's, by an axis outside the shape
      // such as activation checkpointing, was not measured.)
      c.probed_peak_memory =
          probed && c.memory.total == first_cell(g).memory.total ? it->second.peak_memory_bytes : 0;
    }
    report.shapes.push_back({first_cell(g).ShapeString(), groups[g].n_total, rate, probed,
                             probed ? it->second.peak_memory_bytes : 0,
                             first_cell(g).memory.total});
  }
  for (const Cell& c : plan->cells) plan->total_est_seconds += c.est_seconds;
  report.threads_per_run = res.threads_per_run;
  report.slots = res.cpu_slots;
  report.seconds = SecondsSince(begin);
  *resources = res;
  return report;
}

}  // namespace isoflop::sweep
