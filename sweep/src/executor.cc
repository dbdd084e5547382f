// The scheduling loop over any Executor (see executor.h): placement order, refusals,
// max_parallel, retries, and stop requests.
#include "isoflop/sweep/executor.h"

#include <signal.h>

#include <algorithm>
#include <ctime>

namespace isoflop::sweep {
namespace {

volatile sig_atomic_t g_stop_requests = 0;

void OnStopSignal(int) { g_stop_requests = g_stop_requests + 1; }

void Sleep(double seconds) {
  struct timespec ts;
  ts.tv_sec = static_cast<time_t>(seconds);
  ts.tv_nsec = static_cast<long>((seconds - ts.tv_sec) * 1e9);
  nanosleep(&ts, nullptr);
}

}  // namespace

void RequestStop() { g_stop_requests = g_stop_requests + 1; }

std::vector<Result<LaunchedJob>> Executor::LaunchBatch(
    const std::vector<std::pair<Job, Placement>>& jobs) {
  std::vector<Result<LaunchedJob>> out;
  for (const auto& [job, placement] : jobs) out.push_back(Launch(job, placement));
  return out;
}

Status RunJobs(Executor& executor, std::vector<Job> jobs, const JobCallbacks& cb, int max_parallel,
               double poll_seconds, bool* interrupted, bool detach) {
  *interrupted = false;
  std::stable_sort(jobs.begin(), jobs.end(),
                   [](const Job& a, const Job& b) { return a.cost > b.cost; });
  struct sigaction sa {
  }, old_int{}, old_term{};
  sa.sa_handler = OnStopSignal;
  sigemptyset(&sa.sa_mask);
  g_stop_requests = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  int forwarded = 0;
  Status result;
  const size_t limit = max_parallel > 0 ? static_cast<size_t>(max_parallel) : SIZE_MAX;
  auto refuse = [&](const Job& job, const std::string& why) {
    ExitInfo info;
    info.refused = why;
    if (cb.on_exit) cb.on_exit(job, info);
  };

  while (!jobs.empty() || executor.Running() > 0) {
    const int requests = g_stop_requests;
    if (requests > 0) {
      *interrupted = true;
      jobs.clear();
      if (requests > forwarded) {
        executor.StopAll(/*hard=*/requests >= 3);
        forwarded = requests;
      }
    }
    // Launch what fits, longest first; a smaller job may start while a larger one waits.
    std::vector<std::pair<Job, Placement>> batch;
    for (size_t i = 0; i < jobs.size() && result.ok() && executor.Running() + batch.size() < limit;) {
      const Job job = jobs[i];
      if (std::string why = executor.Refusal(job); !why.empty()) {
        jobs.erase(jobs.begin() + i);
        refuse(job, why);
        continue;
      }
      std::optional<Placement> pl = executor.Place(job);
      if (!pl) {
        ++i;
        continue;
      }
      jobs.erase(jobs.begin() + i);
      if (cb.before_launch) {
        if (Status st = cb.before_launch(job, *pl); !st.ok()) {
          refuse(job, st.message());
          continue;
        }
      }
      if (executor.LaunchesInBatches()) {
        batch.emplace_back(job, *pl);
        continue;
      }
      Result<LaunchedJob> launched = executor.Launch(job, *pl);
      if (!launched.ok()) {
        result = launched.status();  // stop launching; the running jobs still finish
        jobs.clear();
        break;
      }
      if (cb.on_start) cb.on_start(job, *pl, *launched);
    }
    if (!batch.empty()) {
      std::vector<Result<LaunchedJob>> launched = executor.LaunchBatch(batch);
      for (size_t i = 0; i < batch.size(); ++i) {
        if (!launched[i].ok()) {
          if (result.ok()) result = launched[i].status();
          ExitInfo info;
          info.refused = "not submitted: " + launched[i].status().message();
          if (cb.on_exit) cb.on_exit(batch[i].first, info);
          jobs.clear();
          continue;
        }
        if (cb.on_start) cb.on_start(batch[i].first, batch[i].second, *launched[i]);
      }
    }
    for (JobExit& done : executor.Poll()) {
      const bool retry = cb.on_exit ? cb.on_exit(done.job, done.info) : false;
      if (retry && g_stop_requests == 0 && result.ok()) jobs.insert(jobs.begin(), done.job);
    }
    if (cb.on_tick) cb.on_tick();
    if (jobs.empty() && executor.Running() == 0) break;
    if (detach && jobs.empty() && g_stop_requests == 0) break;
    Sleep(poll_seconds);
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  return result;
}

}  // namespace isoflop::sweep
