// One training run, start to finish, over a run directory (docs/run-protocol.md): info.json,
// metrics.jsonl, checkpoints, status.json and the exit-code contract. This header is torch-free
// so that callers (isoflop-train's main) compile without LibTorch.
#pragma once

#include <string>

#include "isoflop/trainer/run_config.h"
#include "isoflop/trainer/run_protocol.h"

namespace isoflop::trainer {

struct TrainOptions {
  bool progress = true;  // print a progress line to stderr at every log interval
};

// How a run ended; exactly what status.json says.
struct RunOutcome {
  std::string state;  // finished | diverged | failed | preempted
  std::string reason;
  int exit_code = kExitFinished;
};

// Installs handlers for SIGTERM, SIGINT and SIGUSR2 that only record the signal; RunTraining
// checkpoints at the next step boundary and returns exit code 128 + signal.
void InstallStopSignalHandlers();

// The stop signal received so far (0 when none). isoflop-train checks it before it touches any
// file: a worker told to stop while it was still starting (an orphan of a killed manager)
// leaves the run directory to whoever owns it now.
int PendingStopSignal();

// Runs or resumes (from the newest complete checkpoint in run_dir/ckpt) the run described by
// `config` in run_dir, which must exist. Never throws: LibTorch errors become a "failed"
// outcome. Writes status.json before returning (unless writing itself fails). Not re-entrant.
RunOutcome RunTraining(const std::string& run_dir, const RunConfig& config,
                       const TrainOptions& options);

}  // namespace isoflop::trainer
