// The isoflop run store: one SQLite file holding sweeps, runs, per-step metrics, fits and
// imported observations. The sweep manager is its single writer; readers (queries, plots,
// another `isoflop` process) may read at the same time (WAL mode).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "isoflop/common/status.h"

struct sqlite3;

namespace isoflop::store {

class Statement;

// The schema version this binary writes. A file with a larger user_version is refused.
inline constexpr int kSchemaVersion = 10;

struct OpenOptions {
  bool create_if_missing = true;  // false: NotFound when the file does not exist
  bool read_only = false;         // open without write access (no migration is applied)
  int busy_timeout_ms = 10000;    // how long a statement waits for another writer's lock
};

struct SweepRecord {
  int64_t id = 0;           // assigned by the store
  std::string name;         // unique
  std::string file_path;    // the sweep file it came from (as given)
  std::string config_text;  // the file's full text
  std::string config_hash;  // hex hash of config_text
  std::string status;       // planned | running | finished | cancelled | failed
  std::string created_at;   // ISO-8601 UTC, set by the store on insert
  std::string updated_at;
  std::string overrides_json = "[]";  // the `--set key=value` overrides, a JSON array of strings
  std::string base_dir{};  // where it was first run: its relative data paths resolve against it
};

// The one manager that drives a sweep (DESIGN.md: a lease in the store, not a lock file beside
// the runs, so two managers from two working directories cannot both drive it). Plain value.
struct SweepLease {
  int64_t sweep_id = 0;
  std::string host;               // where the manager runs
  int64_t pid = 0;                // its pid on that host
  std::string pid_start;          // its start id (common/process.h ProcessStartId): pid reuse
  std::string started_at;         // ISO-8601 UTC
  double heartbeat_unix = 0;      // seconds since the epoch of the last renewal
  bool cancel_requested = false;  // `isoflop sweep cancel` asked the holder to stop
};

// What a scan of a token file found (trainer/data.h SummarizeTokenFile), kept so that a sweep
// reading a file of billions of tokens scans it once, not at every `sweep run`. Plain value.
struct TokenFileRecord {
  std::string path;          // absolute
  std::string format;        // "bin" or "llmc"
  std::string identity;      // the file when scanned: "device:inode:size:mtime_ns:ctime_ns"
  int64_t tokens = 0;        // tokens in the file
  int64_t max_id = 0;        // the largest token id
  int64_t max_at = -1;       // the first token index holding it; -1 for an empty file
  double scan_seconds = 0;   // how long the scan took
  std::string scanned_at{};  // ISO-8601 UTC
};

// One sweep cell = one training run. Every parameter-count and FLOP convention is stored.
struct RunRecord {
  int64_t id = 0;
  int64_t sweep_id = 0;
  std::string cell_key;            // stable hash of the resolved cell config, unique within a sweep
  std::string status = "planned";  // planned|running|finished|failed|diverged|preempted|cancelled
  // Model shape.
  std::string family = "dense";
  int n_layer = 0, d_model = 0, n_head = 0, d_ff = 0, vocab_size = 0, seq_len = 0;
  int n_experts = 0, top_k = 0;  // 0 for dense models; top_k is the effective (x G) one
  // Mixture-of-Experts settings (0 / "" for dense): the raw values, so every MoE law's variable
  // can be derived (Krajewski's E is expansion_rate, Clark's E is n_experts).
  double granularity = 0;  // G of Krajewski et al. 2024; 0 = not split
  int n_shared_experts = 0, expert_d_ff = 0;
  std::string router;         // softmax | sigmoid
  double expansion_rate = 0;  // routed expert parameters / the dense MLP's, per MoE layer
  std::string moe_json;       // run.json's model.moe object
  // Parameter counts.
  int64_t n_total = 0, n_non_embedding = 0, n_active = 0;
  // Training FLOPs per token under each convention (see trainer/accounting.h).
  double flops_per_token_6n = 0, flops_per_token_6n_attn = 0, flops_per_token_chinchilla = 0;
  // Budget.
  double budget_flops = 0;    // the sweep budget C this cell belongs to
  int64_t target_tokens = 0;  // D
  double target_flops = 0;    // D * flops_per_token_6n
  int64_t seed = 0;
  std::string config_json;  // the run.json text
  std::string run_dir;
  int attempts = 0;
  std::optional<int> exit_code;
  std::string reason;
  std::string host, devices, job_id;
  // The last worker process launched for this run (on `host`): a new manager waits for it, or
  // stops it, before it launches the cell again. 0 / "" when none was recorded.
  int64_t worker_pid = 0;
  std::string worker_start;  // common/process.h ProcessStartId of worker_pid
  std::optional<double> final_val_loss, final_train_loss;
  int64_t tokens_done = 0;
  int64_t ingest_offset = 0;           // bytes of metrics.jsonl already ingested
  std::string ingest_file;  // that file's "device:inode" ("" before anything was ingested)
  std::optional<double> data_entropy;  // nats/token when the data source knows it
  std::string created_at, started_at, finished_at;
  // Memory: the plan's estimate the scheduler packed the run by (bytes, 0 before its first
  // launch) and the largest peak its workers measured, over its attempts and ranks
  // (status.json; 0 and "" until one reported; peak_memory_of "host_rss" or "cuda_reserved",
  // docs/run-protocol.md).
  int64_t memory_estimate = 0, peak_memory = 0;
  std::string peak_memory_of{};
};

struct MetricRow {
  int64_t step = 0;
  int64_t tokens = 0;
  double flops = 0;
  std::optional<double> train_loss, val_loss, lr, grad_norm, tokens_per_s, wall_s;
  std::vector<std::pair<std::string, double>> extra;  // named metrics (e.g. MoE router loss)
};

struct FitRecord {
  int64_t id = 0;
  std::string created_at;
  std::string source_kind;           // sweep | observations | csv
  std::string source_name;           // sweep name, observation set name, or CSV path
  std::string method;                // parametric | isoflop | envelope
  std::string form;                  // chinchilla | kaplan | moe (empty for non-parametric methods)
  std::string convention = "total";  // parameter-count convention
  std::string flops_convention = "6nd";  // compute convention
  std::string params_json = "{}";
  std::string ci_json = "{}";
  std::optional<double> objective;
  int64_t n_points = 0;
  std::string result_json = "{}";
  std::string options_json = "{}";
};

struct Observation {
  double n = 0, d = 0, c = 0, loss = 0;
  int64_t line = 0;  // line in the source file (0 when not from a file)
  // Mixture-of-Experts granularity G (Krajewski et al. 2024), > 0 when recorded; nullopt when
  // the source had none (dense models, or data without a G column). Stored as NULL.
  std::optional<double> g;
  // The nominal isoFLOP budget (FLOPs) the run was planned at, when the source records one (a
  // budget column); nullopt otherwise. Stored as NULL.
  std::optional<double> budget;
};

struct ObservationSet {
  int64_t id = 0;
  std::string name, source_file, created_at;
  int64_t n_points = 0;
};

struct DbInfo {
  std::string path;
  int schema_version = 0;
  int64_t sweeps = 0, runs = 0, metrics = 0, fits = 0, observation_sets = 0, observations = 0;
  std::string journal_mode;
};

struct RunFilter {
  std::optional<std::string> sweep_name;  // only runs of this sweep
  std::optional<std::string> status;      // only runs with this status
};

class Store;

// RAII transaction: BEGIN IMMEDIATE on creation, ROLLBACK on destruction unless Commit()
// succeeded. Obtain from Store::Begin(). Not thread-safe; at most one live per Store.
class Transaction {
 public:
  Transaction(Transaction&& other) noexcept;
  Transaction& operator=(Transaction&&) = delete;
  ~Transaction();
  Status Commit();

 private:
  friend class Store;
  explicit Transaction(Store* store) : store_(store) {}
  Store* store_;
  bool active_ = true;
};

// A handle to one store file. Not thread-safe: use one Store per thread or process.
// Every method returns a non-ok Status on SQLite errors, naming the file.
class Store {
 public:
  // Opens (creating and migrating as needed) the store at `path`. Errors: NotFound when
  // missing and !create_if_missing; Corrupt when the file is not an isoflop database;
  // FailedPrecondition when its schema is newer than this binary's.
  static Result<std::unique_ptr<Store>> Open(const std::string& path,
                                             const OpenOptions& options = {});
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const std::string& path() const { return path_; }
  // True when the store was opened read-only: asked for, or because the file or its folder is
  // not writable (then every write fails with an error naming the file).
  bool read_only() const { return read_only_; }
  Result<DbInfo> Info();

  // Starts a write transaction (BEGIN IMMEDIATE). Methods below that write several rows use
  // their own transaction unless one is already open, in which case they join it.
  Result<Transaction> Begin();

  // Sweeps. UpsertSweep inserts or updates by name and returns the id.
  Result<int64_t> UpsertSweep(const SweepRecord& sweep);
  Result<std::optional<SweepRecord>> GetSweep(const std::string& name);
  Result<std::vector<SweepRecord>> ListSweeps();
  Status SetSweepStatus(int64_t sweep_id, const std::string& status);

  // Sweep leases: the policy (who may take one over) is the sweep manager's; these are the
  // rows. PutLease inserts or replaces. RenewLease sets the heartbeat when `mine` (host, pid,
  // pid_start) still holds the lease and returns the row (with cancel_requested), nullopt when
  // someone else holds it or none exists. ReleaseLease deletes it only when it is `mine`.
  // RequestCancel sets cancel_requested and returns whether a lease existed.
  Result<std::optional<SweepLease>> GetLease(int64_t sweep_id);
  Status PutLease(const SweepLease& lease);
  Result<std::optional<SweepLease>> RenewLease(const SweepLease& mine, double now_unix);
  Status ReleaseLease(const SweepLease& mine);
  Result<bool> RequestCancel(int64_t sweep_id);

  // Token-file scans, by (path, format). The caller compares the identity with the file's.
  Result<std::optional<TokenFileRecord>> GetTokenFile(const std::string& path,
                                                      const std::string& format);
  Status PutTokenFile(const TokenFileRecord& record);  // inserts or replaces

  // Runs. UpsertRun inserts or updates by (sweep_id, cell_key) and returns the id.
  Result<int64_t> UpsertRun(const RunRecord& run);
  Result<std::optional<RunRecord>> GetRun(int64_t run_id);
  Result<std::vector<RunRecord>> ListRuns(const RunFilter& filter = {});
  Status DeleteRun(int64_t run_id);  // with its metrics

  // Metrics: upsert by (run_id, step), so ingesting the same lines twice changes nothing.
  // All rows go in one transaction (joined if one is open).
  Status UpsertMetrics(int64_t run_id, const std::vector<MetricRow>& rows);
  // Removes the run's rows (and their extras) with a step above `step`.
  Status DeleteMetricsAfter(int64_t run_id, int64_t step);
  // Every row of the run by step; with kOmit, no named extras (MetricRow::extra stays empty):
  // an MoE run logs about 70 a step, so a curve that needs none reads 70x fewer rows.
  enum class Extras { kInclude, kOmit };
  Result<std::vector<MetricRow>> GetMetrics(int64_t run_id, Extras extras = Extras::kInclude);
  Result<int64_t> CountMetrics(int64_t run_id);
  // The run's row with the largest step (no named extras), nullopt when it has none: what a
  // progress display needs (tokens/s now) without reading every row of a long run.
  Result<std::optional<MetricRow>> LatestMetric(int64_t run_id);
  // The named extras of the largest step that has any, by name (empty when none): a run's final
  // router statistics without reading its whole history.
  Result<std::vector<std::pair<std::string, double>>> LatestExtras(int64_t run_id);

  // Fits.
  Result<int64_t> InsertFit(const FitRecord& fit);
  Result<std::vector<FitRecord>> ListFits();
  Result<std::optional<FitRecord>> GetFit(int64_t id);
  // The newest fit for a source and method (form empty = any form).
  Result<std::optional<FitRecord>> LatestFit(const std::string& source_kind,
                                             const std::string& source_name,
                                             const std::string& method,
                                             const std::string& form = "");

  // Observations imported from outside. Fails with InvalidArgument if `name` exists, unless
  // replace is true. All points go in one transaction: never a partial set.
  Result<int64_t> ImportObservations(const std::string& name, const std::string& source_file,
                                     const std::vector<Observation>& points, bool replace);
  Result<std::vector<ObservationSet>> ListObservationSets();
  // NotFound when the set does not exist.
  Result<std::vector<Observation>> GetObservations(const std::string& name);

 private:
  friend class Transaction;
  Store(sqlite3* db, std::string path);
  Status Exec(const std::string& sql);
  Status Migrate();
  // A cached statement, reset (releasing its read snapshot) when the handle goes away.
  class StmtRef {
   public:
    explicit StmtRef(Statement* s) : s_(s) {}
    StmtRef(StmtRef&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
    StmtRef& operator=(StmtRef&&) = delete;
    ~StmtRef();
    Statement* operator->() const { return s_; }
    Statement& operator*() const { return *s_; }

   private:
    Statement* s_;
  };
  Result<StmtRef> Prepare(const std::string& sql);  // cached; owned by the Store
  Status Error(const std::string& what);
  // Runs `body` inside the open transaction or a new one.
  template <typename F>
  Status InTransaction(F&& body);

  sqlite3* db_;
  std::string path_;
  bool in_transaction_ = false;
  bool read_only_ = false;
  int busy_timeout_ms_ = 0;  // how long a statement waited for the write lock before failing
  struct Cache;
  std::unique_ptr<Cache> cache_;
};

// Current UTC time as ISO-8601 ("2026-11-29T09:16:44Z").
std::string NowIso8601();

}  // namespace isoflop::store
