// Tests of the SQLite run store against real files: round trips of every table, migration
// of a schema-1 file, idempotent metric ingestion, rollback, concurrent reader/writer
// processes, and clear errors for corrupt, foreign and newer files.
#include "isoflop/store/store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace isoflop::store {
namespace {

namespace fs = std::filesystem;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("isoflop_store_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    path_ = (dir_ / "test.db").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Store> OpenOrDie(const std::string& path, const OpenOptions& o = {}) {
    auto r = Store::Open(path, o);
    EXPECT_TRUE(r.ok()) << r.status().message();
    return r.ok() ? std::move(r).value() : nullptr;
  }

  RunRecord SampleRun(int64_t sweep_id, const std::string& key) {
    RunRecord r;
    r.sweep_id = sweep_id;
    r.cell_key = key;
    r.status = "running";
    r.n_layer = 2;
    r.d_model = 64;
    r.n_head = 4;
    r.d_ff = 176;
    r.vocab_size = 32;
    r.seq_len = 64;
    r.n_total = 101234;
    r.n_non_embedding = 99186;
    r.n_active = 101234;
    r.flops_per_token_6n = 607404;
    r.flops_per_token_6n_attn = 619692;
    r.flops_per_token_chinchilla = 640000.5;
    r.budget_flops = 6.4e11;
    r.target_tokens = 1053672;
    r.target_flops = 6.4e11;
    r.seed = 3;
    r.config_json = R"({"model":{}})";
    r.run_dir = "/tmp/runs/" + key;
    r.attempts = 1;
    r.exit_code = 0;
    r.reason = "";
    r.host = "h";
    r.devices = "cpu:2";
    r.job_id = "123";
    r.final_val_loss = 1.875;
    r.tokens_done = 1053672;
    r.ingest_offset = 4096;
    r.data_entropy = 1.6661;
    return r;
  }

  fs::path dir_;
  std::string path_;
};

TEST_F(StoreTest, FreshFileIsAtCurrentSchemaInWalMode) {
  auto db = OpenOrDie(path_);
  auto info = db->Info();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->schema_version, kSchemaVersion);
  EXPECT_EQ(info->journal_mode, "wal");
  EXPECT_EQ(info->runs, 0);
}

TEST_F(StoreTest, SweepRoundTripAndUpsertByName) {
  auto db = OpenOrDie(path_);
  SweepRecord s{0, "qs", "sweeps/qs.yaml", "name: qs\n", "h1", "planned", "", ""};
  auto id = db->UpsertSweep(s);
  ASSERT_TRUE(id.ok());
  s.config_hash = "h2";
  s.status = "running";
  auto id2 = db->UpsertSweep(s);
  ASSERT_TRUE(id2.ok());
  EXPECT_EQ(*id, *id2);
  auto got = db->GetSweep("qs");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->config_text, "name: qs\n");
  EXPECT_EQ((*got)->config_hash, "h2");
  EXPECT_EQ((*got)->status, "running");
  EXPECT_FALSE((*got)->created_at.empty());
  ASSERT_TRUE(db->SetSweepStatus(*id, "finished").ok());
  EXPECT_EQ((*db->GetSweep("qs"))->status, "finished");
  EXPECT_FALSE(db->GetSweep("nope")->has_value());
  EXPECT_EQ(db->ListSweeps()->size(), 1u);
}

TEST_F(StoreTest, RunRoundTripKeepsEveryField) {
  auto db = OpenOrDie(path_);
  int64_t sweep = *db->UpsertSweep({0, "s", "", "", "", "", "", ""});
  RunRecord r = SampleRun(sweep, "abc");
  auto id = db->UpsertRun(r);
  ASSERT_TRUE(id.ok()) << id.status().message();
  auto got = db->GetRun(*id);
  ASSERT_TRUE(got.ok() && got->has_value());
  const RunRecord& g = **got;
  EXPECT_EQ(g.cell_key, "abc");
  EXPECT_EQ(g.n_total, r.n_total);
  EXPECT_EQ(g.n_non_embedding, r.n_non_embedding);
  EXPECT_DOUBLE_EQ(g.flops_per_token_chinchilla, r.flops_per_token_chinchilla);
  EXPECT_EQ(g.target_tokens, r.target_tokens);
  EXPECT_EQ(g.exit_code, 0);
  EXPECT_EQ(g.final_val_loss, 1.875);
  EXPECT_FALSE(g.final_train_loss.has_value());
  EXPECT_EQ(g.data_entropy, 1.6661);
  EXPECT_EQ(g.job_id, "123");
  EXPECT_EQ(g.ingest_offset, 4096);
  // Upsert by (sweep, cell_key) updates in place.
  r.status = "finished";
  r.attempts = 2;
  r.exit_code.reset();
  EXPECT_EQ(*db->UpsertRun(r), *id);
  auto again = *db->GetRun(*id);
  EXPECT_EQ(again->status, "finished");
  EXPECT_EQ(again->attempts, 2);
  EXPECT_FALSE(again->exit_code.has_value());
  RunFilter f;
  f.sweep_name = "s";
  f.status = "finished";
  EXPECT_EQ(db->ListRuns(f)->size(), 1u);
  f.status = "failed";
  EXPECT_EQ(db->ListRuns(f)->size(), 0u);
}

TEST_F(StoreTest, MetricIngestionIsIdempotent) {
  auto db = OpenOrDie(path_);
  int64_t sweep = *db->UpsertSweep({0, "s", "", "", "", "", "", ""});
  int64_t run = *db->UpsertRun(SampleRun(sweep, "k"));
  std::vector<MetricRow> rows;
  for (int s = 1; s <= 50; ++s) {
    MetricRow m;
    m.step = s;
    m.tokens = s * 1024;
    m.flops = 6.0 * 1e5 * m.tokens;
    m.train_loss = 3.0 - 0.01 * s;
    if (s % 10 == 0) m.val_loss = 3.05 - 0.01 * s;
    m.lr = 1e-3;
    if (s == 50) m.extra = {{"router_z_loss", 0.25}, {"aux_loss", 0.01}};
    rows.push_back(m);
  }
  ASSERT_TRUE(db->UpsertMetrics(run, rows).ok());
  // Re-ingest an overlapping window (as after a crash between ingest and offset update).
  std::vector<MetricRow> overlap(rows.begin() + 40, rows.end());
  ASSERT_TRUE(db->UpsertMetrics(run, overlap).ok());
  ASSERT_TRUE(db->UpsertMetrics(run, rows).ok());
  EXPECT_EQ(*db->CountMetrics(run), 50);
  auto got = *db->GetMetrics(run);
  ASSERT_EQ(got.size(), 50u);
  EXPECT_EQ(got[9].val_loss, 3.05 - 0.1);
  EXPECT_FALSE(got[8].val_loss.has_value());
  ASSERT_EQ(got[49].extra.size(), 2u);
  EXPECT_EQ(got[49].extra[0].first, "aux_loss");
  EXPECT_EQ(got[49].extra[1].second, 0.25);
  // Without extras: the same rows, none of their named metrics.
  auto bare = *db->GetMetrics(run, Store::Extras::kOmit);
  ASSERT_EQ(bare.size(), 50u);
  EXPECT_TRUE(bare[49].extra.empty());
  EXPECT_EQ(bare[9].val_loss, got[9].val_loss);
  EXPECT_EQ(bare[49].train_loss, got[49].train_loss);
  // Deleting the run deletes its metrics (foreign keys are on).
  ASSERT_TRUE(db->DeleteRun(run).ok());
  EXPECT_EQ(*db->CountMetrics(run), 0);
}

TEST_F(StoreTest, LatestMetricIsTheLargestStepAndNulloptWithoutRows) {
  auto db = OpenOrDie(path_);
  int64_t sweep = *db->UpsertSweep({0, "s", "", "", "", "", "", ""});
  int64_t run = *db->UpsertRun(SampleRun(sweep, "k"));
  EXPECT_FALSE(db->LatestMetric(run)->has_value());
  std::vector<MetricRow> rows;
  // Inserted out of order: "latest" is by step, not by insertion.
  for (int s : {4, 12, 8}) {
    MetricRow m;
    m.step = s;
    m.tokens = s * 256;
    m.flops = 6.0 * m.tokens;
    m.train_loss = 3.0 - 0.01 * s;
    m.tokens_per_s = 1000.0 + s;
    rows.push_back(m);
  }
  ASSERT_TRUE(db->UpsertMetrics(run, rows).ok());
  auto latest = db->LatestMetric(run);
  ASSERT_TRUE(latest.ok()) << latest.status().message();
  ASSERT_TRUE(latest->has_value());
  EXPECT_EQ((*latest)->step, 12);
  EXPECT_EQ((*latest)->tokens, 12 * 256);
  EXPECT_EQ((*latest)->tokens_per_s, 1012.0);
  EXPECT_FALSE((*latest)->val_loss.has_value());
}

TEST_F(StoreTest, LatestExtrasAreTheLargestStepWithAnyAndEmptyWithout) {
  auto db = OpenOrDie(path_);
  int64_t sweep = *db->UpsertSweep({0, "s", "", "", "", "", "", ""});
  int64_t run = *db->UpsertRun(SampleRun(sweep, "k"));
  int64_t other = *db->UpsertRun(SampleRun(sweep, "other"));
  EXPECT_TRUE(db->LatestExtras(run)->empty());
  std::vector<MetricRow> rows;
  // Step 9 has extras, step 12 (a row with none, as an evaluation-only line) does not; another
  // run's later extras are not this run's.
  for (int s : {3, 9, 12}) {
    MetricRow m;
    m.step = s;
    m.tokens = s * 256;
    if (s == 3) m.extra = {{"aux_loss", 0.3}};
    if (s == 9) m.extra = {{"z_loss", 0.02}, {"aux_loss", 0.1}};
    rows.push_back(m);
  }
  ASSERT_TRUE(db->UpsertMetrics(run, rows).ok());
  MetricRow late;
  late.step = 40;
  late.extra = {{"aux_loss", 9.0}};
  ASSERT_TRUE(db->UpsertMetrics(other, {late}).ok());
  auto latest = db->LatestExtras(run);
  ASSERT_TRUE(latest.ok()) << latest.status().message();
  const std::vector<std::pair<std::string, double>> want = {{"aux_loss", 0.1}, {"z_loss", 0.02}};
  EXPECT_EQ(*latest, want);
}

TEST_F(StoreTest, FailedTransactionRollsBackEverything) {
  auto db = OpenOrDie(path_);
  int64_t sweep = *db->UpsertSweep({0, "s", "", "", "", "", "", ""});
  int64_t run = *db->UpsertRun(SampleRun(sweep, "k"));
  {
    auto txn = db->Begin();
    ASSERT_TRUE(txn.ok());
    std::vector<MetricRow> rows(3);
    for (int i = 0; i < 3; ++i) rows[i].step = i + 1;
    ASSERT_TRUE(db->UpsertMetrics(run, rows).ok());
    RunRecord r = SampleRun(sweep, "k");
    r.status = "finished";
    ASSERT_TRUE(db->UpsertRun(r).ok());
    // A write that fails (unknown run: foreign key) in the middle of the transaction.
    std::vector<MetricRow> bad(1);
    EXPECT_FALSE(db->UpsertMetrics(run + 999, bad).ok());
    // Leaving scope without Commit rolls back all of it.
  }
  EXPECT_EQ(*db->CountMetrics(run), 0);
  EXPECT_EQ((*db->GetRun(run))->status, "running");
  // A committed transaction persists.
  {
    auto txn = db->Begin();
    std::vector<MetricRow> rows(2);
    rows[0].step = 1;
    rows[1].step = 2;
    ASSERT_TRUE(db->UpsertMetrics(run, rows).ok());
    ASSERT_TRUE(txn->Commit().ok());
  }
  EXPECT_EQ(*db->CountMetrics(run), 2);
}

TEST_F(StoreTest, FitsRoundTripAndLatest) {
  auto db = OpenOrDie(path_);
  FitRecord f;
  f.source_kind = "observations";
  f.source_name = "chinchilla";
  f.method = "parametric";
  f.form = "chinchilla";
  f.params_json = R"({"E":1.82})";
  f.ci_json = R"({"E":{"lo":1.8,"hi":1.84}})";
  f.objective = 0.0123;
  f.n_points = 240;
  f.result_json = R"({"starts":4500})";
  f.options_json = R"({"delta":0.001})";
  int64_t a = *db->InsertFit(f);
  f.params_json = R"({"E":1.83})";
  int64_t b = *db->InsertFit(f);
  EXPECT_GT(b, a);
  auto latest = *db->LatestFit("observations", "chinchilla", "parametric");
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->id, b);
  EXPECT_EQ(latest->params_json, R"({"E":1.83})");
  EXPECT_EQ(latest->options_json, R"({"delta":0.001})");
  EXPECT_EQ(latest->objective, 0.0123);
  EXPECT_FALSE(db->LatestFit("observations", "chinchilla", "isoflop")->has_value());
  EXPECT_EQ((*db->GetFit(a))->params_json, R"({"E":1.82})");
  EXPECT_EQ(db->ListFits()->size(), 2u);
}

TEST_F(StoreTest, ObservationsAreAllOrNothingAndNamed) {
  auto db = OpenOrDie(path_);
  std::vector<Observation> pts = {{1e8, 2e9, 1.2e18, 3.1, 2, std::nullopt, std::nullopt},
                                  {2e8, 1e9, 1.2e18, 3.0, 3, std::nullopt, std::nullopt}};
  ASSERT_TRUE(db->ImportObservations("paper", "p.csv", pts, false).ok());
  auto again = db->ImportObservations("paper", "p.csv", pts, false);
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.status().message().find("already exists"), std::string::npos);
  pts.push_back({4e8, 5e8, 1.2e18, 2.9, 4, std::nullopt, std::nullopt});
  ASSERT_TRUE(db->ImportObservations("paper", "p.csv", pts, true).ok());
  // A name is a plots/ folder and a dashboard URL segment: nothing else is stored.
  for (const std::string& bad : std::vector<std::string>{"", " ", "../x", "a/b", "two\nlines",
                                                         "-flag", std::string(256, 'a')}) {
    auto named = db->ImportObservations(bad, "p.csv", pts, false);
    ASSERT_FALSE(named.ok()) << bad;
    EXPECT_EQ(named.status().message(),
              "observation set name '" + bad +
                  "': expected up to 255 letters, digits, '.', '_' or '-', starting with a "
                  "letter or digit");
  }
  ASSERT_TRUE(db->ImportObservations(std::string(255, 'a'), "p.csv", pts, false).ok());
  auto got = db->GetObservations("paper");
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 3u);
  EXPECT_EQ((*got)[2].n, 4e8);
  EXPECT_EQ((*got)[2].line, 4);
  auto sets = *db->ListObservationSets();
  ASSERT_EQ(sets.size(), 2u);  // paper, and the set of the longest name
  const auto paper =
      std::find_if(sets.begin(), sets.end(), [](const auto& s) { return s.name == "paper"; });
  ASSERT_NE(paper, sets.end());
  EXPECT_EQ(paper->n_points, 3);
  auto missing = db->GetObservations("nope");
  EXPECT_EQ(missing.status().code(), Status::Code::kNotFound);
}

TEST_F(StoreTest, ObservationGranularityRoundTripsAndAbsentStaysAbsent) {
  auto db = OpenOrDie(path_);
  std::vector<Observation> pts = {{1e8, 2e9, 1.2e18, 3.1, 2, 8.0, std::nullopt},
                                  {2e8, 1e9, 1.2e18, 3.0, 3, 0.5, std::nullopt},
                                  {4e8, 5e8, 1.2e18, 2.9, 4, std::nullopt, std::nullopt}};
  ASSERT_TRUE(db->ImportObservations("moe", "m.csv", pts, false).ok());
  db.reset();
  auto again = OpenOrDie(path_);
  auto got = again->GetObservations("moe");
  ASSERT_TRUE(got.ok()) << got.status().message();
  ASSERT_EQ(got->size(), 3u);
  EXPECT_EQ((*got)[0].g, 8.0);
  EXPECT_EQ((*got)[1].g, 0.5);
  EXPECT_FALSE((*got)[2].g.has_value());  // NULL, not 0 or 1
}

TEST_F(StoreTest, MigratesSchemaVersion1Fixture) {
  fs::path fixture = fs::path(ISOFLOP_SOURCE_DIR) / "tests/store/fixtures/schema_v1.db";
  fs::copy_file(fixture, path_);
  auto db = OpenOrDie(path_);
  auto info = *db->Info();
  EXPECT_EQ(info.schema_version, kSchemaVersion);
  EXPECT_EQ(info.sweeps, 1);
  EXPECT_EQ(info.runs, 1);
  EXPECT_EQ(info.metrics, 2);
  EXPECT_EQ(info.fits, 1);
  EXPECT_EQ(info.observations, 1);
  auto run = *db->GetRun(1);
  ASSERT_TRUE(run.has_value());
  EXPECT_EQ(run->final_val_loss, 1.95);
  EXPECT_FALSE(run->data_entropy.has_value());  // column added by migration 2
  EXPECT_EQ((*db->GetFit(1))->options_json, "{}");
  // Version-2 features work on the upgraded file.
  MetricRow m;
  m.step = 20;
  m.tokens = 20480;
  m.extra = {{"aux", 1.0}};
  ASSERT_TRUE(db->UpsertMetrics(1, {m}).ok());
  EXPECT_EQ((*db->GetMetrics(1))[1].extra.size(), 1u);
  // Migration 3: the old observation has no granularity, and new sets can carry one.
  auto old_points = db->GetObservations((*db->ListObservationSets())[0].name);
  ASSERT_TRUE(old_points.ok()) << old_points.status().message();
  ASSERT_EQ(old_points->size(), 1u);
  EXPECT_FALSE((*old_points)[0].g.has_value());
  ASSERT_TRUE(db->ImportObservations("with_g", "g.csv",
                                     {{1e8, 1e9, 6e17, 3.0, 2, 4.0, std::nullopt}}, false)
                  .ok());
  EXPECT_EQ((*db->GetObservations("with_g"))[0].g, 4.0);
  // Migration 6: the old observation has no budget, and new sets can carry one.
  EXPECT_FALSE((*old_points)[0].budget.has_value());
  ASSERT_TRUE(db->ImportObservations("with_budget", "b.csv",
                                     {{1e8, 1e9, 6e17, 3.0, 2, std::nullopt, 1e18}}, false)
                  .ok());
  EXPECT_EQ((*db->GetObservations("with_budget"))[0].budget, 1e18);
  // Migration 9: token-file scans are remembered, by path and format.
  TokenFileRecord scan;
  scan.path = "/data/train.bin";
  scan.format = "bin";
  scan.identity = "2049:17:1000:5:6";
  scan.tokens = 500;
  scan.max_id = 50256;
  scan.max_at = 3;
  ASSERT_TRUE(db->PutTokenFile(scan).ok());
  auto got = db->GetTokenFile("/data/train.bin", "bin");
  ASSERT_TRUE(got.ok() && got->has_value()) << got.status().message();
  EXPECT_EQ((*got)->identity, scan.identity);
  EXPECT_EQ((*got)->max_id, 50256);
  EXPECT_EQ((*got)->max_at, 3);
  EXPECT_FALSE((*got)->scanned_at.empty());
  EXPECT_FALSE(db->GetTokenFile("/data/train.bin", "llmc")->has_value());
  // Migration 10: the old run has no memory figures; new ones round-trip.
  EXPECT_EQ(run->memory_estimate, 0);
  EXPECT_EQ(run->peak_memory, 0);
  EXPECT_EQ(run->peak_memory_of, "");
  run->memory_estimate = int64_t{5} << 30;
  run->peak_memory = int64_t{4} << 30;
  run->peak_memory_of = "cuda_reserved";
  ASSERT_TRUE(db->UpsertRun(*run).ok());
  auto with_memory = *db->GetRun(1);
  EXPECT_EQ(with_memory->memory_estimate, int64_t{5} << 30);
  EXPECT_EQ(with_memory->peak_memory, int64_t{4} << 30);
  EXPECT_EQ(with_memory->peak_memory_of, "cuda_reserved");
  db.reset();
  // Reopening does not migrate again.
  auto again = OpenOrDie(path_);
  EXPECT_EQ(again->Info()->schema_version, kSchemaVersion);
}

TEST_F(StoreTest, RefusesNewerSchema) {
  { OpenOrDie(path_); }
  sqlite3* raw;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &raw), SQLITE_OK);
  sqlite3_exec(raw, "PRAGMA user_version = 99", nullptr, nullptr, nullptr);
  sqlite3_close(raw);
  auto r = Store::Open(path_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("newer"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find(path_), std::string::npos);
}

TEST_F(StoreTest, CorruptAndForeignFilesGiveClearErrors) {
  {
    std::ofstream f(path_);
    f << "this is not a database, just some text that is long enough to be a header......";
  }
  auto r = Store::Open(path_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kCorrupt) << r.status().message();
  EXPECT_NE(r.status().message().find(path_), std::string::npos);

  std::string foreign = (dir_ / "foreign.db").string();
  sqlite3* raw;
  ASSERT_EQ(sqlite3_open(foreign.c_str(), &raw), SQLITE_OK);
  sqlite3_exec(raw, "CREATE TABLE customers (id INTEGER)", nullptr, nullptr, nullptr);
  sqlite3_close(raw);
  std::ifstream before_in(foreign, std::ios::binary);
  const std::string before{std::istreambuf_iterator<char>(before_in), {}};
  auto f = Store::Open(foreign);
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find("not an isoflop database"), std::string::npos);
  // Refused as it was: not switched to WAL, not a byte changed, no -wal file beside it.
  std::ifstream after_in(foreign, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(after_in), {}), before);
  EXPECT_FALSE(fs::exists(foreign + "-wal"));

  OpenOptions no_create;
  no_create.create_if_missing = false;
  auto missing = Store::Open((dir_ / "absent.db").string(), no_create);
  EXPECT_EQ(missing.status().code(), Status::Code::kNotFound);
}

// A writer process commits metric batches while this process reads: the reader never sees
// a partial batch and never fails with "database is locked".
TEST_F(StoreTest, ReaderAndWriterInTwoProcesses) {
  int64_t run;
  {
    auto db = OpenOrDie(path_);
    int64_t sweep = *db->UpsertSweep({0, "s", "", "", "", "", "", ""});
    run = *db->UpsertRun(SampleRun(sweep, "k"));
  }
  constexpr int kBatches = 100, kBatch = 20;
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto r = Store::Open(path_);
    if (!r.ok()) ::_exit(10);
    auto db = std::move(r).value();
    for (int b = 0; b < kBatches; ++b) {
      std::vector<MetricRow> rows(kBatch);
      for (int i = 0; i < kBatch; ++i) {
        rows[i].step = b * kBatch + i + 1;
        rows[i].tokens = rows[i].step * 64;
      }
      if (!db->UpsertMetrics(run, rows).ok()) ::_exit(11);
    }
    ::_exit(0);
  }
  OpenOptions ro;
  ro.read_only = true;
  auto reader = OpenOrDie(path_, ro);
  int64_t last = 0, reads = 0;
  bool done = false;
  while (!done) {
    int status = 0;
    done = ::waitpid(pid, &status, WNOHANG) == pid;
    if (done) {
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    }
    auto n = reader->CountMetrics(run);
    ASSERT_TRUE(n.ok()) << n.status().message();
    EXPECT_EQ(*n % kBatch, 0) << "saw a partial batch";
    EXPECT_GE(*n, last);
    last = *n;
    ++reads;
  }
  EXPECT_EQ(*reader->CountMetrics(run), kBatches * kBatch);
  EXPECT_GT(reads, 1);
}

// A write lock held past the busy timeout (its holder stopped: here a child sits in a write
// transaction) does not keep the store from opening, and fails a write with an error that says
// what holds it up and what to do, not SQLite's bare "database is locked"; once the holder is
// gone the same write goes through.
TEST_F(StoreTest, AWriteLockHeldTooLongIsNamedAsSuch) {
  { OpenOrDie(path_); }
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(ready[0]);
    auto r = Store::Open(path_);
    if (!r.ok()) ::_exit(10);
    auto db = std::move(r).value();
    auto tx = db->Begin();
    if (!tx.ok()) ::_exit(11);
    if (::write(ready[1], "x", 1) != 1) ::_exit(12);
    ::pause();
    ::_exit(0);
  }
  struct Reap {
    pid_t pid;
    ~Reap() {
      if (pid <= 0) return;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } reap{pid};
  ::close(ready[1]);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  OpenOptions quick;
  quick.busy_timeout_ms = 200;
  auto db = OpenOrDie(path_, quick);
  auto id = db->UpsertSweep({0, "s", "", "", "", "", "", ""});
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().message(),
            path_ +
                ": database is locked: another process has held its write lock for over 0.2 s "
                "(a stopped or hung isoflop? `fuser " +
                path_ + "` names it); try again once it lets go");
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  reap.pid = 0;
  EXPECT_TRUE(db->UpsertSweep({0, "s", "", "", "", "", "", ""}).ok());
}

// A store in a folder nobody may write (a read-only mount: root ignores permission bits, so a
// tmpfs remounted read-only stands in) is still readable: opened read-only and immutable,
// without the WAL files it cannot create; a write fails with an error naming the file.
TEST_F(StoreTest, StoreInAReadOnlyFolderCanBeRead) {
  const std::string mnt = (dir_ / "ro").string();
  fs::create_directories(mnt);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=4m") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno) << ")";
  }
  const std::string db_path = mnt + "/s.db";
  {
    auto db = OpenOrDie(db_path);
    int64_t sweep = *db->UpsertSweep({0, "archived", "", "", "", "", "", ""});
    ASSERT_TRUE(db->UpsertRun(SampleRun(sweep, "k")).ok());
  }
  ASSERT_EQ(::mount(nullptr, mnt.c_str(), nullptr, MS_REMOUNT | MS_RDONLY, nullptr), 0)
      << std::strerror(errno);
  {
    auto db = Store::Open(db_path);
    ASSERT_TRUE(db.ok()) << db.status().message();
    EXPECT_TRUE((*db)->read_only());
    auto runs = (*db)->ListRuns();
    ASSERT_TRUE(runs.ok()) << runs.status().message();
    EXPECT_EQ(runs->size(), 1u);
    auto write = (*db)->UpsertSweep({0, "new", "", "", "", "", "", ""});
    EXPECT_FALSE(write.ok());
    EXPECT_NE(write.status().message().find(db_path), std::string::npos)
        << write.status().message();
  }
  ::umount2(mnt.c_str(), MNT_DETACH);
}

}  // namespace
}  // namespace isoflop::store
