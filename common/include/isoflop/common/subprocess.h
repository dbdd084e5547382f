// Child processes, the one way isoflop starts them (trainers, the throughput probe, nvidia-smi,
// Python for the plots): an argv vector and fork/execve, never a shell; the child dies with its
// parent unless told otherwise; stop signals can stay blocked across exec until the child has
// its handlers; output goes to a file or is captured.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "isoflop/common/status.h"

namespace isoflop {

struct SpawnOptions {
  // The child's whole environment, "K=V" each; nullopt: this process's environment.
  std::optional<std::vector<std::string>> env;
  std::string cwd;           // "" = this process's current directory
  bool search_path = false;  // argv[0] is looked up on PATH (else it must be a path)
  // stdout and stderr go to this file (created 0644); "" = inherited from this process.
  std::string output_path;
  bool append_output = true;       // append to output_path (false: truncate it first)
  bool stdin_from_null = true;     // stdin is /dev/null (a child never reads the terminal)
  bool own_process_group = false;  // leader of its own group: a terminal's Ctrl-C reaches only
                                   // this process, which decides what to forward
  bool die_with_parent = true;     // SIGTERM when this process dies, SIGKILL included
  // Signals that stay blocked across exec: a stop that arrives while the child starts is held
  // until it has installed its handlers (isoflop-train unblocks them then).
  std::vector<int> blocked_signals;
  // Written to the child's stderr when exec fails (the child then exits 127).
  std::string exec_failure_message = "cannot execute the program";
};

// Starts argv as a child process. Returns its pid; the caller owns the child and must reap it
// (WaitChild, or waitpid). IoError when the output file cannot be opened or fork fails; a failed
// exec is the child's exit code 127.
Result<pid_t> Spawn(const std::vector<std::string>& argv, const SpawnOptions& options = {});

// Waits for `pid` (retrying on EINTR) and returns its exit code, or 128 + signal when a signal
// killed it.
int WaitChild(pid_t pid);

struct ChildResult {
  int exit_code = -1;  // as WaitChild
  std::string output;  // what it wrote, when captured
};

// Runs argv to completion. Unless options.output_path is set, its stdout is captured, and its
// stderr too when `capture_stderr` (else stderr is discarded). Errors as Spawn.
Result<ChildResult> RunChild(const std::vector<std::string>& argv, SpawnOptions options = {},
                             bool capture_stderr = true);

}  // namespace isoflop
