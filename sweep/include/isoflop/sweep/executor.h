// The executor seam: where a sweep's runs execute (this machine's CPUs and GPUs, or a SLURM
// cluster) behind one interface, and the one scheduling loop (RunJobs) that drives any of them:
// longest jobs first, refusals, max_parallel, retries, and stop requests forwarded to the jobs.
// The sweep state machine (manager.h) talks only to this interface, so a second executor is a
// second implementation, not a second state machine.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "isoflop/common/status.h"

namespace isoflop::sweep {

// One run to launch. Plain value.
struct Job {
  std::string key;           // the cell key (for callbacks)
  std::string run_dir;       // absolute; created by the caller
  int64_t memory_bytes = 0;  // estimated peak memory
  double cost = 0;           // estimated seconds; larger runs start first
};

// Where a job was placed.
struct Placement {
  std::string devices;  // "0" or "0,1" on GPU; "" on CPU
  int threads = 1;
  std::string device = "cpu";  // run.json train.device: "cuda" or "cpu"
  int ranks = 1;               // data-parallel processes (threads each, one GPU each on GPU)
};

// A job that was started: an id the executor understands, and where it runs.
struct LaunchedJob {
  std::string id;    // "local:<pid>" for a child process; a SLURM job id for SLURM
  int64_t pid = 0;   // the worker's pid when it runs on this host, else 0
  std::string host;  // where it runs ("" when not known yet)
};

// Why a scheduler ended a job that had not finished, when it is worth resuming.
enum class Interruption {
  kNone,
  kPreempted,  // preempted, node failure, requeued and lost: resume from the checkpoint
  kTimeLimit,  // stopped at (or signalled before) its time limit: resume from the checkpoint
};

struct ExitInfo {
  int exit_code = -1;           // when the process exited normally, else -1
  int signal = 0;               // when killed by a signal, else 0
  bool stop_requested = false;  // the job was told to stop (a stop request reached it)
  std::string refused;          // non-empty: never launched, this says why (e.g. cannot fit)
  // A scheduler's verdict (SLURM: "CANCELLED by 0", "OUT_OF_MEMORY"), "" for local jobs.
  std::string scheduler_state;
  Interruption interruption = Interruption::kNone;
  std::string node;  // where it ran, when the scheduler says (SLURM: the node name)
};

// A job that ended. Plain value.
struct JobExit {
  Job job;
  std::string id;
  ExitInfo info;
};

// Where runs execute. Implementations say whether they are thread-safe; RunJobs calls them from
// one thread.
class Executor {
 public:
  virtual ~Executor() = default;
  // For people: "2 CPU slot(s) x 1 thread(s)", "4 GPU(s)".
  virtual std::string Describe() const = 0;
  // How many jobs run at once at most, for ETAs.
  virtual int Parallelism() const = 0;
  // Why `job` can never run here (e.g. "out of memory: needs about 90 GiB, the largest GPU has
  // 80 GiB"), or "" when it can.
  virtual std::string Refusal(const Job& job) const = 0;
  // A placement for `job` now, or nullopt when it must wait for capacity. Reserves nothing.
  virtual std::optional<Placement> Place(const Job& job) = 0;
  // Starts `job` at `placement` (from Place, just before). IoError when it cannot start.
  virtual Result<LaunchedJob> Launch(const Job& job, const Placement& placement) = 0;
  // The jobs that ended since the last call. Never blocks for long.
  virtual std::vector<JobExit> Poll() = 0;
  // Tells every running job to checkpoint and stop (hard: to die at once).
  virtual void StopAll(bool hard) = 0;
  // Jobs launched and not yet returned by Poll.
  virtual size_t Running() const = 0;
  // Those of them still waiting in a scheduler's queue, as of the last Poll: cell key -> the
  // scheduler's state and reason ("PENDING (Resources)"). A local executor queues nothing.
  virtual std::map<std::string, std::string> Queued() const { return {}; }

  // Executors that submit many jobs at once (SLURM job arrays) return true: RunJobs then places
  // every job it can and hands them to LaunchBatch together instead of calling Launch. The
  // results are in the order of `jobs`.
  virtual bool LaunchesInBatches() const { return false; }
  virtual std::vector<Result<LaunchedJob>> LaunchBatch(
      const std::vector<std::pair<Job, Placement>>& jobs);
  // Takes over a job that an earlier manager launched (`id` as Launch returned it): true when
  // this executor can follow it (Poll reports its end), false when it cannot (a local child of
  // a dead process: the caller recovers the cell itself).
  virtual bool Adopt(const Job& job, const std::string& id) { return false; }
  // The scheduler's live (pending or running) jobs of this sweep, by run folder -> the id
  // Launch would have returned: what a manager killed after submitting and before recording
  // the ids left in the queue, for the next one to adopt instead of submitting again. A local
  // executor's children die with their manager: none.
  virtual std::map<std::string, std::string> LiveJobs() const { return {}; }
};

// What RunJobs tells its caller, and asks of it.
struct JobCallbacks {
  // Before each launch (write run.json for this placement). A non-ok Status skips the job and
  // reports it through on_exit with `refused` set to the message.
  std::function<Status(const Job&, const Placement&)> before_launch;
  std::function<void(const Job&, const Placement&, const LaunchedJob&)> on_start;
  // After a job ended. Return true to launch it again (a retry); ignored when stopping.
  std::function<bool(const Job&, const ExitInfo&)> on_exit;
  // About every poll interval while anything runs (ingestion, the display, heartbeats).
  std::function<void()> on_tick;
};

// Runs `jobs` on `executor` to completion, longest first (a smaller job may start while a
// larger one waits for capacity), at most `max_parallel` at once (0: no limit beyond the
// executor's). On SIGINT/SIGTERM, or RequestStop(), launches nothing more, asks every job to
// stop at a checkpoint, waits for all of them and returns with *interrupted = true; a second
// request asks again, a third kills. It owns SIGINT and SIGTERM while it runs: one RunJobs at a
// time per process. Errors: a failed launch (IoError) stops further launches; the running jobs
// are still waited for, then the error is returned.
// `detach`: return once every job is launched (and the exits already known are handled),
// leaving the rest running; for executors whose jobs outlive this process (SLURM).
Status RunJobs(Executor& executor, std::vector<Job> jobs, const JobCallbacks& callbacks,
               int max_parallel, double poll_seconds, bool* interrupted, bool detach = false);

// Asks a running RunJobs to stop as a SIGTERM would. Async-signal-safe; callable from the
// callbacks (e.g. on a cancel request).
void RequestStop();

}  // namespace isoflop::sweep
