// The SLURM executor (see slurm_executor.h): batch scripts, sbatch, sacct/squeue polling, the
// mapping of SLURM job states onto the run protocol's exits.
#include "isoflop/sweep/slurm_executor.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <tuple>

#include "isoflop/common/files.h"
#include "isoflop/common/subprocess.h"
#include "isoflop/sweep/ingest.h"

namespace isoflop::sweep {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

std::string Trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  const size_t b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}

struct Ran {
  int exit_code = -1;
  std::string out;  // stdout and stderr
};

// Runs a SLURM client (PATH search, no shell), stdout and stderr captured together.
Ran RunClient(const std::vector<std::string>& argv, const std::string& cwd = "") {
  SpawnOptions o;
  o.search_path = true;
  o.cwd = cwd;
  o.die_with_parent = false;
  Result<ChildResult> r = RunChild(argv, o, /*capture_stderr=*/true);
  Ran ran;
  if (!r.ok()) {
    ran.out = r.status().message();
    return ran;
  }
  ran.exit_code = r->exit_code;
  ran.out = r->output;
  return ran;
}

std::optional<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool HasCheckpoint(const std::string& run_dir) {
  std::error_code ec;
  const fs::path ckpt = fs::path(run_dir) / "ckpt";
  if (!fs::is_directory(ckpt, ec)) return false;
  for (const auto& e : fs::directory_iterator(ckpt, ec)) {
    if (e.path().filename().string().rfind("step-", 0) == 0 && fs::exists(e.path() / "DONE", ec))
      return true;
  }
  return false;
}

std::string TimeTag() {
  char buf[32];
  const time_t now = time(nullptr);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(buf, sizeof(buf), "%Y%m%d-%H%M%S", &tm);
  return buf;
}

// The trainer's exit code when its status.json says it ended (finished, failed, diverged).
std::optional<int> RunFolderVerdict(const std::string& run_dir) {
  Result<std::optional<RunStatusFile>> sf = ReadRunStatus(run_dir);
  if (sf.ok() && *sf && (*sf)->exit_code &&
      ((*sf)->state == "finished" || (*sf)->state == "failed" || (*sf)->state == "diverged")) {
    return *(*sf)->exit_code;
  }
  return std::nullopt;
}

// Whether a task in `state` (as a poll saw it) waits for a node: just submitted, pending (held,
// no resources...), or put back in the queue by a requeue.
bool Waiting(const std::string& state) {
  return state == "SUBMITTED" || state == "PENDING" || state.rfind("REQUEUE", 0) == 0;
}

}  // namespace

std::string ExecHelperFor(const std::string& train_binary) {
  return (fs::path(train_binary).parent_path() / "isoflop-exec").string();
}

std::string ShellQuote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789_-+=.,/:@%") == std::string::npos) {
    return s;
  }
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string SbatchQuote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::vector<std::string> ExpandArrayId(const std::string& id) {
  const size_t open = id.find("_[");
  if (open == std::string::npos || id.back() != ']') return {id};
  const std::string base = id.substr(0, open);
  std::string body = id.substr(open + 2, id.size() - open - 3);
  if (const size_t pct = body.find('%'); pct != std::string::npos) body = body.substr(0, pct);
  std::vector<std::string> out;
  for (const std::string& part : Split(body, ',')) {
    const size_t dash = part.find('-');
    try {
      const long a = std::stol(part.substr(0, dash));
      const long b = dash == std::string::npos ? a : std::stol(part.substr(dash + 1));
      for (long i = a; i <= b && out.size() < 4000000; ++i)
        out.push_back(base + "_" + std::to_string(i));
    } catch (...) {
      return {id};
    }
  }
  return out;
}

bool SlurmStateIsFinal(const std::string& state) {
  static const std::set<std::string> kFinal = {
      "COMPLETED", "FAILED",     "CANCELLED", "TIMEOUT",   "OUT_OF_MEMORY",
      "NODE_FAIL", "PREEMPTED",  "BOOT_FAIL", "DEADLINE"};
  const std::string word = state.substr(0, state.find(' '));
  return kFinal.count(word) > 0;
}

std::vector<SlurmTaskState> ParseSacct(const std::string& text) {
  std::vector<SlurmTaskState> out;
  std::stringstream ss(text);
  for (std::string line; std::getline(ss, line);) {
    line = Trim(line);
    if (line.empty()) continue;
    const std::vector<std::string> f = Split(line, '|');
    if (f.size() < 3 || f[0].find('.') != std::string::npos) continue;  // a step line
    SlurmTaskState st;
    st.state = Trim(f[1]);
    const size_t colon = f[2].find(':');
    try {
      st.exit_code = std::stoi(f[2].substr(0, colon));
      if (colon != std::string::npos) st.signal = std::stoi(f[2].substr(colon + 1));
    } catch (...) {
    }
    if (f.size() > 3) st.node = Trim(f[3]);
    if (st.node == "None assigned") st.node.clear();
    for (const std::string& id : ExpandArrayId(Trim(f[0]))) {
      st.id = id;
      out.push_back(st);
    }
  }
  return out;
}

std::vector<SlurmTaskState> ParseSqueue(const std::string& text) {
  std::vector<SlurmTaskState> out;
  std::stringstream ss(text);
  for (std::string line; std::getline(ss, line);) {
    if (Trim(line).empty()) continue;
    const std::vector<std::string> f = Split(line, '|');
    if (f.size() < 5) continue;
    SlurmTaskState st;
    st.state = Trim(f[1]);
    st.reason = Trim(f[2]);
    if (st.reason == "None") st.reason.clear();
    st.node = Trim(f[3]);
    try {
      const int status = std::stoi(Trim(f[4]));
      if (SlurmStateIsFinal(st.state)) {
        st.exit_code = (status >> 8) & 0xff;
        st.signal = status & 0x7f;
      }
    } catch (...) {
    }
    for (const std::string& id : ExpandArrayId(Trim(f[0]))) {
      st.id = id;
      out.push_back(st);
    }
  }
  return out;
}

std::optional<int64_t> SlurmMemoryBytes(const std::string& mem) {
  if (mem.empty()) return std::nullopt;
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(mem, &used);
  } catch (...) {
    return std::nullopt;
  }
  if (!(v > 0)) return std::nullopt;
  const std::string unit = mem.substr(used);
  double scale = 1 << 20;  // MiB by default
  if (unit == "K" || unit == "k") scale = 1 << 10;
  else if (unit == "M" || unit == "m" || unit.empty()) scale = 1 << 20;
  else if (unit == "G" || unit == "g") scale = 1 << 30;
  else if (unit == "T" || unit == "t") scale = double(1LL << 40);
  else return std::nullopt;
  return static_cast<int64_t>(v * scale);
}

int64_t AutoMemoryPerCpuMiB(int64_t estimate_bytes, int threads) {
  const double mib = 1.25 * static_cast<double>(std::max<int64_t>(estimate_bytes, 0)) / (1 << 20);
  const int64_t per_rank = std::max<int64_t>(256, static_cast<int64_t>(std::ceil(mib / 256)) * 256);
  const int64_t cpus = std::max(1, threads);
  return (per_rank + cpus - 1) / cpus;
}

std::string BatchScript(const ArraySpec& spec, const ExecutorConfig& e,
                        const std::string& train_binary) {
  const ExecutorConfig::Slurm& s = e.slurm;
  const std::string cells = spec.script_dir + "/array-" + spec.tag + ".cells";
  std::ostringstream o;
  o << "#!/bin/bash\n"
    << "# isoflop: " << spec.run_dirs.size() << " run(s) of one sweep as a SLURM job array.\n"
    << "# Task i runs the i-th run folder of " << cells << "\n"
    << "# To submit it again by hand: cd " << ShellQuote(spec.script_dir)
    << " && sbatch array-" << spec.tag << ".sh\n"
    << "# (`isoflop sweep sync` does that for you; every value below is quoted.)\n";
  auto directive = [&](const std::string& flag, const std::string& value) {
    o << "#SBATCH " << flag << "=" << SbatchQuote(value) << "\n";
  };
  directive("--job-name", spec.name);
  std::string array = "0-" + std::to_string(spec.run_dirs.size() - 1);
  if (spec.max_parallel > 0) array += "%" + std::to_string(spec.max_parallel);
  directive("--array", array);
  o << "#SBATCH --requeue\n#SBATCH --open-mode=append\n";
  directive("--signal", "USR2@" + std::to_string(s.signal_grace_s));
  directive("--output", "logs/%A_%a.out");  // relative to the submission folder: script_dir
  const int ranks = std::max(1, e.ranks_per_run);
  directive("--ntasks", std::to_string(ranks));  // data parallel: one task per rank
  directive("--cpus-per-task", std::to_string(spec.threads));
  // One GPU per task: each rank drives one device (gpus_per_run GPUs = that many tasks).
  if (spec.gpu && s.gres.empty()) directive("--gpus-per-task", "1");
  if (!s.gres.empty()) directive("--gres", s.gres);
  if (!s.partition.empty()) directive("--partition", s.partition);
  if (!s.account.empty()) directive("--account", s.account);
  if (!s.qos.empty()) directive("--qos", s.qos);
  if (!s.time.empty()) directive("--time", s.time);
  if (!s.constraint.empty()) directive("--constraint", s.constraint);
  if (spec.mem_per_cpu_mib > 0) {
    directive("--mem-per-cpu", std::to_string(spec.mem_per_cpu_mib) + "M");
  } else if (!s.mem.empty() && s.mem != ExecutorConfig::Slurm::kAutoMem) {
    directive("--mem", s.mem);
  }
  for (const std::string& a : s.sbatch_args) o << "#SBATCH " << SbatchQuote(a) << "\n";
  o << "\nset -u\n"
    << "cells=" << ShellQuote(cells) << "\n"
    << "train=" << ShellQuote(train_binary) << "\n"
    << "exec=" << ShellQuote(ExecHelperFor(train_binary)) << "\n"
    << "mapfile -t run_dirs < \"$cells\"\n"
    << "# A data-parallel run's ranks meet at the first node, on a port of this job's own.\n"
    << "export MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}\n"
    << "run_dir=${run_dirs[$SLURM_ARRAY_TASK_ID]}\n"
    << "# From here on everything this job prints goes to the run's train.log.\n"
    << "exec >>\"$run_dir/train.log\" 2>&1\n"
    << "echo \"isoflop: SLURM job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} (job id "
       "$SLURM_JOB_ID, restart ${SLURM_RESTART_COUNT:-0}) on $(hostname)\"\n"
    << "gpus=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | paste -sd, - || "
       "true)\n"
    << "printf '%s\\n%s\\n' \"${SLURMD_NODENAME:-$(hostname)}\" \"$gpus\" > \"$run_dir/node.txt\"\n";
  for (const ExecutorConfig::SetupLine& line : s.setup) {
    if (!line.argv.empty()) {
      for (size_t i = 0; i < line.argv.size(); ++i) o << (i ? " " : "") << ShellQuote(line.argv[i]);
      o << "\n";
    } else {
      o << line.shell << "\n";
    }
  }
  // Through isoflop-exec: a USR2 or SIGTERM during LibTorch's start-up is held, not fatal.
  o << "srun --ntasks=" << ranks << " --cpus-per-task=" << spec.threads
    << (ranks > 1 ? " --kill-on-bad-exit=1" : "")
    << " \"$exec\" \"$train\" --run-dir \"$run_dir\"\n";
  return o.str();
}

Status Scancel(const std::vector<std::string>& ids, bool signal_only) {
  if (ids.empty()) return Status::Ok();
  std::vector<std::string> argv = {"scancel"};
  if (signal_only) {
    // Pending jobs cannot take a signal: cancel them (they never started), signal the rest.
    std::vector<std::string> pending = {"scancel", "--state=PENDING"};
    pending.insert(pending.end(), ids.begin(), ids.end());
    RunClient(pending);
    argv = {"scancel", "--signal=USR2", "--state=RUNNING"};
  }
  argv.insert(argv.end(), ids.begin(), ids.end());
  const Ran r = RunClient(argv);
  if (r.exit_code < 0) return Status::IoError("cannot run scancel: " + r.out);
  return Status::Ok();
}

std::optional<std::map<std::string, SlurmTaskState>> QuerySlurm(
    const std::vector<std::string>& ids) {
  std::set<std::string> arrays;
  for (const auto& id : ids) arrays.insert(id.substr(0, id.find('_')));
  std::map<std::string, SlurmTaskState> out;
  if (arrays.empty()) return out;
  std::string list;
  for (const auto& a : arrays) list += (list.empty() ? "" : ",") + a;
  Ran r = RunClient({"sacct", "--parsable2", "--noheader",
                     "--format=JobID,State,ExitCode,NodeList", "-j", list});
  if (r.exit_code == 0) {
    for (auto& st : ParseSacct(r.out)) out[st.id] = st;
    // A just-submitted job can be missing from accounting for a moment: squeue fills it in.
  }
  // -r: one line per task, pending ones too. Without it a pending array is one line whose task
  // list SLURM cuts at about 30 characters ("12_[0,3,6,...,30" and no more), so the tasks past
  // the cut would be missing.
  const std::string fields = "JobArrayID:|,State:|,Reason:|,NodeList:|,exit_code:|";
  r = RunClient({"squeue", "-r", "--states=all", "--noheader", "-O", fields, "-j", list});
  if (r.exit_code != 0) {
    // One id the controller has forgotten fails the whole call: ask one array at a time.
    bool any = false;
    for (const auto& a : arrays) {
      Ran one = RunClient({"squeue", "-r", "--states=all", "--noheader", "-O", fields, "-j", a});
      if (one.exit_code != 0) {
        if (one.out.find("Invalid job id") == std::string::npos) continue;
        any = true;  // forgotten: not an error
        continue;
      }
      any = true;
      for (auto& st : ParseSqueue(one.out))
        if (!out.count(st.id) || !SlurmStateIsFinal(out[st.id].state)) out[st.id] = st;
    }
    if (!any && out.empty()) return std::nullopt;
    return out;
  }
  for (auto& st : ParseSqueue(r.out)) {
    // sacct's final verdict wins over squeue's; squeue knows pending and running jobs sooner.
    if (!out.count(st.id) || !SlurmStateIsFinal(out[st.id].state)) out[st.id] = st;
  }
  return out;
}

SlurmExecutor::SlurmExecutor(std::string train_binary, ExecutorConfig config,
                             std::string sweep_name, std::string sweep_dir)
    : train_binary_(std::move(train_binary)),
      config_(std::move(config)),
      sweep_name_(std::move(sweep_name)),
      script_dir_(sweep_dir + "/slurm"),
      interval_s_(config_.slurm.poll_seconds) {}

Status SlurmExecutor::Check() const {
  for (const char* tool : {"sbatch", "squeue", "scancel"}) {
    const Ran r = RunClient({tool, "--version"});
    if (r.exit_code != 0) {
      return Status::FailedPrecondition(std::string("executor.kind slurm: cannot run ") + tool +
                                        " (" + Trim(r.out) +
                                        "): install SLURM's client commands on this host");
    }
  }
  if (access(ExecHelperFor(train_binary_).c_str(), X_OK) != 0) {
    return Status::FailedPrecondition(ExecHelperFor(train_binary_) +
                                      " not found: it is built and installed beside isoflop-train");
  }
  const Ran ping = RunClient({"squeue", "--noheader", "--me", "-o", "%i"});
  if (ping.exit_code != 0) {
    return Status::FailedPrecondition("executor.kind slurm: the SLURM controller does not answer (" +
                                      Trim(ping.out) + ")");
  }
  std::error_code ec;
  fs::create_directories(script_dir_ + "/logs", ec);
  if (ec) {
    return Status::FailedPrecondition("executor.run_root: cannot create " + script_dir_ + ": " +
                                      ec.message());
  }
  const std::string probe = script_dir_ + "/.writable-" + std::to_string(getpid());
  if (Status st = WriteFileAtomic(probe, "ok\n"); !st.ok()) {
    return Status::FailedPrecondition("executor.run_root: " + script_dir_ +
                                      " is not writable: " + st.message());
  }
  fs::remove(probe, ec);
  return Status::Ok();
}

std::string SlurmExecutor::Describe() const {
  const auto& s = config_.slurm;
  std::string d = "SLURM";
  if (!s.partition.empty()) d += " partition " + s.partition;
  d += " (" + (s.gpus_per_run > 0 ? std::to_string(s.gpus_per_run) + " GPU(s), " : "") +
       std::to_string(config_.cpus_per_run) + " CPU(s) per run";
  if (config_.max_parallel > 0) d += ", at most " + std::to_string(config_.max_parallel) + " at once";
  return d + ")";
}

int SlurmExecutor::Parallelism() const {
  return config_.max_parallel > 0 ? config_.max_parallel : std::max<int>(1, active_.size());
}

std::string SlurmExecutor::Refusal(const Job& job) const {
  const std::optional<int64_t> mem = SlurmMemoryBytes(config_.slurm.mem);
  if (!mem || config_.slurm.gpus_per_run > 0) return "";
  // --mem is per node, and the ranks of a data-parallel run may all land on one.
  const int ranks = std::max(1, config_.ranks_per_run);
  if (job.memory_bytes * ranks <= *mem) return "";
  char buf[300];
  if (ranks > 1) {
    std::snprintf(buf, sizeof(buf),
                  "out of memory: needs about %.1f GiB for each of its %d ranks, which may share "
                  "a node; executor.mem asks SLURM for %.1f GiB per node (mem: auto asks per "
                  "CPU)",
                  job.memory_bytes / double(1LL << 30), ranks, *mem / double(1LL << 30));
  } else {
    std::snprintf(buf, sizeof(buf),
                  "out of memory: needs about %.1f GiB, executor.mem asks SLURM for %.1f GiB",
                  job.memory_bytes / double(1LL << 30), *mem / double(1LL << 30));
  }
  return buf;
}

std::optional<Placement> SlurmExecutor::Place(const Job&) {
  Placement pl;
  pl.threads = std::max(1, config_.cpus_per_run);
  pl.device = config_.slurm.gpus_per_run > 0 ? "cuda" : "cpu";
  pl.ranks = std::max(1, config_.ranks_per_run);
  return pl;  // the cluster queues; --array=...%max_parallel limits what runs at once
}

Result<LaunchedJob> SlurmExecutor::Launch(const Job& job, const Placement& placement) {
  std::vector<Result<LaunchedJob>> r = LaunchBatch({{job, placement}});
  return r.front();
}

std::vector<Result<LaunchedJob>> SlurmExecutor::LaunchBatch(
    const std::vector<std::pair<Job, Placement>>& jobs) {
  std::vector<Result<LaunchedJob>> out(jobs.size(), Status::Internal("not submitted"));
  // One array per resource shape, split at max_array_size.
  // mem: auto asks each CPU run for its own estimate, so runs of different sizes go to
  // different arrays (the request is rounded to 256 MiB per rank, which keeps them few).
  const bool auto_mem = config_.slurm.mem == ExecutorConfig::Slurm::kAutoMem;
  std::map<std::tuple<std::string, int, int64_t>, std::vector<size_t>> groups;
  for (size_t i = 0; i < jobs.size(); ++i) {
    const Placement& pl = jobs[i].second;
    const int64_t mem = auto_mem && pl.device != "cuda"
                            ? AutoMemoryPerCpuMiB(jobs[i].first.memory_bytes, pl.threads)
                            : 0;
    groups[{pl.device, pl.threads, mem}].push_back(i);
  }
  const size_t chunk = std::max(1, config_.slurm.max_array_size);
  for (const auto& [shape, all] : groups) {
    for (size_t from = 0; from < all.size(); from += chunk) {
      const std::vector<size_t> idx(all.begin() + from,
                                    all.begin() + std::min(all.size(), from + chunk));
      ArraySpec spec;
      spec.name = "isoflop-" + sweep_name_;
      spec.script_dir = script_dir_;
      spec.tag = TimeTag() + "-" + std::to_string(getpid()) + "-" + std::to_string(++submissions_);
      spec.threads = std::get<1>(shape);
      spec.mem_per_cpu_mib = std::get<2>(shape);
      spec.gpu = std::get<0>(shape) == "cuda";
      spec.max_parallel = config_.max_parallel;
      std::string cell_list;
      for (size_t i : idx) {
        spec.run_dirs.push_back(jobs[i].first.run_dir);
        cell_list += jobs[i].first.run_dir + "\n";
      }
      auto fail = [&](const Status& st) {
        for (size_t i : idx) out[i] = st;
      };
      std::error_code ec;
      fs::create_directories(script_dir_ + "/logs", ec);
      const std::string base = script_dir_ + "/array-" + spec.tag;
      Status st = WriteFileAtomic(base + ".cells", cell_list);
      if (st.ok()) st = WriteFileAtomic(base + ".sh", BatchScript(spec, config_, train_binary_));
      if (!st.ok()) {
        fail(st);
        continue;
      }
      const Ran r = RunClient({"sbatch", "--parsable", base + ".sh"}, script_dir_);
      const std::string id = Trim(r.out.substr(0, r.out.find(';')));
      if (r.exit_code != 0 || id.empty() || id.find_first_not_of("0123456789") != std::string::npos) {
        std::string said = Trim(r.out);  // one line in a reason: sbatch may print several
        for (size_t at; (at = said.find('\n')) != std::string::npos;) said.replace(at, 1, "; ");
        std::string asked;
        if (spec.mem_per_cpu_mib > 0) {
          asked = " (it asked --mem-per-cpu=" + std::to_string(spec.mem_per_cpu_mib) + "M for " +
                  std::to_string(spec.threads) +
                  " CPU(s) a rank: mem auto, 1.25x the run's memory estimate)";
        }
        fail(Status::IoError("sbatch " + base + ".sh failed (exit code " +
                             std::to_string(r.exit_code) + "): " + said + asked));
        continue;
      }
      std::ofstream(script_dir_ + "/submissions.log", std::ios::app)
          << id << " array-" << spec.tag << ".sh " << idx.size() << " task(s)\n";
      for (size_t k = 0; k < idx.size(); ++k) {
        const std::string task = id + "_" + std::to_string(k);
        // Queued until a poll says otherwise (an adopted job's state is unknown until then).
        active_.push_back({jobs[idx[k]].first, task, false, "SUBMITTED", ""});
        LaunchedJob l;
        l.id = "slurm:" + task;
        out[idx[k]] = l;
      }
    }
  }
  next_poll_ = std::chrono::steady_clock::now() +
               std::chrono::milliseconds(static_cast<int64_t>(1000 * std::min(1.0, interval_s_)));
  interval_s_ = config_.slurm.poll_seconds;
  return out;
}

bool SlurmExecutor::Adopt(const Job& job, const std::string& id) {
  if (id.rfind("slurm:", 0) != 0 || id.size() <= 6) return false;
  active_.push_back({job, id.substr(6), false, "", ""});
  next_poll_ = std::chrono::steady_clock::now();  // look at once
  return true;
}

std::map<std::string, std::string> SlurmExecutor::LiveJobs() const {
  std::map<std::string, std::string> out;
  const Ran r = RunClient(
      {"squeue", "--noheader", "-r", "--me", "--name", "isoflop-" + sweep_name_, "-o", "%i|%o"});
  if (r.exit_code != 0) return out;
  std::map<std::string, std::vector<std::string>> cells;  // script -> its run folders
  std::stringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    const size_t bar = line.find('|');
    if (bar == std::string::npos) continue;
    const std::string task = Trim(line.substr(0, bar));
    const fs::path script = Trim(line.substr(bar + 1));
    const size_t under = task.find('_');
    if (under == std::string::npos || script.extension() != ".sh" ||
        script.parent_path().lexically_normal() != fs::path(script_dir_).lexically_normal())
      continue;
    auto it = cells.find(script.string());
    if (it == cells.end()) {
      std::vector<std::string> dirs;
      if (std::optional<std::string> text =
              ReadSmallFile(fs::path(script).replace_extension(".cells").string())) {
        std::stringstream ss(*text);
        for (std::string d; std::getline(ss, d);) dirs.push_back(d);
      }
      it = cells.emplace(script.string(), std::move(dirs)).first;
    }
    const std::string index = task.substr(under + 1);
    if (index.empty() || index.find_first_not_of("0123456789") != std::string::npos) continue;
    const size_t k = std::stoul(index);
    if (k < it->second.size()) out[it->second[k]] = "slurm:" + task;
  }
  return out;
}

JobExit SlurmExecutor::Ended(const Active& a, const std::optional<SlurmTaskState>& st) const {
  JobExit e;
  e.job = a.job;
  e.id = "slurm:" + a.task;
  ExitInfo& info = e.info;
  info.stop_requested = a.signalled;
  if (std::optional<std::string> node = ReadSmallFile(a.job.run_dir + "/node.txt")) {
    std::stringstream ss(*node);
    std::string host, gpus;
    std::getline(ss, host);
    std::getline(ss, gpus);
    info.node = Trim(host) + (Trim(gpus).empty() ? "" : " (" + Trim(gpus) + ")");
  }
  if (!st) {
    // The scheduler has forgotten the job (no accounting, MinJobAge passed): the run folder's
    // verdict decides, else it resumes from its checkpoint.
    info.scheduler_state = "unknown to SLURM";
    if (std::optional<int> code = RunFolderVerdict(a.job.run_dir)) {
      info.exit_code = *code;
    } else {
      info.interruption = Interruption::kPreempted;
    }
    return e;
  }
  if (info.node.empty()) info.node = st->node;
  info.scheduler_state = st->state;
  info.exit_code = st->exit_code;
  if (st->signal != 0) {
    info.signal = st->signal;
    info.exit_code = -1;
  }
  const std::string word = st->state.substr(0, st->state.find(' '));
  if (a.signalled) return e;  // the manager stopped it: its exit says how
  if (word == "COMPLETED") {
    info.exit_code = 0;
  } else if (word == "FAILED" && st->exit_code == 128 + SIGUSR2) {
    // Signalled before its time limit: the trainer checkpointed and exited 128+12 (or, still
    // starting, exited without touching anything): resume.
    info.interruption = Interruption::kTimeLimit;
  } else if (word == "TIMEOUT") {
    // Killed at the limit: worth resubmitting only from a checkpoint.
    if (HasCheckpoint(a.job.run_dir)) info.interruption = Interruption::kTimeLimit;
  } else if (word == "PREEMPTED" || word == "NODE_FAIL" || word == "BOOT_FAIL") {
    info.interruption = Interruption::kPreempted;
  }
  return e;
}

std::vector<JobExit> SlurmExecutor::Poll() {
  std::vector<JobExit> out;
  if (active_.empty() || std::chrono::steady_clock::now() < next_poll_) return out;
  std::vector<std::string> ids;
  for (const auto& a : active_) ids.push_back(a.task);
  const std::optional<std::map<std::string, SlurmTaskState>> states = QuerySlurm(ids);
  bool changed = false;
  if (states) {
    for (size_t i = 0; i < active_.size();) {
      Active& a = active_[i];
      auto it = states->find(a.task);
      const bool known_array = std::any_of(states->begin(), states->end(), [&](const auto& kv) {
        return kv.first.substr(0, kv.first.find('_')) == a.task.substr(0, a.task.find('_'));
      });
      std::optional<SlurmTaskState> gone;
      if (it == states->end() && known_array) {
        // SLURM lists every task of an array it knows, pending ones too (squeue -r), until
        // MinJobAge after the task ends, so a missing one left no trace. Last seen waiting, or
        // adopted and never started (no node.txt, which a task writes first), it was cancelled
        // before it started: SLURM drops such a task and, without accounting, records nothing.
        // (Its status.json, if it says the run ended, still wins: Ended reads it.) One that ran
        // was purged before its array (MinJobAge passed): wait until the array is forgotten too,
        // as before; the run folder decides then.
        const bool never_started =
            a.last_state.empty() && !fs::exists(fs::path(a.job.run_dir) / "node.txt");
        if (!Waiting(a.last_state) && !never_started) {
          ++i;
          continue;
        }
        if (!RunFolderVerdict(a.job.run_dir)) {
          gone = SlurmTaskState{a.task, "CANCELLED while pending", -1, 0, "", ""};
        }
      }
      if (it != states->end() && !SlurmStateIsFinal(it->second.state)) {
        if (it->second.state != a.last_state) changed = true;
        a.last_state = it->second.state;
        a.last_reason = it->second.reason;
        ++i;
        continue;
      }
      out.push_back(Ended(a, it != states->end() ? std::optional(it->second) : gone));
      active_.erase(active_.begin() + i);
      changed = true;
    }
  }
  // Back off while nothing changes (a long sweep polls every 4x poll_seconds), at once after.
  const double base = config_.slurm.poll_seconds;
  interval_s_ = changed ? base : std::min(4 * base, interval_s_ * 1.5);
  next_poll_ = std::chrono::steady_clock::now() +
               std::chrono::milliseconds(static_cast<int64_t>(interval_s_ * 1000));
  return out;
}

std::map<std::string, std::string> SlurmExecutor::Queued() const {
  std::map<std::string, std::string> out;
  for (const auto& a : active_) {
    if (!Waiting(a.last_state)) continue;
    const bool has_reason = !a.last_reason.empty() && a.last_reason != "None";
    out[a.job.key] = a.last_state + (has_reason ? " (" + a.last_reason + ")" : "");
  }
  return out;
}

void SlurmExecutor::StopAll(bool hard) {
  std::vector<std::string> ids;
  for (auto& a : active_) {
    ids.push_back(a.task);
    a.signalled = true;
  }
  (void)Scancel(ids, /*signal_only=*/!hard);
  next_poll_ = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  interval_s_ = std::min(interval_s_, 1.0);
}

}  // namespace isoflop::sweep
