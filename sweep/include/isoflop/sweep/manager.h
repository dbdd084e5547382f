// The sweep manager: records a planned sweep in the store, runs every unfinished cell through
// an Executor (executor.h: this machine's CPUs and GPUs, or a cluster), ingests results as they
// arrive, and classifies failures. Re-running is safe: finished cells are skipped, interrupted ones
// resume from their checkpoints (the trainer resumes by itself), failed ones are retried up to
// executor.max_retries.
#pragma once

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/store/store.h"
#include "isoflop/sweep/config.h"
#include "isoflop/sweep/executor.h"
#include "isoflop/sweep/local_executor.h"
#include "isoflop/sweep/planner.h"

namespace isoflop::sweep {

struct ManagerOptions {
  std::string train_binary;      // absolute path of isoflop-train
  std::ostream* out = nullptr;   // progress and event lines (required)
  bool live = false;             // redraw a live display (out is a terminal)
  double poll_seconds = 0.25;    // child polling and ingestion cadence
  double heartbeat_seconds = 2;  // lease renewal (and cancel-request check) cadence
  // Seconds a dead manager's still-running worker gets to checkpoint and exit after SIGTERM
  // before it is killed (a GPU checkpoint of a large model can take a while).
  double orphan_grace_s = 60;
  // Return once every cell is launched, leaving them running (an executor whose jobs outlive
  // this process: SLURM). A later RunSweep adopts them (`isoflop sweep sync`).
  bool detach = false;
};

// What a RunSweep call did. Plain value.
struct SweepOutcome {
  int cells = 0;
  int already_finished = 0;                                 // skipped
  int launched = 0;                                         // launches, retries included
  int finished = 0, failed = 0, diverged = 0, pending = 0;  // states at the end
  int running = 0;                    // of `pending`: still running (a detached session)
  bool interrupted = false;           // SIGINT/SIGTERM: runs were stopped at a checkpoint
  bool cancelled = false;             // `isoflop sweep cancel` asked this manager to stop
  bool file_changed = false;          // the stored sweep had another file hash
  PlanDiff diff;                      // cell keys kept/added/removed relative to the stored sweep
  std::vector<std::string> problems;  // "key shape C: class: reason" per failed/diverged cell
};

// Runs the plan. The store must be open for writing. Holds the sweep's lease in the store for
// the whole call (sweep/lease.h; FailedPrecondition when a live manager, from any directory,
// holds it). Run folders of an existing sweep stay where its runs are (absolute paths in the
// store); a cell whose manager died is launched again only once the worker it recorded has
// stopped. Errors: store and I/O errors; individual run failures are outcomes, not errors.
Result<SweepOutcome> RunSweep(store::Store& db, const SweepConfig& config, const Plan& plan,
                              Executor& executor, const ManagerOptions& options);
// The same on this machine: a LocalExecutor over `resources` running options.train_binary.
Result<SweepOutcome> RunSweep(store::Store& db, const SweepConfig& config, const Plan& plan,
                              const Resources& resources, const ManagerOptions& options);

// Failure class of a run from its exit (see docs/run-protocol.md): "finished", "diverged"
// (exit 3), "bad config" (exit 2), "busy" (exit 4: another live worker owns the run folder),
// "out of memory" (exit 5, or the reason says so), "preempted" (stopped by the manager),
// "interrupted" (exit 143, stopped at a checkpoint by a signal the manager did not send;
// retried like a crash, resuming), "failed" (exit 1 with a reason), "crashed" (any other code
// or signal). Exposed for tests.
std::string ClassifyExit(int exit_code, int signal, const std::string& reason, bool stop_requested);

// Marks cells of `sweep_name` for another attempt: their status becomes planned and attempts 0.
// `failed_only`: only failed cells; else failed, diverged and cancelled. Returns how many.
Result<int> ResetCells(store::Store& db, const std::string& sweep_name, bool failed_only);

struct CancelOutcome {
  int manager_pid = 0;                  // the live manager asked to stop; 0: none was running
  std::vector<std::string> scancelled;  // SLURM tasks cancelled here ("123_4"), in order
  std::string ended;  // "finished" or "failed": the sweep had ended, nothing was changed
};

// Cancels a sweep: when a live manager holds its lease, sets the lease's cancel flag (the
// manager sees it at its next heartbeat, stops its runs at a checkpoint and marks the rest
// cancelled), from any host, and the sweep's status to cancelled; otherwise marks the sweep and
// its unfinished cells cancelled, commits, then scancels its running cells' SLURM tasks and
// every task in `live_jobs` (run folder -> "slurm:ID", Executor::LiveJobs: tasks the queue holds
// for the sweep, including an array a killed manager never recorded). Either way the cancel is
// in the store before anything else happens, so it stands if this or the manager dies next
// (`sweep sync` submits nothing for a cancelled sweep). A sweep that had ended (finished or
// failed, no cell left to stop, no task queued) is left as it was (`ended` says which).
// NotFound for an unknown sweep.
Result<CancelOutcome> CancelSweep(store::Store& db, const std::string& sweep_name,
                                  const std::map<std::string, std::string>& live_jobs = {});

}  // namespace isoflop::sweep
