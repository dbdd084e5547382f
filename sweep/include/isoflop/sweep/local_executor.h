// The local executor: runs training jobs as child processes (`isoflop-train --run-dir DIR`,
// fork/execv with an argv vector, never a shell) on this machine's GPUs or CPU slots. It
// reserves devices per run through CUDA_VISIBLE_DEVICES, packs small runs onto one GPU by their
// memory estimate and refuses runs that cannot fit; RunJobs (executor.h) drives it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/sweep/config.h"
#include "isoflop/sweep/executor.h"

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
  int threads_per_run = 1;      // train.threads each run (each rank) gets
  int ranks_per_run = 1;        // data-parallel ranks per run: CPU slots or GPUs each run takes
  int max_parallel = 0;         // 0 = no limit beyond devices/slots
  int64_t host_memory_bytes = 0;  // CPU runs are packed within it; 0 = unknown, not checked
};

// Detects GPUs (nvidia-smi, narrowed by $CUDA_VISIBLE_DEVICES and executor.gpus) unless
// executor.device is cpu, else CPU slots from the core count and cpus_per_run (`auto` counts as
// 0, all cores for one run, until a measurement replaces the layout: ChooseCpuLayout).
// InvalidArgument when executor.device is cuda and no GPU is found.
Result<Resources> DetectResources(const ExecutorConfig& executor);

// Starts `train_binary --run-dir RUN_DIR` as a child process with fork/execve and an argv
// vector (never a shell): the leader of its own process group (a terminal's Ctrl-C reaches only
// the parent, which forwards), sent SIGTERM when the parent dies, with stop signals blocked until
// isoflop-train has installed its handlers, stdout and stderr appended to RUN_DIR/train.log, and
// CUDA_VISIBLE_DEVICES set to `cuda_visible_devices` ("" hides every GPU). Returns the pid; the
// caller owns the child and must reap it. IoError when fork fails; when exec fails the child
// writes a line to train.log and exits 127. The sweep scheduler and the throughput probe use it.
Result<pid_t> StartTrainer(const std::string& train_binary, const std::string& run_dir,
                           const std::string& cuda_visible_devices, int ranks = 1);

// This machine's CPU slots or GPUs as an Executor: each job is an `isoflop-train` child
// process (StartTrainer); GPU jobs are packed by their memory estimate onto the device with the
// least free memory that holds them (best fit), CPU jobs into free slots while their estimates
// (one per rank) fit the host's memory together. Not thread-safe.
class LocalExecutor : public Executor {
 public:
  LocalExecutor(std::string train_binary, Resources resources)
      : train_binary_(std::move(train_binary)),
        resources_(std::move(resources)),
        gpu_used_(resources_.devices.size(), 0) {}

  std::string Describe() const override;
  int Parallelism() const override;
  std::string Refusal(const Job& job) const override;
  std::optional<Placement> Place(const Job& job) override;
  Result<LaunchedJob> Launch(const Job& job, const Placement& placement) override;
  std::vector<JobExit> Poll() override;
  // SIGTERM to every child (they checkpoint and exit 128+15), or SIGKILL when hard.
  void StopAll(bool hard) override;
  size_t Running() const override { return active_.size(); }

 private:
  struct Active {
    Job job;
    std::vector<int> gpu_slots;  // indices into resources_.devices
    pid_t pid;
    int ranks = 1;
    bool signalled = false;
  };
  std::string train_binary_;
  Resources resources_;
  std::vector<int64_t> gpu_used_;
  std::vector<Active> active_;
  int cpu_slots_used_ = 0;        // ranks of the running CPU jobs
  int64_t host_memory_used_ = 0;  // their memory estimates, one per rank
};

}  // namespace isoflop::sweep
