// The SLURM executor: a sweep's runs as SLURM job arrays on a cluster (executor.kind: slurm).
// Cells with the same resource shape go into one array (`--array=0-K%max_parallel`, split at
// max_array_size); task i reads the i-th run folder from a cell list written before submission
// and runs `isoflop-train --run-dir DIR` under srun. Jobs always get --requeue,
// --open-mode=append and --signal=USR2@signal_grace (the trainer checkpoints at its next step
// boundary and exits 128+12). Polling: sacct, or squeue --states=all where accounting is off;
// a job the scheduler forgot is judged by the run folder's status.json. Only the manager's host
// writes SQLite; the nodes write run folders (docs/run-protocol.md), which the manager ingests.
// The generated scripts stay in the sweep's folder (SWEEP_DIR/slurm/), readable and
// resubmittable by hand; every value in them is shell-quoted.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/sweep/config.h"
#include "isoflop/sweep/executor.h"

namespace isoflop::sweep {

// `s` as one shell word: unchanged when it is made of safe characters, else in single quotes
// (a ' becomes '\''). Nothing in the result expands.
std::string ShellQuote(const std::string& s);

// isoflop-exec beside `train_binary`: starts it with stop signals blocked.
std::string ExecHelperFor(const std::string& train_binary);

// `s` as one argument of an #SBATCH line (sbatch's own parser: double quotes, \" and \\).
std::string SbatchQuote(const std::string& s);

// What the scheduler says about one array task. Plain value.
struct SlurmTaskState {
  std::string id;     // "123_4" (an array task) or "123"
  std::string state;  // COMPLETED, FAILED, "CANCELLED by 0", PENDING, RUNNING, ...
  int exit_code = -1;  // when known
  int signal = 0;
  std::string node;
  std::string reason;
};

// Parses `sacct --parsable2 --noheader --format=JobID,State,ExitCode,NodeList` output: step
// lines (123_4.batch, 123_4.0) are skipped, pending ranges "123_[5-9%2]" and "123_[1,3-4]" are
// expanded to one entry per task.
std::vector<SlurmTaskState> ParseSacct(const std::string& text);
// Parses `squeue --noheader -O JobArrayID:|,State:|,Reason:|,NodeList:|,exit_code:|` output
// (exit_code is a wait status), with the same range expansion.
std::vector<SlurmTaskState> ParseSqueue(const std::string& text);
// "123_[1,3-5%2]" -> {"123_1", "123_3", "123_4", "123_5"}; other ids unchanged.
std::vector<std::string> ExpandArrayId(const std::string& id);

// Whether a SLURM job state is final (COMPLETED, FAILED, CANCELLED..., TIMEOUT, ...).
bool SlurmStateIsFinal(const std::string& state);

// One job array to submit: its cells' run folders and their shared resource request.
struct ArraySpec {
  std::string name;        // "isoflop-<sweep>"
  std::string script_dir;  // absolute: SWEEP_DIR/slurm (scripts, cell lists, logs/)
  std::string tag;         // unique per submission: the files are array-<tag>.sh/.cells
  std::vector<std::string> run_dirs;  // absolute, one per task, in task order
  int threads = 1;                    // --cpus-per-task
  int64_t mem_per_cpu_mib = 0;        // mem: auto: --mem-per-cpu in MiB (0: --mem or none)
  bool gpu = false;
  int max_parallel = 0;  // %N on --array; 0: none
};

// The batch script text for `spec` under `executor`, running `train_binary` (the cell list's
// path is SCRIPT_DIR/array-TAG.cells).
std::string BatchScript(const ArraySpec& spec, const ExecutorConfig& executor,
                        const std::string& train_binary);

// Bytes of a SLURM memory size ("16G", "500M", "2T", "4096" = MiB), or nullopt.
std::optional<int64_t> SlurmMemoryBytes(const std::string& mem);

// `mem: auto`: the --mem-per-cpu, in MiB, for a CPU run whose every rank needs
// `estimate_bytes` and runs `threads` threads: the estimate plus a quarter (it is 0.96-1.13x
// the measured peak), rounded up to 256 MiB per rank, then spread over its CPUs. Per CPU, not
// per node: the ranks of a data-parallel run may share a node or not.
int64_t AutoMemoryPerCpuMiB(int64_t estimate_bytes, int threads);

// Runs `scancel` on `ids` ("123_4" or "123"); `signal_only`: --signal=USR2 (checkpoint and
// stop) to running jobs, and pending ones are cancelled. IoError when scancel cannot run.
Status Scancel(const std::vector<std::string>& ids, bool signal_only);

// The scheduler's current view of `ids` (nullopt: the query itself failed), by id.
std::optional<std::map<std::string, SlurmTaskState>> QuerySlurm(const std::vector<std::string>& ids);

class SlurmExecutor : public Executor {
 public:
  // `sweep_dir`: the sweep's folder on the shared filesystem (its run folders' parent).
  SlurmExecutor(std::string train_binary, ExecutorConfig config, std::string sweep_name,
                std::string sweep_dir);

  // sbatch and squeue run and the controller answers; the sweep folder is writable (the nodes
  // write their runs under it). FailedPrecondition naming what is missing.
  Status Check() const;

  std::string Describe() const override;
  int Parallelism() const override;
  std::string Refusal(const Job& job) const override;
  std::optional<Placement> Place(const Job& job) override;
  Result<LaunchedJob> Launch(const Job& job, const Placement& placement) override;
  bool LaunchesInBatches() const override { return true; }
  std::vector<Result<LaunchedJob>> LaunchBatch(
      const std::vector<std::pair<Job, Placement>>& jobs) override;
  bool Adopt(const Job& job, const std::string& id) override;
  // This user's queued and running tasks named isoflop-SWEEP whose batch script is one of this
  // sweep's (script folder/array-TAG.sh): task k runs line k of array-TAG.cells.
  std::map<std::string, std::string> LiveJobs() const override;
  std::vector<JobExit> Poll() override;
  // Soft: USR2 to running jobs (they checkpoint and exit), pending ones cancelled. Hard:
  // scancel.
  void StopAll(bool hard) override;
  size_t Running() const override { return active_.size(); }
  std::map<std::string, std::string> Queued() const override;

 private:
  struct Active {
    Job job;
    std::string task;  // "123_4"
    bool signalled = false;
    // As the last poll saw them; before it "SUBMITTED" (launched here) or "" (adopted).
    std::string last_state, last_reason;
  };
  JobExit Ended(const Active& a, const std::optional<SlurmTaskState>& st) const;

  std::string train_binary_;
  ExecutorConfig config_;
  std::string sweep_name_;
  std::string script_dir_;
  std::vector<Active> active_;
  int submissions_ = 0;
  bool accounting_ = true;  // sacct works; false after it says accounting is disabled
  std::chrono::steady_clock::time_point next_poll_{};
  double interval_s_ = 0;
};

}  // namespace isoflop::sweep
