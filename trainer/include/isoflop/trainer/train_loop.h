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

// Runs or resumes (from the newest complete checkpoint in run_dir/ckpt) the run described by
// `config` in run_dir, which must exist. Never throws: LibTorch errors become a "failed"
// outcome. Writes status.json before returning (unless writing itself fails). Not re-entrant.
RunOutcome RunTraining(const std::string& run_dir, const RunConfig& config,
                       const TrainOptions& options);

}  // namespace isoflop::trainer
