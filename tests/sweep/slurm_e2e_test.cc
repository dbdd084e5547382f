// The SLURM executor against a real SLURM: tests/slurm/cluster.sh starts munged, slurmctld and
// slurmd on loopback and runs this binary with SLURM_CONF set (ctest does that; see
// tests/sweep/CMakeLists.txt). Real `isoflop` and `isoflop-train` binaries, real job arrays.
// Moments that matter (a requeue, a cancel, a time-limit signal, a killed manager) are made
// deterministic by holding the trainer with SIGSTOP while the event happens, then SIGCONT.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "e2e_util.h"
#include "isoflop/store/store.h"

namespace isoflop {
namespace {

namespace fs = std::filesystem;
using testing::Binary;
using testing::RunCommand;
using testing::Slurp;
using testing::SpawnLogged;
using testing::TempDir;
using testing::WaitExit;
using testing::WaitFor;

const std::string kTiny = std::string(ISOFLOP_SOURCE_DIR) + "/tests/sweep/testdata/tiny.yaml";

// tiny.yaml with its executor section replaced by a slurm one (`executor_lines` indented by two
// spaces, after `kind: slurm`).
std::string SlurmSweep(const std::string& dir, const std::string& run_root,
                       const std::string& executor_lines = "") {
  std::string text = Slurp(kTiny);
  const std::string local = "executor:\n  cpus_per_run: 1\n";
  const size_t at = text.find(local);
  EXPECT_NE(at, std::string::npos);
  nlohmann::json root = run_root;  // a JSON string is a valid YAML double-quoted scalar
  text.replace(at, local.size(),
               "executor:\n  kind: slurm\n  cpus_per_run: 1\n  poll_seconds: 0.3\n"
               "  max_parallel: 2\n  run_root: " + root.dump() + "\n" + executor_lines);
  const std::string path = dir + "/slurm.yaml";
  std::ofstream(path) << text;
  return path;
}

std::vector<std::string> Isoflop(const std::string& db, std::vector<std::string> args) {
  std::vector<std::string> argv = {Binary("isoflop"), "--db", db};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

std::vector<store::RunRecord> Runs(const std::string& db, const std::string& sweep) {
  auto s = store::Store::Open(db);
  EXPECT_TRUE(s.ok());
  store::RunFilter f;
  f.sweep_name = sweep;
  return *(*s)->ListRuns(f);
}

// cell key -> (step -> train loss); a duplicated step fails the test.
std::map<std::string, std::map<int64_t, double>> MetricRows(const std::string& db,
                                                            const std::string& sweep) {
  std::map<std::string, std::map<int64_t, double>> out;
  auto s = store::Store::Open(db);
  EXPECT_TRUE(s.ok());
  for (const auto& r : Runs(db, sweep)) {
    auto rows = (*s)->GetMetrics(r.id);
    EXPECT_TRUE(rows.ok());
    auto& m = out[r.cell_key];
    for (const auto& row : *rows) {
      EXPECT_EQ(m.count(row.step), 0u) << r.cell_key << ": duplicate step " << row.step;
      m[row.step] = row.train_loss.value_or(-1);
    }
  }
  return out;
}

// The metric rows of `got` for every cell in it equal those of the local reference run.
void ExpectSameRows(const std::map<std::string, std::map<int64_t, double>>& got,
                    const std::map<std::string, std::map<int64_t, double>>& expected) {
  for (const auto& [key, rows] : got) {
    ASSERT_TRUE(expected.count(key)) << key;
    const auto& want = expected.at(key);
    EXPECT_EQ(rows.size(), want.size()) << key;
    for (const auto& [step, loss] : want) {
      ASSERT_TRUE(rows.count(step)) << key << ": missing step " << step;
      EXPECT_NEAR(rows.at(step), loss, 1e-4) << key << " step " << step;
    }
  }
}

// A run folder under `root` with a complete checkpoint, no verdict yet, and a live trainer
// (the pid in its .lock, with the folder on its command line): its pid, or 0.
pid_t RunningTrainerWithCheckpoint(const std::string& root, std::string* run_dir) {
  std::error_code ec;
  for (const auto& run : fs::directory_iterator(root, ec)) {
    if (!run.is_directory() || fs::exists(run.path() / "status.json")) continue;
    bool ckpt = false;
    for (const auto& c : fs::directory_iterator(run.path() / "ckpt", ec))
      ckpt = ckpt || fs::exists(c.path() / "DONE");
    if (!ckpt) continue;
    const pid_t pid = std::atoi(Slurp(run.path() / ".lock").c_str());
    if (pid <= 0) continue;
    std::string cmd = Slurp("/proc/" + std::to_string(pid) + "/cmdline");
    std::replace(cmd.begin(), cmd.end(), '\0', ' ');
    if (cmd.find("isoflop-train") == std::string::npos ||
        cmd.find(run.path().string()) == std::string::npos)
      continue;
    *run_dir = run.path().string();
    return pid;
  }
  return 0;
}

// Whether `pid` is stopped (state T in /proc/PID/stat); false once it has exited.
bool Stopped(pid_t pid) {
  const std::string stat = Slurp("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'T';
}

// Stops a running trainer under `root` that has a checkpoint (SIGSTOP): its pid and folder.
pid_t HoldATrainer(const std::string& root, std::string* run_dir, double seconds = 90) {
  pid_t pid = 0;
  WaitFor([&] { return (pid = RunningTrainerWithCheckpoint(root, run_dir)) > 0; }, seconds);
  if (pid > 0) {
    kill(pid, SIGSTOP);
    WaitFor([&] { return Stopped(pid); }, 10);
  }
  return pid;
}

// The SLURM array task ("12_3") the store records for the run in `run_dir`.
std::string JobOf(const std::string& db, const std::string& sweep, const std::string& run_dir) {
  for (const auto& r : Runs(db, sweep)) {
    if (r.run_dir == run_dir && r.job_id.rfind("slurm:", 0) == 0) return r.job_id.substr(6);
  }
  return "";
}

// Submits the sweep in `file` detached with one budget, holds one of its trainers mid-run
// (SIGSTOP), scancels that array task and lets the trainer go on (SIGCONT) into SLURM's SIGTERM:
// the task's job id ("12_3"), with its run folder in *run_dir; "" after a test failure.
std::string SubmitAndScancelOneTask(const std::string& dir, const std::string& root,
                                    const std::string& file, std::string* run_dir) {
  auto submit = RunCommand(Isoflop(dir + "/s.db", {"sweep", "run", file, "--detach", "--no-fit",
                                                   "--no-plot", "--set", "budgets=[2e9]"}),
                           {}, dir);
  EXPECT_EQ(submit.exit_code, 0) << submit.out << submit.err;
  EXPECT_NE(submit.out.find("running on SLURM; `isoflop sweep sync tiny`"), std::string::npos)
      << submit.out;
  const pid_t trainer = HoldATrainer(root + "/tiny", run_dir);
  EXPECT_GT(trainer, 0) << "no trainer with a checkpoint under " << root;
  if (trainer <= 0) return "";
  const std::string job = JobOf(dir + "/s.db", "tiny", *run_dir);
  EXPECT_FALSE(job.empty()) << "the store has no SLURM job for " << *run_dir;
  auto cancel = RunCommand({"/usr/bin/scancel", job});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.err;
  kill(trainer, SIGCONT);
  return cancel.exit_code == 0 ? job : "";
}

// Whether `pid` has `sig` pending (the kernel's per-thread or shared pending set).
bool SignalPending(pid_t pid, int sig) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  const uint64_t bit = uint64_t(1) << (sig - 1);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("SigPnd:", 0) == 0 || line.rfind("ShdPnd:", 0) == 0) {
      if (std::stoull(line.substr(7), nullptr, 16) & bit) return true;
    }
  }
  return false;
}

class SlurmE2ETest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_NE(std::getenv("SLURM_CONF"), nullptr)
        << "run this test through tests/slurm/cluster.sh run (ctest does)";
    // The same cells on this machine, without SLURM: the rows every SLURM run must reproduce.
    const std::string dir = TempDir("slurm_ref");
    auto ref = RunCommand(Isoflop(dir + "/s.db", {"sweep", "run", kTiny, "--no-fit", "--no-plot"}),
                          {}, dir);
    ASSERT_EQ(ref.exit_code, 0) << ref.out << ref.err;
    reference_ = new std::map<std::string, std::map<int64_t, double>>(
        MetricRows(dir + "/s.db", "tiny"));
  }
  static std::map<std::string, std::map<int64_t, double>>* reference_;
};
std::map<std::string, std::map<int64_t, double>>* SlurmE2ETest::reference_ = nullptr;

TEST_F(SlurmE2ETest, SweepRunsThroughJobArraysAndFitsWithAHostileRunRoot) {
  const std::string dir = TempDir("slurm_run");
  // Spaces, quotes and command substitutions in every place a value reaches the batch script:
  // none of them may run.
  const std::string pwned = dir + "/PWNED";
  const std::string root = dir + "/root a'b\"c $(touch " + pwned + "-root) `touch " + pwned +
                           "-tick`";
  const std::string file =
      SlurmSweep(dir, root,
                 "  setup:\n    - [echo, \"setup $(touch " + pwned +
                     "-setup) 'q' \\\"dq\\\"\"]\n    - \"echo plain shell line\"\n");
  auto r = RunCommand(Isoflop(dir + "/s.db", {"sweep", "run", file, "--no-plot"}), {}, dir);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("to run on SLURM ("), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("for budget C = 8e+09 FLOPs: train N = "), std::string::npos) << r.out;
  for (const char* what : {"-root", "-tick", "-setup"}) {
    EXPECT_FALSE(fs::exists(pwned + what)) << "a quoted value ran: " << what;
  }
  const std::string sweep_dir = root + "/tiny";
  std::set<std::string> arrays;
  for (const auto& run : Runs(dir + "/s.db", "tiny")) {
    EXPECT_EQ(run.status, "finished") << run.cell_key << " " << run.reason;
    EXPECT_EQ(fs::path(run.run_dir).parent_path(), fs::path(sweep_dir));
    EXPECT_TRUE(std::regex_match(run.job_id, std::regex("slurm:[0-9]+_[0-5]"))) << run.job_id;
    arrays.insert(run.job_id.substr(0, run.job_id.find('_')));
    EXPECT_EQ(run.host, Slurp(run.run_dir + "/node.txt").substr(0, run.host.size()));
    // The setup line ran as data: its argument arrived literally.
    EXPECT_NE(Slurp(run.run_dir + "/train.log").find("setup $(touch " + pwned + "-setup) 'q' \"dq\""),
              std::string::npos);
    EXPECT_NE(Slurp(run.run_dir + "/train.log").find("plain shell line"), std::string::npos);
  }
  EXPECT_EQ(arrays.size(), 1u) << "the six cells share one resource shape: one job array";
  ExpectSameRows(MetricRows(dir + "/s.db", "tiny"), *reference_);
  // The batch script is kept, readable, and resubmittable as it is.
  std::vector<fs::path> scripts;
  for (const auto& e : fs::directory_iterator(sweep_dir + "/slurm"))
    if (e.path().extension() == ".sh") scripts.push_back(e.path());
  ASSERT_EQ(scripts.size(), 1u);
  const std::string script = Slurp(scripts[0]);
  for (const char* line : {"#SBATCH --array=\"0-5%2\"", "#SBATCH --requeue",
                           "#SBATCH --open-mode=append", "#SBATCH --signal=\"USR2@120\"", "srun "}) {
    EXPECT_NE(script.find(line), std::string::npos) << line << "\n" << script;
  }
  auto syntax = RunCommand({"/bin/bash", "-n", scripts[0].string()});
  EXPECT_EQ(syntax.exit_code, 0) << syntax.err;
  auto status = RunCommand(Isoflop(dir + "/s.db", {"sweep", "status", "tiny"}), {}, dir);
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("COMPLETED"), std::string::npos) << status.out;
  auto fit = store::Store::Open(dir + "/s.db");
  auto latest = (*fit)->LatestFit("sweep", "tiny", "parametric");
  ASSERT_TRUE(latest.ok() && latest->has_value());
  EXPECT_EQ((*latest)->n_points, 6);
}

// ranks_per_run 2 on SLURM: one job per run with --ntasks=2, srun starts both ranks, which find
// each other from SLURM_PROCID / SLURM_NTASKS and the node list; the losses are the local
// one-rank run's.
TEST_F(SlurmE2ETest, DataParallelCellsRunAsTwoSrunTasks) {
  const std::string dir = TempDir("slurm_dp");
  const std::string root = dir + "/root";
  const std::string file = SlurmSweep(dir, root, "  ranks_per_run: 2\n");
  auto r = RunCommand(
      Isoflop(dir + "/s.db", {"sweep", "run", file, "--no-fit", "--no-plot", "--set", "budgets=[1e9]"}),
      {}, dir);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto runs = Runs(dir + "/s.db", "tiny");
  ASSERT_EQ(runs.size(), 3u);
  for (const auto& run : runs) {
    EXPECT_EQ(run.status, "finished") << run.cell_key << " " << run.reason;
    EXPECT_EQ(run.devices, "cpu x2 ranks") << run.cell_key;
    int complete = 0;  // every complete checkpoint was written by a world of two
    for (const auto& c : fs::directory_iterator(run.run_dir + "/ckpt")) {
      if (!fs::exists(c.path() / "DONE")) continue;
      ++complete;
      EXPECT_EQ(nlohmann::json::parse(Slurp(c.path() / "state.json"))["world_size"], 2) << c.path();
    }
    EXPECT_GT(complete, 0) << run.run_dir;
  }
  ExpectSameRows(MetricRows(dir + "/s.db", "tiny"), *reference_);
  for (const auto& e : fs::directory_iterator(root + "/tiny/slurm")) {
    if (e.path().extension() != ".sh") continue;
    const std::string script = Slurp(e.path());
    EXPECT_NE(script.find("#SBATCH --ntasks=\"2\""), std::string::npos) << script;
    EXPECT_NE(script.find("srun --ntasks=2 "), std::string::npos) << script;
  }
}

// mem: auto: each job asks SLURM for its run's estimate per CPU (the tiny runs, about 180 MiB,
// ask 256M), and the runs train as without it. A cell whose estimate no node has is turned away
// by sbatch itself, which shows SLURM read the request: the run fails naming sbatch's reason.
TEST_F(SlurmE2ETest, AutoMemoryAsksEachRunsEstimatePerCpu) {
  const std::string dir = TempDir("slurm_mem");
  const std::string root = dir + "/root";
  const std::string file = SlurmSweep(dir, root, "  mem: auto\n  max_retries: 0\n");
  auto shown = RunCommand(Isoflop(dir + "/s.db", {"sweep", "plan", file, "--no-probe"}), {}, dir);
  ASSERT_EQ(shown.exit_code, 0) << shown.out << shown.err;
  EXPECT_NE(shown.out.find("memory: mem auto asks SLURM for --mem-per-cpu 256M (1 CPU(s) a "
                           "rank; 1.25x each run's estimate)"),
            std::string::npos)
      << shown.out;
  auto r = RunCommand(Isoflop(dir + "/s.db", {"sweep", "run", file, "--no-fit", "--no-plot",
                                              "--set", "budgets=[1e9]"}),
                      {}, dir);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  for (const auto& run : Runs(dir + "/s.db", "tiny"))
    EXPECT_EQ(run.status, "finished") << run.cell_key << " " << run.reason;
  ExpectSameRows(MetricRows(dir + "/s.db", "tiny"), *reference_);
  int scripts = 0;
  for (const auto& e : fs::directory_iterator(root + "/tiny/slurm")) {
    if (e.path().extension() != ".sh") continue;
    ++scripts;
    const std::string script = Slurp(e.path());
    EXPECT_NE(script.find("#SBATCH --mem-per-cpu=\"256M\"\n"), std::string::npos) << script;
    EXPECT_EQ(script.find("--mem="), std::string::npos) << script;
  }
  EXPECT_EQ(scripts, 1) << "three runs asking the same: one array";

  // A run estimated at about twice this host's memory (the test node's RealMemory is 90% of
  // it), sized from MemTotal so no host could take it: only the smallest model has a whole
  // batch in its budget, one step of it, and nothing may train.
  int64_t mem_kib = 0;
  {
    std::ifstream meminfo("/proc/meminfo");
    for (std::string key; meminfo >> key;) {
      if (key == "MemTotal:") {
        meminfo >> mem_kib;
        break;
      }
    }
  }
  ASSERT_GT(mem_kib, 0);
  const int64_t sequences = std::min<int64_t>(mem_kib * 1024 / 40000, 1 << 20);
  const int64_t batch = sequences * 32;
  const std::vector<std::string> sets = {
      "--set", "budgets=[" + std::to_string(6.0 * 3888 * batch * 1.5) + "]",
      "--set", "train.batch_tokens=" + std::to_string(batch),
      "--set", "train.micro_batch=" + std::to_string(sequences)};
  const std::string huge = dir + "/huge";
  fs::create_directories(huge);
  const std::string big = SlurmSweep(huge, huge + "/root", "  mem: auto\n  max_retries: 0\n");
  std::vector<std::string> plan_args = {"sweep", "plan", big, "--no-probe", "--format", "json"};
  plan_args.insert(plan_args.end(), sets.begin(), sets.end());
  auto plan = RunCommand(Isoflop(huge + "/s.db", plan_args), {}, huge);
  ASSERT_EQ(plan.exit_code, 0) << plan.out << plan.err;
  const nlohmann::json cells = nlohmann::json::parse(plan.out);
  ASSERT_EQ(cells.size(), 1u) << plan.out;
  ASSERT_GT(cells[0]["memory"].get<double>(), 1.6 * mem_kib * 1024) << plan.out;
  std::vector<std::string> run_args = {"sweep", "run", big, "--no-fit", "--no-plot"};
  run_args.insert(run_args.end(), sets.begin(), sets.end());
  auto failed = RunCommand(Isoflop(huge + "/s.db", run_args), {}, huge);
  EXPECT_NE(failed.exit_code, 0) << failed.out;
  const auto runs = Runs(huge + "/s.db", "tiny");
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].status, "failed");
  // sbatch's words: "Batch job submission failed: Requested node configuration is not
  // available" (or, on other versions, "Memory specification can not be satisfied").
  EXPECT_NE(runs[0].reason.find("sbatch"), std::string::npos) << runs[0].reason;
  EXPECT_TRUE(runs[0].reason.find("node configuration is not available") != std::string::npos ||
              runs[0].reason.find("Memory specification") != std::string::npos)
      << runs[0].reason;
  EXPECT_NE(runs[0].reason.find("(it asked --mem-per-cpu="), std::string::npos) << runs[0].reason;
  EXPECT_FALSE(fs::exists(runs[0].run_dir + "/metrics.jsonl")) << "it trained";
  std::printf("  refused: %s\n", runs[0].reason.c_str());
}

TEST_F(SlurmE2ETest, RequeuedJobResumesFromItsCheckpointWithEveryStepOnce) {
  const std::string dir = TempDir("slurm_requeue");
  const std::string root = dir + "/runs";
  const std::string file = SlurmSweep(dir, root);
  const pid_t manager = SpawnLogged(
      Isoflop(dir + "/s.db", {"sweep", "run", file, "--no-fit", "--no-plot", "--set",
                              "budgets=[2e9]"}),
      dir, dir + "/manager.log");
  std::string run_dir;
  const pid_t trainer = HoldATrainer(root + "/tiny", &run_dir);
  ASSERT_GT(trainer, 0) << Slurp(dir + "/manager.log");
  const std::string job = JobOf(dir + "/s.db", "tiny", run_dir);
  ASSERT_FALSE(job.empty());
  auto rq = RunCommand({"/usr/bin/scontrol", "requeue", job});
  EXPECT_EQ(rq.exit_code, 0) << rq.out << rq.err;
  kill(trainer, SIGCONT);  // it gets SLURM's SIGTERM, checkpoints and exits; SLURM reruns it
  // SLURM holds a requeued job for about two minutes (BeginTime); the test does not wait.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto q = RunCommand({"/usr/bin/squeue", "-h", "-j", job, "-o", "%T %r"});
        return q.out.find("PENDING BeginTime") != std::string::npos;
      },
      60));
  auto now = RunCommand({"/usr/bin/scontrol", "update", "jobid=" + job, "StartTime=now"});
  EXPECT_EQ(now.exit_code, 0) << now.out << now.err;
  ASSERT_EQ(WaitExit(manager), 0) << Slurp(dir + "/manager.log");
  const std::string log = Slurp(run_dir + "/train.log");
  EXPECT_NE(log.find("restart 1"), std::string::npos) << log;
  for (const auto& run : Runs(dir + "/s.db", "tiny")) {
    EXPECT_EQ(run.status, "finished") << run.reason;
    EXPECT_EQ(run.tokens_done, run.target_tokens);
  }
  const auto rows = MetricRows(dir + "/s.db", "tiny");
  EXPECT_EQ(rows.size(), 3u);
  ExpectSameRows(rows, *reference_);
}

TEST_F(SlurmE2ETest, ScancelledJobIsRecordedCancelledAndRetryFinishesIt) {
  const std::string dir = TempDir("slurm_cancel");
  const std::string root = dir + "/runs";
  const std::string file = SlurmSweep(dir, root);
  std::string run_dir;
  ASSERT_NE(SubmitAndScancelOneTask(dir, root, file, &run_dir), "");
  auto sync = RunCommand(Isoflop(dir + "/s.db", {"sweep", "sync", "tiny", "--watch", "--no-fit",
                                                 "--no-plot"}),
                         {}, dir);
  EXPECT_NE(sync.exit_code, 0) << sync.out;  // one cell failed
  int cancelled = 0;
  for (const auto& run : Runs(dir + "/s.db", "tiny")) {
    if (run.run_dir == run_dir) {
      EXPECT_EQ(run.status, "failed");
      EXPECT_EQ(run.reason.rfind("cancelled: CANCELLED", 0), 0u) << run.reason;
      ++cancelled;
    } else {
      EXPECT_EQ(run.status, "finished") << run.reason;
    }
  }
  EXPECT_EQ(cancelled, 1);
  // Another sync leaves it alone (a cancel is a person's decision); retry runs it again.
  auto again = RunCommand(Isoflop(dir + "/s.db", {"sweep", "sync", "tiny", "--no-fit",
                                                  "--no-plot"}), {}, dir);
  EXPECT_NE(again.out.find("0 to run"), std::string::npos) << again.out;
  auto retry = RunCommand(Isoflop(dir + "/s.db", {"sweep", "retry", "tiny", "--no-fit",
                                                  "--no-plot"}), {}, dir);
  ASSERT_EQ(retry.exit_code, 0) << retry.out << retry.err;
  for (const auto& run : Runs(dir + "/s.db", "tiny")) EXPECT_EQ(run.status, "finished");
  ExpectSameRows(MetricRows(dir + "/s.db", "tiny"), *reference_);
}

TEST_F(SlurmE2ETest, TimeLimitSignalCheckpointsAndTheResubmittedJobCompletes) {
  const std::string dir = TempDir("slurm_time");
  const std::string root = dir + "/runs";
  // A 1-minute limit with the checkpoint signal 50 s before it: slurmctld sends USR2 within its
  // timer period (30 s) once 10 s have passed. The trainer is held meanwhile, so the signal
  // always lands mid-run.
  const std::string file =
      SlurmSweep(dir, root, "  time: \"1\"\n  signal_grace: 50\n  max_retries: 3\n");
  const pid_t manager = SpawnLogged(
      Isoflop(dir + "/s.db", {"sweep", "run", file, "--no-fit", "--no-plot", "--set",
                              "budgets=[1e9]", "--set", "executor.max_parallel=1"}),
      dir, dir + "/manager.log");
  std::string run_dir;
  const pid_t trainer = HoldATrainer(root + "/tiny", &run_dir);
  ASSERT_GT(trainer, 0) << Slurp(dir + "/manager.log");
  // SLURM's USR2 arrives either held (pending while the trainer is stopped) or with a SIGCONT
  // of slurmstepd's own; either way the trainer then checkpoints and exits 128+12.
  EXPECT_TRUE(WaitFor([&] { return SignalPending(trainer, SIGUSR2) || !Stopped(trainer); }, 55))
      << "no USR2 from SLURM before the time limit";
  kill(trainer, SIGCONT);
  ASSERT_EQ(WaitExit(manager), 0) << Slurp(dir + "/manager.log");
  const std::string out = Slurp(dir + "/manager.log");
  EXPECT_NE(out.find("time limit (executor.time 1): stopped at a checkpoint; resubmitted"),
            std::string::npos)
      << out;
  ASSERT_TRUE(fs::exists(run_dir + "/scheduler.json"));
  const auto counts = nlohmann::json::parse(Slurp(run_dir + "/scheduler.json"));
  EXPECT_GE(counts.value("timeouts", 0), 1);
  for (const auto& run : Runs(dir + "/s.db", "tiny")) {
    EXPECT_EQ(run.status, "finished") << run.reason;
    EXPECT_EQ(run.attempts, 1) << "a time limit is not a failed attempt";
  }
  ExpectSameRows(MetricRows(dir + "/s.db", "tiny"), *reference_);
}

TEST_F(SlurmE2ETest, FailingJobIsFailedWithTheReasonFromItsLog) {
  const std::string dir = TempDir("slurm_bad");
  std::string text = Slurp(SlurmSweep(dir, dir + "/runs", "  max_retries: 0\n"));
  text.replace(text.find("  source: synthetic\n  vocab: 32\n"),
               std::string("  source: synthetic\n  vocab: 32\n").size(),
               "  source: text\n  paths: [good.txt]\n");
  text.replace(text.find("vocab_size: 32"), 14, "vocab_size: 256");
  text += "parameters:\n  data.paths: {values: [[good.txt], [missing.txt]]}\n";
  text.replace(text.find("budgets: [1e9, 2e9]"), 19, "budgets: [1e9]");
  std::ofstream(dir + "/bad.yaml") << text;
  {
    std::ofstream good(dir + "/good.txt");
    for (int i = 0; i < 4000; ++i) good << "the quick brown fox jumps over the lazy dog " << i << "\n";
  }
  auto r = RunCommand(Isoflop(dir + "/s.db", {"sweep", "run", "bad.yaml", "--no-fit", "--no-plot"}),
                      {}, dir);
  EXPECT_NE(r.exit_code, 0);
  int failed = 0, finished = 0;
  for (const auto& run : Runs(dir + "/s.db", "tiny")) {
    if (run.config_json.find("missing.txt") != std::string::npos) {
      EXPECT_EQ(run.status, "failed");
      EXPECT_NE(run.reason.find(dir + "/missing.txt: cannot open (No such file or directory)"),
                std::string::npos)
          << run.reason;
      ++failed;
    } else {
      EXPECT_EQ(run.status, "finished") << run.reason;
      ++finished;
    }
  }
  EXPECT_EQ(failed, 3);
  EXPECT_EQ(finished, 3);
}

// Jobs waiting in SLURM's queue show as queued, with SLURM's reason, not as running: every
// job is submitted held (sbatch --hold), so the display must say "queued: PENDING
// (JobHeldUser)" and count nothing running until the test releases them; released, each cell
// runs and the sweep ends with the reference rows.
TEST_F(SlurmE2ETest, HeldJobsShowAsQueuedUntilReleased) {
  const std::string dir = TempDir("slurm_sweep_held");
  const std::string file = SlurmSweep(dir, dir + "/runs", "  sbatch_args: [\"--hold\"]\n");
  const std::string log = dir + "/sweep.log";
  const pid_t pid = SpawnLogged(
      Isoflop(dir + "/s.db", {"sweep", "run", file, "--no-fit", "--no-plot"}), dir, log);
  ASSERT_GT(pid, 0);
  const bool shown = WaitFor(
      [&] { return Slurp(log).find("queued: PENDING (JobHeldUser)") != std::string::npos; }, 60);
  const std::string held = Slurp(log);
  EXPECT_TRUE(shown) << held;
  // The tiny sweep's six cells go in one array; none of them counts as running.
  EXPECT_NE(held.find("0 running, 6 queued"), std::string::npos) << held;
  EXPECT_EQ(held.find("running, eta"), std::string::npos) << held;
  // Release what is held until the sweep ends (each later submission is held too).
  int code = -1;
  const bool ended = WaitFor(
      [&] {
        auto q = RunCommand({"/usr/bin/squeue", "-h", "-t", "PD", "-o", "%F"});  // array ids
        std::istringstream ids(q.out);
        for (std::string id; std::getline(ids, id);)
          if (!id.empty()) RunCommand({"/usr/bin/scontrol", "release", id});
        const pid_t done = waitpid(pid, &code, WNOHANG);
        return done == pid;
      },
      180);
  if (!ended) kill(pid, SIGKILL);
  ASSERT_TRUE(ended) << Slurp(log);
  ASSERT_TRUE(WIFEXITED(code) && WEXITSTATUS(code) == 0) << Slurp(log);
  ExpectSameRows(MetricRows(dir + "/s.db", "tiny"), *reference_);
  for (const auto& run : Runs(dir + "/s.db", "tiny")) EXPECT_EQ(run.status, "finished");
}

// A task cancelled while still pending leaves no record: SLURM drops it from its array, and
// without accounting nothing remembers it. The manager must not wait for it (it used to, until
// every other task of the array had left the queue, then resubmit it): it is failed "cancelled
// while pending" as soon as it is gone, whether the manager watching saw it pending (task 4) or
// adopted it after the cancel (task 5, never started: no node.txt). `sweep status` lists the
// pending tasks one by one (squeue -r) and "(no record)" for the cancelled one.
TEST_F(SlurmE2ETest, TasksCancelledWhilePendingAreRecordedCancelledAtOnce) {
  const std::string dir = TempDir("slurm_cancel_pending");
  const std::string root = dir + "/runs";
  std::string text = Slurp(SlurmSweep(dir, root));
  const size_t at = text.find("max_parallel: 2");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 15, "max_parallel: 1");  // one task at a time: the others wait
  const std::string file = dir + "/one_at_a_time.yaml";
  std::ofstream(file) << text;
  const std::string db = dir + "/s.db";
  auto submit =
      RunCommand(Isoflop(db, {"sweep", "run", file, "--detach", "--no-fit", "--no-plot"}), {}, dir);
  ASSERT_EQ(submit.exit_code, 0) << submit.out << submit.err;
  std::string held_dir;
  const pid_t trainer = HoldATrainer(root + "/tiny", &held_dir);
  ASSERT_GT(trainer, 0);
  // The held task runs; the five others wait behind it.
  std::map<int, store::RunRecord> by_task;
  for (const auto& r : Runs(db, "tiny"))
    by_task[std::stoi(r.job_id.substr(r.job_id.find('_') + 1))] = r;
  ASSERT_EQ(by_task.size(), 6u);
  ASSERT_EQ(by_task[0].run_dir, held_dir);
  const std::string job5 = by_task[5].job_id.substr(6), job4 = by_task[4].job_id.substr(6);
  // Task 5 is cancelled before any manager looks.
  auto cancel = RunCommand({"/usr/bin/scancel", job5});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  auto status = RunCommand(Isoflop(db, {"sweep", "status", "tiny"}), {}, dir);
  ASSERT_EQ(status.exit_code, 0) << status.err;
  std::smatch m;
  for (int task = 1; task <= 4; ++task) {
    const std::string job = by_task[task].job_id.substr(6);
    EXPECT_TRUE(std::regex_search(status.out, m, std::regex(job + " +PENDING"))) << status.out;
  }
  EXPECT_TRUE(std::regex_search(status.out, m, std::regex(job5 + R"( +\(no record\))")))
      << status.out;
  // A manager that follows the sweep sees task 4 pending; then task 4 is cancelled too.
  const std::string log = dir + "/sync.log";
  const pid_t manager = SpawnLogged(
      Isoflop(db, {"sweep", "sync", "tiny", "--watch", "--no-fit", "--no-plot"}), dir, log);
  const std::regex seen(by_task[4].cell_key.substr(0, 8) + ".*queued: PENDING");
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::string text = Slurp(log);
        return std::regex_search(text, m, seen);
      },
      60))
      << Slurp(log);
  cancel = RunCommand({"/usr/bin/scancel", job4});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.err;
  kill(trainer, SIGCONT);
  // A regression waits for the array to leave the queue (MinJobAge, an hour here): give up after
  // five minutes (the sweep itself takes seconds).
  int code = -1;
  const bool ended = WaitFor(
      [&] {
        int st = 0;
        if (::waitpid(manager, &st, WNOHANG) != manager) return false;
        code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        return true;
      },
      300);
  if (!ended) {
    kill(manager, SIGKILL);
    WaitExit(manager);
  }
  ASSERT_TRUE(ended) << "sweep sync --watch waited for a cancelled task\n" << Slurp(log);
  EXPECT_NE(code, 0) << Slurp(log);  // two cells failed
  for (const auto& run : Runs(db, "tiny")) {
    if (run.run_dir == by_task[4].run_dir || run.run_dir == by_task[5].run_dir) {
      EXPECT_EQ(run.status, "failed");
      EXPECT_EQ(run.reason.rfind("cancelled: CANCELLED while pending", 0), 0u) << run.reason;
      EXPECT_EQ(run.tokens_done, 0);
      EXPECT_FALSE(fs::exists(run.run_dir + "/node.txt")) << "it never started";
    } else {
      EXPECT_EQ(run.status, "finished") << run.reason;
    }
  }
  auto retry =
      RunCommand(Isoflop(db, {"sweep", "retry", "tiny", "--no-fit", "--no-plot"}), {}, dir);
  ASSERT_EQ(retry.exit_code, 0) << retry.out << retry.err;
  for (const auto& run : Runs(db, "tiny")) EXPECT_EQ(run.status, "finished");
  ExpectSameRows(MetricRows(db, "tiny"), *reference_);
}

TEST_F(SlurmE2ETest, CancelOfADetachedSweepScancelsItsJobs) {
  const std::string dir = TempDir("slurm_sweep_cancel");
  const std::string file = SlurmSweep(dir, dir + "/runs", "  time: \"10\"\n");
  auto submit = RunCommand(Isoflop(dir + "/s.db", {"sweep", "run", file, "--detach", "--no-fit",
                                                   "--no-plot", "--set", "executor.max_parallel=1"}),
                           {}, dir);
  ASSERT_EQ(submit.exit_code, 0) << submit.out << submit.err;
  auto cancel = RunCommand(Isoflop(dir + "/s.db", {"sweep", "cancel", "tiny"}), {}, dir);
  ASSERT_EQ(cancel.exit_code, 0) << cancel.out << cancel.err;
  EXPECT_NE(cancel.out.find("cancelled (no manager was running it)"), std::string::npos)
      << cancel.out;
  int cancelled = 0;
  std::set<std::string> jobs;
  for (const auto& run : Runs(dir + "/s.db", "tiny")) {
    if (run.status == "cancelled") {
      ++cancelled;
    } else {
      // A job that finished before the cancel keeps its verdict for the next sync.
      EXPECT_EQ(run.status, "running");
      EXPECT_NE(Slurp(run.run_dir + "/status.json").find("\"finished\""), std::string::npos);
    }
    jobs.insert(run.job_id.substr(6));
  }
  EXPECT_GT(cancelled, 0);
  // Nothing of the sweep is left pending or running in SLURM: each job is CANCELLED, was done,
  // or (a cancelled array task that never started) is gone from the queue.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto q = RunCommand({"/usr/bin/squeue", "--states=all", "-h", "-r", "-o", "%i %T"});
        for (const auto& j : jobs) {
          const size_t at = q.out.find("\n" + j + " ") != std::string::npos
                                ? q.out.find("\n" + j + " ") + 1
                                : q.out.rfind(j + " ", 0);
          if (at == std::string::npos) continue;
          const std::string state = q.out.substr(at + j.size() + 1, 9);
          if (state != "CANCELLED" && state != "COMPLETED") return false;
        }
        return true;
      },
      30));
  // And none of the cancelled cells ran to its end (without the scancel all would have).
  for (const auto& run : Runs(dir + "/s.db", "tiny")) {
    if (run.status != "cancelled") continue;
    const std::string st = Slurp(run.run_dir + "/status.json");
    EXPECT_EQ(st.find("\"finished\""), std::string::npos) << run.cell_key << ": " << st;
  }
}

// `sweep cancel` of a detached sweep is SIGKILLed after it marked the sweep cancelled and before
// its scancel ran (a scancel wrapper on its PATH kills it, its parent, first). The cancel must
// stand: every cell cancelled, and `sweep sync` submits nothing and names the tasks still queued;
// a second cancel scancels them. (Every job is held, so none can start or end meanwhile.)
TEST_F(SlurmE2ETest, CancelKilledBeforeItsScancelStandsAndASecondCancelStopsTheJobs) {
  const std::string dir = TempDir("slurm_cancel_killed");
  const std::string file = SlurmSweep(dir, dir + "/runs", "  sbatch_args: [\"--hold\"]\n");
  auto submit = RunCommand(
      Isoflop(dir + "/s.db", {"sweep", "run", file, "--detach", "--no-fit", "--no-plot"}), {}, dir);
  ASSERT_EQ(submit.exit_code, 0) << submit.out << submit.err;
  auto queued = [&] {
    auto q = RunCommand(
        {"/usr/bin/squeue", "--noheader", "-r", "--name", "isoflop-tiny", "-o", "%i"}, {}, dir);
    std::set<std::string> ids;
    std::istringstream lines(q.out);
    for (std::string id; std::getline(lines, id);)
      if (!id.empty()) ids.insert(id);
    return ids;
  };
  const std::set<std::string> submitted = queued();
  ASSERT_EQ(submitted.size(), 6u);
  const std::string wrap = dir + "/bin";
  fs::create_directories(wrap);
  std::ofstream(wrap + "/scancel") << "#!/bin/sh\ntouch \"$KILLED\"; kill -9 $PPID\n";
  fs::permissions(wrap + "/scancel", fs::perms::owner_all);
  auto killed =
      RunCommand(Isoflop(dir + "/s.db", {"sweep", "cancel", "tiny"}),
                 {"PATH=" + wrap + ":" + std::getenv("PATH"), "KILLED=" + dir + "/killed"}, dir);
  ASSERT_EQ(killed.exit_code, 128 + SIGKILL) << killed.out << killed.err;
  ASSERT_TRUE(fs::exists(dir + "/killed"));
  for (const auto& run : Runs(dir + "/s.db", "tiny")) EXPECT_EQ(run.status, "cancelled");
  EXPECT_EQ(queued(), submitted);  // nothing was scancelled
  auto sync = RunCommand(Isoflop(dir + "/s.db", {"sweep", "sync", "tiny", "--no-fit", "--no-plot"}),
                         {}, dir);
  ASSERT_EQ(sync.exit_code, 0) << sync.out << sync.err;
  EXPECT_NE(sync.out.find("sweep tiny is cancelled: sync submits nothing"), std::string::npos)
      << sync.out;
  EXPECT_NE(sync.out.find("6 SLURM task(s) of it are still queued or running:"), std::string::npos)
      << sync.out;
  EXPECT_EQ(queued(), submitted);  // and submitted nothing
  for (const auto& run : Runs(dir + "/s.db", "tiny")) EXPECT_EQ(run.status, "cancelled");
  auto cancel = RunCommand(Isoflop(dir + "/s.db", {"sweep", "cancel", "tiny"}), {}, dir);
  ASSERT_EQ(cancel.exit_code, 0) << cancel.out << cancel.err;
  EXPECT_NE(cancel.out.find("scancel of 6 SLURM task(s)"), std::string::npos) << cancel.out;
  EXPECT_TRUE(WaitFor([&] { return queued().empty(); }, 30)) << "still queued after the cancel";
  for (const auto& run : Runs(dir + "/s.db", "tiny")) {
    EXPECT_EQ(run.status, "cancelled") << run.cell_key;
    EXPECT_FALSE(fs::exists(run.run_dir + "/metrics.jsonl")) << run.cell_key << " ran";
  }
}

// The manager is killed after sbatch accepted its array and before it recorded the job ids:
// an sbatch wrapper on its PATH submits, prints the id, then SIGKILLs the manager (its parent)
// while it still waits for sbatch's output. The next manager finds the array in the queue by
// name and script, and follows it: nothing is submitted twice, every step is in the store once.
// Runs `sweep run FILE` with an sbatch wrapper on its PATH that submits, prints the id, runs
// `then` (a shell line; $ID is the array's id), then SIGKILLs the manager (its parent) while it
// still waits for sbatch's output. DIR/killed holds sbatch's answer afterwards.
void RunManagerKilledAfterSbatch(const std::string& dir, const std::string& file,
                                 const std::string& then = "") {
  const std::string wrap = dir + "/bin";
  fs::create_directories(wrap);
  // (Only a submission kills: `sbatch --version`, which the manager runs first, passes.)
  std::ofstream(wrap + "/sbatch") << R"(#!/bin/sh
out=$(/usr/bin/sbatch "$@") || { echo "$out"; exit 1; }
echo "$out"
if [ "$1" = --parsable ] && [ ! -e "$KILLED" ]; then
  ID=${out%%;*}; )" << then << R"(
  echo "$out" > "$KILLED"; kill -9 $PPID
fi
)";
  fs::permissions(wrap + "/sbatch", fs::perms::owner_all);
  auto first =
      RunCommand(Isoflop(dir + "/s.db", {"sweep", "run", file, "--no-fit", "--no-plot"}),
                 {"PATH=" + wrap + ":" + std::getenv("PATH"), "KILLED=" + dir + "/killed"}, dir);
  ASSERT_EQ(first.exit_code, 128 + SIGKILL) << first.out << first.err;
  ASSERT_TRUE(fs::exists(dir + "/killed"));
  for (const auto& run : Runs(dir + "/s.db", "tiny")) {
    EXPECT_EQ(run.status, "running") << run.cell_key;
    EXPECT_EQ(run.job_id, "") << run.cell_key;  // never recorded
  }
}

TEST_F(SlurmE2ETest, ManagerKilledBetweenSbatchAndRecordingAdoptsTheQueuedArray) {
  const std::string dir = TempDir("slurm_unrecorded");
  const std::string root = dir + "/runs";
  const std::string file = SlurmSweep(dir, root);
  ASSERT_NO_FATAL_FAILURE(RunManagerKilledAfterSbatch(dir, file));
  auto sync = RunCommand(
      Isoflop(dir + "/s.db", {"sweep", "sync", "tiny", "--watch", "--no-fit", "--no-plot"}), {},
      dir);
  ASSERT_EQ(sync.exit_code, 0) << sync.out << sync.err;
  size_t adopted = 0;
  for (size_t at = 0; (at = sync.out.find("submitted by a manager killed before it recorded the "
                                          "job",
                                          at)) != std::string::npos;
       ++at)
    ++adopted;
  EXPECT_EQ(adopted, 6u) << sync.out;
  // Every cell ran as a task of the one array the killed manager submitted.
  const std::string array =
      Slurp(dir + "/killed").substr(0, Slurp(dir + "/killed").find_first_of(";\n"));
  ASSERT_FALSE(array.empty());
  for (const auto& run : Runs(dir + "/s.db", "tiny")) {
    EXPECT_EQ(run.status, "finished") << run.cell_key << " " << run.reason;
    EXPECT_EQ(run.attempts, 1) << run.cell_key;
    EXPECT_EQ(run.job_id.rfind("slurm:" + array + "_", 0), 0u) << run.cell_key << " " << run.job_id;
  }
  ExpectSameRows(MetricRows(dir + "/s.db", "tiny"), *reference_);
}

// The same kill, then `sweep cancel` with no manager running: the array that only the queue
// knows of is cancelled too (its tasks held pending by the wrapper, so none can end first).
TEST_F(SlurmE2ETest, CancelAfterAManagerKilledBeforeRecordingScancelsTheUnrecordedArray) {
  const std::string dir = TempDir("slurm_unrecorded_cancel");
  const std::string root = dir + "/runs";
  const std::string file = SlurmSweep(dir, root);
  ASSERT_NO_FATAL_FAILURE(RunManagerKilledAfterSbatch(dir, file, "scontrol hold $ID;"));
  const std::string array =
      Slurp(dir + "/killed").substr(0, Slurp(dir + "/killed").find_first_of(";\n"));
  auto queued = [&] {
    return RunCommand({"/usr/bin/squeue", "--noheader", "-r", "--name", "isoflop-tiny", "-o", "%i"},
                      {}, dir)
        .out;
  };
  ASSERT_NE(queued().find(array + "_5"), std::string::npos) << queued();
  // `sweep status` shows the tasks the store never recorded, with what SLURM says of them.
  auto status =
      RunCommand(Isoflop(dir + "/s.db", {"sweep", "status", "tiny", "--format", "csv"}), {}, dir);
  ASSERT_EQ(status.exit_code, 0) << status.err;
  for (int k = 0; k < 6; ++k)
    EXPECT_NE(status.out.find(array + "_" + std::to_string(k) + ",PENDING"), std::string::npos)
        << status.out;
  EXPECT_NE(status.out.find("job not recorded"), std::string::npos) << status.out;
  auto cancel = RunCommand(Isoflop(dir + "/s.db", {"sweep", "cancel", "tiny"}), {}, dir);
  ASSERT_EQ(cancel.exit_code, 0) << cancel.out << cancel.err;
  EXPECT_NE(cancel.out.find("scancel of 6 SLURM task(s)"), std::string::npos) << cancel.out;
  std::string left = queued();
  for (int i = 0; i < 100 && !left.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    left = queued();
  }
  EXPECT_EQ(left, "") << "still queued after the cancel";
  for (const auto& run : Runs(dir + "/s.db", "tiny")) {
    EXPECT_EQ(run.status, "cancelled") << run.cell_key;
    EXPECT_FALSE(fs::exists(run.run_dir + "/metrics.jsonl")) << run.cell_key << " ran";
  }
}

TEST_F(SlurmE2ETest, KilledManagerLosesNothingAndSyncPicksEverythingUp) {
  const std::string dir = TempDir("slurm_kill");
  const std::string root = dir + "/runs";
  // At most 4 tasks per array: the six cells go out as two arrays.
  const std::string file = SlurmSweep(dir, root, "  max_array_size: 4\n");
  const pid_t manager = SpawnLogged(
      Isoflop(dir + "/s.db", {"sweep", "run", file, "--no-fit", "--no-plot"}), dir,
      dir + "/manager.log");
  std::string run_dir;
  const pid_t trainer = HoldATrainer(root + "/tiny", &run_dir);
  ASSERT_GT(trainer, 0) << Slurp(dir + "/manager.log");
  kill(manager, SIGKILL);  // with a job held mid-run and others queued or running
  WaitExit(manager);
  kill(trainer, SIGCONT);
  auto sync = RunCommand(Isoflop(dir + "/s.db", {"sweep", "sync", "tiny", "--no-fit",
                                                 "--no-plot"}), {}, dir);
  ASSERT_EQ(sync.exit_code, 0) << sync.out << sync.err;
  EXPECT_TRUE(std::regex_search(sync.out, std::regex("[1-6] running, "))) << sync.out;
  // Run from cron until done: each pass ingests what arrived and returns.
  bool done = false;
  for (int pass = 0; pass < 300 && !done; ++pass) {
    auto again = RunCommand(Isoflop(dir + "/s.db", {"sweep", "sync", "tiny", "--no-plot"}), {},
                            dir);
    ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
    done = again.out.find("6 finished, 0 failed") != std::string::npos;
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  ASSERT_TRUE(done);
  for (const auto& run : Runs(dir + "/s.db", "tiny")) {
    EXPECT_EQ(run.status, "finished") << run.reason;
    EXPECT_EQ(run.attempts, 1) << run.cell_key;
  }
  ExpectSameRows(MetricRows(dir + "/s.db", "tiny"), *reference_);
  std::set<std::string> arrays;
  for (const auto& run : Runs(dir + "/s.db", "tiny"))
    arrays.insert(run.job_id.substr(0, run.job_id.find('_')));
  EXPECT_EQ(arrays.size(), 2u);
  auto fit = store::Store::Open(dir + "/s.db");
  auto latest = (*fit)->LatestFit("sweep", "tiny", "parametric");
  EXPECT_TRUE(latest.ok() && latest->has_value()) << "the last sync fits";
}

// Against a cluster with accounting (cluster.sh run --accounting: MariaDB, slurmdbd, MinJobAge
// 2 s), where a finished job leaves the controller's memory two seconds after it ends and only
// sacct still knows how it ended.
class SlurmAccountingE2ETest : public SlurmE2ETest {
 protected:
  static void SetUpTestSuite() {
    ASSERT_EQ(RunCommand({"/usr/bin/sacct", "--noheader", "-X"}).exit_code, 0)
        << "run these cases through tests/slurm/cluster.sh run --accounting (ctest does)";
    SlurmE2ETest::SetUpTestSuite();
  }
};

// The manager looks only after every task has left squeue: a task scancelled mid-run (its
// trainer checkpointed on the SIGTERM, so its folder alone says "preempted, resume me") is
// failed "cancelled" from sacct's CANCELLED, not resubmitted against the user's cancel; the
// others are finished from sacct's COMPLETED, with the reference's rows, and `sweep status`
// shows the states sacct gives.
TEST_F(SlurmAccountingE2ETest, JobsTheControllerForgotAreJudgedBySacct) {
  const std::string dir = TempDir("slurm_acct");
  const std::string root = dir + "/runs";
  const std::string file = SlurmSweep(dir, root);
  std::string run_dir;
  const std::string job = SubmitAndScancelOneTask(dir, root, file, &run_dir);
  ASSERT_NE(job, "");
  const auto queued = [&] {
    return RunCommand({"/usr/bin/squeue", "--noheader", "-r", "--states=all", "--name",
                       "isoflop-tiny", "-o", "%i %T"})
        .out;
  };
  WaitFor([&] { return queued().empty(); }, 180);
  ASSERT_EQ(queued(), "") << "the controller still lists the tasks";
  const std::string array = job.substr(0, job.find('_'));
  // slurmdbd records a task's end a moment after the controller drops it (asynchronously: a
  // task cancelled half a second after it started was missing from sacct once, 2026-12-07),
  // and the manager waits for that verdict as well; so does this check, polling (no sleep).
  const auto accounted = [&] {
    return RunCommand({"/usr/bin/sacct", "--noheader", "-X", "--parsable2", "-o", "JobID,State",
                       "-j", array})
        .out;
  };
  WaitFor([&] { return accounted().find(job + "|CANCELLED") != std::string::npos; }, 60);
  const std::string sacct = accounted();
  EXPECT_NE(sacct.find(job + "|CANCELLED"), std::string::npos) << sacct;
  auto sync = RunCommand(
      Isoflop(dir + "/s.db", {"sweep", "sync", "tiny", "--watch", "--no-fit", "--no-plot"}), {},
      dir);
  EXPECT_NE(sync.exit_code, 0) << sync.out;  // the cancelled cell failed
  int finished = 0;
  auto rows = MetricRows(dir + "/s.db", "tiny");
  for (const auto& run : Runs(dir + "/s.db", "tiny")) {
    EXPECT_EQ(run.attempts, 1) << run.cell_key << " " << run.reason;
    if (run.run_dir == run_dir) {
      EXPECT_EQ(run.status, "failed");
      EXPECT_EQ(run.reason.rfind("cancelled: CANCELLED", 0), 0u) << run.reason;
      rows.erase(run.cell_key);  // stopped part way
    } else {
      EXPECT_EQ(run.status, "finished") << run.reason;
      ++finished;
    }
  }
  EXPECT_EQ(finished, 2);
  ExpectSameRows(rows, *reference_);
  auto status = RunCommand(Isoflop(dir + "/s.db", {"sweep", "status", "tiny"}), {}, dir);
  ASSERT_EQ(status.exit_code, 0) << status.err;
  size_t completed = 0;
  for (size_t at = 0; (at = status.out.find("COMPLETED", at)) != std::string::npos; ++at)
    ++completed;
  EXPECT_EQ(completed, 2u) << status.out;
  EXPECT_NE(status.out.find("CANCELLED"), std::string::npos) << status.out;
  EXPECT_EQ(status.out.find("(no record)"), std::string::npos) << status.out;
}

}  // namespace
}  // namespace isoflop
