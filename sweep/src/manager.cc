// The sweep manager: a SweepSession per `sweep run` (lease, run records, the cells' state
// machine over an Executor, ingestion as runs progress, failure classification, retries), and
// the cancel/retry commands' store updates.
#include "isoflop/sweep/manager.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
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
#include "isoflop/common/format.h"
#include "isoflop/common/process.h"
#include "isoflop/sweep/ingest.h"
#include "isoflop/sweep/lease.h"
#include "isoflop/sweep/progress.h"
#include "isoflop/sweep/slurm_executor.h"
#include "isoflop/trainer/run_dir.h"

namespace isoflop::sweep {
namespace {

namespace fs = std::filesystem;

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
  // Nor a job someone cancelled, or one that hit its time limit before any checkpoint: those
  // wait for `isoflop sweep retry`.
  for (const char* prefix : {"bad config", "out of memory", "cancelled", "time limit"}) {
    if (r.reason.rfind(prefix, 0) == 0) return false;
  }
  return true;
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

// A local run folder whose lock a live process still holds (the worker of an earlier manager
// that the store no longer calls running: a sweep cancelled while its manager was dead, a
// data-parallel launcher killed while its ranks checkpoint): the holder is told to stop, as in
// StopPreviousWorker, and the folder waited for, so the relaunch does not exit "busy" and use
// up the cell's retries in seconds.
Status StopFolderHolder(const store::RunRecord& r, double grace_s, ProgressDisplay& display) {
  const std::string lock = trainer::RunDirLockPath(r.run_dir);
  const pid_t pid = LockHolder(lock);
  if (pid <= 0 || ::kill(pid, 0) != 0) return Status::Ok();
  display.Event("wait   " + r.cell_key + "  pid " + std::to_string(pid) +
                " still holds its run folder; stopping it at a checkpoint first");
  kill(pid, SIGTERM);
  kill(pid, SIGCONT);
  auto free_within = [&](double seconds) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (LockHolder(lock) > 0) {
      if (std::chrono::steady_clock::now() >= until) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return true;
  };
  if (free_within(grace_s)) return Status::Ok();
  display.Event("kill   " + r.cell_key + "  pid " + std::to_string(pid) + " did not stop in " +
                Fmt("%.0f", grace_s) + " s");
  kill(pid, SIGKILL);
  if (free_within(10)) return Status::Ok();
  return Status::FailedPrecondition(r.run_dir + " is still locked by pid " +
                                    std::to_string(LockHolder(lock)) +
                                    ", which cannot be stopped; the folder stays untouched");
}

// The peak memory a worker measured (its status.json), onto its run's record: the largest of
// the run's attempts (a resumed worker measures its own lifetime only).
void RecordPeakMemory(const std::optional<RunStatusFile>& st, store::RunRecord* r) {
  if (!st || !st->peak_memory_bytes) return;
  if (r->peak_memory_of == st->peak_memory_of && r->peak_memory >= *st->peak_memory_bytes) return;
  r->peak_memory = *st->peak_memory_bytes;
  r->peak_memory_of = st->peak_memory_of;
}

// What a dead manager's running cell became, from the verdict its worker wrote (status.json):
// finished, diverged and failed stand; preempted or no verdict (the worker was killed) means
// resume from the checkpoint, and that killed attempt does not use up a retry.
void ApplyRecoveredVerdict(const std::optional<RunStatusFile>& st, store::RunRecord* r) {
  RecordPeakMemory(st, r);
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
  // Stopped at a checkpoint by a signal the manager did not send (an operator's kill, a
  // shutdown): nothing crashed, and it resumes from that checkpoint when retried.
  if (c == trainer::ExitClass::kStopped) return stop_requested ? "preempted" : "interrupted";
  // Trainers before exit code 5 said "out of memory" in the reason only.
  if (c == trainer::ExitClass::kFailed && reason.rfind("out of memory", 0) == 0) {
    return "out of memory";
  }
  return trainer::ExitClassName(c);
}

namespace {

// The states of a cell, as the store's run records name them.
enum class CellState { kPlanned, kRunning, kFinished, kFailed, kDiverged, kPreempted, kCancelled };

CellState StateOf(const store::RunRecord& r) {
  static const std::map<std::string, CellState> kByName = {
      {"planned", CellState::kPlanned},    {"running", CellState::kRunning},
      {"finished", CellState::kFinished},  {"failed", CellState::kFailed},
      {"diverged", CellState::kDiverged},  {"preempted", CellState::kPreempted},
      {"cancelled", CellState::kCancelled}};
  auto it = kByName.find(r.status);
  return it == kByName.end() ? CellState::kPlanned : it->second;
}

// One `isoflop sweep run`: the sweep's lease, its run records, and the state machine of its
// cells over an Executor:
//   planned | preempted | cancelled | failed (retryable) --launch--> running
//   running --exit--> finished | diverged | failed (retried while attempts allow) | preempted
//   (a stop the manager asked for) | cancelled (when the sweep is cancelled).
// Not thread-safe; one per RunSweep call.
class SweepSession {
 public:
  SweepSession(store::Store& db, const SweepConfig& cfg, const Plan& plan, Executor& executor,
               const ManagerOptions& opts)
      : db_(db),
        cfg_(cfg),
        plan_(plan),
        executor_(executor),
        opts_(opts),
        display_(*opts.out, opts.live),
        host_(HostName()) {
    outcome_.cells = static_cast<int>(plan.cells.size());
  }
  ~SweepSession() {
    if (lease_.sweep_id != 0) (void)db_.ReleaseLease(lease_);
  }

  Result<SweepOutcome> Run() {
    ISOFLOP_RETURN_IF_ERROR(TakeLease());
    ISOFLOP_RETURN_IF_ERROR(LoadCells());
    Announce();
    JobCallbacks cb;
    cb.before_launch = [this](const Job& j, const Placement& p) { return BeforeLaunch(j, p); };
    cb.on_start = [this](const Job& j, const Placement& p, const LaunchedJob& l) {
      OnStart(j, p, l);
    };
    cb.on_exit = [this](const Job& j, const ExitInfo& e) { return OnExit(j, e); };
    cb.on_tick = [this] { OnTick(); };
    bool interrupted = false;
    const Status run = RunJobs(executor_, std::move(jobs_), cb, /*max_parallel=*/0,
                               opts_.poll_seconds, &interrupted, opts_.detach);
    display_.Close();
    ISOFLOP_RETURN_IF_ERROR(run);
    ISOFLOP_RETURN_IF_ERROR(callback_error_);
    return Close(interrupted);
  }

 private:
  // The lease first, in the same transaction that records the sweep: a second manager is
  // refused before it changes anything, whatever directory it runs from.
  Status TakeLease() {
    store::SweepRecord sweep;
    sweep.name = cfg_.name;
    sweep.file_path = cfg_.file_path;
    sweep.config_text = cfg_.text;
    sweep.overrides_json = nlohmann::json(cfg_.overrides).dump();
    sweep.base_dir = cfg_.base_dir;
    sweep.config_hash = cfg_.hash;
    sweep.status = "running";
    ISOFLOP_ASSIGN_OR_RETURN(store::Transaction txn, db_.Begin());
    ISOFLOP_ASSIGN_OR_RETURN(old_, db_.GetSweep(cfg_.name));
    store::SweepLease lease;
    if (old_) {
      ISOFLOP_ASSIGN_OR_RETURN(lease, AcquireSweepLease(db_, old_->id, cfg_.name));
    }
    ISOFLOP_ASSIGN_OR_RETURN(sweep_id_, db_.UpsertSweep(sweep));
    if (!old_) {
      ISOFLOP_ASSIGN_OR_RETURN(lease, AcquireSweepLease(db_, sweep_id_, cfg_.name));
    }
    ISOFLOP_RETURN_IF_ERROR(txn.Commit());
    lease_ = lease;  // from here on released by the destructor
    return Status::Ok();
  }

  // One record per cell; what an earlier manager left behind is recovered; the cells to run
  // become jobs.
  Status LoadCells() {
    std::map<std::string, store::RunRecord> existing;
    // Run folders live where the sweep's first run put them (absolute), whatever the current
    // directory of a later run; a new sweep puts them under the file's output folder.
    std::string root = cfg_.output_dir;
    if (old_) {
      store::RunFilter f;
      f.sweep_name = cfg_.name;
      ISOFLOP_ASSIGN_OR_RETURN(auto runs, db_.ListRuns(f));
      std::vector<std::string> old_keys;
      for (auto& r : runs) {
        old_keys.push_back(r.cell_key);
        if (!r.run_dir.empty()) root = fs::path(r.run_dir).parent_path().string();
        existing[r.cell_key] = std::move(r);
      }
      if (old_->config_hash != cfg_.hash) {
        outcome_.file_changed = true;
        outcome_.diff = DiffKeys(old_keys, plan_.cells);
      }
      live_jobs_ = executor_.LiveJobs();
    }
    std::error_code ec;
    fs::create_directories(root, ec);
    if (ec) return Status::IoError(root + ": cannot create: " + ec.message());
    for (const Cell& cell : plan_.cells) {
      auto it = existing.find(cell.key);
      ISOFLOP_RETURN_IF_ERROR(LoadCell(cell, it == existing.end() ? nullptr : &it->second, root));
    }
    return Status::Ok();
  }

  Status LoadCell(const Cell& cell, const store::RunRecord* stored, const std::string& root) {
    cells_[cell.key] = &cell;
    store::RunRecord r = stored ? *stored : store::RunRecord();
    r.sweep_id = sweep_id_;
    r.cell_key = cell.key;
    r.family = cell.config["model"].value("family", cfg_.family);  // expert axes: per cell
    r.n_layer = cell.shape.n_layer;
    r.d_model = cell.shape.d_model;
    r.n_head = cell.shape.n_head;
    r.d_ff = accounting::EffectiveDff(cell.shape);
    r.vocab_size = cell.shape.vocab_size;
    r.seq_len = cell.shape.seq_len;
    r.n_total = cell.n_total;
    r.n_non_embedding = cell.n_non_embedding;
    r.n_active = cell.n_active;
    r.n_experts = cell.shape.moe ? cell.shape.moe->n_experts : 0;
    r.top_k = cell.shape.moe ? accounting::EffectiveTopK(cell.shape) : 0;
    if (const auto& moe = cell.shape.moe) {
      r.granularity = moe->granularity;
      r.n_shared_experts = moe->n_shared_experts;
      r.expert_d_ff = accounting::EffectiveExpertDff(cell.shape);
      r.router = accounting::ToString(moe->router);
      r.expansion_rate = double(moe->n_experts) * accounting::EffectiveExpertDff(cell.shape) /
                         double(accounting::EffectiveDff(cell.shape));
      r.moe_json = cell.config["model"].value("moe", nlohmann::json::object()).dump();
    }
    r.flops_per_token_6n = cell.flops_per_token_6n;
    r.flops_per_token_6n_attn = cell.flops_per_token_6n_attn;
    r.flops_per_token_chinchilla = cell.flops_per_token_chinchilla;
    r.budget_flops = cell.budget_flops;
    r.target_tokens = cell.tokens;
    r.target_flops = cell.flops_per_token_6n * double(cell.tokens);
    r.seed = static_cast<int64_t>(cell.seed);
    r.config_json = cell.config.dump();
    if (r.run_dir.empty()) r.run_dir = (fs::path(root) / cell.key).string();
    if (stored && StateOf(r) == CellState::kRunning) {
      // A job in the queue for this folder that the store does not name: its manager was
      // killed between submitting it and recording its id. Followed, not submitted again.
      if (auto live = live_jobs_.find(r.run_dir);
          live != live_jobs_.end() && live->second != r.job_id) {
        display_.Event("adopt  " + cell.key + "  SLURM job " + live->second.substr(6) +
                       ", submitted by a manager killed before it recorded the job");
        r.job_id = live->second;
      }
    }
    ISOFLOP_ASSIGN_OR_RETURN(r.id, db_.UpsertRun(r));
    if (!stored) ISOFLOP_RETURN_IF_ERROR(TakeFinishedFolder(cell, &r));
    if (stored && StateOf(r) == CellState::kRunning && !r.job_id.empty() &&
        executor_.Adopt({cell.key, r.run_dir, cell.memory.total, cell.est_seconds}, r.job_id)) {
      // Its job still belongs to the scheduler (a detached or killed manager's SLURM job): it
      // is followed as if this session had launched it.
      ISOFLOP_RETURN_IF_ERROR(Ingest(&r).status());
      records_[cell.key] = r;
      active_.insert(cell.key);
      started_at_[cell.key] = NowSeconds();
      ++adopted_;
      return Status::Ok();
    }
    if (stored) {
      if (StateOf(r) == CellState::kRunning) {
        // The manager that launched it died. Its worker may live on (an orphan): it must be
        // gone before anyone reads its verdict or launches the cell again.
        ISOFLOP_RETURN_IF_ERROR(StopPreviousWorker(r, host_, opts_.orphan_grace_s, display_));
      }
      if (cfg_.executor.kind != "slurm" && !Terminal(r.status)) {
        // (On a cluster the holder runs on another node, under SLURM, which stops it.)
        ISOFLOP_RETURN_IF_ERROR(StopFolderHolder(r, opts_.orphan_grace_s, display_));
      }
      // Rows written after the last ingestion (e.g. the manager was SIGKILLed) come in now.
      ISOFLOP_RETURN_IF_ERROR(Ingest(&r).status());
      if (StateOf(r) == CellState::kRunning) {
        // The trainer writes status.json whole (rename) or not at all: one that does not parse
        // was damaged since, and says nothing. The cell resumes from its checkpoint, as without
        // one, rather than stopping the sweep (and every later sync) at this folder.
        Result<std::optional<RunStatusFile>> st = ReadRunStatus(r.run_dir);
        if (!st.ok()) {
          display_.Event("note   " + cell.key + ": " + st.status().message() +
                         "; taken as no verdict: it resumes from its checkpoint");
        }
        ApplyRecoveredVerdict(st.ok() ? *st : std::nullopt, &r);
        ISOFLOP_RETURN_IF_ERROR(db_.UpsertRun(r).status());
      }
    }
    bool run = false;
    switch (StateOf(r)) {
      case CellState::kPlanned:
      case CellState::kPreempted:
      case CellState::kCancelled:
        run = true;
        break;
      case CellState::kFailed:
        run = Retryable(r) && r.attempts <= cfg_.executor.max_retries;
        break;
      case CellState::kFinished:
      case CellState::kDiverged:
        ++outcome_.already_finished;
        break;
      case CellState::kRunning:
        break;
    }
    if (run) r.memory_estimate = cell.memory.total;  // stored with the launch
    records_[cell.key] = r;
    if (run) jobs_.push_back({cell.key, r.run_dir, cell.memory.total, cell.est_seconds});
    return Status::Ok();
  }

  // A cell this store has no record of whose folder holds its run, ended: the store was lost,
  // or another store runs over the same run root. When the folder's run.json is the one this
  // cell would write (its threads and device aside) and its status.json says finished or
  // diverged, its metrics are ingested and its verdict taken: it is not trained again.
  Status TakeFinishedFolder(const Cell& cell, store::RunRecord* r) {
    Result<std::optional<RunStatusFile>> sf = ReadRunStatus(r->run_dir);
    if (!sf.ok() || !*sf || ((*sf)->state != "finished" && (*sf)->state != "diverged"))
      return Status::Ok();
    std::ifstream in(r->run_dir + "/run.json");
    const nlohmann::json have = nlohmann::json::parse(in, nullptr, false);
    if (!have.is_object() || !have.contains("train") || !have["train"].is_object())
      return Status::Ok();
    const nlohmann::json& train = have["train"];
    if (!train.contains("threads") || !train["threads"].is_number_integer() ||
        !train.contains("device") || !train["device"].is_string())
      return Status::Ok();
    Result<std::string> want =
        RunJson(cell, cfg_.name + "/" + cell.key, train["threads"].get<int>(), train["device"]);
    if (!want.ok() || nlohmann::json::parse(*want, nullptr, false) != have) return Status::Ok();
    r->status = "running";  // what the folder's verdict now settles
    ISOFLOP_ASSIGN_OR_RETURN(IngestProgress p, Ingest(r));
    if ((*sf)->state == "finished" && (*sf)->step && p.step != *(*sf)->step) {
      // A finished run's last line is its final step's: the file lost lines since.
      display_.Event(
          "warn   " + cell.key + "  its metrics.jsonl " +
          (p.step == 0 ? std::string("has no line") : "ends at step " + std::to_string(p.step)) +
          ", not at its final step " + std::to_string(*(*sf)->step) +
          ": its curve is incomplete (its final loss is status.json's)");
    }
    if (Result<RunInfo> ri = ReadRunInfo(r->run_dir); ri.ok()) {
      if (ri->data_entropy_nats) r->data_entropy = ri->data_entropy_nats;
      r->host = ri->host;
      r->devices = ri->device;
    }
    ApplyRecoveredVerdict(*sf, r);
    r->attempts = std::max(r->attempts, 1);
    r->finished_at = store::NowIso8601();
    ISOFLOP_RETURN_IF_ERROR(db_.UpsertRun(*r).status());
    display_.Event("found  " + cell.key + "  " + r->status +
                   " in its folder, not in this store: " + "ingested, not run again");
    return Status::Ok();
  }

  void Announce() {
    if (outcome_.file_changed) {
      display_.Event(
          "sweep file changed since the last run: " + std::to_string(outcome_.diff.kept.size()) +
          " cells kept, " + std::to_string(outcome_.diff.added.size()) + " added, " +
          std::to_string(outcome_.diff.removed.size()) +
          " no longer in the file (left in the store, not fitted)");
    }
    done_count_ = outcome_.already_finished;
    display_.Event("sweep " + cfg_.name + ": " + std::to_string(plan_.cells.size()) + " cells, " +
                   std::to_string(outcome_.already_finished) + " already done, " +
                   (adopted_ > 0 ? std::to_string(adopted_) + " running, " : "") +
                   std::to_string(jobs_.size()) + " to run on " + executor_.Describe());
  }

  // IngestMetrics, with the lines it had to leave out shown (once: the offset moves past them).
  Result<IngestProgress> Ingest(store::RunRecord* r) {
    Result<IngestProgress> p = IngestMetrics(db_, r);
    if (p.ok()) {
      for (const std::string& s : p->skipped) display_.Event("warn   " + r->cell_key + "  " + s);
    }
    return p;
  }

  void KeepError(const Status& st) {
    if (!st.ok() && callback_error_.ok()) callback_error_ = st;
  }

  // planned/preempted/... -> running: run.json for this placement, and the record says so.
  Status BeforeLaunch(const Job& job, const Placement& pl) {
    store::RunRecord& r = records_[job.key];
    const Cell& cell = *cells_[job.key];
    std::error_code e;
    fs::create_directories(r.run_dir, e);
    if (e) return Status::IoError(r.run_dir + ": cannot create: " + e.message());
    ISOFLOP_ASSIGN_OR_RETURN(std::string run_json,
                             RunJson(cell, cfg_.name + "/" + cell.key, pl.threads, pl.device));
    ISOFLOP_RETURN_IF_ERROR(WriteFileAtomic(r.run_dir + "/run.json", run_json));
    fs::remove(r.run_dir + "/status.json", e);  // a stale status must not decide this attempt
    r.status = "running";
    r.attempts += 1;
    r.exit_code.reset();
    r.reason.clear();
    r.host = host_;
    r.devices = pl.devices.empty() ? pl.device : "cuda:" + pl.devices;
    if (pl.ranks > 1) r.devices += " x" + std::to_string(pl.ranks) + " ranks";
    r.started_at = store::NowIso8601();
    r.finished_at.clear();
    return db_.UpsertRun(r).status();
  }

  void OnStart(const Job& job, const Placement&, const LaunchedJob& launched) {
    // Recorded at once: a manager killed from here on leaves a record of its orphan.
    store::RunRecord& r = records_[job.key];
    r.job_id = launched.id;
    if (!launched.host.empty()) r.host = launched.host;
    r.worker_pid = launched.pid;
    r.worker_start =
        launched.pid > 0 ? ProcessStartId(static_cast<pid_t>(launched.pid)).value_or("") : "";
    KeepError(db_.UpsertRun(r).status());
    ++outcome_.launched;
    active_.insert(job.key);
    started_at_[job.key] = NowSeconds();
    const Cell& cell = *cells_[job.key];
    display_.Event("start  " + job.key + "  C=" + Fmt("%.3g", cell.budget_flops) + "  " +
                   cell.ShapeString() + "  N=" + Fmt("%.3g", double(cell.n_total)) +
                   "  D=" + Fmt("%.3g", double(cell.tokens)) + "  on " + r.devices +
                   (launched.id.rfind("slurm:", 0) == 0 ? "  SLURM job " + launched.id.substr(6)
                                                        : "") +
                   (r.attempts > 1 ? "  (attempt " + std::to_string(r.attempts) + ")" : ""));
  }

  // A worker that needed more memory than the scheduler packed it by (on a GPU, its reserved
  // peak plus the context the estimate assumes): runs packed beside it could run out.
  void WarnAboveEstimate(const store::RunRecord& r) {
    if (r.memory_estimate <= 0 || r.peak_memory <= 0) return;
    const int64_t peak =
        r.peak_memory + (r.peak_memory_of == "cuda_reserved" ? sweep::kCudaContextBytes : 0);
    if (peak <= r.memory_estimate * 1.1) return;
    const bool gpu = r.peak_memory_of == "cuda_reserved";
    display_.Event("warn   " + r.cell_key + "  its peak memory, " + Bytes(peak) + " (" +
                   r.peak_memory_of + (gpu ? " + context" : "") + "), is above its estimate " +
                   Bytes(r.memory_estimate) + ", which the scheduler packs runs by" +
                   (gpu ? ": lower executor.device_memory_gib to pack fewer runs per GPU" : ""));
  }

  // running -> finished | diverged | failed | preempted. Returns whether to launch it again.
  bool OnExit(const Job& job, const ExitInfo& info) {
    store::RunRecord& r = records_[job.key];
    const Cell& cell = *cells_[job.key];
    active_.erase(job.key);
    live_.erase(job.key);
    r.worker_pid = 0;
    r.worker_start.clear();
    KeepError(Ingest(&r).status());
    if (Result<RunInfo> ri = ReadRunInfo(r.run_dir); ri.ok() && ri->data_entropy_nats) {
      r.data_entropy = ri->data_entropy_nats;
    }
    Result<std::optional<RunStatusFile>> sf = ReadRunStatus(r.run_dir);
    std::optional<RunStatusFile> st = sf.ok() ? *sf : std::nullopt;
    RecordPeakMemory(st, &r);
    WarnAboveEstimate(r);
    std::string reason = st ? st->reason : "";
    std::string cls;
    if (!info.node.empty()) r.host = info.node;
    // The run's own "finished" (status.json, written after its last metrics line; this
    // attempt's, since BeforeLaunch removed any older one) is final whatever ended the process
    // afterwards: a crash or SIGKILL at teardown, a rank dying at exit, SLURM's time limit or a
    // preemption in the last seconds. Retrying would retrain its tail from a checkpoint.
    const bool finished = st && st->state == "finished";
    if (!finished && info.interruption != Interruption::kNone && !info.stop_requested) {
      return OnInterrupted(job, info, &r);
    }
    const std::string sched = info.scheduler_state.substr(0, info.scheduler_state.find(' '));
    if (finished) {
      cls = "finished";
      r.exit_code = trainer::kExitFinished;
      if (info.signal != 0 || info.exit_code != 0 || !info.refused.empty() ||
          (!sched.empty() && sched != "COMPLETED")) {
        display_.Event("note   " + job.key + ": finished (its status.json), then its process " +
                       (info.signal != 0 ? "was killed by signal " + std::to_string(info.signal)
                        : !sched.empty() && sched != "COMPLETED"
                            ? "ended " + info.scheduler_state
                            : "exited " + std::to_string(info.exit_code)) +
                       "; kept as finished");
      }
    } else if (sched == "CANCELLED" || sched == "OUT_OF_MEMORY" || sched == "TIMEOUT" ||
               sched == "DEADLINE" || (sched == "COMPLETED" && !(st && st->state == "finished"))) {
      // The scheduler ended it; its verdict, not the worker's exit code, says how.
      if (sched == "CANCELLED" && info.stop_requested) {
        cls = "preempted";
      } else if (sched == "CANCELLED") {
        cls = "cancelled";
        reason = info.scheduler_state + " (scancel, or an administrator)";
      } else if (sched == "OUT_OF_MEMORY") {
        cls = "out of memory";
        r.exit_code = trainer::kExitOutOfMemory;
        const std::string& mem = cfg_.executor.slurm.mem;
        reason = "SLURM killed the job at its memory limit (executor.mem" +
                 (mem.empty() ? std::string(" is the cluster's default")
                  : mem == ExecutorConfig::Slurm::kAutoMem
                      ? " = auto: " +
                            std::to_string(
                                AutoMemoryPerCpuMiB(job.memory_bytes, cfg_.executor.cpus_per_run)) +
                            " MiB per CPU, 1.25x this run's estimate"
                      : " = " + mem) +
                 ")";
      } else if (sched == "TIMEOUT") {
        cls = "time limit";
        reason = "killed at its time limit (executor.time " + cfg_.executor.slurm.time +
                 ") before its first checkpoint: raise executor.time or lower "
                 "train.ckpt_interval_steps";
      } else if (sched == "DEADLINE") {
        cls = "failed";
        reason = "SLURM ended it at its deadline";
      } else {
        cls = "failed";
        reason = "SLURM says COMPLETED but the run's status.json says " +
                 (st ? "'" + st->state + "'" : std::string("nothing"));
      }
      if (!r.exit_code) r.exit_code = info.exit_code;
    } else if (!info.refused.empty()) {
      cls = info.refused.rfind("out of memory", 0) == 0 ? "out of memory" : "crashed";
      if (cls == "out of memory") r.exit_code = trainer::kExitOutOfMemory;
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
        if (auto rows = db_.GetMetrics(r.id, store::Store::Extras::kOmit); rows.ok()) {
          for (const auto& m : *rows)
            if (m.val_loss) r.final_val_loss = m.val_loss;
        }
      }
      if (st && st->tokens) r.tokens_done = std::max(r.tokens_done, *st->tokens);
      r.reason.clear();
      ++done_count_;
      if (started_at_.count(job.key)) {
        measured_ += NowSeconds() - started_at_[job.key];
        estimated_ += cell.est_seconds;
        if (estimated_ > 0) calibration_ = measured_ / estimated_;
      }
    } else if (cls == "preempted") {
      r.status = "preempted";
      r.reason = "stopped by the manager at a checkpoint; the next run resumes it";
      r.attempts -= 1;  // a stop is not a failed attempt: it must not use up retries
    } else if (cls == "diverged") {
      r.status = "diverged";
      r.reason = "diverged: " + reason;
      ++done_count_;
    } else if (cls == "cancelled" || cls == "time limit") {
      r.status = "failed";
      r.reason = cls + ": " + reason;
    } else {
      r.status = "failed";
      const bool retryable_class =
          cls == "crashed" || cls == "failed" || cls == "busy" || cls == "interrupted";
      if (cls == "interrupted") {
        r.reason = "interrupted: stopped at a checkpoint (step " +
                   (st && st->step ? std::to_string(*st->step) : std::string("?")) +
                   ") by a signal the manager did not send (exit code " +
                   std::to_string(info.exit_code) + "); a retry resumes from it";
      } else if (retryable_class && info.refused.empty()) {
        const std::string how = info.signal ? "killed by signal " + std::to_string(info.signal)
                                            : "exit code " + std::to_string(info.exit_code);
        r.reason = cls + " (" + how + ")" + (reason.empty() ? "" : ": " + reason);
      } else if (cls == "crashed") {
        r.reason = reason;
      } else {
        r.reason = cls + ": " + reason;
      }
      retry = retryable_class && info.refused.empty() && r.attempts <= cfg_.executor.max_retries;
    }
    r.finished_at = store::NowIso8601();
    KeepError(db_.UpsertRun(r).status());
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
    display_.Event(line);
    return retry;
  }

  // A scheduler interrupted the run (preemption, node failure, its time limit after a
  // checkpoint): it is resubmitted to resume, up to executor.max_retries times for each kind,
  // counted in RUN_DIR/scheduler.json (the manager is its only writer) across sessions.
  bool OnInterrupted(const Job& job, const ExitInfo& info, store::RunRecord* r) {
    const bool timeout = info.interruption == Interruption::kTimeLimit;
    const std::string counts_path = r->run_dir + "/scheduler.json";
    nlohmann::json counts = nlohmann::json::object();
    if (std::ifstream in(counts_path); in) {
      counts = nlohmann::json::parse(in, nullptr, false);
      if (!counts.is_object()) counts = nlohmann::json::object();
    }
    const char* key = timeout ? "timeouts" : "preemptions";
    const int n = counts.value(key, 0) + 1;
    counts[key] = n;
    const std::string what =
        timeout ? "time limit (executor.time " + cfg_.executor.slurm.time +
                      "): stopped at a checkpoint"
                : "interrupted by the scheduler (" + info.scheduler_state + ")";
    const bool retry = n <= cfg_.executor.max_retries;
    r->attempts = std::max(0, r->attempts - 1);  // not the run's fault
    r->exit_code = info.signal ? 128 + info.signal : info.exit_code;
    if (retry) {
      r->status = "preempted";
      r->reason = what + "; resubmitted to resume (" + std::to_string(n) + " of " +
                  std::to_string(cfg_.executor.max_retries) + ")";
    } else {
      r->status = "failed";
      r->reason = what + " " + std::to_string(n) +
                  " times, more than executor.max_retries = " +
                  std::to_string(cfg_.executor.max_retries) +
                  (timeout ? ": raise executor.time" : "");
    }
    r->finished_at = store::NowIso8601();
    KeepError(db_.UpsertRun(*r).status());
    // The count after the record: a manager killed between the two writes leaves one
    // interruption uncounted (one retry more), never the ended task adopted and counted twice.
    KeepError(WriteFileAtomic(counts_path, counts.dump() + "\n"));
    const Cell& cell = *cells_[job.key];
    display_.Event((retry ? "requeue " : "FAIL   ") + job.key + "  C=" +
                   Fmt("%.3g", cell.budget_flops) + "  " + cell.ShapeString() + "  " + r->reason);
    return retry;
  }

  // Lease renewal and the cancel flag; a lost lease stops this manager's runs.
  void Heartbeat() {
    Result<std::optional<store::SweepLease>> held = db_.RenewLease(lease_, UnixNow());
    KeepError(held.status());
    if (held.ok() && !*held) {
      KeepError(Status::FailedPrecondition(
          "lost the lease of sweep '" + cfg_.name +
          "' (another manager took it over, judging this one dead); stopped this manager's "
          "runs at a checkpoint"));
      RequestStop();
    } else if (held.ok() && (*held)->cancel_requested && !cancel_seen_) {
      cancel_seen_ = true;
      display_.Event("cancel requested: stopping every run at a checkpoint");
      RequestStop();
    }
  }

  void OnTick() {
    const double now = NowSeconds();
    if (now - last_renew_ >= opts_.heartbeat_seconds) {
      last_renew_ = now;
      Heartbeat();
    }
    if (now - last_ingest_ >= 1.0) {
      last_ingest_ = now;
      for (const auto& key : active_) {
        Result<IngestProgress> p = Ingest(&records_[key]);
        KeepError(p.status());
        if (p.ok() && p->new_rows > 0) live_[key] = *p;
      }
    }
    ShowProgress();
  }

  void ShowProgress() {
    std::vector<RunView> views;
    double remaining = 0;
    const std::map<std::string, std::string> queued = executor_.Queued();
    for (const auto& key : active_) {
      const Cell& cell = *cells_[key];
      RunView v;
      v.key = key;
      v.shape = cell.ShapeString();
      v.budget = cell.budget_flops;
      v.tokens_target = cell.tokens;
      v.tokens_done = records_[key].tokens_done;
      if (auto q = queued.find(key); q != queued.end()) v.queued = q->second;
      if (auto it = live_.find(key); it != live_.end()) {
        v.loss = it->second.train_loss;
        v.tokens_per_s = it->second.tokens_per_s;
      }
      remaining += (v.tokens_per_s && *v.tokens_per_s > 0)
                       ? (v.tokens_target - v.tokens_done) / *v.tokens_per_s
                       : cell.est_seconds * calibration_;
      views.push_back(std::move(v));
    }
    for (const auto& [key, r] : records_) {
      const CellState s = StateOf(r);
      if (!active_.count(key) &&
          (s == CellState::kPlanned || s == CellState::kPreempted || s == CellState::kCancelled)) {
        remaining += cells_[key]->est_seconds * calibration_;
      }
    }
    display_.Update(views, done_count_, outcome_.cells, remaining / executor_.Parallelism());
  }

  // The end of the session: a cancel marks what did not end, the counts and the sweep status.
  Result<SweepOutcome> Close(bool interrupted) {
    if (!cancel_seen_) {
      // A cancel that arrived after the last heartbeat.
      ISOFLOP_ASSIGN_OR_RETURN(std::optional<store::SweepLease> held, db_.GetLease(sweep_id_));
      cancel_seen_ = held && held->cancel_requested && held->pid == lease_.pid;
    }
    outcome_.interrupted = interrupted && !cancel_seen_;
    outcome_.cancelled = cancel_seen_;
    for (auto& [key, r] : records_) {
      CellState s = StateOf(r);
      if (outcome_.cancelled && s != CellState::kFinished && s != CellState::kDiverged &&
          s != CellState::kFailed) {
        r.status = "cancelled";
        r.reason = "cancelled by `isoflop sweep cancel`";
        ISOFLOP_RETURN_IF_ERROR(db_.UpsertRun(r).status());
        s = CellState::kCancelled;
      }
      if (s == CellState::kRunning && active_.count(key)) ++outcome_.running;
      switch (s) {
        case CellState::kFinished:
          ++outcome_.finished;
          break;
        case CellState::kFailed:
          ++outcome_.failed;
          break;
        case CellState::kDiverged:
          ++outcome_.diverged;
          break;
        default:
          ++outcome_.pending;
          break;
      }
      if (s == CellState::kFailed || s == CellState::kDiverged) {
        const Cell& c = *cells_[key];
        outcome_.problems.push_back(key + "  C=" + Fmt("%.3g", c.budget_flops) + "  " +
                                    c.ShapeString() + "  " + r.status + ": " + r.reason);
      }
    }
    const std::string final_status = outcome_.cancelled     ? "cancelled"
                                     : outcome_.running > 0 ? "running"
                                     : outcome_.pending > 0 ? "planned"
                                     : outcome_.failed > 0  ? "failed"
                                                            : "finished";
    ISOFLOP_RETURN_IF_ERROR(db_.SetSweepStatus(sweep_id_, final_status));
    return outcome_;
  }

  store::Store& db_;
  const SweepConfig& cfg_;
  const Plan& plan_;
  Executor& executor_;
  const ManagerOptions& opts_;
  ProgressDisplay display_;
  const std::string host_;

  SweepOutcome outcome_;
  std::optional<store::SweepRecord> old_;  // the stored sweep before this session, if any
  int64_t sweep_id_ = 0;
  store::SweepLease lease_;  // sweep_id 0 until taken

  std::map<std::string, store::RunRecord> records_;  // by cell key: what the store says
  std::map<std::string, const Cell*> cells_;
  std::vector<Job> jobs_;  // handed to RunJobs

  std::set<std::string> active_;                // launched, not yet exited
  std::map<std::string, IngestProgress> live_;  // active runs' latest progress
  std::map<std::string, double> started_at_;
  double calibration_ = 1.0;  // measured / estimated seconds, from runs finished this session
  double measured_ = 0, estimated_ = 0;
  int done_count_ = 0;
  int adopted_ = 0;  // cells whose running job this session took over
  // The scheduler's live jobs of this sweep by run folder, looked up once at the start.
  std::map<std::string, std::string> live_jobs_;
  Status callback_error_;
  double last_ingest_ = 0, last_renew_ = NowSeconds();
  bool cancel_seen_ = false;
};

}  // namespace

Result<SweepOutcome> RunSweep(store::Store& db, const SweepConfig& cfg, const Plan& plan,
                              Executor& executor, const ManagerOptions& opts) {
  SweepSession session(db, cfg, plan, executor, opts);
  return session.Run();
}

Result<SweepOutcome> RunSweep(store::Store& db, const SweepConfig& cfg, const Plan& plan,
                              const Resources& res, const ManagerOptions& opts) {
  LocalExecutor executor(opts.train_binary, res);
  return RunSweep(db, cfg, plan, executor, opts);
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
    r.peak_memory = 0;  // measured afresh
    r.peak_memory_of.clear();
    ISOFLOP_RETURN_IF_ERROR(db.UpsertRun(r).status());
    ++n;
  }
  ISOFLOP_RETURN_IF_ERROR(txn.Commit());
  return n;
}

Result<CancelOutcome> CancelSweep(store::Store& db, const std::string& sweep_name,
                                  const std::map<std::string, std::string>& live_jobs) {
  CancelOutcome out;
  ISOFLOP_ASSIGN_OR_RETURN(auto sweep, db.GetSweep(sweep_name));
  if (!sweep) return Status::NotFound("no sweep named '" + sweep_name + "' in " + db.path());
  ISOFLOP_ASSIGN_OR_RETURN(store::Transaction txn, db.Begin());
  ISOFLOP_ASSIGN_OR_RETURN(std::optional<store::SweepLease> held, db.GetLease(sweep->id));
  if (held && LeaseIsLive(*held)) {
    // The running manager is the store's writer: ask it to stop (it sees the flag at its next
    // heartbeat, stops its runs at a checkpoint and marks the rest cancelled).
    // The sweep reads cancelled at once, so the cancel stands even if that manager dies before
    // it sees the flag: `sweep sync` then submits nothing (its own end overwrites the status).
    ISOFLOP_RETURN_IF_ERROR(db.RequestCancel(sweep->id).status());
    ISOFLOP_RETURN_IF_ERROR(db.SetSweepStatus(sweep->id, "cancelled"));
    ISOFLOP_RETURN_IF_ERROR(txn.Commit());
    out.manager_pid = static_cast<int>(held->pid);
    return out;
  }
  if (held) ISOFLOP_RETURN_IF_ERROR(db.ReleaseLease(*held));  // a dead manager's
  store::RunFilter f;
  f.sweep_name = sweep_name;
  ISOFLOP_ASSIGN_OR_RETURN(auto runs, db.ListRuns(f));
  // A detached sweep's jobs are the scheduler's: cancel them there too.
  std::vector<std::string>& slurm_jobs = out.scancelled;
  for (const auto& r : runs) {
    if (r.status == "running" && r.job_id.rfind("slurm:", 0) == 0)
      slurm_jobs.push_back(r.job_id.substr(6));
  }
  for (const auto& [dir, id] : live_jobs) {
    if (id.rfind("slurm:", 0) == 0 &&
        std::find(slurm_jobs.begin(), slurm_jobs.end(), id.substr(6)) == slurm_jobs.end())
      slurm_jobs.push_back(id.substr(6));
  }
  // The store says cancelled before the scheduler is told: a cancel killed in between leaves a
  // cancelled sweep whose tasks still run (`sweep sync` submits nothing for it and names them,
  // a second cancel stops them), never tasks killed under a sweep that still reads "running",
  // which the next sync would resume.
  std::vector<store::RunRecord*> to_cancel;
  for (auto& r : runs) {
    if (Terminal(r.status) || r.status == "failed") continue;
    if (r.status == "running") {
      // A detached run that ended before the cancel keeps its verdict: the next sync ingests it.
      Result<std::optional<RunStatusFile>> st = ReadRunStatus(r.run_dir);
      if (st.ok() && *st && ((*st)->state == "finished" || (*st)->state == "diverged")) continue;
    }
    to_cancel.push_back(&r);
  }
  // A sweep that ended (every cell finished, diverged or failed) has nothing to stop: it keeps
  // its status, so `isoflop sweeps` does not call a finished sweep cancelled.
  if (to_cancel.empty() && slurm_jobs.empty() &&
      (sweep->status == "finished" || sweep->status == "failed")) {
    ISOFLOP_RETURN_IF_ERROR(txn.Commit());
    out.ended = sweep->status;
    return out;
  }
  for (store::RunRecord* r : to_cancel) {
    r->status = "cancelled";
    r->reason = "cancelled by `isoflop sweep cancel`";
    ISOFLOP_RETURN_IF_ERROR(db.UpsertRun(*r).status());
  }
  ISOFLOP_RETURN_IF_ERROR(db.SetSweepStatus(sweep->id, "cancelled"));
  ISOFLOP_RETURN_IF_ERROR(txn.Commit());
  if (Status st = Scancel(slurm_jobs, /*signal_only=*/false); !st.ok()) {
    return Status::IoError(st.message() + "; sweep " + sweep_name +
                           " is marked cancelled, but its SLURM tasks may still run: run "
                           "`isoflop sweep cancel " +
                           sweep_name + "` again");
  }
  return out;
}

}  // namespace isoflop::sweep
