// End to end through the real `isoflop` and `isoflop-train` binaries on a tiny CPU sweep
// (tests/sweep/testdata/tiny.yaml): the fit lands in the store; a SIGKILLed manager's sweep,
// re-run, has exactly the metric rows of an uninterrupted one; a cell with a bad data path fails
// alone with its reason; SIGINT leaves resumable checkpoints.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "e2e_util.h"
#include "isoflop/analysis/moe_sizing.h"
#include "isoflop/store/store.h"

namespace isoflop {
namespace {

namespace fs = std::filesystem;
using testing::Binary;
using testing::Slurp;
using testing::SpawnLogged;
using testing::TempDir;
using testing::WaitExit;
using testing::WaitFor;

const std::string kTiny = std::string(ISOFLOP_SOURCE_DIR) + "/tests/sweep/testdata/tiny.yaml";

// A run folder of `runs_dir` that has a complete checkpoint and no status.json (still running).
std::string RunningWithCheckpoint(const std::string& runs_dir) {
  std::error_code ec;
  for (const auto& run : fs::directory_iterator(runs_dir, ec)) {
    if (!run.is_directory() || fs::exists(run.path() / "status.json")) continue;
    for (const auto& ck : fs::directory_iterator(run.path() / "ckpt", ec)) {
      if (fs::exists(ck.path() / "DONE")) return run.path().string();
    }
  }
  return "";
}

// The state letter of a process in /proc/PID/stat ('T' stopped, 'Z' zombie), or 0 when gone.
char ProcState(pid_t pid) {
  const std::string stat = Slurp("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() ? 0 : stat[close + 2];
}

// Stops `pid` (SIGSTOP) at a moment it holds no write transaction on the store at `db`, and
// says whether it managed to. A manager stopped inside one would make every other writer wait
// out its busy timeout and fail ("database is locked"), which is not what the tests that stop a
// manager are about; where the stop lands is checked, not hoped for: stopped, the lock is tried
// without waiting, and a manager caught holding it is let go a moment and stopped again.
bool StopOutsideAWriteTransaction(pid_t pid, const std::string& db) {
  store::OpenOptions no_wait;
  no_wait.busy_timeout_ms = 0;
  for (int attempt = 0; attempt < 2000; ++attempt) {
    if (kill(pid, SIGSTOP) != 0) return false;
    if (!WaitFor([&] { return ProcState(pid) == 'T'; }, 10)) return false;
    {
      auto s = store::Store::Open(db, no_wait);
      if (s.ok() && (*s)->Begin().ok()) return true;  // the transaction rolls back unused
    }
    kill(pid, SIGCONT);
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  return false;
}

// No process works in `runs_dir` any more: none has a folder of it on its command line. (Not
// "every folder has a status.json": a worker stopped while it was still starting leaves without
// touching its folder, by design.)
bool AllLaunchedEnded(const std::string& runs_dir) {
  std::error_code ec;
  for (const auto& proc : fs::directory_iterator("/proc", ec)) {
    const std::string name = proc.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = Slurp(proc.path() / "cmdline");
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find(runs_dir + "/") != std::string::npos && ProcState(std::stoi(name)) != 'Z')
      return false;
  }
  return true;
}

std::vector<std::string> SweepRun(const std::string& db, const std::string& file,
                                  std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {Binary("isoflop"), "--db", db, "sweep", "run", file,
                                   "--no-plot"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

// cell key -> (step -> train loss) for every run of `sweep` in the store at `db`.
std::map<std::string, std::map<int64_t, double>> MetricRows(const std::string& db,
                                                            const std::string& sweep) {
  std::map<std::string, std::map<int64_t, double>> out;
  auto s = store::Store::Open(db);
  EXPECT_TRUE(s.ok());
  store::RunFilter f;
  f.sweep_name = sweep;
  auto runs = (*s)->ListRuns(f);
  EXPECT_TRUE(runs.ok());
  for (const auto& r : *runs) {
    auto rows = (*s)->GetMetrics(r.id);
    EXPECT_TRUE(rows.ok());
    auto& m = out[r.cell_key];
    for (const auto& row : *rows) {
      EXPECT_EQ(m.count(row.step), 0u) << "duplicate step " << row.step;
      m[row.step] = row.train_loss.value_or(-1);
    }
  }
  return out;
}

// Every metric row a finished run of tiny.yaml must have: each log step (every 2nd), the last
// step, and rows only for steps that are either.
void ExpectEveryRow(const std::string& db, const store::RunRecord& run) {
  auto s = store::Store::Open(db);
  ASSERT_TRUE(s.ok());
  auto rows = (*s)->GetMetrics(run.id);
  ASSERT_TRUE(rows.ok());
  const int64_t last_step = (run.target_tokens + 255) / 256;
  std::set<int64_t> steps;
  for (const auto& row : *rows) steps.insert(row.step);
  for (int64_t step = 2; step <= last_step; step += 2) {
    EXPECT_TRUE(steps.count(step)) << run.cell_key << ": no row for step " << step << " of "
                                   << last_step << " (" << steps.size() << " rows)";
  }
  EXPECT_TRUE(steps.count(last_step)) << run.cell_key;
  EXPECT_EQ(steps.size(), size_t(last_step / 2 + last_step % 2)) << run.cell_key;
  EXPECT_EQ(run.tokens_done, run.target_tokens) << run.cell_key;
}

std::vector<store::RunRecord> Runs(const std::string& db, const std::string& sweep) {
  auto s = store::Store::Open(db);
  store::RunFilter f;
  f.sweep_name = sweep;
  return *(*s)->ListRuns(f);
}

TEST(SweepE2ETest, RunsFitsStoresAndSkipsFinishedCellsOnRerun) {
  const std::string dir = TempDir("sweep_e2e");
  const std::string db = dir + "/s.db";
  auto r = testing::RunCommand(SweepRun(db, kTiny), {}, dir);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("for budget C = 8e+09 FLOPs: train N = "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("its peak memory"), std::string::npos) << r.out;  // within the estimate
  EXPECT_NE(r.out.find("true data entropy"), std::string::npos) << r.out;
  for (const auto& run : Runs(db, "tiny")) {
    EXPECT_EQ(run.status, "finished") << run.cell_key << " " << run.reason;
    EXPECT_TRUE(run.final_val_loss.has_value());
    EXPECT_TRUE(run.data_entropy.has_value());
    EXPECT_EQ(run.attempts, 1);
    EXPECT_EQ(run.tokens_done, run.target_tokens);
    EXPECT_TRUE(fs::exists(run.run_dir + "/run.json"));
    EXPECT_EQ(fs::path(run.run_dir).parent_path(), fs::path(dir) / "runs" / "tiny");
  }
  {
    auto s = store::Store::Open(db);
    auto fit = (*s)->LatestFit("sweep", "tiny", "parametric");
    ASSERT_TRUE(fit.ok() && fit->has_value());
    EXPECT_EQ((*fit)->n_points, 6);
    // Issue 14: the answer leads with the fit whose E respects the data's entropy (stored with
    // each fit, for `optimal`'s warnings), and that fit is the newest parametric one, so
    // `optimal --sweep` and `plot` answer with it; the other is shown beside it.
    const auto options = nlohmann::json::parse((*fit)->options_json);
    const double entropy = *Runs(db, "tiny")[0].data_entropy;
    EXPECT_DOUBLE_EQ(options["entropy"].get<double>(), entropy);
    const double e = nlohmann::json::parse((*fit)->params_json)["E"].get<double>();
    if (options.contains("fix")) {  // the free E fell below the entropy: the held fit leads
      EXPECT_DOUBLE_EQ(e, entropy);
      EXPECT_NE(r.out.find("E held at the true entropy"), std::string::npos) << r.out;
      EXPECT_NE(r.out.find(": the free fit's E is below it)"), std::string::npos) << r.out;
      EXPECT_NE(r.out.find("    (free fit: N = "), std::string::npos) << r.out;
    } else {
      EXPECT_GE(e, entropy);
      EXPECT_NE(r.out.find("    (E held at the entropy: N = "), std::string::npos) << r.out;
    }
    // The envelope fit beside it records its bootstrap as `isoflop fit` does (tiny.yaml: none).
    auto iso = (*s)->LatestFit("sweep", "tiny", "envelope");
    ASSERT_TRUE(iso.ok() && iso->has_value());
    const auto iso_options = nlohmann::json::parse((*iso)->options_json);
    EXPECT_EQ(iso_options.value("from", ""), "sweep run") << iso_options.dump();
    EXPECT_EQ(iso_options.value("bootstrap", -1), 0) << iso_options.dump();
  }
  // Re-running launches nothing, fits again and (plotting on this time) draws the figures.
  auto again = testing::RunCommand({Binary("isoflop"), "--db", db, "sweep", "run", kTiny}, {}, dir);
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_NE(again.out.find("6 already done, 0 to run"), std::string::npos) << again.out;
  // The tiny sweep's minima lie outside its 3 sizes, so Approach 2 has no usable budget: the
  // output says why instead of fitting nonsense.
  EXPECT_NE(again.out.find("(isoflop fit: an isoFLOP fit needs at least two budgets with a "
                           "usable minimum"),
            std::string::npos)
      << again.out;
  EXPECT_NE(again.out.find("training-curve envelope (Approach 1): N_opt ~ C^"), std::string::npos)
      << again.out;
  const fs::path plots = fs::path(dir) / "plots" / "tiny";
  EXPECT_NE(again.out.find("report " + (plots / "report.html").string()), std::string::npos)
      << again.out;
  for (const char* figure : {"isoflop_curves.png", "optimal_n_d.png", "training_curves.png",
                             "loss_contours.png", "residuals.png"}) {
    EXPECT_GT(fs::exists(plots / figure) ? fs::file_size(plots / figure) : 0, 1000u) << figure;
  }
  {
    auto s = store::Store::Open(db);
    auto fit = (*s)->LatestFit("sweep", "tiny", "envelope");
    EXPECT_TRUE(fit.ok() && fit->has_value());
  }
  // Approach 1 against numpy, from the SQLite file itself (Python's sqlite3, not isoflop's
  // reader): each finished run's training losses against FLOPs, a centred 5-point mean, linear
  // in ln C; at 40 levels from the shortest run's end to the largest FLOPs the lowest curve
  // (np.interp); ln N and ln D of the winners against ln C by np.polyfit. To 1e-9 relative.
  {
    const char kNumpy[] = R"PY(
import json, sqlite3, sys
import numpy as np
con = sqlite3.connect(sys.argv[1])
runs = con.execute("SELECT r.id, r.n_total, r.flops_per_token_6n FROM runs r JOIN sweeps s ON "
                   "r.sweep_id = s.id WHERE s.name = 'tiny' AND r.status = 'finished' ORDER BY r.id")
curves = []
for rid, n, fpt in runs.fetchall():
    rows = con.execute("SELECT flops, train_loss FROM metrics WHERE run_id = ? AND flops > 0 AND "
                       "train_loss > 0 ORDER BY step", (rid,)).fetchall()
    lf = np.log(np.array([r[0] for r in rows]) * (6 * n / fpt))
    loss = np.array([r[1] for r in rows])
    curves.append((n, lf, np.array([loss[max(0, i - 2):i + 3].mean() for i in range(len(loss))])))
lo = max(min(c[1][0] for c in curves), min(c[1][-1] for c in curves))
hi = max(c[1][-1] for c in curves)
pts = []
for x in np.linspace(lo, hi, 40):
    inside = [(np.interp(x, lf, sm), n) for n, lf, sm in curves if lf[0] <= x <= lf[-1]]
    loss, n = min(inside, key=lambda t: t[0])
    pts.append((np.exp(x), n, loss))
c, n = np.array([p[0] for p in pts]), np.array([p[1] for p in pts], dtype=float)
a_n, k_n = np.polyfit(np.log(c), np.log(n), 1)
a_d, k_d = np.polyfit(np.log(c), np.log(c / (6 * n)), 1)
print(json.dumps({"points": [{"c": p[0], "n": p[1], "loss": p[2]} for p in pts],
                  "n_opt": [a_n, float(np.exp(k_n))], "d_opt": [a_d, float(np.exp(k_d))]}))
)PY";
    auto py = testing::RunCommand({"/usr/bin/python3", "-c", kNumpy, db});
    ASSERT_EQ(py.exit_code, 0) << py.err;
    const auto ref = nlohmann::json::parse(py.out);
    auto env = testing::RunCommand({Binary("isoflop"), "--db", db, "fit", "--sweep", "tiny",
                                    "--method", "envelope", "--no-store", "--format", "json"},
                                   {}, dir);
    ASSERT_EQ(env.exit_code, 0) << env.err;
    const auto ours = nlohmann::json::parse(env.out)["result"]["envelope"];
    const auto rel = [](double x, double y) { return std::abs(x - y) / std::abs(y); };
    ASSERT_EQ(ours["points"].size(), ref["points"].size());
    for (size_t i = 0; i < ref["points"].size(); ++i) {
      for (const char* k : {"c", "n", "loss"}) {
        EXPECT_LT(rel(ours["points"][i][k].get<double>(), ref["points"][i][k].get<double>()), 1e-9)
            << "level " << i << " " << k;
      }
    }
    for (const char* law : {"n_opt", "d_opt"}) {
      EXPECT_LT(rel(ours[law]["a"].get<double>(), ref[law][0].get<double>()), 1e-9) << law;
      EXPECT_LT(rel(ours[law]["k"].get<double>(), ref[law][1].get<double>()), 1e-9) << law;
    }
  }
  // `isoflop fit --sweep` gives its intervals at the sweep's report budgets, as `sweep run`
  // does (tiny.yaml's report budget, 8e9), not at Chinchilla's 1e21.
  {
    auto fit = testing::RunCommand({Binary("isoflop"), "--db", db, "fit", "--sweep", "tiny",
                                    "--bootstrap", "10", "--no-store", "--format", "json"},
                                   {}, dir);
    ASSERT_EQ(fit.exit_code, 0) << fit.err;
    const auto j = nlohmann::json::parse(fit.out);
    EXPECT_TRUE(j["result"]["derived"].contains("N_opt@8e+09")) << j["result"]["derived"].dump();
    EXPECT_FALSE(j["result"]["derived"].contains("N_opt@1e+21"));
  }
  // A report budget far beyond the runs' compute (about 2e9 FLOPs) is answered with a warning.
  auto far = testing::RunCommand(SweepRun(db, kTiny, {"--set", "report.budgets=[1e13]"}), {}, dir);
  ASSERT_EQ(far.exit_code, 0) << far.out << far.err;
  EXPECT_NE(far.out.find("    warning: the optimum's C = 1e+13 is "), std::string::npos) << far.out;
  EXPECT_NE(far.out.find("x above the largest C of the fit's observations ("), std::string::npos)
      << far.out;
  // A changed file keeps matching cells and shows the difference.
  auto changed =
      testing::RunCommand(SweepRun(db, kTiny, {"--set", "budgets=[1e9]", "--no-fit"}), {}, dir);
  ASSERT_EQ(changed.exit_code, 0) << changed.out << changed.err;
  EXPECT_NE(changed.out.find("3 cells kept, 0 added, 3 no longer in the file"), std::string::npos)
      << changed.out;
  {
    // --set overrides are stored as data beside the file's own text, and a retry applies them.
    auto s = store::Store::Open(db);
    auto sweep = (*s)->GetSweep("tiny");
    ASSERT_TRUE(sweep.ok() && sweep->has_value());
    EXPECT_EQ((*sweep)->overrides_json, R"(["budgets=[1e9]"])");
    EXPECT_EQ((*sweep)->config_text, Slurp(kTiny));
  }
  auto retried = testing::RunCommand(
      {Binary("isoflop"), "--db", db, "sweep", "retry", "tiny", "--no-plot", "--no-fit"}, {}, dir);
  ASSERT_EQ(retried.exit_code, 0) << retried.out << retried.err;
  EXPECT_NE(retried.out.find("sweep tiny: 3 cells, 3 already done"), std::string::npos)
      << retried.out;
  auto status =
      testing::RunCommand({Binary("isoflop"), "--db", db, "sweep", "status", "tiny"}, {}, dir);
  EXPECT_EQ(status.exit_code, 0);
  EXPECT_NE(status.out.find("6 finished"), std::string::npos) << status.out;
  // Every run with its final loss and every N and C convention, for programs.
  auto exported = testing::RunCommand(
      {Binary("isoflop"), "--db", db, "export", "--sweep", "tiny", "--format", "csv"}, {}, dir);
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  EXPECT_EQ(std::count(exported.out.begin(), exported.out.end(), '\n'), 7) << exported.out;
  for (const char* column : {"n_total", "n_non_embedding", "c_6n", "c_6n_attn", "c_chinchilla",
                             "final_val_loss", "data_entropy"}) {
    EXPECT_NE(exported.out.substr(0, exported.out.find('\n')).find(column), std::string::npos)
        << column;
  }
  // Each run's memory: the estimate it was scheduled by beside the peak its worker measured.
  auto as_json = testing::RunCommand(
      {Binary("isoflop"), "--db", db, "export", "--sweep", "tiny", "--format", "json"}, {}, dir);
  ASSERT_EQ(as_json.exit_code, 0) << as_json.err;
  const nlohmann::json rows = nlohmann::json::parse(as_json.out);
  ASSERT_EQ(rows.size(), 6u);
  for (const auto& row : rows) {
    ASSERT_TRUE(row["memory_estimate_bytes"].is_number_integer()) << row.dump();
    ASSERT_TRUE(row["peak_memory_bytes"].is_number_integer()) << row.dump();
    EXPECT_EQ(row["peak_memory_of"], "host_rss");
    const double ratio =
        row["memory_estimate_bytes"].get<double>() / row["peak_memory_bytes"].get<double>();
    EXPECT_GT(ratio, 0.95) << row.dump();
    EXPECT_LT(ratio, 1.25) << row.dump();
  }
  EXPECT_NE(status.out.find("peak_memory"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find(" MiB"), std::string::npos) << status.out;
  auto list = testing::RunCommand({Binary("isoflop"), "--db", db, "sweeps"}, {}, dir);
  EXPECT_NE(list.out.find("tiny"), std::string::npos) << list.out;
}

// A run that needs more memory than the scheduler packed it by is named as it ends. Here the
// estimate is told to assume bf16 activations and fused attention (executor.mixed_precision and
// fused_attention), which the CPU trainer does not use: its explicit attention's probabilities
// alone exceed the estimate's slack.
TEST(SweepE2ETest, APeakAboveItsEstimateIsWarnedOfAndStored) {
  const std::string dir = TempDir("sweep_peak");
  const std::string db = dir + "/s.db";
  auto r = testing::RunCommand(
      SweepRun(db, kTiny,
               {"--no-fit", "--set", "budgets=[2e9]", "--set", "model.seq_len=256", "--set",
                "train.batch_tokens=4096", "--set", "train.micro_batch=16", "--set",
                "executor.mixed_precision=true", "--set", "executor.fused_attention=true"}),
      {}, dir);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  size_t warnings = 0;
  for (size_t at = r.out.find("its peak memory, "); at != std::string::npos;
       at = r.out.find("its peak memory, ", at + 1))
    ++warnings;
  EXPECT_EQ(warnings, 3u) << r.out;
  EXPECT_NE(r.out.find(" MiB (host_rss), is above its estimate "), std::string::npos) << r.out;
  const auto runs = Runs(db, "tiny");
  ASSERT_EQ(runs.size(), 3u);
  for (const auto& run : runs) {
    EXPECT_GT(run.peak_memory, run.memory_estimate * 1.1) << run.cell_key;
    EXPECT_EQ(run.peak_memory_of, "host_rss");
  }
}

TEST(SweepE2ETest, SigkillMidSweepThenRerunGivesExactlyTheUninterruptedRows) {
  const std::string ref_dir = TempDir("sweep_ref");
  auto ref = testing::RunCommand(SweepRun(ref_dir + "/s.db", kTiny, {"--no-fit"}), {}, ref_dir);
  ASSERT_EQ(ref.exit_code, 0) << ref.out << ref.err;
  const auto expected = MetricRows(ref_dir + "/s.db", "tiny");

  const std::string dir = TempDir("sweep_kill");
  const std::string runs = dir + "/runs/tiny";
  pid_t manager = SpawnLogged(SweepRun(dir + "/s.db", kTiny, {"--no-fit"}), dir, dir + "/log1");
  ASSERT_TRUE(WaitFor([&] { return !RunningWithCheckpoint(runs).empty(); }, 60))
      << Slurp(dir + "/log1");
  kill(manager, SIGKILL);
  WaitExit(manager);
  // The children get SIGTERM from the kernel (parent-death signal), checkpoint and exit.
  ASSERT_TRUE(WaitFor([&] { return AllLaunchedEnded(runs); }, 60));
  auto rerun = testing::RunCommand(SweepRun(dir + "/s.db", kTiny, {"--no-fit"}), {}, dir);
  ASSERT_EQ(rerun.exit_code, 0) << rerun.out << rerun.err;
  const auto got = MetricRows(dir + "/s.db", "tiny");
  ASSERT_EQ(got.size(), expected.size());
  for (const auto& [key, rows] : expected) {
    ASSERT_TRUE(got.count(key)) << key;
    ASSERT_EQ(got.at(key).size(), rows.size()) << key;
    for (const auto& [step, loss] : rows) {
      ASSERT_TRUE(got.at(key).count(step)) << key << " step " << step;
      EXPECT_NEAR(got.at(key).at(step), loss, 1e-4) << key << " step " << step;
    }
  }
  for (const auto& run : Runs(dir + "/s.db", "tiny")) EXPECT_EQ(run.status, "finished");
}

// A store without the sweep over a run root that holds its runs (the store lost, or a second
// store): each folder with its cell's finished run is ingested, rows, verdict and entropy, and
// trained no more; a folder whose run.json is not its cell's (one edited by hand) is launched
// again, resumes from its checkpoint, and ends with the same rows.
TEST(SweepE2ETest, AStoreWithoutTheCellsTakesTheirFinishedFoldersAndTrainsNothing) {
  const std::string dir = TempDir("sweep_take");
  auto first = testing::RunCommand(SweepRun(dir + "/a.db", kTiny, {"--no-fit"}), {}, dir);
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  const auto expected = MetricRows(dir + "/a.db", "tiny");
  const auto runs = Runs(dir + "/a.db", "tiny");
  ASSERT_EQ(runs.size(), 6u);
  const std::string edited = runs[0].run_dir + "/run.json";
  nlohmann::json run_json = nlohmann::json::parse(Slurp(edited));
  run_json["train"]["lr"] = 0.5;
  std::ofstream(edited) << run_json.dump();
  // A folder whose metrics.jsonl went: its verdict is taken, and its missing curve is said.
  fs::remove(runs[1].run_dir + "/metrics.jsonl");

  auto second = testing::RunCommand(SweepRun(dir + "/b.db", kTiny, {"--no-fit"}), {}, dir);
  ASSERT_EQ(second.exit_code, 0) << second.out << second.err;
  size_t found = 0;
  for (size_t at = second.out.find("found  "); at != std::string::npos;
       at = second.out.find("found  ", at + 1))
    ++found;
  EXPECT_EQ(found, 5u) << second.out;
  EXPECT_EQ(second.out.find("found  " + runs[0].cell_key), std::string::npos) << second.out;
  EXPECT_NE(second.out.find("5 already done, 1 to run"), std::string::npos) << second.out;
  EXPECT_NE(second.out.find("(1 launches this time)"), std::string::npos) << second.out;
  EXPECT_NE(second.out.find("warn   " + runs[1].cell_key +
                            "  its metrics.jsonl has no line, not at its final step "),
            std::string::npos)
      << second.out;
  EXPECT_EQ(
      second.out.find("its curve is incomplete", second.out.find("its curve is incomplete") + 1),
      std::string::npos)
      << "one warning, for the one folder without its lines: " << second.out;
  auto got = MetricRows(dir + "/b.db", "tiny");
  EXPECT_TRUE(got[runs[1].cell_key].empty());
  got[runs[1].cell_key] = expected.at(runs[1].cell_key);
  EXPECT_EQ(got, expected);
  for (const auto& run : Runs(dir + "/b.db", "tiny")) {
    EXPECT_EQ(run.status, "finished") << run.cell_key;
    EXPECT_EQ(run.attempts, 1) << run.cell_key;
    EXPECT_TRUE(run.final_val_loss && run.data_entropy) << run.cell_key;
  }
}

// A worker killed after it wrote "finished" (a crash or SIGKILL at teardown; the hook kills it
// once its status.json exists) leaves a finished cell, not a crashed one that would be retried.
TEST(SweepE2ETest, WorkerKilledAfterItsFinishedVerdictLeavesTheCellFinished) {
  const std::string dir = TempDir("sweep_kill_at_exit");
  auto r =
      testing::RunCommand(SweepRun(dir + "/s.db", kTiny, {"--no-fit", "--set", "budgets=[1e9]"}),
                          {"ISOFLOP_TEST_KILL_AT_EXIT=0"}, dir);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("finished (its status.json), then its process was killed by signal 9; "
                       "kept as finished"),
            std::string::npos)
      << r.out;
  const auto runs = Runs(dir + "/s.db", "tiny");
  ASSERT_EQ(runs.size(), 3u);
  for (const auto& run : runs) {
    EXPECT_EQ(run.status, "finished") << run.cell_key << " " << run.reason;
    EXPECT_EQ(run.attempts, 1) << run.cell_key;
    EXPECT_EQ(run.exit_code.value_or(-1), 0) << run.cell_key;
    EXPECT_TRUE(run.final_val_loss.has_value()) << run.cell_key;
  }
}

// A trainer stopped from outside the manager (an operator's SIGTERM) checkpoints and exits 143:
// the cell is "interrupted", not crashed, and the retry resumes it from that checkpoint with
// every metric row once. Deterministic: the trainer is held (SIGSTOP) when the signal is sent.
TEST(SweepE2ETest, TrainerStoppedFromOutsideIsInterruptedAndResumes) {
  const std::string ref_dir = TempDir("sweep_ext_ref");
  auto ref = testing::RunCommand(
      SweepRun(ref_dir + "/s.db", kTiny, {"--no-fit", "--set", "budgets=[1e9]"}), {}, ref_dir);
  ASSERT_EQ(ref.exit_code, 0) << ref.out << ref.err;
  const auto expected = MetricRows(ref_dir + "/s.db", "tiny");

  const std::string dir = TempDir("sweep_ext");
  const std::string runs = dir + "/runs/tiny";
  pid_t manager = SpawnLogged(SweepRun(dir + "/s.db", kTiny, {"--no-fit", "--set", "budgets=[1e9]"}),
                              dir, dir + "/log");
  std::string run_dir;
  pid_t trainer = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        run_dir = RunningWithCheckpoint(runs);
        if (run_dir.empty()) return false;
        trainer = std::atoi(Slurp(run_dir + "/.lock").c_str());
        if (trainer <= 0 || kill(trainer, SIGSTOP) != 0) return false;
        // Held; but it may have finished between the checks: then try another.
        if (fs::exists(run_dir + "/status.json")) {
          kill(trainer, SIGCONT);
          return false;
        }
        return true;
      },
      60))
      << Slurp(dir + "/log");
  ASSERT_TRUE(WaitFor([&] { return ProcState(trainer) == 'T'; }, 10));
  kill(trainer, SIGTERM);
  kill(trainer, SIGCONT);
  EXPECT_EQ(WaitExit(manager), 0) << Slurp(dir + "/log");
  const std::string log = Slurp(dir + "/log");
  EXPECT_NE(log.find("interrupted: stopped at a checkpoint (step "), std::string::npos) << log;
  EXPECT_EQ(log.find("crashed"), std::string::npos) << log;
  const auto got = MetricRows(dir + "/s.db", "tiny");
  for (const auto& run : Runs(dir + "/s.db", "tiny")) {
    EXPECT_EQ(run.status, "finished") << run.cell_key << " " << run.reason;
    if (run.run_dir == run_dir) {
      EXPECT_EQ(run.attempts, 2) << "the retry resumed it";
    }
    ASSERT_TRUE(expected.count(run.cell_key));
    ASSERT_EQ(got.at(run.cell_key).size(), expected.at(run.cell_key).size()) << run.cell_key;
    for (const auto& [step, loss] : expected.at(run.cell_key))
      EXPECT_NEAR(got.at(run.cell_key).at(step), loss, 1e-4) << run.cell_key << " step " << step;
  }
}

TEST(SweepE2ETest, BadDataPathFailsThatCellWithItsReasonWhileOthersFinish) {
  const std::string dir = TempDir("sweep_bad");
  {
    std::ofstream text(dir + "/good.txt");
    for (int i = 0; i < 4000; ++i)
      text << "the quick brown fox jumps over the lazy dog " << i << "\n";
  }
  std::ofstream(dir + "/bad.yaml") << R"(name: bad
data:
  source: text
  paths: [good.txt]
model:
  vocab_size: 256
  seq_len: 32
  pos: alibi
  ladder:
    - {n_layer: 1, d_model: 16, n_head: 2}
    - {n_layer: 1, d_model: 24, n_head: 3}
budgets: [1e9]
parameters:
  data.paths: {values: [[good.txt], [missing.txt]]}
train: {batch_tokens: 256, micro_batch: 8, eval_tokens: 2048}
executor: {cpus_per_run: 1, max_retries: 0}
)";
  auto r = testing::RunCommand(SweepRun(dir + "/s.db", "bad.yaml", {"--no-fit"}), {}, dir);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("data file does not exist: " + dir + "/missing.txt"), std::string::npos)
      << r.out;
  int finished = 0, failed = 0;
  for (const auto& run : Runs(dir + "/s.db", "bad")) {
    if (run.config_json.find("missing.txt") != std::string::npos) {
      EXPECT_EQ(run.status, "failed");
      EXPECT_NE(run.reason.find("missing.txt"), std::string::npos) << run.reason;
      ++failed;
    } else {
      EXPECT_EQ(run.status, "finished") << run.reason;
      ++finished;
    }
  }
  EXPECT_EQ(finished, 2);
  EXPECT_EQ(failed, 2);
  // The file appears; `sweep retry` from another directory still resolves the sweep's relative
  // paths where it was first run: the same 4 cells, the 2 failed ones now finish.
  {
    std::ofstream text(dir + "/missing.txt");
    for (int i = 0; i < 4000; ++i) text << "a lazy dog sleeps under the brown fox " << i << "\n";
  }
  fs::create_directories(dir + "/elsewhere");
  // And one failed cell's folder is still locked by a live process (as by the worker of an
  // earlier manager the store no longer calls running): the manager stops it and waits for the
  // folder before relaunching, instead of launching into "busy" (exit 4) and failing the cell.
  std::string held;
  for (const auto& run : Runs(dir + "/s.db", "bad"))
    if (run.config_json.find("missing.txt") != std::string::npos) held = run.run_dir + "/.lock";
  ASSERT_FALSE(held.empty());
  const pid_t holder =
      SpawnLogged({"/usr/bin/flock", "-o", held, "sleep", "600"}, dir, dir + "/flock.log");
  ASSERT_TRUE(WaitFor(
      [&] {
        const int fd = ::open(held.c_str(), O_RDONLY);
        const bool locked = fd >= 0 && ::flock(fd, LOCK_SH | LOCK_NB) != 0;
        if (fd >= 0) ::close(fd);
        return locked;
      },
      10));
  std::ofstream(held) << holder;  // what a worker's FileLock writes there
  auto retry = testing::RunCommand(
      {Binary("isoflop"), "--db", dir + "/s.db", "sweep", "retry", "bad", "--no-fit", "--no-plot"},
      {}, dir + "/elsewhere");
  ASSERT_EQ(retry.exit_code, 0) << retry.out << retry.err;
  EXPECT_NE(retry.out.find("retrying 2 cell(s) of bad"), std::string::npos) << retry.out;
  EXPECT_NE(retry.out.find("pid " + std::to_string(holder) +
                           " still holds its run folder; stopping it at a checkpoint first"),
            std::string::npos)
      << retry.out;
  EXPECT_EQ(WaitExit(holder), 128 + SIGTERM);
  const auto runs = Runs(dir + "/s.db", "bad");
  ASSERT_EQ(runs.size(), 4u);
  for (const auto& run : runs) {
    EXPECT_EQ(run.status, "finished") << run.cell_key << " " << run.reason;
    EXPECT_EQ(run.config_json.find("elsewhere"), std::string::npos) << run.config_json;
  }
  // So does `sweep run` of the file from there: nothing to run.
  auto again = testing::RunCommand(SweepRun(dir + "/s.db", dir + "/bad.yaml", {"--no-fit"}), {},
                                   dir + "/elsewhere");
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_NE(again.out.find("note: relative paths in " + dir + "/bad.yaml resolve against " + dir +
                           ", where sweep bad was first run"),
            std::string::npos)
      << again.out;
  EXPECT_NE(again.out.find("4 already done, 0 to run"), std::string::npos) << again.out;
}

TEST(SweepE2ETest, SigintLeavesResumableCheckpoints) {
  const std::string dir = TempDir("sweep_int");
  const std::string runs = dir + "/runs/tiny";
  pid_t manager = SpawnLogged(SweepRun(dir + "/s.db", kTiny, {"--no-fit"}), dir, dir + "/log1");
  std::string stopped;
  ASSERT_TRUE(WaitFor([&] { return !(stopped = RunningWithCheckpoint(runs)).empty(); }, 60))
      << Slurp(dir + "/log1");
  kill(manager, SIGINT);
  EXPECT_NE(WaitExit(manager), 0);
  const std::string log = Slurp(dir + "/log1");
  EXPECT_NE(log.find("interrupted: runs stopped at a checkpoint"), std::string::npos) << log;
  EXPECT_TRUE(AllLaunchedEnded(runs));  // no child outlives the manager
  EXPECT_NE(Slurp(stopped + "/status.json").find("preempted"), std::string::npos);
  const std::string key = fs::path(stopped).filename();
  for (const auto& run : Runs(dir + "/s.db", "tiny")) {
    if (run.cell_key == key) {
      EXPECT_EQ(run.status, "preempted");
      EXPECT_GT(run.tokens_done, 0);
    }
  }
  auto rerun = testing::RunCommand(SweepRun(dir + "/s.db", kTiny, {"--no-fit"}), {}, dir);
  ASSERT_EQ(rerun.exit_code, 0) << rerun.out << rerun.err;
  EXPECT_NE(Slurp(stopped + "/train.log").find("resum"), std::string::npos)
      << Slurp(stopped + "/train.log");
  for (const auto& run : Runs(dir + "/s.db", "tiny")) EXPECT_EQ(run.status, "finished");
  MetricRows(dir + "/s.db", "tiny");  // asserts no duplicate steps
}

// Ctrl-C while `sweep plan` probes throughput: the probe stops its trainers, removes its
// folder, and the command still dies of SIGINT.
TEST(SweepE2ETest, SigintDuringPlanProbeLeavesNoFolderBehind) {
  const std::string dir = TempDir("plan_int");
  const std::string tmp = dir + "/tmp";
  fs::create_directories(tmp);
  const char* old_tmpdir = std::getenv("TMPDIR");
  const std::string saved = old_tmpdir ? old_tmpdir : "";
  setenv("TMPDIR", tmp.c_str(), 1);  // the probe's folder goes here (inherited by the child)
  pid_t plan = SpawnLogged({Binary("isoflop"), "sweep", "plan", kTiny}, dir, dir + "/log");
  if (old_tmpdir) {
    setenv("TMPDIR", saved.c_str(), 1);
  } else {
    unsetenv("TMPDIR");
  }
  // Wait until a probe trainer has written its run folder's first files.
  auto probing = [&] {
    std::error_code ec;  // the folder may vanish while we look
    for (fs::recursive_directory_iterator it(tmp, ec), end; !ec && it != end; it.increment(ec))
      if (it->path().filename() == "info.json") return true;
    return false;
  };
  ASSERT_TRUE(WaitFor(probing, 60)) << Slurp(dir + "/log");
  kill(plan, SIGINT);
  EXPECT_EQ(WaitExit(plan), 128 + SIGINT) << Slurp(dir + "/log");
  std::string left;
  for (const auto& e : fs::directory_iterator(tmp)) left += e.path().string() + " ";
  EXPECT_TRUE(left.empty()) << left;
}

TEST(SweepE2ETest, CancelStopsAtACheckpointAndRetryFinishes) {
  const std::string dir = TempDir("sweep_cancel");
  const std::string db = dir + "/s.db";
  const std::string runs = dir + "/runs/tiny";
  pid_t manager = SpawnLogged(SweepRun(db, kTiny, {"--no-fit"}), dir, dir + "/log1");
  ASSERT_TRUE(WaitFor([&] { return !RunningWithCheckpoint(runs).empty(); }, 60))
      << Slurp(dir + "/log1");
  auto cancel =
      testing::RunCommand({Binary("isoflop"), "--db", db, "sweep", "cancel", "tiny"}, {}, dir);
  EXPECT_EQ(cancel.exit_code, 0) << cancel.out << cancel.err;
  EXPECT_NE(cancel.out.find("asked the running manager"), std::string::npos) << cancel.out;
  WaitExit(manager);  // a cancel is what the user asked for: the manager ends normally
  EXPECT_NE(Slurp(dir + "/log1").find("cancelled: unfinished cells are marked cancelled"),
            std::string::npos)
      << Slurp(dir + "/log1");
  EXPECT_TRUE(AllLaunchedEnded(runs));
  int cancelled = 0;
  for (const auto& run : Runs(db, "tiny")) {
    EXPECT_TRUE(run.status == "finished" || run.status == "cancelled") << run.status;
    cancelled += run.status == "cancelled";
  }
  EXPECT_GT(cancelled, 0);
  // A cancel stands: `sweep sync` (safe from cron) runs nothing of a cancelled sweep.
  auto sync = testing::RunCommand(
      {Binary("isoflop"), "--db", db, "sweep", "sync", "tiny", "--no-plot", "--no-fit"}, {}, dir);
  ASSERT_EQ(sync.exit_code, 0) << sync.out << sync.err;
  EXPECT_NE(sync.out.find("sweep tiny is cancelled: sync submits nothing (`isoflop sweep retry "
                          "tiny` runs its cancelled cells again)"),
            std::string::npos)
      << sync.out;
  int still = 0;
  for (const auto& run : Runs(db, "tiny")) still += run.status == "cancelled";
  EXPECT_EQ(still, cancelled);
  auto retry = testing::RunCommand(
      {Binary("isoflop"), "--db", db, "sweep", "retry", "tiny", "--no-plot", "--no-fit"}, {}, dir);
  ASSERT_EQ(retry.exit_code, 0) << retry.out << retry.err;
  EXPECT_NE(retry.out.find("retrying " + std::to_string(cancelled) + " cell(s) of tiny"),
            std::string::npos)
      << retry.out;
  for (const auto& run : Runs(db, "tiny")) EXPECT_EQ(run.status, "finished") << run.cell_key;
  MetricRows(db, "tiny");  // asserts no duplicate steps
  // A finished sweep has nothing to cancel: it stays finished.
  auto late =
      testing::RunCommand({Binary("isoflop"), "--db", db, "sweep", "cancel", "tiny"}, {}, dir);
  EXPECT_EQ(late.exit_code, 0) << late.out << late.err;
  EXPECT_EQ(late.out, "sweep tiny is finished: nothing to cancel\n");
  auto sweeps = testing::RunCommand({Binary("isoflop"), "--db", db, "sweeps", "--format", "csv"});
  EXPECT_NE(sweeps.out.find("\ntiny,finished,6,6,"), std::string::npos) << sweeps.out;
  for (const auto& run : Runs(db, "tiny")) EXPECT_EQ(run.status, "finished") << run.cell_key;
}

// `sweep cancel` asks a live manager to stop, and the manager dies before it sees the flag (held
// with SIGSTOP, outside a write transaction, from before the cancel until its SIGKILL). The cancel
// still stands: `sweep sync` runs nothing, and `sweep retry` then finishes every cell with each
// step stored once.
TEST(SweepE2ETest, CancelStandsWhenItsManagerDiesBeforeSeeingIt) {
  const std::string dir = TempDir("sweep_cancel_dies");
  const std::string db = dir + "/s.db";
  const std::string runs = dir + "/runs/tiny";
  pid_t manager = SpawnLogged(SweepRun(db, kTiny, {"--no-fit"}), dir, dir + "/log1");
  ASSERT_TRUE(WaitFor([&] { return !RunningWithCheckpoint(runs).empty(); }, 60))
      << Slurp(dir + "/log1");
  ASSERT_TRUE(StopOutsideAWriteTransaction(manager, db));
  auto cancel =
      testing::RunCommand({Binary("isoflop"), "--db", db, "sweep", "cancel", "tiny"}, {}, dir);
  EXPECT_EQ(cancel.exit_code, 0) << cancel.out << cancel.err;
  EXPECT_NE(cancel.out.find("asked the running manager"), std::string::npos) << cancel.out;
  kill(manager, SIGKILL);
  WaitExit(manager);
  // Its workers stop at a checkpoint (parent-death signal).
  ASSERT_TRUE(WaitFor([&] { return AllLaunchedEnded(runs); }, 60));
  auto sync = testing::RunCommand(
      {Binary("isoflop"), "--db", db, "sweep", "sync", "tiny", "--no-plot", "--no-fit"}, {}, dir);
  ASSERT_EQ(sync.exit_code, 0) << sync.out << sync.err;
  EXPECT_NE(sync.out.find("sweep tiny is cancelled: sync submits nothing"), std::string::npos)
      << sync.out;
  int finished = 0;
  for (const auto& run : Runs(db, "tiny")) finished += run.status == "finished";
  EXPECT_LT(finished, 6);
  auto retry = testing::RunCommand(
      {Binary("isoflop"), "--db", db, "sweep", "retry", "tiny", "--no-plot", "--no-fit"}, {}, dir);
  ASSERT_EQ(retry.exit_code, 0) << retry.out << retry.err;
  for (const auto& run : Runs(db, "tiny")) {
    EXPECT_EQ(run.status, "finished") << run.cell_key;
    ExpectEveryRow(db, run);
  }
  MetricRows(db, "tiny");  // asserts no duplicate steps
}

// The data loss of issue 10, made deterministic: the manager is SIGKILLed while its worker is
// still starting (tests/sweep/held_exec.cc holds it before it execs isoflop-train, as a slow
// LibTorch load would, until the test opens a gate file), the sweep is re-run at once, and only
// then is the orphan let go. The new manager must stop the orphan before relaunching the cell, and
// the orphan, told to stop before it started, must leave the run folder alone: every metric row
// ends in the store. (A gate, not SIGSTOP: a stopped process whose group loses its parent gets
// SIGHUP from the kernel and dies, which would hide the race instead of holding it; and not a
// shell script: sh unblocks the pending SIGTERM and dies of it.)
TEST(SweepE2ETest, DelayedOrphanOfAKilledManagerLosesNoMetricRows) {
  const std::string dir = TempDir("sweep_orphan");
  const std::string db = dir + "/s.db";
  const std::string gate = dir + "/gate", held = dir + "/held";
  const std::vector<std::string> one_budget = {"--no-fit", "--max-parallel", "1", "--set",
                                               "budgets=[2e9]"};
  const std::vector<std::pair<std::string, std::string>> env = {
      {"ISOFLOP_TRAIN", Binary("held_exec")},
      {"HELD_EXEC_TARGET", Binary("isoflop-train")},
      {"HELD_EXEC_GATE", gate},
      {"HELD_EXEC_PIDFILE", held}};
  for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);  // the first manager's only
  pid_t manager = SpawnLogged(SweepRun(db, kTiny, one_budget), dir, dir + "/log1");
  for (const auto& [k, v] : env) unsetenv(k.c_str());
  // The worker the first manager started, held before it touched anything.
  ASSERT_TRUE(WaitFor([&] { return !Slurp(held).empty(); }, 60)) << Slurp(dir + "/log1");
  const pid_t orphan = static_cast<pid_t>(std::stol(Slurp(held)));
  std::string run_dir;
  for (const auto& run : Runs(db, "tiny"))
    if (run.worker_pid == orphan) run_dir = run.run_dir;
  ASSERT_FALSE(run_dir.empty()) << "the manager did not record its worker's pid " << orphan;
  kill(manager, SIGKILL);
  WaitExit(manager);
  pid_t rerun = SpawnLogged(SweepRun(db, kTiny, one_budget), dir, dir + "/log2");
  // Let the orphan go once a new worker trains in its folder, or the new manager waits for it.
  ASSERT_TRUE(WaitFor(
      [&] {
        return !Slurp(run_dir + "/metrics.jsonl").empty() ||
               Slurp(dir + "/log2").find("outlived the manager") != std::string::npos;
      },
      60))
      << Slurp(dir + "/log2");
  std::ofstream(gate) << "go\n";
  ASSERT_EQ(WaitExit(rerun), 0) << Slurp(dir + "/log2");
  EXPECT_NE(Slurp(dir + "/log2").find("outlived the manager that started it"), std::string::npos)
      << Slurp(dir + "/log2");
  EXPECT_TRUE(ProcState(orphan) == 0 || ProcState(orphan) == 'Z') << ProcState(orphan);
  const auto runs = Runs(db, "tiny");
  ASSERT_EQ(runs.size(), 3u);
  for (const auto& run : runs) {
    EXPECT_EQ(run.status, "finished") << run.cell_key << " " << run.reason;
    ExpectEveryRow(db, run);
  }
  // A later re-run changes nothing, whatever the folders hold.
  auto again = testing::RunCommand(SweepRun(db, kTiny, one_budget), {}, dir);
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  for (const auto& run : Runs(db, "tiny")) ExpectEveryRow(db, run);
}

// A cell the store says is running (its manager died) whose status.json was damaged since (here:
// emptied) does not stop the sweep: the re-run notes it, resumes the cell from its checkpoint
// and ends with every row once, as `sweep sync` would.
TEST(SweepE2ETest, ADamagedStatusFileOfARunningCellResumesIt) {
  const std::string dir = TempDir("sweep_bad_status");
  const std::string db = dir + "/s.db";
  const std::vector<std::string> one_budget = {"--no-fit", "--set", "budgets=[2e9]"};
  auto first = testing::RunCommand(SweepRun(db, kTiny, one_budget), {}, dir);
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  store::RunRecord cell = Runs(db, "tiny").front();
  {
    auto s = store::Store::Open(db);
    ASSERT_TRUE(s.ok());
    cell.status = "running";  // as a manager SIGKILLed mid-run leaves it
    ASSERT_TRUE((*s)->UpsertRun(cell).ok());
  }
  std::ofstream(cell.run_dir + "/status.json", std::ios::trunc);
  auto again = testing::RunCommand(SweepRun(db, kTiny, one_budget), {}, dir);
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_NE(again.out.find("note   " + cell.cell_key + ": " + cell.run_dir + "/status.json: "),
            std::string::npos)
      << again.out;
  EXPECT_NE(again.out.find("taken as no verdict: it resumes from its checkpoint"),
            std::string::npos)
      << again.out;
  for (const auto& run : Runs(db, "tiny")) {
    EXPECT_EQ(run.status, "finished") << run.cell_key << " " << run.reason;
    ExpectEveryRow(db, run);
  }
}

// A run's peak memory is the largest of its attempts': a worker resumed after its manager died
// measures only its own lifetime, so the peak the earlier attempt wrote into status.json (here a
// made-up 64 GiB, as if that attempt had been the hungry one) stays on the record.
TEST(SweepE2ETest, TheStoredPeakMemoryIsTheLargestOfARunsAttempts) {
  const std::string dir = TempDir("sweep_peak_attempts");
  const std::string db = dir + "/s.db";
  const std::vector<std::string> one_budget = {"--no-fit", "--set", "budgets=[2e9]"};
  auto first = testing::RunCommand(SweepRun(db, kTiny, one_budget), {}, dir);
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  store::RunRecord cell = Runs(db, "tiny").front();
  ASSERT_GT(cell.peak_memory, 0);
  ASSERT_LT(cell.peak_memory, int64_t{8} << 30);
  {
    auto s = store::Store::Open(db);
    ASSERT_TRUE(s.ok());
    cell.status = "running";  // as a manager SIGKILLed mid-run leaves it
    ASSERT_TRUE((*s)->UpsertRun(cell).ok());
  }
  const int64_t earlier = int64_t{64} << 30;
  std::ofstream(cell.run_dir + "/status.json", std::ios::trunc)
      << nlohmann::json{{"state", "preempted"},
                        {"reason", "signal 15"},
                        {"exit_code", 143},
                        {"peak_memory_bytes", earlier},
                        {"peak_memory_of", "host_rss"}}
             .dump()
      << "\n";
  auto again = testing::RunCommand(SweepRun(db, kTiny, one_budget), {}, dir);
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  for (const auto& run : Runs(db, "tiny")) {
    EXPECT_EQ(run.status, "finished") << run.cell_key << " " << run.reason;
    ExpectEveryRow(db, run);
    if (run.cell_key != cell.cell_key) continue;
    EXPECT_EQ(run.peak_memory, earlier);
    EXPECT_EQ(run.peak_memory_of, "host_rss");
    // It was resumed, and the resumed worker wrote its own, smaller peak.
    const auto st = nlohmann::json::parse(Slurp(run.run_dir + "/status.json"));
    EXPECT_EQ(st["state"], "finished");
    EXPECT_LT(st["peak_memory_bytes"].get<int64_t>(), earlier);
  }
}

// One manager per sweep, whatever the working directory: a second `sweep run` of the same
// sweep and store from another folder is refused while the first lives (held stopped here), and
// once the first is dead (SIGKILL) its stale lease is taken over: the interrupted cells resume
// in the first manager's run folders, and the second folder gets none.
TEST(SweepE2ETest, OneManagerPerSweepFromAnyDirectoryAndStaleLeaseTakeover) {
  const std::string dir1 = TempDir("sweep_lease1");
  const std::string dir2 = TempDir("sweep_lease2");
  const std::string db = dir1 + "/s.db";
  const std::string runs = dir1 + "/runs/tiny";
  pid_t manager = SpawnLogged(SweepRun(db, kTiny, {"--no-fit"}), dir1, dir1 + "/log1");
  std::string interrupted;
  ASSERT_TRUE(WaitFor([&] { return !(interrupted = RunningWithCheckpoint(runs)).empty(); }, 60))
      << Slurp(dir1 + "/log1");
  ASSERT_TRUE(StopOutsideAWriteTransaction(manager, db));
  auto second = testing::RunCommand(SweepRun(db, kTiny, {"--no-fit"}), {}, dir2);
  EXPECT_EQ(second.exit_code, 1) << second.out << second.err;
  EXPECT_NE(second.err.find("sweep 'tiny' is being run by another `isoflop sweep run` (pid " +
                            std::to_string(manager)),
            std::string::npos)
      << second.err;
  EXPECT_FALSE(fs::exists(dir2 + "/runs"));
  kill(manager, SIGKILL);
  WaitExit(manager);
  auto takeover = testing::RunCommand(SweepRun(db, kTiny, {"--no-fit"}), {}, dir2);
  ASSERT_EQ(takeover.exit_code, 0) << takeover.out << takeover.err;
  EXPECT_FALSE(fs::exists(dir2 + "/runs"));
  EXPECT_NE(Slurp(interrupted + "/train.log").find("resum"), std::string::npos)
      << Slurp(interrupted + "/train.log");
  for (const auto& run : Runs(db, "tiny")) {
    EXPECT_EQ(run.status, "finished") << run.cell_key << " " << run.reason;
    EXPECT_EQ(fs::path(run.run_dir).parent_path(), fs::path(runs)) << run.run_dir;
    EXPECT_EQ(run.attempts, 1) << run.cell_key << ": a killed attempt must not count";
    ExpectEveryRow(db, run);
  }
  auto s = store::Store::Open(db);
  ASSERT_TRUE(s.ok());
  auto sweep = (*s)->GetSweep("tiny");
  ASSERT_TRUE(sweep.ok() && sweep->has_value());
  auto lease = (*s)->GetLease((*sweep)->id);
  ASSERT_TRUE(lease.ok());
  EXPECT_FALSE(lease->has_value()) << "a manager that ended must release its lease";
}

// An MoE sweep (model.family: moe) runs end to end: every cell trains an MoE, the store records
// its experts, top-k and active parameters, and each logged step's router metrics land in the
// metric extras.
TEST(SweepE2ETest, MoeSweepRunsAndStoresExpertsAndRouterMetrics) {
  const std::string dir = TempDir("sweep_moe");
  const std::string db = dir + "/s.db";
  const std::string file = std::string(ISOFLOP_SOURCE_DIR) + "/tests/sweep/testdata/tiny_moe.yaml";
  auto r = testing::RunCommand(SweepRun(db, file, {"--no-fit"}), {}, dir);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto runs = Runs(db, "tiny_moe");
  ASSERT_EQ(runs.size(), 3u);
  auto s = store::Store::Open(db);
  ASSERT_TRUE(s.ok());
  for (const auto& run : runs) {
    EXPECT_EQ(run.status, "finished") << run.reason;
    EXPECT_EQ(run.family, "moe");
    EXPECT_EQ(run.n_experts, 4);
    EXPECT_EQ(run.top_k, 2);
    EXPECT_LT(run.n_active, run.n_total);
    EXPECT_EQ(run.tokens_done, run.target_tokens);
    EXPECT_NE(Slurp(run.run_dir + "/run.json").find("\"moe\""), std::string::npos);
    auto rows = (*s)->GetMetrics(run.id);
    ASSERT_TRUE(rows.ok());
    ASSERT_FALSE(rows->empty());
    std::set<std::string> names;
    for (const auto& [name, value] : rows->back().extra) names.insert(name);
    for (const char* k : {"aux_loss", "z_loss", "load_0", "router_entropy"})
      EXPECT_TRUE(names.count(k)) << k << " missing from the last row's extras";
    // Every MoE variable a law may use, raw: no granularity set, 4 experts of the dense d_ff.
    EXPECT_EQ(run.granularity, 0);
    EXPECT_EQ(run.router, "softmax");
    EXPECT_DOUBLE_EQ(run.expansion_rate, 4.0);
    EXPECT_NE(run.moe_json.find("\"n_experts\":4"), std::string::npos) << run.moe_json;
  }
  // `export` carries the MoE settings and the final router metrics (JSON, one row per run).
  auto exported = testing::RunCommand(
      {Binary("isoflop"), "--db", db, "export", "--sweep", "tiny_moe", "--format", "json"}, {},
      dir);
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  const auto rows = nlohmann::json::parse(exported.out);
  ASSERT_EQ(rows.size(), 3u);
  for (const auto& row : rows) {
    EXPECT_EQ(row["router"], "softmax");
    EXPECT_DOUBLE_EQ(row["expansion_rate"].get<double>(), 4.0);
    // The Switch loss equals its weight (0.01) at perfect balance; near it for a trained router.
    EXPECT_GT(row["final_aux_loss"].get<double>(), 0.009);
    EXPECT_LT(row["final_aux_loss"].get<double>(), 0.05);
    EXPECT_GT(row["final_router_entropy"].get<double>(), 0);
  }
  // The Krajewski form reads G from the runs: one G for all of them cannot identify gamma.
  auto moe_fit = testing::RunCommand(
      {Binary("isoflop"), "--db", db, "fit", "--sweep", "tiny_moe", "--form", "moe"}, {}, dir);
  EXPECT_EQ(moe_fit.exit_code, 1) << moe_fit.out << moe_fit.err;
  EXPECT_NE(moe_fit.err.find("every point of sweep 'tiny_moe' has G = 1"), std::string::npos)
      << moe_fit.err;
}

// A granularity axis (Krajewski et al. 2024): every run records its G, so the moe form fits the
// sweep directly, and plot draws the granularity law from it.
TEST(SweepE2ETest, GranularityAxisFeedsTheKrajewskiFormFromTheRuns) {
  const std::string dir = TempDir("sweep_moe_g");
  const std::string db = dir + "/s.db";
  const std::string file = dir + "/g.yaml";
  std::string text = Slurp(std::string(ISOFLOP_SOURCE_DIR) + "/tests/sweep/testdata/tiny_moe.yaml");
  const std::string moe = "moe: {n_experts: 4, top_k: 2}";
  ASSERT_NE(text.find(moe), std::string::npos);
  text.replace(text.find(moe), moe.size(), "moe: {n_experts: 8, top_k: 1}");
  std::ofstream(file) << text << "parameters:\n  model.moe.granularity: {values: [1, 2]}\n";
  auto r = testing::RunCommand(
      SweepRun(db, file, {"--no-fit", "--set", "budgets=[1e9, 2e9]"}), {}, dir);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto runs = Runs(db, "tiny_moe");
  ASSERT_EQ(runs.size(), 12u);
  std::map<int, int> by_g;
  for (const auto& run : runs) {
    EXPECT_EQ(run.status, "finished") << run.reason;
    ++by_g[run.granularity];
    // G splits each expert: 1/G of the hidden size and G times the experts per token (the
    // store records the experts a token uses: top_k · G), so the active N stays put.
    EXPECT_EQ(run.top_k, run.granularity);
  }
  EXPECT_EQ(by_g[1], 6);
  EXPECT_EQ(by_g[2], 6);
  auto fit = testing::RunCommand({Binary("isoflop"), "--db", db, "fit", "--sweep", "tiny_moe",
                                  "--form", "moe", "--convention", "active", "--format", "json"},
                                 {}, dir);
  ASSERT_EQ(fit.exit_code, 0) << fit.out << fit.err;
  const auto j = nlohmann::json::parse(fit.out);
  EXPECT_EQ(j["form"], "moe") << fit.out;
  EXPECT_EQ(j["n_points"], 12) << fit.out;
  EXPECT_TRUE(j["params"].contains("gamma")) << fit.out;
}

TEST(SweepE2ETest, DataParallelCellsRunTwoRanksEachAndMatchOneRankRuns) {
  const std::string ref_dir = TempDir("sweep_dp_ref");
  auto ref = testing::RunCommand(
      SweepRun(ref_dir + "/s.db", kTiny, {"--no-fit", "--set", "budgets=[1e9]"}), {}, ref_dir);
  ASSERT_EQ(ref.exit_code, 0) << ref.out << ref.err;
  const std::string dir = TempDir("sweep_dp");
  auto r = testing::RunCommand(SweepRun(dir + "/s.db", kTiny,
                                        {"--no-fit", "--set", "budgets=[1e9]", "--set",
                                         "executor.ranks_per_run=2"}),
                               {}, dir);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("2 ranks per run"), std::string::npos) << r.out;
  const auto expected = MetricRows(ref_dir + "/s.db", "tiny");
  const auto got = MetricRows(dir + "/s.db", "tiny");
  ASSERT_EQ(got.size(), 3u);
  for (const auto& [key, rows] : expected) {
    ASSERT_TRUE(got.count(key)) << key << ": the cell key does not depend on the ranks";
    ASSERT_EQ(got.at(key).size(), rows.size()) << key;
    for (const auto& [step, loss] : rows)
      EXPECT_NEAR(got.at(key).at(step), loss, 1e-5 * loss) << key << " step " << step;
  }
  for (const auto& run : Runs(dir + "/s.db", "tiny")) {
    EXPECT_EQ(run.status, "finished") << run.reason;
    EXPECT_EQ(run.devices, "cpu x2 ranks");
  }
}

TEST(SweepE2ETest, ExpertCountAxisRunsDenseAndMoeCellsAndFitsOneLawPerCount) {
  const std::string dir = TempDir("sweep_moe_axis");
  const std::string db = dir + "/s.db";
  const std::string file = dir + "/axis.yaml";
  std::ofstream(file) << Slurp(std::string(ISOFLOP_SOURCE_DIR) +
                               "/tests/sweep/testdata/tiny_moe.yaml")
                      << "parameters:\n  model.moe.n_experts: {values: [0, 4]}\n";
  auto r = testing::RunCommand(
      SweepRun(db, file,
               {"--set", "budgets=[1e9, 2e9]", "--set", "fit.convention=active", "--set",
                "fit.bootstrap=20"}),
      {},
      dir);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto runs = Runs(db, "tiny_moe");
  ASSERT_EQ(runs.size(), 12u);
  int dense = 0;
  for (const auto& run : runs) {
    EXPECT_EQ(run.status, "finished") << run.reason;
    if (run.n_experts == 0) {
      ++dense;
      EXPECT_EQ(run.family, "dense");
      EXPECT_EQ(run.n_active, run.n_total);
    } else {
      EXPECT_EQ(run.family, "moe");
      EXPECT_EQ(run.n_experts, 4);
    }
  }
  EXPECT_EQ(dense, 6);
  EXPECT_NE(r.out.find("one law per expert count (N = active parameters, E held at the entropy"),
            std::string::npos)
      << r.out;
  // One stored law per count, each over its own six runs; the fit over all runs stays the
  // latest (what `optimal --sweep` and `plot` use).
  auto s = store::Store::Open(db);
  auto fits = (*s)->ListFits();
  ASSERT_TRUE(fits.ok());
  std::map<int, int> per_count;
  int64_t last_parametric = 0, main_points = 0;
  for (const auto& f : *fits) {
    if (f.source_name != "tiny_moe" || f.method != "parametric") continue;
    const auto o = nlohmann::json::parse(f.options_json);
    if (o.contains("n_experts")) {
      ++per_count[o["n_experts"].get<int>()];
      EXPECT_EQ(f.n_points, 6);
    }
    if (f.id > last_parametric) {
      last_parametric = f.id;
      main_points = o.contains("n_experts") ? -1 : f.n_points;
    }
  }
  EXPECT_EQ(per_count[0], 1);
  EXPECT_EQ(per_count[4], 1);
  EXPECT_EQ(main_points, 12);

  // The 4-expert law against the dense one: a row of the dense-equivalent table.
  const size_t table = r.out.find("each MoE in dense terms");
  ASSERT_NE(table, std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n4 ", table), std::string::npos) << r.out.substr(table);

  // The 4-expert fit knows how its runs' total parameters follow their active ones, and
  // `optimal` answers with both and with the memory the total needs.
  int64_t moe_fit = 0;
  nlohmann::json sizing;
  for (const auto& f : *fits) {
    const auto o = nlohmann::json::parse(f.options_json);
    if (o.value("n_experts", -1) == 4) moe_fit = f.id, sizing = o["moe_sizing"];
    if (o.value("n_experts", -1) == 0) {
      EXPECT_FALSE(o.contains("moe_sizing")) << o.dump();
    }
  }
  ASSERT_GT(moe_fit, 0);
  ASSERT_TRUE(sizing.is_object()) << sizing.dump();
  EXPECT_EQ(sizing["n_experts"], 4);
  EXPECT_EQ(sizing["runs"], 6);
  auto parsed = analysis::MoeSizing::FromJson(sizing);
  ASSERT_TRUE(parsed.ok()) << parsed.status().message();
  EXPECT_LT(parsed->max_rel_error, 0.05);
  for (const auto& run : runs) {
    if (run.n_experts != 4) continue;
    EXPECT_GT(run.n_total, run.n_active);
    EXPECT_NEAR(parsed->Total(double(run.n_active)) / double(run.n_total), 1.0,
                parsed->max_rel_error + 1e-12);
  }
  auto opt = testing::RunCommand({Binary("isoflop"), "--db", db, "optimal", "--fit",
                                  std::to_string(moe_fit), "--compute", "4e9", "--format", "json"},
                                 {}, dir);
  ASSERT_EQ(opt.exit_code, 0) << opt.out << opt.err;
  const auto rows = nlohmann::json::parse(opt.out);
  ASSERT_EQ(rows.size(), 1u) << opt.out;
  const auto& row = rows[0];
  const double n = row["n_opt"].get<double>(), total = row["n_total"].get<double>();
  EXPECT_NEAR(total, parsed->Total(n), 1e-9 * total);
  EXPECT_GT(total, n);
  EXPECT_NEAR(row["train_state_gib"].get<double>(), total * 16 / (1024.0 * 1024 * 1024),
              1e-12 * total);
  EXPECT_NEAR(row["serve_gib"].get<double>(), total * 2 / (1024.0 * 1024 * 1024), 1e-12 * total);
  EXPECT_NE(opt.err.find("n_opt is active parameters"), std::string::npos) << opt.err;
}

}  // namespace
}  // namespace isoflop
