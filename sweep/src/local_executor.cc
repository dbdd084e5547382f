// The local scheduler: device detection, placement, fork/execv of isoflop-train children,
// signal forwarding and reaping.
#include "isoflop/sweep/local_executor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
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

extern char** environ;

namespace isoflop::sweep {
namespace {

volatile sig_atomic_t g_stop_signals = 0;
volatile sig_atomic_t g_last_signal = 0;

void OnStopSignal(int sig) {
  g_last_signal = sig;
  g_stop_signals = g_stop_signals + 1;
}

// Runs argv (no shell) and returns its stdout; empty when it cannot run or fails.
std::string CaptureOutput(const std::vector<std::string>& argv) {
  int fds[2];
  if (pipe(fds) != 0) return "";
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return "";
  }
  if (pid == 0) {
    dup2(fds[1], 1);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, 2);
    close(fds[0]);
    close(fds[1]);
    execvp(args[0], args.data());
    _exit(127);
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) out.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? out : "";
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
  r.threads_per_run = e.cpus_per_run > 0 ? std::min(e.cpus_per_run, cores) : cores;
  r.cpu_slots = std::max(1, cores / r.threads_per_run);
  if (e.device_memory_gib > 0)
    r.host_memory_bytes = static_cast<int64_t>(e.device_memory_gib * (1LL << 30));
  return r;
}

Result<pid_t> StartTrainer(const std::string& train_binary, const std::string& run_dir,
                           const std::string& cuda_visible_devices) {
  // Everything the child needs is built before fork: after it, only async-signal-safe calls.
  std::vector<std::string> argv_s = {train_binary, "--run-dir", run_dir};
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s;
  for (char** e = environ; *e; ++e) {
    if (std::strncmp(*e, "CUDA_VISIBLE_DEVICES=", 21) != 0) env_s.push_back(*e);
  }
  // On CPU an empty list hides every GPU, so a CPU slot never touches a device by accident.
  env_s.push_back("CUDA_VISIBLE_DEVICES=" + cuda_visible_devices);
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string log_path = run_dir + "/train.log";
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return Status::IoError(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    setpgid(0, 0);  // the terminal's Ctrl-C reaches the manager only; it forwards
    prctl(PR_SET_PDEATHSIG, SIGTERM);  // a SIGKILLed manager's children checkpoint and end
    if (getppid() != parent) _exit(128 + SIGTERM);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGINT, &dfl, nullptr);
    sigaction(SIGTERM, &dfl, nullptr);
    // Stop signals stay blocked across exec until isoflop-train has installed its handlers
    // (it unblocks them then): a signal during LibTorch's start-up is held, not fatal, so
    // every worker that was told to stop records its state in status.json.
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGUSR2);
    sigprocmask(SIG_SETMASK, &stop, nullptr);
    int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execve(argv[0], argv.data(), envp.data());
    const char msg[] = "isoflop sweep: cannot execute isoflop-train\n";
    (void)!write(2, msg, sizeof(msg) - 1);
    _exit(127);
  }
  setpgid(pid, pid);  // also here: no race with a signal sent right after fork returns
  return pid;
}

void LocalExecutor::RequestStop() {
  g_last_signal = SIGTERM;
  g_stop_signals = g_stop_signals + 1;
}

Status LocalExecutor::Run(std::vector<Job> jobs, const Callbacks& cb, bool* interrupted) {
  *interrupted = false;
  std::stable_sort(jobs.begin(), jobs.end(),
                   [](const Job& a, const Job& b) { return a.cost > b.cost; });
  struct Active {
    Job job;
    Placement placement;
    std::vector<int> gpu_slots;  // indices into resources_.devices
    pid_t pid;
    bool signalled = false;
  };
  std::vector<Active> active;
  std::vector<int64_t> gpu_used(resources_.devices.size(), 0);

  struct sigaction sa {
  }, old_int{}, old_term{};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  g_stop_signals = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  int forwarded = 0;
  Status result;

  auto capacity_ok = [&](const Job& j) -> std::string {
    if (resources_.gpu) {
      int64_t largest = 0;
      for (const auto& d : resources_.devices) largest = std::max(largest, d.memory_bytes);
      if (largest > 0 && j.memory_bytes > largest) {
        char buf[200];
        std::snprintf(buf, sizeof(buf),
                      "out of memory: needs about %.1f GiB, the largest GPU has %.1f GiB (lower "
                      "train.micro_batch or enable executor.activation_checkpointing)",
                      j.memory_bytes / double(1LL << 30), largest / double(1LL << 30));
        return buf;
      }
    } else if (resources_.host_memory_bytes > 0 && j.memory_bytes > resources_.host_memory_bytes) {
      char buf[200];
      std::snprintf(buf, sizeof(buf), "out of memory: needs about %.1f GiB, this host has %.1f GiB",
                    j.memory_bytes / double(1LL << 30),
                    resources_.host_memory_bytes / double(1LL << 30));
      return buf;
    }
    return "";
  };

  auto launch = [&](const Job& job, const Placement& pl, std::vector<int> slots) -> Status {
    if (cb.before_launch) {
      Status st = cb.before_launch(job, pl);
      if (!st.ok()) {
        ExitInfo info;
        info.refused = st.message();
        if (cb.on_exit) cb.on_exit(job, info);
        return Status::Ok();
      }
    }
    ISOFLOP_ASSIGN_OR_RETURN(pid_t pid, StartTrainer(train_binary_, job.run_dir, pl.devices));
    for (int s : slots) gpu_used[s] += job.memory_bytes;
    active.push_back({job, pl, std::move(slots), pid});
    if (cb.on_start) cb.on_start(job, pl, pid);
    return Status::Ok();
  };

  while (!jobs.empty() || !active.empty()) {
    if (g_stop_signals > 0) {
      *interrupted = true;
      jobs.clear();
      if (g_stop_signals > forwarded) {
        const int sig = g_stop_signals >= 3 ? SIGKILL : SIGTERM;
        for (auto& a : active) {
          kill(a.pid, sig);
          a.signalled = true;
        }
        forwarded = g_stop_signals;
      }
    }
    // Launch what fits, longest first; a smaller job may start while a larger one waits.
    for (size_t i = 0; i < jobs.size() && result.ok();) {
      const int limit = resources_.max_parallel > 0 ? resources_.max_parallel : 1 << 30;
      if (static_cast<int>(active.size()) >= limit) break;
      const Job job = jobs[i];
      std::string refuse = capacity_ok(job);
      if (!refuse.empty()) {
        jobs.erase(jobs.begin() + i);
        ExitInfo info;
        info.refused = refuse;
        if (cb.on_exit) cb.on_exit(job, info);
        continue;
      }
      Placement pl;
      pl.threads = resources_.threads_per_run;
      std::vector<int> slots;
      if (resources_.gpu) {
        // Best fit: the device with the least free memory that still holds the job.
        int best = -1;
        int64_t best_free = 0;
        for (size_t d = 0; d < resources_.devices.size(); ++d) {
          const int64_t free = resources_.devices[d].memory_bytes - gpu_used[d];
          if (free >= job.memory_bytes && (best < 0 || free < best_free)) {
            best = static_cast<int>(d);
            best_free = free;
          }
        }
        if (best < 0) {
          ++i;
          continue;
        }
        slots.push_back(best);
        pl.devices = std::to_string(resources_.devices[best].index);
        pl.device = "cuda";
      } else {
        if (static_cast<int>(active.size()) >= resources_.cpu_slots) break;
        pl.device = "cpu";
      }
      jobs.erase(jobs.begin() + i);
      result = launch(job, pl, slots);
    }
    if (!result.ok()) {
      // Fork failed: stop launching, let the running children finish.
      jobs.clear();
    }
    // Reap.
    for (size_t i = 0; i < active.size();) {
      int status = 0;
      pid_t r = waitpid(active[i].pid, &status, WNOHANG);
      if (r == 0 || (r < 0 && errno == EINTR)) {
        ++i;
        continue;
      }
      Active done = active[i];
      active.erase(active.begin() + i);
      for (int s : done.gpu_slots) gpu_used[s] -= done.job.memory_bytes;
      ExitInfo info;
      info.stop_requested = done.signalled;
      if (r > 0 && WIFEXITED(status)) info.exit_code = WEXITSTATUS(status);
      if (r > 0 && WIFSIGNALED(status)) info.signal = WTERMSIG(status);
      const bool retry = cb.on_exit ? cb.on_exit(done.job, info) : false;
      if (retry && g_stop_signals == 0) jobs.insert(jobs.begin(), done.job);
    }
    if (cb.on_tick) cb.on_tick();
    if (jobs.empty() && active.empty()) break;
    struct timespec ts;
    ts.tv_sec = static_cast<time_t>(poll_s_);
    ts.tv_nsec = static_cast<long>((poll_s_ - ts.tv_sec) * 1e9);
    nanosleep(&ts, nullptr);
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  return result;
}

}  // namespace isoflop::sweep
