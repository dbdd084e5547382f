// One training run, start to finish, over a run directory (docs/run-protocol.md): info.json,
// metrics.jsonl, checkpoints, status.json and the exit-code contract. This header is torch-free
// so that callers (isoflop-train's main) compile without LibTorch.
#pragma once

#include <string>

#include "isoflop/trainer/run_config.h"

namespace isoflop::trainer {

// Exit codes of isoflop-train (docs/run-protocol.md).
inline constexpr int kExitFinished = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitBadConfig = 2;
inline constexpr int kExitDiverged = 3;
// Another live worker holds the run directory's lock: this one touched nothing and left.
inline constexpr int kExitBusy = 4;
// The device or host ran out of memory (status.json says which allocation).
inline constexpr int kExitOutOfMemory = 5;

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
