// The SQLite-backed run store: opening, versioned migrations, and typed reads and writes of
// sweeps, runs, metrics, fits and observations. Statements are prepared once per Store and
// reused; every multi-row write is one transaction.
#include "isoflop/store/store.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <utility>

#include "isoflop/common/files.h"
#include "statement.h"

namespace isoflop::store {

struct Store::Cache {
  std::map<std::string, std::unique_ptr<Statement>> statements;
};

namespace {

// Schema version 1: the first release. Kept verbatim: files created by it are upgraded by
// the later steps, never recreated.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE sweeps (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  file_path TEXT NOT NULL DEFAULT '',
  config_text TEXT NOT NULL DEFAULT '',
  config_hash TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL DEFAULT 'planned',
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE runs (
  id INTEGER PRIMARY KEY,
  sweep_id INTEGER NOT NULL REFERENCES sweeps(id) ON DELETE CASCADE,
  cell_key TEXT NOT NULL,
  status TEXT NOT NULL,
  family TEXT NOT NULL,
  n_layer INTEGER, d_model INTEGER, n_head INTEGER, d_ff INTEGER,
  vocab_size INTEGER, seq_len INTEGER, n_experts INTEGER, top_k INTEGER,
  n_total INTEGER, n_non_embedding INTEGER, n_active INTEGER,
  flops_per_token_6n REAL, flops_per_token_6n_attn REAL, flops_per_token_chinchilla REAL,
  budget_flops REAL, target_tokens INTEGER, target_flops REAL, seed INTEGER,
  config_json TEXT NOT NULL DEFAULT '', run_dir TEXT NOT NULL DEFAULT '',
  attempts INTEGER NOT NULL DEFAULT 0, exit_code INTEGER, reason TEXT NOT NULL DEFAULT '',
  host TEXT NOT NULL DEFAULT '', devices TEXT NOT NULL DEFAULT '',
  job_id TEXT NOT NULL DEFAULT '',
  final_val_loss REAL, final_train_loss REAL,
  tokens_done INTEGER NOT NULL DEFAULT 0, ingest_offset INTEGER NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL, started_at TEXT NOT NULL DEFAULT '',
  finished_at TEXT NOT NULL DEFAULT '',
  UNIQUE (sweep_id, cell_key)
);
CREATE TABLE metrics (
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  step INTEGER NOT NULL,
  tokens INTEGER NOT NULL,
  flops REAL NOT NULL,
  train_loss REAL, val_loss REAL, lr REAL, grad_norm REAL, tokens_per_s REAL, wall_s REAL,
  PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
CREATE TABLE fits (
  id INTEGER PRIMARY KEY,
  created_at TEXT NOT NULL,
  source_kind TEXT NOT NULL,
  source_name TEXT NOT NULL,
  method TEXT NOT NULL,
  form TEXT NOT NULL DEFAULT '',
  convention TEXT NOT NULL,
  flops_convention TEXT NOT NULL,
  params_json TEXT NOT NULL,
  ci_json TEXT NOT NULL,
  objective REAL,
  n_points INTEGER NOT NULL,
  result_json TEXT NOT NULL
);
CREATE TABLE observation_sets (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  source_file TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE TABLE observations (
  set_id INTEGER NOT NULL REFERENCES observation_sets(id) ON DELETE CASCADE,
  idx INTEGER NOT NULL,
  n REAL NOT NULL, d REAL NOT NULL, c REAL NOT NULL, loss REAL NOT NULL,
  line INTEGER NOT NULL,
  PRIMARY KEY (set_id, idx)
) WITHOUT ROWID;
CREATE INDEX runs_by_status ON runs(sweep_id, status);
)sql";

// Version 2: named extra metrics (MoE router losses and the like), the data source's known
// entropy per run (ground truth E for synthetic data), and the options a fit ran with.
constexpr const char* kSchemaV2 = R"sql(
CREATE TABLE metric_extras (
  run_id INTEGER NOT NULL,
  step INTEGER NOT NULL,
  name TEXT NOT NULL,
  value REAL NOT NULL,
  PRIMARY KEY (run_id, step, name),
  FOREIGN KEY (run_id, step) REFERENCES metrics(run_id, step) ON DELETE CASCADE
) WITHOUT ROWID;
ALTER TABLE runs ADD COLUMN data_entropy REAL;
ALTER TABLE fits ADD COLUMN options_json TEXT NOT NULL DEFAULT '{}';
CREATE INDEX fits_by_source ON fits(source_kind, source_name, method, id);
)sql";

// Version 3: the Mixture-of-Experts granularity G of imported observations (Krajewski et al.
// 2024), NULL when the source had none, so `isoflop fit --form moe` can fit an imported set.
constexpr const char* kSchemaV3 = R"sql(
ALTER TABLE observations ADD COLUMN g REAL;
)sql";

// Version 4: one manager per sweep, whatever its working directory (a lease: host, pid and
// the pid's start time, and a heartbeat); each run's last worker process, so a new manager can
// wait for or stop the orphan of a killed one before relaunching the cell; `--set` overrides
// as data (a JSON array) instead of comment lines appended to the stored file text.
constexpr const char* kSchemaV4 = R"sql(
CREATE TABLE sweep_leases (
  sweep_id INTEGER PRIMARY KEY REFERENCES sweeps(id) ON DELETE CASCADE,
  host TEXT NOT NULL,
  pid INTEGER NOT NULL,
  pid_start TEXT NOT NULL,
  started_at TEXT NOT NULL,
  heartbeat_unix REAL NOT NULL,
  cancel_requested INTEGER NOT NULL DEFAULT 0
);
ALTER TABLE runs ADD COLUMN worker_pid INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN worker_start TEXT NOT NULL DEFAULT '';
ALTER TABLE sweeps ADD COLUMN overrides_json TEXT NOT NULL DEFAULT '[]';
)sql";

// Version 5: a Mixture-of-Experts run's settings beside n_experts and top_k, so every MoE
// law's variables can be derived from the store: granularity G (Krajewski et al. 2024), shared
// experts, the expert hidden size, the router, the expansion rate (expert parameters over the
// dense MLP's: Krajewski's E) and the whole moe block as run.json has it.
constexpr const char* kSchemaV5 = R"sql(
ALTER TABLE runs ADD COLUMN granularity REAL NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN n_shared_experts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN expert_d_ff INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN router TEXT NOT NULL DEFAULT '';
ALTER TABLE runs ADD COLUMN expansion_rate REAL NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN moe_json TEXT NOT NULL DEFAULT '';
)sql";

// Version 6: an imported observation's nominal isoFLOP budget (a file's budget column), which
// the isoFLOP fit groups by: real files' 6ND differ from it by up to ±35%.
constexpr const char* kSchemaV6 = R"sql(
ALTER TABLE observations ADD COLUMN budget REAL;
)sql";

// Version 7: the directory a sweep was first run from, against which its file's relative data
// paths resolve on every later run, retry and sync (from any directory).
constexpr const char* kSchemaV7 = R"sql(
ALTER TABLE sweeps ADD COLUMN base_dir TEXT NOT NULL DEFAULT '';
)sql";

// Version 8: which metrics.jsonl the ingest offset counts bytes of ("device:inode"): the
// trainer truncates it on resume by writing a new file, whose line starts can fall where the
// old offset does, so the offset alone cannot tell the file was rewritten.
constexpr const char* kSchemaV8 = R"sql(
ALTER TABLE runs ADD COLUMN ingest_file TEXT NOT NULL DEFAULT '';
)sql";

// Version 9: what a scan of each token file a sweep reads found (its largest id, and where),
// so the manager refuses a vocabulary too small for the data before launching any run, and
// scans a file of billions of tokens once, not at every run, retry and sync.
constexpr const char* kSchemaV9 = R"sql(
CREATE TABLE token_files (
  path TEXT NOT NULL,
  format TEXT NOT NULL,
  identity TEXT NOT NULL,
  tokens INTEGER NOT NULL,
  max_id INTEGER NOT NULL,
  max_at INTEGER NOT NULL,
  scan_seconds REAL NOT NULL,
  scanned_at TEXT NOT NULL,
  PRIMARY KEY (path, format)
) WITHOUT ROWID;
)sql";

// Version 10: each run's memory, as estimated for the scheduler and as its worker measured it.
constexpr const char* kSchemaV10 = R"sql(
ALTER TABLE runs ADD COLUMN memory_estimate INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN peak_memory INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN peak_memory_of TEXT NOT NULL DEFAULT '';
)sql";

const char* const kMigrations[] = {kSchemaV1, kSchemaV2, kSchemaV3, kSchemaV4, kSchemaV5,
                                   kSchemaV6, kSchemaV7, kSchemaV8, kSchemaV9, kSchemaV10};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == kSchemaVersion);

}  // namespace

std::string NowIso8601() {
  std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Transaction::Transaction(Transaction&& other) noexcept
    : store_(other.store_), active_(other.active_) {
  other.active_ = false;
}

Transaction::~Transaction() {
  if (active_) {
    sqlite3_exec(store_->db_, "ROLLBACK", nullptr, nullptr, nullptr);
    store_->in_transaction_ = false;
  }
}

Status Transaction::Commit() {
  if (!active_) return Status::Internal("transaction already finished");
  Status st = store_->Exec("COMMIT");
  if (!st.ok()) return st;  // still active: the destructor rolls back
  active_ = false;
  store_->in_transaction_ = false;
  return Status::Ok();
}

Store::Store(sqlite3* db, std::string path)
    : db_(db), path_(std::move(path)), cache_(std::make_unique<Cache>()) {}

Store::~Store() {
  cache_.reset();  // finalize statements before closing
  sqlite3_close(db_);
}

// SQLite's "database is locked" says nothing of what to do. The lock is another process's write
// transaction, held past the busy timeout: a live writer holds it for milliseconds, so one held
// this long belongs to a process that is stopped (Ctrl-Z, SIGSTOP, a debugger) or hung.
static std::string LockedMessage(const std::string& path, int waited_ms) {
  char waited[32];
  std::snprintf(waited, sizeof(waited), "%g s", waited_ms / 1000.0);
  return path + ": database is locked: another process has held its write lock for over " + waited +
         " (a stopped or hung isoflop? `fuser " + path + "` names it); try again once it lets go";
}

Status Store::Error(const std::string& what) {
  int code = sqlite3_errcode(db_);
  std::string msg = path_ + ": " + what + ": " + sqlite3_errmsg(db_);
  if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT) {
    return Status::Corrupt(path_ + ": not a readable isoflop database (" + sqlite3_errmsg(db_) +
                           "); move it aside or pass another --db");
  }
  if (code == SQLITE_BUSY) return Status::IoError(LockedMessage(path_, busy_timeout_ms_));
  return Status::IoError(msg);
}

Status Store::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    int code = sqlite3_errcode(db_);
    if (code == SQLITE_NOTADB || code == SQLITE_CORRUPT || code == SQLITE_BUSY) {
      return Error("reading");
    }
    return Status::IoError(path_ + ": " + msg);
  }
  return Status::Ok();
}

Store::StmtRef::~StmtRef() {
  if (s_) s_->Reset();
}

Result<Store::StmtRef> Store::Prepare(const std::string& sql) {
  auto it = cache_->statements.find(sql);
  if (it != cache_->statements.end()) {
    it->second->Reset();
    return StmtRef(it->second.get());
  }
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v3(db_, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr) !=
      SQLITE_OK) {
    return Error("preparing a statement");
  }
  auto stmt = std::make_unique<Statement>(raw);
  Statement* p = stmt.get();
  cache_->statements.emplace(sql, std::move(stmt));
  return StmtRef(p);
}

Result<Transaction> Store::Begin() {
  if (in_transaction_) return Status::Internal("a transaction is already open on this store");
  ISOFLOP_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE"));
  in_transaction_ = true;
  return Transaction(this);
}

template <typename F>
Status Store::InTransaction(F&& body) {
  if (in_transaction_) return body();
  ISOFLOP_ASSIGN_OR_RETURN(Transaction txn, Begin());
  ISOFLOP_RETURN_IF_ERROR(body());
  return txn.Commit();
}

Result<std::unique_ptr<Store>> Store::Open(const std::string& path, const OpenOptions& options) {
  struct stat st {};
  bool exists = ::stat(path.c_str(), &st) == 0;
  if (!exists && (!options.create_if_missing || options.read_only)) {
    return Status::NotFound(path +
                            ": no such database (run a sweep or `isoflop import` first, "
                            "or pass --db)");
  }
  if (exists && S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument(path + ": is a directory, expected a database file");
  }
  // A store in a folder this process cannot write (a read-only mount, an archive) cannot get
  // its WAL files: it is opened read-only, and as immutable, which needs no -wal or -shm file.
  // Nobody can be writing it: a writer would need those files in the same folder.
  const size_t slash = path.rfind('/');
  const std::string folder = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const bool folder_writable = ::access(folder.c_str(), W_OK) == 0;
  const bool read_only =
      options.read_only || (exists && (!folder_writable || ::access(path.c_str(), W_OK) != 0));
  std::string target = path;
  int flags = read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
  if (read_only && !folder_writable) {
    target = "file:";
    for (const char c : path) {
      if (c == '%' || c == '?' || c == '#') {
        char buf[4];
        std::snprintf(buf, sizeof(buf), "%%%02X", static_cast<unsigned char>(c));
        target += buf;
      } else {
        target += c;
      }
    }
    target += "?immutable=1";
    flags |= SQLITE_OPEN_URI;
  }
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(target.c_str(), &db, flags | SQLITE_OPEN_NOMUTEX, nullptr) != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return Status::IoError(path + ": cannot open database: " + msg);
  }
  std::unique_ptr<Store> store(new Store(db, path));
  sqlite3_busy_timeout(db, options.busy_timeout_ms);
  store->busy_timeout_ms_ = options.busy_timeout_ms;
  sqlite3_extended_result_codes(db, 0);
  // The first read of the header tells a corrupt or foreign file apart.
  ISOFLOP_RETURN_IF_ERROR(store->Exec("PRAGMA foreign_keys = ON"));
  // What the file is, read before anything changes: a foreign SQLite file is refused as it is
  // (never switched to WAL first), a newer schema is refused, an older one is upgraded.
  int version = 0;
  std::string foreign_table;
  {
    ISOFLOP_ASSIGN_OR_RETURN(StmtRef q, store->Prepare("PRAGMA user_version"));
    if (q->Step() != SQLITE_ROW) return store->Error("reading the schema");
    version = static_cast<int>(q->Int(0));
  }
  {
    ISOFLOP_ASSIGN_OR_RETURN(
        StmtRef t, store->Prepare("SELECT name FROM sqlite_master WHERE type = 'table' LIMIT 1"));
    const int rc = t->Step();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return store->Error("reading the schema");
    if (rc == SQLITE_ROW && version == 0) foreign_table = t->Text(0);
  }
  if (!foreign_table.empty()) {
    return Status::Corrupt(path + ": an SQLite file that is not an isoflop database (has table '" +
                           foreign_table + "' but no isoflop schema version); left unchanged");
  }
  if (version > kSchemaVersion) {
    return Status::FailedPrecondition(
        path + ": database schema version " + std::to_string(version) +
        " is newer than this isoflop supports (" + std::to_string(kSchemaVersion) +
        "); upgrade isoflop or use another --db");
  }
  if (!read_only) {
    ISOFLOP_RETURN_IF_ERROR(store->Exec("PRAGMA journal_mode = WAL"));
    // Only an old schema takes the write lock (Migrate reads the version again under it, so two
    // processes upgrading at once upgrade once): opening a current store never waits on a writer.
    if (version < kSchemaVersion) ISOFLOP_RETURN_IF_ERROR(store->Migrate());
  } else if (version < kSchemaVersion) {
    return Status::FailedPrecondition(
        path + ": database schema version " + std::to_string(version) +
        " predates this isoflop's (" + std::to_string(kSchemaVersion) +
        "); it is upgraded the first time it is opened with write access" +
        (folder_writable ? "" : ", which its folder does not allow (copy it somewhere writable)"));
  }
  store->read_only_ = read_only;
  return store;
}

Status Store::Migrate() {
  ISOFLOP_ASSIGN_OR_RETURN(Transaction txn, Begin());
  ISOFLOP_ASSIGN_OR_RETURN(StmtRef q, Prepare("PRAGMA user_version"));
  if (q->Step() != SQLITE_ROW) return Error("reading the schema version");
  int version = static_cast<int>(q->Int(0));
  q->Reset();
  if (version > kSchemaVersion) {
    return Status::FailedPrecondition(
        path_ + ": database schema version " + std::to_string(version) +
        " is newer than this isoflop supports (" + std::to_string(kSchemaVersion) +
        "); upgrade isoflop or use another --db");
  }
  for (int v = version; v < kSchemaVersion; ++v) {
    ISOFLOP_RETURN_IF_ERROR(
        Exec(kMigrations[v]).WithPrefix("migrating to schema " + std::to_string(v + 1)));
  }
  if (version != kSchemaVersion) {
    ISOFLOP_RETURN_IF_ERROR(Exec("PRAGMA user_version = " + std::to_string(kSchemaVersion)));
  }
  return txn.Commit();
}

Result<DbInfo> Store::Info() {
  DbInfo info;
  info.path = path_;
  {
    ISOFLOP_ASSIGN_OR_RETURN(StmtRef q, Prepare("PRAGMA user_version"));
    if (q->Step() != SQLITE_ROW) return Error("reading the schema version");
    info.schema_version = static_cast<int>(q->Int(0));
  }
  {
    ISOFLOP_ASSIGN_OR_RETURN(StmtRef q, Prepare("PRAGMA journal_mode"));
    if (q->Step() == SQLITE_ROW) info.journal_mode = q->Text(0);
  }
  std::pair<const char*, int64_t*> counts[] = {{"sweeps", &info.sweeps},
                                               {"runs", &info.runs},
                                               {"metrics", &info.metrics},
                                               {"fits", &info.fits},
                                               {"observation_sets", &info.observation_sets},
                                               {"observations", &info.observations}};
  for (auto& [table, out] : counts) {
    ISOFLOP_ASSIGN_OR_RETURN(StmtRef q, Prepare(std::string("SELECT count(*) FROM ") + table));
    if (q->Step() != SQLITE_ROW) return Error(std::string("counting ") + table);
    *out = q->Int(0);
  }
  return info;
}

// ---------------------------------------------------------------------------------------
// Sweeps

namespace {
constexpr const char* kSweepColumns =
    "id, name, file_path, config_text, config_hash, status, created_at, updated_at, "
    "overrides_json, base_dir";

SweepRecord ReadSweep(const Statement& q) {
  SweepRecord s;
  s.id = q.Int(0);
  s.name = q.Text(1);
  s.file_path = q.Text(2);
  s.config_text = q.Text(3);
  s.config_hash = q.Text(4);
  s.status = q.Text(5);
  s.created_at = q.Text(6);
  s.updated_at = q.Text(7);
  s.overrides_json = q.Text(8);
  s.base_dir = q.Text(9);
  return s;
}
}  // namespace

Result<int64_t> Store::UpsertSweep(const SweepRecord& sweep) {
  std::string now = NowIso8601();
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q, Prepare("INSERT INTO sweeps (name, file_path, config_text, config_hash, status, "
                         "created_at, updated_at, overrides_json, base_dir) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8) "
                         "ON CONFLICT(name) DO UPDATE SET file_path = excluded.file_path, "
                         "config_text = excluded.config_text, config_hash = excluded.config_hash, "
                         "status = excluded.status, updated_at = excluded.updated_at, "
                         "overrides_json = excluded.overrides_json, base_dir = excluded.base_dir "
                         "RETURNING id"));
  q->Bind(1, sweep.name);
  q->Bind(2, sweep.file_path);
  q->Bind(3, sweep.config_text);
  q->Bind(4, sweep.config_hash);
  q->Bind(5, sweep.status.empty() ? std::string("planned") : sweep.status);
  q->Bind(6, now);
  q->Bind(7, sweep.overrides_json.empty() ? std::string("[]") : sweep.overrides_json);
  q->Bind(8, sweep.base_dir);
  if (q->Step() != SQLITE_ROW) return Error("writing sweep '" + sweep.name + "'");
  int64_t id = q->Int(0);
  q->Step();
  return id;
}

Result<std::optional<SweepRecord>> Store::GetSweep(const std::string& name) {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q, Prepare(std::string("SELECT ") + kSweepColumns + " FROM sweeps WHERE name = ?1"));
  q->Bind(1, name);
  int rc = q->Step();
  if (rc == SQLITE_DONE) return std::optional<SweepRecord>();
  if (rc != SQLITE_ROW) return Error("reading sweep '" + name + "'");
  return std::optional<SweepRecord>(ReadSweep(*q));
}

Result<std::vector<SweepRecord>> Store::ListSweeps() {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q, Prepare(std::string("SELECT ") + kSweepColumns + " FROM sweeps ORDER BY id"));
  std::vector<SweepRecord> out;
  int rc;
  while ((rc = q->Step()) == SQLITE_ROW) out.push_back(ReadSweep(*q));
  if (rc != SQLITE_DONE) return Error("listing sweeps");
  return out;
}

Status Store::SetSweepStatus(int64_t sweep_id, const std::string& status) {
  ISOFLOP_ASSIGN_OR_RETURN(StmtRef q,
                           Prepare("UPDATE sweeps SET status = ?2, updated_at = ?3 WHERE id = ?1"));
  q->Bind(1, sweep_id);
  q->Bind(2, status);
  q->Bind(3, NowIso8601());
  if (q->Step() != SQLITE_DONE) return Error("updating sweep status");
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------
// Sweep leases

namespace {
constexpr const char* kLeaseColumns =
    "sweep_id, host, pid, pid_start, started_at, heartbeat_unix, cancel_requested";

SweepLease ReadLease(const Statement& q) {
  SweepLease l;
  l.sweep_id = q.Int(0);
  l.host = q.Text(1);
  l.pid = q.Int(2);
  l.pid_start = q.Text(3);
  l.started_at = q.Text(4);
  l.heartbeat_unix = q.Double(5);
  l.cancel_requested = q.Int(6) != 0;
  return l;
}
}  // namespace

Result<std::optional<TokenFileRecord>> Store::GetTokenFile(const std::string& path,
                                                           const std::string& format) {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q, Prepare("SELECT identity, tokens, max_id, max_at, scan_seconds, scanned_at FROM "
                         "token_files WHERE path = ?1 AND format = ?2"));
  q->Bind(1, path);
  q->Bind(2, format);
  const int rc = q->Step();
  if (rc == SQLITE_DONE) return std::optional<TokenFileRecord>();
  if (rc != SQLITE_ROW) return Error("reading the scan of " + path);
  TokenFileRecord r;
  r.path = path;
  r.format = format;
  r.identity = q->Text(0);
  r.tokens = q->Int(1);
  r.max_id = q->Int(2);
  r.max_at = q->Int(3);
  r.scan_seconds = q->Double(4);
  r.scanned_at = q->Text(5);
  return std::optional<TokenFileRecord>(std::move(r));
}

Status Store::PutTokenFile(const TokenFileRecord& r) {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q,
      Prepare("INSERT OR REPLACE INTO token_files (path, format, identity, tokens, max_id, "
              "max_at, scan_seconds, scanned_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"));
  q->Bind(1, r.path);
  q->Bind(2, r.format);
  q->Bind(3, r.identity);
  q->Bind(4, r.tokens);
  q->Bind(5, r.max_id);
  q->Bind(6, r.max_at);
  q->Bind(7, r.scan_seconds);
  q->Bind(8, r.scanned_at.empty() ? NowIso8601() : r.scanned_at);
  if (q->Step() != SQLITE_DONE) return Error("recording the scan of " + r.path);
  return Status::Ok();
}

Result<std::optional<SweepLease>> Store::GetLease(int64_t sweep_id) {
  ISOFLOP_ASSIGN_OR_RETURN(StmtRef q, Prepare(std::string("SELECT ") + kLeaseColumns +
                                              " FROM sweep_leases WHERE sweep_id = ?1"));
  q->Bind(1, sweep_id);
  const int rc = q->Step();
  if (rc == SQLITE_DONE) return std::optional<SweepLease>();
  if (rc != SQLITE_ROW) return Error("reading the lease of sweep " + std::to_string(sweep_id));
  return std::optional<SweepLease>(ReadLease(*q));
}

Status Store::PutLease(const SweepLease& l) {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q, Prepare("INSERT OR REPLACE INTO sweep_leases (sweep_id, host, pid, pid_start, "
                         "started_at, heartbeat_unix, cancel_requested) VALUES (?1, ?2, ?3, ?4, "
                         "?5, ?6, ?7)"));
  q->Bind(1, l.sweep_id);
  q->Bind(2, l.host);
  q->Bind(3, l.pid);
  q->Bind(4, l.pid_start);
  q->Bind(5, l.started_at);
  q->Bind(6, l.heartbeat_unix);
  q->Bind(7, l.cancel_requested ? 1 : 0);
  if (q->Step() != SQLITE_DONE)
    return Error("writing the lease of sweep " + std::to_string(l.sweep_id));
  return Status::Ok();
}

Result<std::optional<SweepLease>> Store::RenewLease(const SweepLease& mine, double now_unix) {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q, Prepare(std::string("UPDATE sweep_leases SET heartbeat_unix = ?5 WHERE "
                                     "sweep_id = ?1 AND host = ?2 AND pid = ?3 AND pid_start = ?4 "
                                     "RETURNING ") +
                         kLeaseColumns));
  q->Bind(1, mine.sweep_id);
  q->Bind(2, mine.host);
  q->Bind(3, mine.pid);
  q->Bind(4, mine.pid_start);
  q->Bind(5, now_unix);
  const int rc = q->Step();
  if (rc == SQLITE_DONE) return std::optional<SweepLease>();
  if (rc != SQLITE_ROW)
    return Error("renewing the lease of sweep " + std::to_string(mine.sweep_id));
  SweepLease l = ReadLease(*q);
  q->Step();
  return std::optional<SweepLease>(l);
}

Status Store::ReleaseLease(const SweepLease& mine) {
  ISOFLOP_ASSIGN_OR_RETURN(StmtRef q,
                           Prepare("DELETE FROM sweep_leases WHERE sweep_id = ?1 AND host = ?2 AND "
                                   "pid = ?3 AND pid_start = ?4"));
  q->Bind(1, mine.sweep_id);
  q->Bind(2, mine.host);
  q->Bind(3, mine.pid);
  q->Bind(4, mine.pid_start);
  if (q->Step() != SQLITE_DONE)
    return Error("releasing the lease of sweep " + std::to_string(mine.sweep_id));
  return Status::Ok();
}

Result<bool> Store::RequestCancel(int64_t sweep_id) {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q, Prepare("UPDATE sweep_leases SET cancel_requested = 1 WHERE sweep_id = ?1"));
  q->Bind(1, sweep_id);
  if (q->Step() != SQLITE_DONE)
    return Error("asking sweep " + std::to_string(sweep_id) + " to cancel");
  return sqlite3_changes(db_) > 0;
}

// ---------------------------------------------------------------------------------------
// Runs

namespace {
constexpr const char* kRunColumns =
    "id, sweep_id, cell_key, status, family, n_layer, d_model, n_head, d_ff, vocab_size, "
    "seq_len, n_experts, top_k, n_total, n_non_embedding, n_active, flops_per_token_6n, "
    "flops_per_token_6n_attn, flops_per_token_chinchilla, budget_flops, target_tokens, "
    "target_flops, seed, config_json, run_dir, attempts, exit_code, reason, host, devices, "
    "job_id, final_val_loss, final_train_loss, tokens_done, ingest_offset, data_entropy, "
    "created_at, started_at, finished_at, worker_pid, worker_start, granularity, "
    "n_shared_experts, expert_d_ff, router, expansion_rate, moe_json, ingest_file, "
    "memory_estimate, peak_memory, peak_memory_of";

RunRecord ReadRun(const Statement& q) {
  RunRecord r;
  int c = 0;
  r.id = q.Int(c++);
  r.sweep_id = q.Int(c++);
  r.cell_key = q.Text(c++);
  r.status = q.Text(c++);
  r.family = q.Text(c++);
  r.n_layer = static_cast<int>(q.Int(c++));
  r.d_model = static_cast<int>(q.Int(c++));
  r.n_head = static_cast<int>(q.Int(c++));
  r.d_ff = static_cast<int>(q.Int(c++));
  r.vocab_size = static_cast<int>(q.Int(c++));
  r.seq_len = static_cast<int>(q.Int(c++));
  r.n_experts = static_cast<int>(q.Int(c++));
  r.top_k = static_cast<int>(q.Int(c++));
  r.n_total = q.Int(c++);
  r.n_non_embedding = q.Int(c++);
  r.n_active = q.Int(c++);
  r.flops_per_token_6n = q.Double(c++);
  r.flops_per_token_6n_attn = q.Double(c++);
  r.flops_per_token_chinchilla = q.Double(c++);
  r.budget_flops = q.Double(c++);
  r.target_tokens = q.Int(c++);
  r.target_flops = q.Double(c++);
  r.seed = q.Int(c++);
  r.config_json = q.Text(c++);
  r.run_dir = q.Text(c++);
  r.attempts = static_cast<int>(q.Int(c++));
  r.exit_code = q.OptInt(c++);
  r.reason = q.Text(c++);
  r.host = q.Text(c++);
  r.devices = q.Text(c++);
  r.job_id = q.Text(c++);
  r.final_val_loss = q.OptDouble(c++);
  r.final_train_loss = q.OptDouble(c++);
  r.tokens_done = q.Int(c++);
  r.ingest_offset = q.Int(c++);
  r.data_entropy = q.OptDouble(c++);
  r.created_at = q.Text(c++);
  r.started_at = q.Text(c++);
  r.finished_at = q.Text(c++);
  r.worker_pid = q.Int(c++);
  r.worker_start = q.Text(c++);
  r.granularity = q.Double(c++);
  r.n_shared_experts = static_cast<int>(q.Int(c++));
  r.expert_d_ff = static_cast<int>(q.Int(c++));
  r.router = q.Text(c++);
  r.expansion_rate = q.Double(c++);
  r.moe_json = q.Text(c++);
  r.ingest_file = q.Text(c++);
  r.memory_estimate = q.Int(c++);
  r.peak_memory = q.Int(c++);
  r.peak_memory_of = q.Text(c++);
  return r;
}
}  // namespace

Result<int64_t> Store::UpsertRun(const RunRecord& r) {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q,
      Prepare("INSERT INTO runs (sweep_id, cell_key, status, family, n_layer, d_model, n_head, "
              "d_ff, vocab_size, seq_len, n_experts, top_k, n_total, n_non_embedding, "
              "n_active, flops_per_token_6n, flops_per_token_6n_attn, "
              "flops_per_token_chinchilla, budget_flops, target_tokens, target_flops, seed, "
              "config_json, run_dir, attempts, exit_code, reason, host, devices, job_id, "
              "final_val_loss, final_train_loss, tokens_done, ingest_offset, data_entropy, "
              "created_at, started_at, finished_at, worker_pid, worker_start, granularity, "
              "n_shared_experts, expert_d_ff, router, expansion_rate, moe_json, ingest_file, "
              "memory_estimate, peak_memory, peak_memory_of) "
              "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, "
              "?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, "
              "?33, ?34, ?35, ?36, ?37, ?38, ?39, ?40, ?41, ?42, ?43, ?44, ?45, ?46, ?47, ?48, "
              "?49, ?50) "
              "ON CONFLICT(sweep_id, cell_key) DO UPDATE SET status = excluded.status, "
              "family = excluded.family, n_layer = excluded.n_layer, "
              "d_model = excluded.d_model, n_head = excluded.n_head, d_ff = excluded.d_ff, "
              "vocab_size = excluded.vocab_size, seq_len = excluded.seq_len, "
              "n_experts = excluded.n_experts, top_k = excluded.top_k, "
              "n_total = excluded.n_total, n_non_embedding = excluded.n_non_embedding, "
              "n_active = excluded.n_active, flops_per_token_6n = excluded.flops_per_token_6n, "
              "flops_per_token_6n_attn = excluded.flops_per_token_6n_attn, "
              "flops_per_token_chinchilla = excluded.flops_per_token_chinchilla, "
              "budget_flops = excluded.budget_flops, target_tokens = excluded.target_tokens, "
              "target_flops = excluded.target_flops, seed = excluded.seed, "
              "config_json = excluded.config_json, run_dir = excluded.run_dir, "
              "attempts = excluded.attempts, exit_code = excluded.exit_code, "
              "reason = excluded.reason, host = excluded.host, devices = excluded.devices, "
              "job_id = excluded.job_id, final_val_loss = excluded.final_val_loss, "
              "final_train_loss = excluded.final_train_loss, "
              "tokens_done = excluded.tokens_done, ingest_offset = excluded.ingest_offset, "
              "data_entropy = excluded.data_entropy, started_at = excluded.started_at, "
              "finished_at = excluded.finished_at, worker_pid = excluded.worker_pid, "
              "worker_start = excluded.worker_start, granularity = excluded.granularity, "
              "n_shared_experts = excluded.n_shared_experts, expert_d_ff = excluded.expert_d_ff, "
              "router = excluded.router, expansion_rate = excluded.expansion_rate, "
              "moe_json = excluded.moe_json, ingest_file = excluded.ingest_file, "
              "memory_estimate = excluded.memory_estimate, peak_memory = excluded.peak_memory, "
              "peak_memory_of = excluded.peak_memory_of RETURNING id"));
  int c = 1;
  q->Bind(c++, r.sweep_id);
  q->Bind(c++, r.cell_key);
  q->Bind(c++, r.status);
  q->Bind(c++, r.family);
  q->Bind(c++, r.n_layer);
  q->Bind(c++, r.d_model);
  q->Bind(c++, r.n_head);
  q->Bind(c++, r.d_ff);
  q->Bind(c++, r.vocab_size);
  q->Bind(c++, r.seq_len);
  q->Bind(c++, r.n_experts);
  q->Bind(c++, r.top_k);
  q->Bind(c++, r.n_total);
  q->Bind(c++, r.n_non_embedding);
  q->Bind(c++, r.n_active);
  q->Bind(c++, r.flops_per_token_6n);
  q->Bind(c++, r.flops_per_token_6n_attn);
  q->Bind(c++, r.flops_per_token_chinchilla);
  q->Bind(c++, r.budget_flops);
  q->Bind(c++, r.target_tokens);
  q->Bind(c++, r.target_flops);
  q->Bind(c++, r.seed);
  q->Bind(c++, r.config_json);
  q->Bind(c++, r.run_dir);
  q->Bind(c++, r.attempts);
  q->Bind(c++, r.exit_code);
  q->Bind(c++, r.reason);
  q->Bind(c++, r.host);
  q->Bind(c++, r.devices);
  q->Bind(c++, r.job_id);
  q->Bind(c++, r.final_val_loss);
  q->Bind(c++, r.final_train_loss);
  q->Bind(c++, r.tokens_done);
  q->Bind(c++, r.ingest_offset);
  q->Bind(c++, r.data_entropy);
  q->Bind(c++, r.created_at.empty() ? NowIso8601() : r.created_at);
  q->Bind(c++, r.started_at);
  q->Bind(c++, r.finished_at);
  q->Bind(c++, r.worker_pid);
  q->Bind(c++, r.worker_start);
  q->Bind(c++, r.granularity);
  q->Bind(c++, r.n_shared_experts);
  q->Bind(c++, r.expert_d_ff);
  q->Bind(c++, r.router);
  q->Bind(c++, r.expansion_rate);
  q->Bind(c++, r.moe_json);
  q->Bind(c++, r.ingest_file);
  q->Bind(c++, r.memory_estimate);
  q->Bind(c++, r.peak_memory);
  q->Bind(c++, r.peak_memory_of);
  if (q->Step() != SQLITE_ROW) return Error("writing run '" + r.cell_key + "'");
  int64_t id = q->Int(0);
  q->Step();
  return id;
}

Result<std::optional<RunRecord>> Store::GetRun(int64_t run_id) {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q, Prepare(std::string("SELECT ") + kRunColumns + " FROM runs WHERE id = ?1"));
  q->Bind(1, run_id);
  int rc = q->Step();
  if (rc == SQLITE_DONE) return std::optional<RunRecord>();
  if (rc != SQLITE_ROW) return Error("reading run " + std::to_string(run_id));
  return std::optional<RunRecord>(ReadRun(*q));
}

Result<std::vector<RunRecord>> Store::ListRuns(const RunFilter& filter) {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q,
      Prepare(std::string("SELECT ") + kRunColumns +
              " FROM runs WHERE (?1 IS NULL OR sweep_id = (SELECT id FROM sweeps WHERE name = "
              "?1)) AND (?2 IS NULL OR status = ?2) ORDER BY sweep_id, budget_flops, n_total, "
              "seed, id"));
  if (filter.sweep_name) q->Bind(1, *filter.sweep_name);
  if (filter.status) q->Bind(2, *filter.status);
  std::vector<RunRecord> out;
  int rc;
  while ((rc = q->Step()) == SQLITE_ROW) out.push_back(ReadRun(*q));
  if (rc != SQLITE_DONE) return Error("listing runs");
  return out;
}

Status Store::DeleteRun(int64_t run_id) {
  ISOFLOP_ASSIGN_OR_RETURN(StmtRef q, Prepare("DELETE FROM runs WHERE id = ?1"));
  q->Bind(1, run_id);
  if (q->Step() != SQLITE_DONE) return Error("deleting run " + std::to_string(run_id));
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------
// Metrics

Status Store::DeleteMetricsAfter(int64_t run_id, int64_t step) {
  ISOFLOP_ASSIGN_OR_RETURN(StmtRef q,
                           Prepare("DELETE FROM metrics WHERE run_id = ?1 AND step > ?2"));
  q->Bind(1, run_id);
  q->Bind(2, step);
  if (q->Step() != SQLITE_DONE)
    return Error("deleting metrics of run " + std::to_string(run_id) + " after step " +
                 std::to_string(step));
  return Status::Ok();
}

Status Store::UpsertMetrics(int64_t run_id, const std::vector<MetricRow>& rows) {
  return InTransaction([&]() -> Status {
    ISOFLOP_ASSIGN_OR_RETURN(
        StmtRef q,
        Prepare("INSERT INTO metrics (run_id, step, tokens, flops, train_loss, val_loss, lr, "
                "grad_norm, tokens_per_s, wall_s) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
                "?10) ON CONFLICT(run_id, step) DO UPDATE SET tokens = excluded.tokens, "
                "flops = excluded.flops, train_loss = excluded.train_loss, "
                "val_loss = excluded.val_loss, lr = excluded.lr, grad_norm = excluded.grad_norm, "
                "tokens_per_s = excluded.tokens_per_s, wall_s = excluded.wall_s"));
    for (const MetricRow& m : rows) {
      q->Reset();
      q->Bind(1, run_id);
      q->Bind(2, m.step);
      q->Bind(3, m.tokens);
      q->Bind(4, m.flops);
      q->Bind(5, m.train_loss);
      q->Bind(6, m.val_loss);
      q->Bind(7, m.lr);
      q->Bind(8, m.grad_norm);
      q->Bind(9, m.tokens_per_s);
      q->Bind(10, m.wall_s);
      if (q->Step() != SQLITE_DONE) {
        return Error("writing metrics of run " + std::to_string(run_id) + " step " +
                     std::to_string(m.step));
      }
      if (m.extra.empty()) continue;
      ISOFLOP_ASSIGN_OR_RETURN(
          StmtRef x,
          Prepare("INSERT INTO metric_extras (run_id, step, name, value) VALUES (?1, ?2, ?3, "
                  "?4) ON CONFLICT(run_id, step, name) DO UPDATE SET value = excluded.value"));
      for (const auto& [name, value] : m.extra) {
        x->Reset();
        x->Bind(1, run_id);
        x->Bind(2, m.step);
        x->Bind(3, name);
        x->Bind(4, value);
        if (x->Step() != SQLITE_DONE) return Error("writing metric '" + name + "'");
      }
    }
    return Status::Ok();
  });
}

namespace {
// A metrics row as GetMetrics and LatestMetric select it (step, tokens, flops, ... wall_s).
MetricRow MetricFromRow(const Statement& q) {
  MetricRow m;
  m.step = q.Int(0);
  m.tokens = q.Int(1);
  m.flops = q.Double(2);
  m.train_loss = q.OptDouble(3);
  m.val_loss = q.OptDouble(4);
  m.lr = q.OptDouble(5);
  m.grad_norm = q.OptDouble(6);
  m.tokens_per_s = q.OptDouble(7);
  m.wall_s = q.OptDouble(8);
  return m;
}
}  // namespace

Result<std::vector<MetricRow>> Store::GetMetrics(int64_t run_id, Extras extras) {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q,
      Prepare("SELECT step, tokens, flops, train_loss, val_loss, lr, grad_norm, tokens_per_s, "
              "wall_s FROM metrics WHERE run_id = ?1 ORDER BY step"));
  q->Bind(1, run_id);
  std::vector<MetricRow> out;
  int rc;
  while ((rc = q->Step()) == SQLITE_ROW) {
    out.push_back(MetricFromRow(*q));
  }
  if (rc != SQLITE_DONE) return Error("reading metrics");
  if (extras == Extras::kOmit) return out;
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef x,
      Prepare("SELECT step, name, value FROM metric_extras WHERE run_id = ?1 ORDER BY step, name"));
  x->Bind(1, run_id);
  size_t i = 0;
  while ((rc = x->Step()) == SQLITE_ROW) {
    int64_t step = x->Int(0);
    while (i < out.size() && out[i].step < step) ++i;
    if (i < out.size() && out[i].step == step) out[i].extra.emplace_back(x->Text(1), x->Double(2));
  }
  if (rc != SQLITE_DONE) return Error("reading extra metrics");
  return out;
}

Result<std::optional<MetricRow>> Store::LatestMetric(int64_t run_id) {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q,
      Prepare("SELECT step, tokens, flops, train_loss, val_loss, lr, grad_norm, tokens_per_s, "
              "wall_s FROM metrics WHERE run_id = ?1 ORDER BY step DESC LIMIT 1"));
  q->Bind(1, run_id);
  const int rc = q->Step();
  if (rc == SQLITE_DONE) return std::optional<MetricRow>();
  if (rc != SQLITE_ROW) return Error("reading the latest metric");
  return std::optional<MetricRow>(MetricFromRow(*q));
}

Result<std::vector<std::pair<std::string, double>>> Store::LatestExtras(int64_t run_id) {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q, Prepare("SELECT name, value FROM metric_extras WHERE run_id = ?1 AND step = "
                         "(SELECT max(step) FROM metric_extras WHERE run_id = ?1) ORDER BY name"));
  q->Bind(1, run_id);
  std::vector<std::pair<std::string, double>> out;
  int rc;
  while ((rc = q->Step()) == SQLITE_ROW) out.emplace_back(q->Text(0), q->Double(1));
  if (rc != SQLITE_DONE) return Error("reading the latest extra metrics");
  return out;
}

Result<int64_t> Store::CountMetrics(int64_t run_id) {
  ISOFLOP_ASSIGN_OR_RETURN(StmtRef q, Prepare("SELECT count(*) FROM metrics WHERE run_id = ?1"));
  q->Bind(1, run_id);
  if (q->Step() != SQLITE_ROW) return Error("counting metrics");
  return q->Int(0);
}

// ---------------------------------------------------------------------------------------
// Fits

namespace {
constexpr const char* kFitColumns =
    "id, created_at, source_kind, source_name, method, form, convention, flops_convention, "
    "params_json, ci_json, objective, n_points, result_json, options_json";

FitRecord ReadFit(const Statement& q) {
  FitRecord f;
  f.id = q.Int(0);
  f.created_at = q.Text(1);
  f.source_kind = q.Text(2);
  f.source_name = q.Text(3);
  f.method = q.Text(4);
  f.form = q.Text(5);
  f.convention = q.Text(6);
  f.flops_convention = q.Text(7);
  f.params_json = q.Text(8);
  f.ci_json = q.Text(9);
  f.objective = q.OptDouble(10);
  f.n_points = q.Int(11);
  f.result_json = q.Text(12);
  f.options_json = q.Text(13);
  return f;
}
}  // namespace

Result<int64_t> Store::InsertFit(const FitRecord& f) {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q,
      Prepare("INSERT INTO fits (created_at, source_kind, source_name, method, form, "
              "convention, flops_convention, params_json, ci_json, objective, n_points, "
              "result_json, options_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
              "?11, ?12, ?13) RETURNING id"));
  q->Bind(1, f.created_at.empty() ? NowIso8601() : f.created_at);
  q->Bind(2, f.source_kind);
  q->Bind(3, f.source_name);
  q->Bind(4, f.method);
  q->Bind(5, f.form);
  q->Bind(6, f.convention);
  q->Bind(7, f.flops_convention);
  q->Bind(8, f.params_json);
  q->Bind(9, f.ci_json);
  q->Bind(10, f.objective);
  q->Bind(11, f.n_points);
  q->Bind(12, f.result_json);
  q->Bind(13, f.options_json);
  if (q->Step() != SQLITE_ROW) return Error("writing a fit");
  int64_t id = q->Int(0);
  q->Step();
  return id;
}

Result<std::vector<FitRecord>> Store::ListFits() {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q, Prepare(std::string("SELECT ") + kFitColumns + " FROM fits ORDER BY id"));
  std::vector<FitRecord> out;
  int rc;
  while ((rc = q->Step()) == SQLITE_ROW) out.push_back(ReadFit(*q));
  if (rc != SQLITE_DONE) return Error("listing fits");
  return out;
}

Result<std::optional<FitRecord>> Store::GetFit(int64_t id) {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q, Prepare(std::string("SELECT ") + kFitColumns + " FROM fits WHERE id = ?1"));
  q->Bind(1, id);
  int rc = q->Step();
  if (rc == SQLITE_DONE) return std::optional<FitRecord>();
  if (rc != SQLITE_ROW) return Error("reading fit " + std::to_string(id));
  return std::optional<FitRecord>(ReadFit(*q));
}

Result<std::optional<FitRecord>> Store::LatestFit(const std::string& source_kind,
                                                  const std::string& source_name,
                                                  const std::string& method,
                                                  const std::string& form) {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q,
      Prepare(std::string("SELECT ") + kFitColumns +
              " FROM fits WHERE source_kind = ?1 AND source_name = ?2 AND method = ?3 AND "
              "(?4 = '' OR form = ?4) ORDER BY id DESC LIMIT 1"));
  q->Bind(1, source_kind);
  q->Bind(2, source_name);
  q->Bind(3, method);
  q->Bind(4, form);
  int rc = q->Step();
  if (rc == SQLITE_DONE) return std::optional<FitRecord>();
  if (rc != SQLITE_ROW) return Error("reading the latest fit");
  return std::optional<FitRecord>(ReadFit(*q));
}

// ---------------------------------------------------------------------------------------
// Observations

Result<int64_t> Store::ImportObservations(const std::string& name, const std::string& source_file,
                                          const std::vector<Observation>& points, bool replace) {
  // The name is a folder (`isoflop plot`'s plots/NAME) and a dashboard URL segment.
  if (!IsPlainName(name) || name.size() > 255) {
    return Status::InvalidArgument("observation set name '" + name +
                                   "': expected up to 255 letters, digits, '.', '_' or '-', "
                                   "starting with a letter or digit");
  }
  int64_t set_id = 0;
  Status st = InTransaction([&]() -> Status {
    ISOFLOP_ASSIGN_OR_RETURN(StmtRef find,
                             Prepare("SELECT id FROM observation_sets WHERE name = ?1"));
    find->Bind(1, name);
    if (find->Step() == SQLITE_ROW) {
      int64_t old = find->Int(0);
      find->Reset();
      if (!replace) {
        return Status::InvalidArgument("observation set '" + name + "' already exists in " + path_ +
                                       " (use --replace to overwrite it)");
      }
      ISOFLOP_ASSIGN_OR_RETURN(StmtRef del, Prepare("DELETE FROM observation_sets WHERE id = ?1"));
      del->Bind(1, old);
      if (del->Step() != SQLITE_DONE) return Error("replacing observation set");
    }
    ISOFLOP_ASSIGN_OR_RETURN(
        StmtRef ins,
        Prepare("INSERT INTO observation_sets (name, source_file, created_at) VALUES (?1, ?2, "
                "?3) RETURNING id"));
    ins->Bind(1, name);
    ins->Bind(2, source_file);
    ins->Bind(3, NowIso8601());
    if (ins->Step() != SQLITE_ROW) return Error("creating observation set");
    set_id = ins->Int(0);
    ins->Step();
    ISOFLOP_ASSIGN_OR_RETURN(
        StmtRef q, Prepare("INSERT INTO observations (set_id, idx, n, d, c, loss, line, g, budget) "
                           "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"));
    for (size_t i = 0; i < points.size(); ++i) {
      const Observation& p = points[i];
      q->Reset();
      q->Bind(1, set_id);
      q->Bind(2, static_cast<int64_t>(i));
      q->Bind(3, p.n);
      q->Bind(4, p.d);
      q->Bind(5, p.c);
      q->Bind(6, p.loss);
      q->Bind(7, p.line);
      q->Bind(8, p.g);
      q->Bind(9, p.budget);
      if (q->Step() != SQLITE_DONE) return Error("writing observation " + std::to_string(i));
    }
    return Status::Ok();
  });
  if (!st.ok()) return st;
  return set_id;
}

Result<std::vector<ObservationSet>> Store::ListObservationSets() {
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q,
      Prepare("SELECT s.id, s.name, s.source_file, s.created_at, (SELECT count(*) FROM "
              "observations o WHERE o.set_id = s.id) FROM observation_sets s ORDER BY s.id"));
  std::vector<ObservationSet> out;
  int rc;
  while ((rc = q->Step()) == SQLITE_ROW) {
    out.push_back({q->Int(0), q->Text(1), q->Text(2), q->Text(3), q->Int(4)});
  }
  if (rc != SQLITE_DONE) return Error("listing observation sets");
  return out;
}

Result<std::vector<Observation>> Store::GetObservations(const std::string& name) {
  ISOFLOP_ASSIGN_OR_RETURN(StmtRef find,
                           Prepare("SELECT id FROM observation_sets WHERE name = ?1"));
  find->Bind(1, name);
  int rc = find->Step();
  if (rc == SQLITE_DONE) {
    return Status::NotFound("no observation set named '" + name + "' in " + path_ +
                            " (see `isoflop db info`; import one with `isoflop import`)");
  }
  if (rc != SQLITE_ROW) return Error("reading observation set");
  int64_t id = find->Int(0);
  ISOFLOP_ASSIGN_OR_RETURN(
      StmtRef q,
      Prepare("SELECT n, d, c, loss, line, g, budget FROM observations WHERE set_id = ?1 "
              "ORDER BY idx"));
  q->Bind(1, id);
  std::vector<Observation> out;
  while ((rc = q->Step()) == SQLITE_ROW) {
    out.push_back({q->Double(0), q->Double(1), q->Double(2), q->Double(3), q->Int(4),
                   q->OptDouble(5), q->OptDouble(6)});
  }
  if (rc != SQLITE_DONE) return Error("reading observations");
  return out;
}

}  // namespace isoflop::store
