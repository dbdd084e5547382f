// The local scheduler: runs training jobs as child processes (`isoflop-train --run-dir DIR`,
// fork/execv with an argv vector, never a shell) on this machine's GPUs or CPU slots. It
// reserves devices per run through CUDA_VISIBLE_DEVICES, packs small runs onto one GPU by their
// memory estimate, refuses runs that cannot fit, starts the longest runs first, and on SIGINT or
// SIGTERM forwards the signal to its children and waits for them to checkpoint and exit.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/sweep/config.h"

namespace isoflop::sweep {

// One accelerator. Plain value.
struct Device {
  int index = 0;  // as nvidia-smi numbers it (what CUDA_VISIBLE_DEVICES takes)
  int64_t memory_bytes = 0;
};

// What runs can use. Plain value.
struct Resources {
  bool gpu = false;
  std::vector<Device> devices;  // gpu only
  int cpu_slots = 1;            // runs at once on CPU
  int threads_per_run = 1;      // train.threads each run gets
  int max_parallel = 0;         // 0 = no limit beyond devices/slots
  int64_t host_memory_bytes = 0;
};

// Detects GPUs (nvidia-smi, narrowed by $CUDA_VISIBLE_DEVICES and executor.gpus) unless
// executor.device is cpu, else CPU slots from the core count and cpus_per_run (`auto` counts as
// 0, all cores for one run, until a measurement replaces the layout: ChooseCpuLayout).
// InvalidArgument when executor.device is cuda and no GPU is found.
Result<Resources> DetectResources(const ExecutorConfig& executor);

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
};

struct ExitInfo {
  int exit_code = -1;           // when the process exited normally, else -1
  int signal = 0;               // when killed by a signal, else 0
  bool stop_requested = false;  // the manager was asked to stop and signalled this child
  std::string refused;          // non-empty: never launched, this says why (e.g. cannot fit)
};

// Starts `train_binary --run-dir RUN_DIR` as a child process with fork/execve and an argv
// vector (never a shell): the leader of its own process group (a terminal's Ctrl-C reaches only
// the parent, which forwards), sent SIGTERM when the parent dies, with stop signals blocked until
// isoflop-train has installed its handlers, stdout and stderr appended to RUN_DIR/train.log, and
// CUDA_VISIBLE_DEVICES set to `cuda_visible_devices` ("" hides every GPU). Returns the pid; the
// caller owns the child and must reap it. IoError when fork fails; when exec fails the child
// writes a line to train.log and exits 127. The sweep scheduler and the throughput probe use it.
Result<pid_t> StartTrainer(const std::string& train_binary, const std::string& run_dir,
                           const std::string& cuda_visible_devices);

// Not thread-safe; one Run() at a time per process (it owns SIGINT/SIGTERM while running).
class LocalExecutor {
 public:
  struct Callbacks {
    // Before each launch (write run.json for this placement). A non-ok Status skips the job
    // and reports it through on_exit with `refused` set to the message.
    std::function<Status(const Job&, const Placement&)> before_launch;
    std::function<void(const Job&, const Placement&, pid_t)> on_start;
    // After a child ended. Return true to launch the job again (a retry); ignored when
    // stopping.
    std::function<bool(const Job&, const ExitInfo&)> on_exit;
    // About every poll interval while anything runs (ingestion, the progress display).
    std::function<void()> on_tick;
  };

  LocalExecutor(std::string train_binary, Resources resources)
      : train_binary_(std::move(train_binary)), resources_(std::move(resources)) {}

  // Runs `jobs` to completion, or until SIGINT/SIGTERM: then forwards SIGTERM to every child,
  // waits for all of them (they checkpoint and exit), and returns with *interrupted = true.
  // A second signal forwards again; a third sends SIGKILL. Returns IoError when fork fails.
  Status Run(std::vector<Job> jobs, const Callbacks& callbacks, bool* interrupted);

  // Asks a running Run() to stop as a SIGTERM would (every child is told to checkpoint and
  // exit). Async-signal-safe; callable from the callbacks (e.g. on a cancel request).
  static void RequestStop();

  // Seconds between polls of children (and on_tick calls).
  void set_poll_interval(double seconds) { poll_s_ = seconds; }

 private:
  std::string train_binary_;
  Resources resources_;
  double poll_s_ = 0.25;
};

}  // namespace isoflop::sweep
