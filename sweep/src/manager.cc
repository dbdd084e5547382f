// The sweep manager loop: store bookkeeping around the local scheduler, ingestion as runs
// progress, failure classification, retries, and the cancel/retry commands' store updates.
#include "isoflop/sweep/manager.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "isoflop/common/files.h"
#include "isoflop/common/process.h"
#include "isoflop/sweep/ingest.h"
#include "isoflop/sweep/lease.h"
#include "isoflop/sweep/progress.h"

namespace isoflop::sweep {
namespace {

namespace fs = std::filesystem;

std::string Fmt(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

// Waits until process `pid` (recorded with start id `start`) is gone, for at most `seconds`.
bool WaitGone(pid_t pid, const std::string& start, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (SameProcessAlive(pid, start)) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

bool Terminal(const std::string& status) { return status == "finished" || status == "diverged"; }

// Failed runs that another attempt may fix: not a bad config or an out-of-memory (the same
// cell fails the same way), told apart by the exit code (older records: by the reason).
bool Retryable(const store::RunRecord& r) {
  if (r.exit_code && (*r.exit_code == 2 || *r.exit_code == 5)) return false;
  return r.reason.rfind("bad config", 0) != 0 && r.reason.rfind("out of memory", 0) != 0;
}

// A run the store says is running while no manager drives it: its manager was killed. When
// the worker it recorded still runs on this host, it is told to stop (SIGTERM, and SIGCONT in
// case it is stopped): it checkpoints and exits, or, still starting, exits without touching
// anything. After `grace_s` it is killed. Only then may the cell be read or launched again.
Status StopPreviousWorker(const store::RunRecord& r, const std::string& host, double grace_s,
                          ProgressDisplay& display) {
  if (r.worker_pid <= 0 || r.host != host) return Status::Ok();
  const pid_t pid = static_cast<pid_t>(r.worker_pid);
  if (!SameProcessAlive(pid, r.worker_start)) return Status::Ok();
  display.Event("wait   " + r.cell_key + "  its worker (pid " + std::to_string(pid) +
                ") outlived the manager that started it; stopping it at a checkpoint first");
  kill(pid, SIGTERM);
  kill(pid, SIGCONT);
  if (WaitGone(pid, r.worker_start, grace_s)) return Status::Ok();
  display.Event("kill   " + r.cell_key + "  pid " + std::to_string(pid) + " did not stop in " +
                Fmt("%.0f", grace_s) + " s");
  kill(pid, SIGKILL);
  if (WaitGone(pid, r.worker_start, 10)) return Status::Ok();
  return Status::FailedPrecondition("the previous worker of " + r.cell_key + " (pid " +
                                    std::to_string(pid) + ") cannot be stopped; " + r.run_dir +
                                    " stays untouched");
}

// What a dead manager's running cell became, from the verdict its worker wrote (status.json):
// finished, diverged and failed stand; preempted or no verdict (the worker was killed) means
// resume from the checkpoint, and that killed attempt does not use up a retry.
void ApplyRecoveredVerdict(const std::optional<RunStatusFile>& st, store::RunRecord* r) {
  const std::string state = st ? st->state : "";
  if (st && st->exit_code) r->exit_code = st->exit_code;
  if (state == "finished") {
    r->status = "finished";
    r->reason.clear();
    if (st->final_val_loss) r->final_val_loss = st->final_val_loss;
    r->tokens_done = std::max(r->tokens_done, st->tokens.value_or(0));
  } else if (state == "diverged") {
    r->status = "diverged";
    r->reason = "diverged: " + st->reason;
  } else if (state == "failed") {
    const int code = st->exit_code.value_or(1);
    r->status = "failed";
    r->reason = (code == 2   ? "bad config: "
                 : code == 5 ? "out of memory: "
                             : "failed (exit code " + std::to_string(code) + "): ") +
                st->reason;
  } else {
    r->status = "preempted";
    r->reason = "its manager was killed; the next run resumes it from its checkpoint";
    r->attempts = std::max(0, r->attempts - 1);
  }
}

double NowSeconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

}  // namespace

std::string ClassifyExit(int exit_code, int signal, const std::string& reason,
                         bool stop_requested) {
  // Killed by a signal it did not handle (SIGKILL, a segfault): no verdict of its own.
  if (signal != 0) return stop_requested ? "preempted" : "crashed";
  const trainer::ExitClass c = trainer::ClassOfExit(exit_code);
  if (c == trainer::ExitClass::kStopped) return stop_requested ? "preempted" : "crashed";
  // Trainers before exit code 5 said "out of memory" in the reason only.
  if (c == trainer::ExitClass::kFailed && reason.rfind("out of memory", 0) == 0) {
    return "out of memory";
  }
  return trainer::ExitClassName(c);
}

Result<SweepOutcome> RunSweep(store::Store& db, const SweepConfig& cfg, const Plan& plan,
                              const Resources& res, const ManagerOptions& opts) {
  std::ostream& out = *opts.out;
  SweepOutcome outcome;
  outcome.cells = static_cast<int>(plan.cells.size());
  std::error_code ec;
  ProgressDisplay display(out, opts.live);

  // The lease first, in the same transaction that records the sweep: a second manager is
  // refused before it changes anything, whatever directory it runs from.
  store::SweepRecord sweep;
  sweep.name = cfg.name;
  sweep.file_path = cfg.file_path;
  sweep.config_text = cfg.text;
  sweep.overrides_json = nlohmann::json(cfg.overrides).dump();
  sweep.config_hash = cfg.hash;
  sweep.status = "running";
  std::optional<store::SweepRecord> old;
  store::SweepLease lease;
  int64_t sweep_id = 0;
  {
    ISOFLOP_ASSIGN_OR_RETURN(store::Transaction txn, db.Begin());
    ISOFLOP_ASSIGN_OR_RETURN(old, db.GetSweep(cfg.name));
    if (old) {
      ISOFLOP_ASSIGN_OR_RETURN(lease, AcquireSweepLease(db, old->id, cfg.name));
    }
    ISOFLOP_ASSIGN_OR_RETURN(sweep_id, db.UpsertSweep(sweep));
    if (!old) {
      ISOFLOP_ASSIGN_OR_RETURN(lease, AcquireSweepLease(db, sweep_id, cfg.name));
    }
    ISOFLOP_RETURN_IF_ERROR(txn.Commit());
  }
  // Released on every way out; a SIGKILLed manager's lease is stale at once on this host.
  struct LeaseRelease {
    store::Store& db;
    const store::SweepLease& lease;
    ~LeaseRelease() { (void)db.ReleaseLease(lease); }
  } release{db, lease};

  // Show what changed when the file did; recover what an earlier manager left behind.
  std::map<std::string, store::RunRecord> existing;
  // Run folders live where the sweep's first run put them (absolute), whatever the current
  // directory of a later run; a new sweep puts them under the file's output folder.
  std::string root = cfg.output_dir;
  if (old) {
    store::RunFilter f;
    f.sweep_name = cfg.name;
    ISOFLOP_ASSIGN_OR_RETURN(auto runs, db.ListRuns(f));
    std::vector<std::string> old_keys;
    for (auto& r : runs) {
      old_keys.push_back(r.cell_key);
      if (!r.run_dir.empty()) root = fs::path(r.run_dir).parent_path().string();
      existing[r.cell_key] = std::move(r);
    }
    if (old->config_hash != cfg.hash) {
      outcome.file_changed = true;
      outcome.diff = DiffKeys(old_keys, plan.cells);
    }
  }
  fs::create_directories(root, ec);
  if (ec) return Status::IoError(root + ": cannot create: " + ec.message());

  // One record per cell.
  std::map<std::string, store::RunRecord> records;
  std::map<std::string, const Cell*> cells;
  std::vector<Job> jobs;
  const std::string host = HostName();
  for (const Cell& cell : plan.cells) {
    cells[cell.key] = &cell;
    store::RunRecord r;
    auto it = existing.find(cell.key);
    if (it != existing.end()) r = it->second;
    r.sweep_id = sweep_id;
    r.cell_key = cell.key;
    r.family = cfg.family;
    r.n_layer = cell.shape.n_layer;
    r.d_model = cell.shape.d_model;
    r.n_head = cell.shape.n_head;
    r.d_ff = accounting::EffectiveDff(cell.shape);
    r.vocab_size = cell.shape.vocab_size;
    r.seq_len = cell.shape.seq_len;
    r.n_total = cell.n_total;
    r.n_non_embedding = cell.n_non_embedding;
    r.n_active = cell.n_total;
    r.flops_per_token_6n = cell.flops_per_token_6n;
    r.flops_per_token_6n_attn = cell.flops_per_token_6n_attn;
    r.flops_per_token_chinchilla = cell.flops_per_token_chinchilla;
    r.budget_flops = cell.budget_flops;
    r.target_tokens = cell.tokens;
    r.target_flops = cell.flops_per_token_6n * double(cell.tokens);
    r.seed = static_cast<int64_t>(cell.seed);
    r.config_json = cell.config.dump();
    if (r.run_dir.empty()) r.run_dir = (fs::path(root) / cell.key).string();
    ISOFLOP_ASSIGN_OR_RETURN(r.id, db.UpsertRun(r));
    if (it != existing.end() && r.status == "running") {
      // The manager that launched it died. Its worker may live on (an orphan): it must be gone
      // before anyone reads its verdict or launches the cell again.
      ISOFLOP_RETURN_IF_ERROR(StopPreviousWorker(r, host, opts.orphan_grace_s, display));
    }
    if (it != existing.end()) {
      // Rows written after the last ingestion (e.g. the manager was SIGKILLed) come in now.
      ISOFLOP_RETURN_IF_ERROR(IngestMetrics(db, &r).status());
      if (r.status == "running") {
        ISOFLOP_ASSIGN_OR_RETURN(auto st, ReadRunStatus(r.run_dir));
        ApplyRecoveredVerdict(st, &r);
        ISOFLOP_RETURN_IF_ERROR(db.UpsertRun(r).status());
      }
    }
    records[cell.key] = r;
    bool run = false;
    if (r.status == "planned" || r.status == "preempted" || r.status == "cancelled") run = true;
    if (r.status == "failed") {
      run = Retryable(r) && r.attempts <= cfg.executor.max_retries;
    }
    if (Terminal(r.status)) ++outcome.already_finished;
    if (run) jobs.push_back({cell.key, r.run_dir, cell.memory.total, cell.est_seconds});
  }

  if (outcome.file_changed) {
    display.Event(
        "sweep file changed since the last run: " + std::to_string(outcome.diff.kept.size()) +
        " cells kept, " + std::to_string(outcome.diff.added.size()) + " added, " +
        std::to_string(outcome.diff.removed.size()) +
        " no longer in the file (left in the store, not fitted)");
  }
  display.Event("sweep " + cfg.name + ": " + std::to_string(plan.cells.size()) + " cells, " +
                std::to_string(outcome.already_finished) + " already done, " +
                std::to_string(jobs.size()) + " to run on " +
                (res.gpu ? std::to_string(res.devices.size()) + " GPU(s)"
                         : std::to_string(res.cpu_slots) + " CPU slot(s) x " +
                               std::to_string(res.threads_per_run) + " thread(s)"));

  std::map<std::string, IngestProgress> live;  // active runs' latest progress
  std::set<std::string> active;
  double calibration = 1.0;  // measured / estimated seconds, from runs finished this session
  double measured = 0, estimated = 0;
  std::map<std::string, double> started_at;
  int done_count = outcome.already_finished;
  Status callback_error;
  auto keep_error = [&](const Status& st) {
    if (!st.ok() && callback_error.ok()) callback_error = st;
  };

  LocalExecutor::Callbacks cb;
  cb.before_launch = [&](const Job& job, const Placement& pl) -> Status {
    store::RunRecord& r = records[job.key];
    const Cell& cell = *cells[job.key];
    std::error_code e;
    fs::create_directories(r.run_dir, e);
    if (e) return Status::IoError(r.run_dir + ": cannot create: " + e.message());
    ISOFLOP_RETURN_IF_ERROR(WriteFileAtomic(
        r.run_dir + "/run.json", RunJson(cell, cfg.name + "/" + cell.key, pl.threads, pl.device)));
    fs::remove(r.run_dir + "/status.json", e);  // a stale status must not decide this attempt
    r.status = "running";
    r.attempts += 1;
    r.exit_code.reset();
    r.reason.clear();
    r.host = host;
    r.devices = pl.devices.empty() ? "cpu" : "cuda:" + pl.devices;
    r.started_at = store::NowIso8601();
    r.finished_at.clear();
    return db.UpsertRun(r).status();
  };
  cb.on_start = [&](const Job& job, const Placement& pl, pid_t pid) {
    // Recorded at once: a manager killed from here on leaves a record of its orphan.
    store::RunRecord& rec = records[job.key];
    rec.worker_pid = pid;
    rec.worker_start = ProcessStartId(pid).value_or("");
    keep_error(db.UpsertRun(rec).status());
    ++outcome.launched;
    active.insert(job.key);
    started_at[job.key] = NowSeconds();
    const Cell& cell = *cells[job.key];
    display.Event("start  " + job.key + "  C=" + Fmt("%.3g", cell.budget_flops) + "  " +
                  cell.ShapeString() + "  N=" + Fmt("%.3g", double(cell.n_total)) +
                  "  D=" + Fmt("%.3g", double(cell.tokens)) + "  on " + records[job.key].devices +
                  (records[job.key].attempts > 1
                       ? "  (attempt " + std::to_string(records[job.key].attempts) + ")"
                       : ""));
  };
  cb.on_exit = [&](const Job& job, const ExitInfo& info) -> bool {
    store::RunRecord& r = records[job.key];
    const Cell& cell = *cells[job.key];
    active.erase(job.key);
    live.erase(job.key);
    r.worker_pid = 0;
    r.worker_start.clear();
    keep_error(IngestMetrics(db, &r).status());
    if (Result<RunInfo> ri = ReadRunInfo(r.run_dir); ri.ok() && ri->data_entropy_nats) {
      r.data_entropy = ri->data_entropy_nats;
    }
    Result<std::optional<RunStatusFile>> sf = ReadRunStatus(r.run_dir);
    std::optional<RunStatusFile> st = sf.ok() ? *sf : std::nullopt;
    std::string reason = st ? st->reason : "";
    std::string cls;
    if (!info.refused.empty()) {
      cls = info.refused.rfind("out of memory", 0) == 0 ? "out of memory" : "crashed";
      if (cls == "out of memory") r.exit_code = 5;
      reason = info.refused;
      r.attempts = std::max(r.attempts, 1);
    } else {
      cls = ClassifyExit(info.exit_code, info.signal, reason, info.stop_requested);
      r.exit_code = info.signal ? 128 + info.signal : info.exit_code;
      if (info.exit_code == 127 && reason.empty()) reason = "cannot execute the trainer";
    }
    if (reason.empty() && cls != "finished" && cls != "preempted") reason = TailOfLog(r.run_dir);
    bool retry = false;
    if (cls == "finished") {
      r.status = "finished";
      if (st && st->final_val_loss) r.final_val_loss = st->final_val_loss;
      if (!r.final_val_loss) {
        if (auto rows = db.GetMetrics(r.id); rows.ok()) {
          for (const auto& m : *rows)
            if (m.val_loss) r.final_val_loss = m.val_loss;
        }
      }
      if (st && st->tokens) r.tokens_done = std::max(r.tokens_done, *st->tokens);
      r.reason.clear();
      ++done_count;
      if (started_at.count(job.key)) {
        measured += NowSeconds() - started_at[job.key];
        estimated += cell.est_seconds;
        if (estimated > 0) calibration = measured / estimated;
      }
    } else if (cls == "preempted") {
      r.status = "preempted";
      r.reason = "stopped by the manager at a checkpoint; the next run resumes it";
      r.attempts -= 1;  // a stop is not a failed attempt: it must not use up retries
    } else if (cls == "diverged") {
      r.status = "diverged";
      r.reason = "diverged: " + reason;
      ++done_count;
    } else {
      r.status = "failed";
      if ((cls == "crashed" || cls == "failed" || cls == "busy") && info.refused.empty()) {
        const std::string how = info.signal ? "killed by signal " + std::to_string(info.signal)
                                            : "exit code " + std::to_string(info.exit_code);
        r.reason = cls + " (" + how + ")" + (reason.empty() ? "" : ": " + reason);
      } else if (cls == "crashed") {
        r.reason = reason;
      } else {
        r.reason = cls + ": " + reason;
      }
      retry = (cls == "crashed" || cls == "failed" || cls == "busy") && info.refused.empty() &&
              r.attempts <= cfg.executor.max_retries;
    }
    r.finished_at = store::NowIso8601();
    keep_error(db.UpsertRun(r).status());
    std::string line = (r.status == "finished"    ? "done   "
                        : r.status == "preempted" ? "stop   "
                                                  : "FAIL   ") +
                       job.key + "  C=" + Fmt("%.3g", cell.budget_flops) + "  " +
                       cell.ShapeString();
    if (r.status == "finished" && r.final_val_loss)
      line += "  val_loss " + Fmt("%.4f", *r.final_val_loss);
    if (r.status != "finished" && r.status != "preempted")
      line += "  " + r.status + ": " + r.reason;
    if (retry) line += "  (retrying)";
    display.Event(line);
    return retry;
  };
  double last_ingest = 0, last_renew = NowSeconds();
  bool cancel_seen = false;
  cb.on_tick = [&] {
    const double now = NowSeconds();
    if (now - last_renew >= opts.heartbeat_seconds) {
      last_renew = now;
      Result<std::optional<store::SweepLease>> held = db.RenewLease(lease, UnixNow());
      keep_error(held.status());
      if (held.ok() && !*held) {
        keep_error(Status::FailedPrecondition(
            "lost the lease of sweep '" + cfg.name +
            "' (another manager took it over, judging this one dead); stopped this manager's "
            "runs at a checkpoint"));
        LocalExecutor::RequestStop();
      } else if (held.ok() && (*held)->cancel_requested && !cancel_seen) {
        cancel_seen = true;
        display.Event("cancel requested: stopping every run at a checkpoint");
        LocalExecutor::RequestStop();
      }
    }
    if (now - last_ingest >= 1.0) {
      last_ingest = now;
      for (const auto& key : active) {
        Result<IngestProgress> p = IngestMetrics(db, &records[key]);
        keep_error(p.status());
        if (p.ok() && p->new_rows > 0) live[key] = *p;
      }
    }
    std::vector<RunView> views;
    double remaining = 0;
    for (const auto& key : active) {
      const Cell& cell = *cells[key];
      RunView v;
      v.key = key;
      v.shape = cell.ShapeString();
      v.budget = cell.budget_flops;
      v.tokens_target = cell.tokens;
      v.tokens_done = records[key].tokens_done;
      if (auto it = live.find(key); it != live.end()) {
        v.loss = it->second.train_loss;
        v.tokens_per_s = it->second.tokens_per_s;
      }
      remaining += (v.tokens_per_s && *v.tokens_per_s > 0)
                       ? (v.tokens_target - v.tokens_done) / *v.tokens_per_s
                       : cell.est_seconds * calibration;
      views.push_back(std::move(v));
    }
    for (const auto& [key, r] : records) {
      if (!active.count(key) &&
          (r.status == "planned" || r.status == "preempted" || r.status == "cancelled")) {
        remaining += cells[key]->est_seconds * calibration;
      }
    }
    const int slots = res.gpu ? std::max<int>(1, res.devices.size()) : res.cpu_slots;
    display.Update(views, done_count, outcome.cells, remaining / slots);
  };

  LocalExecutor executor(opts.train_binary, res);
  executor.set_poll_interval(opts.poll_seconds);
  bool interrupted = false;
  Status run_status = executor.Run(std::move(jobs), cb, &interrupted);
  display.Close();
  ISOFLOP_RETURN_IF_ERROR(run_status);
  ISOFLOP_RETURN_IF_ERROR(callback_error);
  outcome.interrupted = interrupted && !cancel_seen;
  if (!cancel_seen) {
    // A cancel that arrived after the last heartbeat.
    ISOFLOP_ASSIGN_OR_RETURN(std::optional<store::SweepLease> held, db.GetLease(sweep_id));
    cancel_seen = held && held->cancel_requested && held->pid == lease.pid;
  }
  outcome.cancelled = cancel_seen;

  for (auto& [key, r] : records) {
    if (outcome.cancelled && !Terminal(r.status) && r.status != "failed") {
      r.status = "cancelled";
      r.reason = "cancelled by `isoflop sweep cancel`";
      ISOFLOP_RETURN_IF_ERROR(db.UpsertRun(r).status());
    }
    if (r.status == "finished")
      ++outcome.finished;
    else if (r.status == "failed")
      ++outcome.failed;
    else if (r.status == "diverged")
      ++outcome.diverged;
    else
      ++outcome.pending;
    if (r.status == "failed" || r.status == "diverged") {
      const Cell& c = *cells[key];
      outcome.problems.push_back(key + "  C=" + Fmt("%.3g", c.budget_flops) + "  " +
                                 c.ShapeString() + "  " + r.status + ": " + r.reason);
    }
  }
  std::string final_status = outcome.cancelled     ? "cancelled"
                             : outcome.pending > 0 ? "planned"
                             : outcome.failed > 0  ? "failed"
                                                   : "finished";
  ISOFLOP_RETURN_IF_ERROR(db.SetSweepStatus(sweep_id, final_status));
  return outcome;
}

Result<int> ResetCells(store::Store& db, const std::string& sweep_name, bool failed_only) {
  ISOFLOP_ASSIGN_OR_RETURN(auto sweep, db.GetSweep(sweep_name));
  if (!sweep) return Status::NotFound("no sweep named '" + sweep_name + "' in " + db.path());
  store::RunFilter f;
  f.sweep_name = sweep_name;
  ISOFLOP_ASSIGN_OR_RETURN(auto runs, db.ListRuns(f));
  int n = 0;
  ISOFLOP_ASSIGN_OR_RETURN(store::Transaction txn, db.Begin());
  for (auto& r : runs) {
    const bool pick = r.status == "failed" ||
                      (!failed_only && (r.status == "diverged" || r.status == "cancelled"));
    if (!pick) continue;
    r.status = "planned";
    r.attempts = 0;
    r.reason.clear();
    ISOFLOP_RETURN_IF_ERROR(db.UpsertRun(r).status());
    ++n;
  }
  ISOFLOP_RETURN_IF_ERROR(txn.Commit());
  return n;
}

Result<int> CancelSweep(store::Store& db, const std::string& sweep_name) {
  ISOFLOP_ASSIGN_OR_RETURN(auto sweep, db.GetSweep(sweep_name));
  if (!sweep) return Status::NotFound("no sweep named '" + sweep_name + "' in " + db.path());
  ISOFLOP_ASSIGN_OR_RETURN(store::Transaction txn, db.Begin());
  ISOFLOP_ASSIGN_OR_RETURN(std::optional<store::SweepLease> held, db.GetLease(sweep->id));
  if (held && LeaseIsLive(*held)) {
    // The running manager is the store's writer: ask it to stop (it sees the flag at its next
    // heartbeat, stops its runs at a checkpoint and marks the rest cancelled).
    ISOFLOP_RETURN_IF_ERROR(db.RequestCancel(sweep->id).status());
    ISOFLOP_RETURN_IF_ERROR(txn.Commit());
    return static_cast<int>(held->pid);
  }
  if (held) ISOFLOP_RETURN_IF_ERROR(db.ReleaseLease(*held));  // a dead manager's
  store::RunFilter f;
  f.sweep_name = sweep_name;
  ISOFLOP_ASSIGN_OR_RETURN(auto runs, db.ListRuns(f));
  for (auto& r : runs) {
    if (Terminal(r.status) || r.status == "failed") continue;
    r.status = "cancelled";
    r.reason = "cancelled by `isoflop sweep cancel`";
    ISOFLOP_RETURN_IF_ERROR(db.UpsertRun(r).status());
  }
  ISOFLOP_RETURN_IF_ERROR(db.SetSweepStatus(sweep->id, "cancelled"));
  ISOFLOP_RETURN_IF_ERROR(txn.Commit());
  return 0;
}

}  // namespace isoflop::sweep
