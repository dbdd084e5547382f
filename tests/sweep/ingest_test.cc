// Ingestion of hand-written run directories: torn last lines, re-ingestion, truncation after a
// resume, and the offset stored with the rows.
#include "isoflop/sweep/ingest.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "isoflop/common/files.h"
#include "isoflop/store/store.h"

namespace isoflop::sweep {
namespace {

namespace fs = std::filesystem;

std::string Line(int step, double loss) {
  return "{\"step\": " + std::to_string(step) + ", \"tokens\": " + std::to_string(step * 256) +
         ", \"flops\": 1e6, \"train_loss\": " + std::to_string(loss) +
         ", \"val_loss\": null, \"lr\": 0.001, \"grad_norm\": 0.5, \"tokens_per_s\": 1000.0, "
         "\"wall_s\": 1.0, \"extra\": {\"aux\": 0.25}}\n";
}

class IngestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("isoflop_ingest_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "run");
    auto db = store::Store::Open((dir_ / "s.db").string());
    ASSERT_TRUE(db.ok()) << db.status().message();
    db_ = std::move(*db);
    store::SweepRecord s;
    s.name = "t";
    s.status = "running";
    auto sid = db_->UpsertSweep(s);
    ASSERT_TRUE(sid.ok());
    run_.sweep_id = *sid;
    run_.cell_key = "k";
    run_.run_dir = (dir_ / "run").string();
    auto id = db_->UpsertRun(run_);
    ASSERT_TRUE(id.ok());
    run_.id = *id;
  }
  void TearDown() override { fs::remove_all(dir_); }
  void Write(const std::string& text, bool append = true) {
    std::ofstream(dir_ / "run" / "metrics.jsonl", append ? std::ios::app : std::ios::trunc) << text;
  }
  // As the trainer truncates on resume: a new file renamed over the old one.
  void Rewrite(const std::string& text) {
    ASSERT_TRUE(WriteFileAtomic((dir_ / "run" / "metrics.jsonl").string(), text).ok());
  }
  std::vector<double> Losses() {
    std::vector<double> out;
    const auto rows = db_->GetMetrics(run_.id);  // (a range over *temporary would dangle)
    for (const auto& r : *rows) out.push_back(r.train_loss.value_or(-1));
    return out;
  }
  fs::path dir_;
  std::unique_ptr<store::Store> db_;
  store::RunRecord run_;
};

TEST_F(IngestTest, TornLastLineWaitsAndNothingIsDuplicated) {
  Write(Line(1, 3.0) + Line(2, 2.9));
  std::string third = Line(3, 2.8);
  Write(third.substr(0, 20));  // torn: no newline yet
  Result<IngestProgress> p = IngestMetrics(*db_, &run_);
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->new_rows, 2);
  EXPECT_EQ(*db_->CountMetrics(run_.id), 2);
  // The stored offset is the end of the last complete line, in the store as well.
  EXPECT_EQ(run_.ingest_offset, static_cast<int64_t>(Line(1, 3.0).size() + Line(2, 2.9).size()));
  EXPECT_EQ((*db_->GetRun(run_.id))->ingest_offset, run_.ingest_offset);
  EXPECT_EQ((*db_->GetRun(run_.id))->tokens_done, 512);

  Write(third.substr(20));
  p = IngestMetrics(*db_, &run_);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->new_rows, 1);
  EXPECT_EQ(*db_->CountMetrics(run_.id), 3);
  p = IngestMetrics(*db_, &run_);  // nothing new
  EXPECT_EQ(p->new_rows, 0);
  EXPECT_EQ(*db_->CountMetrics(run_.id), 3);
  auto rows = db_->GetMetrics(run_.id);
  ASSERT_TRUE(rows.ok());
  EXPECT_DOUBLE_EQ(*(*rows)[2].train_loss, 2.8);
  ASSERT_EQ((*rows)[0].extra.size(), 1u);
  EXPECT_EQ((*rows)[0].extra[0].first, "aux");
}

TEST_F(IngestTest, TruncationAfterResumeRereadsWithoutDuplicates) {
  Write(Line(1, 3.0) + Line(2, 2.9) + Line(3, 2.8) + Line(4, 2.7));
  ASSERT_TRUE(IngestMetrics(*db_, &run_).ok());
  EXPECT_EQ(*db_->CountMetrics(run_.id), 4);
  // The trainer resumed from step 2: it truncates to step 2 and appends steps 3.. again.
  Write(Line(1, 3.0) + Line(2, 2.9), /*append=*/false);
  Write(Line(3, 2.8));
  ASSERT_TRUE(IngestMetrics(*db_, &run_).ok());
  Write(Line(4, 2.7) + Line(5, 2.6));
  ASSERT_TRUE(IngestMetrics(*db_, &run_).ok());
  auto rows = db_->GetMetrics(run_.id);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 5u);
  for (size_t i = 0; i < rows->size(); ++i) EXPECT_EQ((*rows)[i].step, int64_t(i + 1));
}

// The trainer resumed from step 2 and, before the manager looked again, logged steps 3 and 4
// anew (other values: a GPU run is not bit-exact) and step 5. The old offset is a line start
// of the new file; the file's identity, not the offset, says it was rewritten.
TEST_F(IngestTest, AResumedFileIsRereadWhereverTheOldOffsetFalls) {
  Write(Line(1, 3.0) + Line(2, 2.9) + Line(3, 2.8) + Line(4, 2.7));
  ASSERT_TRUE(IngestMetrics(*db_, &run_).ok());
  EXPECT_FALSE(run_.ingest_file.empty());
  EXPECT_EQ((*db_->GetRun(run_.id))->ingest_file, run_.ingest_file);
  Rewrite(Line(1, 3.0) + Line(2, 2.9) + Line(3, 2.5) + Line(4, 2.4) + Line(5, 2.3));
  Result<IngestProgress> p = IngestMetrics(*db_, &run_);
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->new_rows, 5);
  EXPECT_EQ(Losses(), (std::vector<double>{3.0, 2.9, 2.5, 2.4, 2.3}));
  EXPECT_EQ(run_.tokens_done, 5 * 256);
}

// Rows past the truncation are the attempt before the resume: the store follows the file, down
// to nothing when the trainer restarted without a checkpoint.
TEST_F(IngestTest, RowsPastTheTruncationAreDeleted) {
  Write(Line(1, 3.0) + Line(2, 2.9) + Line(3, 2.8) + Line(4, 2.7));
  ASSERT_TRUE(IngestMetrics(*db_, &run_).ok());
  Rewrite(Line(1, 3.0) + Line(2, 2.9));
  ASSERT_TRUE(IngestMetrics(*db_, &run_).ok());
  EXPECT_EQ(Losses(), (std::vector<double>{3.0, 2.9}));
  EXPECT_EQ(run_.tokens_done, 2 * 256);
  EXPECT_DOUBLE_EQ(run_.final_train_loss.value_or(-1), 2.9);
  auto stored = db_->GetRun(run_.id);
  EXPECT_EQ((*stored)->tokens_done, 2 * 256);
  Write(Line(3, 2.6));
  ASSERT_TRUE(IngestMetrics(*db_, &run_).ok());
  EXPECT_EQ(Losses(), (std::vector<double>{3.0, 2.9, 2.6}));
  Rewrite("");
  ASSERT_TRUE(IngestMetrics(*db_, &run_).ok());
  EXPECT_EQ(*db_->CountMetrics(run_.id), 0);
  EXPECT_EQ(run_.tokens_done, 0);
  EXPECT_FALSE(run_.final_train_loss.has_value());
  EXPECT_EQ((*db_->GetRun(run_.id))->ingest_offset, 0);
  Write(Line(1, 3.1));
  ASSERT_TRUE(IngestMetrics(*db_, &run_).ok());
  EXPECT_EQ(Losses(), (std::vector<double>{3.1}));
}

// A complete line that is not a metrics object (a disk fault, another writer) is left out and
// named, once; the lines around it are ingested, so one bad line neither blocks the sweep (the
// manager ingests every cell before it launches any) nor drops the rest of the run.
TEST_F(IngestTest, CorruptLineIsSkippedAndNamedOnceWithTheRowsAroundIt) {
  Write(Line(1, 3.0) + "not json\n" + Line(3, 2.8));
  Result<IngestProgress> p = IngestMetrics(*db_, &run_);
  ASSERT_TRUE(p.ok()) << p.status().message();
  ASSERT_EQ(p->skipped.size(), 1u);
  const std::string at = "metrics.jsonl: byte " + std::to_string(Line(1, 3.0).size()) + ": ";
  EXPECT_NE(p->skipped[0].find(at), std::string::npos) << p->skipped[0];
  EXPECT_NE(p->skipped[0].find("; line skipped"), std::string::npos) << p->skipped[0];
  EXPECT_EQ(p->new_rows, 2);
  EXPECT_EQ(*db_->CountMetrics(run_.id), 2);
  Write(Line(4, 2.7));
  p = IngestMetrics(*db_, &run_);
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->skipped.empty());  // named once
  EXPECT_EQ(*db_->CountMetrics(run_.id), 3);
  // Without the list to report into, the parser still refuses the line, naming it.
  int64_t consumed = 0;
  Result<std::vector<store::MetricRow>> rows =
      ParseMetricsLines(Line(1, 3.0) + "not json\n", &consumed);
  ASSERT_FALSE(rows.ok());
  EXPECT_NE(rows.status().message().find("metrics.jsonl line 2"), std::string::npos);
}

TEST_F(IngestTest, ReadsInfoAndStatusFiles) {
  std::ofstream(dir_ / "run" / "info.json")
      << R"({"n_total": 100, "n_non_embedding": 80, "data_entropy_nats": 1.6661, "device": "cpu"})";
  std::ofstream(dir_ / "run" / "status.json")
      << R"({"state": "diverged", "reason": "NaN loss at step 7", "step": 7, "tokens": 100,
            "final_val_loss": null, "exit_code": 3, "wall_s": 1.5})";
  Result<RunInfo> info = ReadRunInfo(run_.run_dir);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->n_total, 100);
  EXPECT_DOUBLE_EQ(*info->data_entropy_nats, 1.6661);
  auto st = ReadRunStatus(run_.run_dir);
  ASSERT_TRUE(st.ok() && st->has_value());
  EXPECT_EQ((*st)->state, "diverged");
  EXPECT_EQ((*st)->reason, "NaN loss at step 7");
  EXPECT_EQ(*(*st)->exit_code, 3);
  EXPECT_FALSE((*st)->final_val_loss.has_value());
  fs::remove(dir_ / "run" / "status.json");
  auto none = ReadRunStatus(run_.run_dir);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

// A finished run's file rewritten shorter afterwards (by a worker that should never have
// touched it: the orphan of issue 10) neither lowers its tokens nor replaces its rows; a running
// run's rewrite (its own resume) is re-read as before.
TEST_F(IngestTest, AFinishedRunsRewrittenFileChangesNothing) {
  Write(Line(1, 3.0) + Line(2, 2.9) + Line(3, 2.8));
  ASSERT_TRUE(IngestMetrics(*db_, &run_).ok());
  EXPECT_EQ(run_.tokens_done, 3 * 256);
  run_.status = "finished";
  ASSERT_TRUE(db_->UpsertRun(run_).ok());
  Write(Line(1, 9.0), /*append=*/false);  // truncated and different
  Result<IngestProgress> p = IngestMetrics(*db_, &run_);
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->new_rows, 0);
  EXPECT_EQ(run_.tokens_done, 3 * 256);
  auto stored = db_->GetRun(run_.id);
  ASSERT_TRUE(stored.ok() && stored->has_value());
  EXPECT_EQ((*stored)->tokens_done, 3 * 256);
  auto rows = db_->GetMetrics(run_.id);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_DOUBLE_EQ(*(*rows)[0].train_loss, 3.0);
  // The same rewrite of a running run is its resume: re-read, progress back to the file's.
  run_.status = "running";
  ASSERT_TRUE(db_->UpsertRun(run_).ok());
  Write(Line(1, 3.0), /*append=*/false);
  Write(Line(2, 2.9));
  run_.ingest_offset = 1 << 20;  // past the end: the file shrank
  ASSERT_TRUE(IngestMetrics(*db_, &run_).ok());
  EXPECT_EQ(run_.tokens_done, 2 * 256);
}

}  // namespace
}  // namespace isoflop::sweep
