// The local executor: device detection, placement, isoflop-train children (common/subprocess),
// stop signals and reaping.
#include "isoflop/sweep/local_executor.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <sstream>
#include <thread>

#include "isoflop/common/process.h"
#include "isoflop/common/subprocess.h"

extern char** environ;

namespace isoflop::sweep {
namespace {

// Runs argv (PATH search, no shell) and returns its stdout; empty when it cannot run or fails.
std::string CaptureOutput(const std::vector<std::string>& argv) {
  SpawnOptions o;
  o.search_path = true;
  Result<ChildResult> r = RunChild(argv, o, /*capture_stderr=*/false);
  return r.ok() && r->exit_code == 0 ? r->output : "";
}

std::vector<Device> QueryGpus() {
  std::vector<Device> out;
  std::stringstream ss(CaptureOutput(
      {"nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"}));
  for (std::string line; std::getline(ss, line);) {
    Device d;
    double mib = 0;
    if (std::sscanf(line.c_str(), "%d , %lf", &d.index, &mib) == 2) {
      d.memory_bytes = static_cast<int64_t>(mib * 1024 * 1024);
      out.push_back(d);
    }
  }
  return out;
}

}  // namespace

Result<Resources> DetectResources(const ExecutorConfig& e) {
  Resources r;
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  r.host_memory_bytes = static_cast<int64_t>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGE_SIZE);
  r.max_parallel = e.max_parallel;
  r.ranks_per_run = std::max(1, e.ranks_per_run);
  if (e.device != "cpu") {
    std::vector<Device> gpus = QueryGpus();
    // $CUDA_VISIBLE_DEVICES narrows what this manager may hand out (numeric lists only).
    if (const char* cvd = std::getenv("CUDA_VISIBLE_DEVICES"); cvd != nullptr) {
      std::vector<Device> visible;
      std::stringstream ss(cvd);
      for (std::string tok; std::getline(ss, tok, ',');) {
        char* end = nullptr;
        long idx = std::strtol(tok.c_str(), &end, 10);
        if (tok.empty() || *end != '\0' || idx < 0) continue;
        for (const auto& g : gpus)
          if (g.index == idx) visible.push_back(g);
      }
      gpus = visible;
    }
    if (!e.gpus.empty()) {
      std::vector<Device> chosen;
      for (int idx : e.gpus) {
        auto it =
            std::find_if(gpus.begin(), gpus.end(), [&](const Device& d) { return d.index == idx; });
        if (it == gpus.end()) {
          return Status::InvalidArgument("executor.gpus: GPU " + std::to_string(idx) +
                                         " is not visible (found: " + std::to_string(gpus.size()) +
                                         " GPU(s))");
        }
        chosen.push_back(*it);
      }
      gpus = chosen;
    }
    if (e.device_memory_gib > 0) {
      for (auto& g : gpus) g.memory_bytes = static_cast<int64_t>(e.device_memory_gib * (1LL << 30));
    }
    if (!gpus.empty()) {
      r.gpu = true;
      r.devices = gpus;
      r.threads_per_run =
          e.cpus_per_run > 0 ? e.cpus_per_run : std::max(1, cores / static_cast<int>(gpus.size()));
      return r;
    }
    if (e.device == "cuda") {
      return Status::InvalidArgument(
          "executor.device is cuda but no GPU was found (nvidia-smi lists none, or "
          "CUDA_VISIBLE_DEVICES hides them)");
    }
  }
  r.threads_per_run = e.cpus_per_run > 0 ? std::min(e.cpus_per_run, cores)
                                         : std::max(1, cores / r.ranks_per_run);
  r.cpu_slots = std::max(1, cores / r.threads_per_run);
  if (e.device_memory_gib > 0)
    r.host_memory_bytes = static_cast<int64_t>(e.device_memory_gib * (1LL << 30));
  return r;
}

Result<pid_t> StartTrainer(const std::string& train_binary, const std::string& run_dir,
                           const std::string& cuda_visible_devices, int ranks) {
  SpawnOptions o;
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    if (std::strncmp(*e, "CUDA_VISIBLE_DEVICES=", 21) != 0) env.push_back(*e);
  }
  // On CPU an empty list hides every GPU, so a CPU slot never touches a device by accident.
  env.push_back("CUDA_VISIBLE_DEVICES=" + cuda_visible_devices);
  o.env = std::move(env);
  o.output_path = run_dir + "/train.log";
  o.own_process_group = true;  // the terminal's Ctrl-C reaches the manager only; it forwards
  o.die_with_parent = true;    // a SIGKILLed manager's children checkpoint and end
  // Stop signals stay blocked across exec until isoflop-train has installed its handlers (it
  // unblocks them then): a signal during LibTorch's start-up is held, not fatal, and the
  // trainer sees it before it touches any file.
  o.blocked_signals = {SIGTERM, SIGINT, SIGUSR2};
  o.exec_failure_message = "isoflop sweep: cannot execute isoflop-train";
  std::vector<std::string> argv = {train_binary, "--run-dir", run_dir};
  if (ranks > 1) {
    argv.push_back("--nproc");
    argv.push_back(std::to_string(ranks));
  }
  return Spawn(argv, o);
}

std::string LocalExecutor::Describe() const {
  const std::string ranks = resources_.ranks_per_run > 1
                                ? ", " + std::to_string(resources_.ranks_per_run) + " ranks per run"
                                : "";
  return (resources_.gpu ? std::to_string(resources_.devices.size()) + " GPU(s)"
                         : std::to_string(resources_.cpu_slots) + " CPU slot(s) x " +
                               std::to_string(resources_.threads_per_run) + " thread(s)") +
         ranks;
}

int LocalExecutor::Parallelism() const {
  int n = (resources_.gpu ? std::max<int>(1, resources_.devices.size()) : resources_.cpu_slots) /
          resources_.ranks_per_run;
  if (resources_.max_parallel > 0) n = std::min(n, resources_.max_parallel);
  return std::max(1, n);
}

std::string LocalExecutor::Refusal(const Job& j) const {
  char buf[200];
  const int ranks = resources_.ranks_per_run;
  const int have = resources_.gpu ? static_cast<int>(resources_.devices.size()) : resources_.cpu_slots;
  if (ranks > have) {
    std::snprintf(buf, sizeof(buf), "needs %d %s for its %d ranks, this host has %d", ranks,
                  resources_.gpu ? "GPUs" : "CPU slots", ranks, have);
    return buf;
  }
  if (resources_.gpu) {
    int64_t largest = 0;
    for (const auto& d : resources_.devices) largest = std::max(largest, d.memory_bytes);
    if (largest > 0 && j.memory_bytes > largest) {
      std::snprintf(buf, sizeof(buf),
                    "out of memory: needs about %.1f GiB, the largest GPU has %.1f GiB (lower "
                    "train.micro_batch or enable executor.activation_checkpointing)",
                    j.memory_bytes / double(1LL << 30), largest / double(1LL << 30));
      return buf;
    }
  } else if (resources_.host_memory_bytes > 0 &&
             j.memory_bytes * ranks > resources_.host_memory_bytes) {
    std::snprintf(buf, sizeof(buf), "out of memory: needs about %.1f GiB%s, this host has %.1f GiB",
                  j.memory_bytes * ranks / double(1LL << 30),
                  ranks > 1 ? (" (" + std::to_string(ranks) + " ranks)").c_str() : "",
                  resources_.host_memory_bytes / double(1LL << 30));
    return buf;
  }
  return "";
}

std::optional<Placement> LocalExecutor::Place(const Job& job) {
  if (resources_.max_parallel > 0 && static_cast<int>(active_.size()) >= resources_.max_parallel)
    return std::nullopt;
  Placement pl;
  pl.threads = resources_.threads_per_run;
  pl.ranks = resources_.ranks_per_run;
  if (!resources_.gpu) {
    if (cpu_slots_used_ + pl.ranks > resources_.cpu_slots) return std::nullopt;
    // Runs side by side share the host's memory: each rank is a process of the run's estimate
    // (Refusal has turned away a run that cannot fit even alone).
    if (resources_.host_memory_bytes > 0 &&
        host_memory_used_ + job.memory_bytes * pl.ranks > resources_.host_memory_bytes)
      return std::nullopt;
    pl.device = "cpu";
    return pl;
  }
  // Best fit, one device per rank: the devices with the least free memory that still hold the
  // job (a data-parallel rank holds a whole replica: the estimate is per GPU).
  std::vector<std::pair<int64_t, int>> fitting;  // (free, index into devices)
  for (size_t d = 0; d < resources_.devices.size(); ++d) {
    const int64_t free = resources_.devices[d].memory_bytes - gpu_used_[d];
    if (free >= job.memory_bytes) fitting.emplace_back(free, static_cast<int>(d));
  }
  if (static_cast<int>(fitting.size()) < pl.ranks) return std::nullopt;
  std::sort(fitting.begin(), fitting.end());
  for (int k = 0; k < pl.ranks; ++k) {
    pl.devices += (k ? "," : "") + std::to_string(resources_.devices[fitting[k].second].index);
  }
  pl.device = "cuda";
  return pl;
}

Result<LaunchedJob> LocalExecutor::Launch(const Job& job, const Placement& pl) {
  std::vector<int> slots;
  if (resources_.gpu) {
    std::stringstream ss(pl.devices);
    for (std::string idx; std::getline(ss, idx, ',');) {
      for (size_t d = 0; d < resources_.devices.size(); ++d)
        if (std::to_string(resources_.devices[d].index) == idx) slots.push_back(int(d));
    }
  }
  ISOFLOP_ASSIGN_OR_RETURN(pid_t pid,
                           StartTrainer(train_binary_, job.run_dir, pl.devices, pl.ranks));
  for (int s : slots) gpu_used_[s] += job.memory_bytes;
  if (!resources_.gpu) {
    cpu_slots_used_ += pl.ranks;
    host_memory_used_ += job.memory_bytes * pl.ranks;
  }
  active_.push_back({job, std::move(slots), pid, pl.ranks});
  LaunchedJob launched;
  launched.id = "local:" + std::to_string(pid);
  launched.pid = pid;
  launched.host = HostName();
  return launched;
}

std::vector<JobExit> LocalExecutor::Poll() {
  std::vector<JobExit> out;
  for (size_t i = 0; i < active_.size();) {
    int status = 0;
    const pid_t r = waitpid(active_[i].pid, &status, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR)) {
      ++i;
      continue;
    }
    Active done = active_[i];
    active_.erase(active_.begin() + i);
    for (int s : done.gpu_slots) gpu_used_[s] -= done.job.memory_bytes;
    if (!resources_.gpu) {
      cpu_slots_used_ -= done.ranks;
      host_memory_used_ -= done.job.memory_bytes * done.ranks;
    }
    JobExit e;
    e.job = done.job;
    e.id = "local:" + std::to_string(done.pid);
    e.info.stop_requested = done.signalled;
    if (r > 0 && WIFEXITED(status)) e.info.exit_code = WEXITSTATUS(status);
    if (r > 0 && WIFSIGNALED(status)) e.info.signal = WTERMSIG(status);
    out.push_back(std::move(e));
  }
  return out;
}

void LocalExecutor::StopAll(bool hard) {
  for (auto& a : active_) {
    kill(a.pid, hard ? SIGKILL : SIGTERM);
    a.signalled = true;
  }
}

}  // namespace isoflop::sweep
