// Run-directory plumbing: metrics truncation on resume, checkpoint commit/keep-two/DONE rules.
#include "isoflop/trainer/run_dir.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace isoflop::trainer {
namespace {

namespace fs = std::filesystem;

std::string Slurp(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class RunDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() /
            ("isoflop_rundir_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir_;
};

TEST_F(RunDirTest, TruncateMetricsKeepsLinesUpToStepAndDropsTornTail) {
  const std::string p = dir_ + "/metrics.jsonl";
  std::ofstream(p) << "{\"step\": 10}\n{\"step\": 20}\n{\"step\": 30}\n{\"step\": 4";
  ASSERT_TRUE(TruncateMetrics(p, 20).ok());
  EXPECT_EQ(Slurp(p), "{\"step\": 10}\n{\"step\": 20}\n");
  ASSERT_TRUE(TruncateMetrics(p, 0).ok());
  EXPECT_EQ(Slurp(p), "");
  auto absent = TruncateMetrics(dir_ + "/absent.jsonl", 5);
  ASSERT_TRUE(absent.ok());
  EXPECT_EQ(absent->last_step, 0);
}

// A damaged line before the cut goes, named; the good lines after it stay (a reader skips it
// the same way), and so does a file with nothing to drop, untouched (the same inode).
TEST_F(RunDirTest, TruncateMetricsDropsADamagedLineAndKeepsTheLinesAfterIt) {
  const std::string p = dir_ + "/metrics.jsonl";
  std::ofstream(p) << "{\"step\": 10}\n\x01garbage\n{\"step\": 20}\n{\"step\": 15}\n"
                   << "{\"step\": 30}\n{\"step\": 40}\n";
  auto kept = TruncateMetrics(p, 30);
  ASSERT_TRUE(kept.ok()) << kept.status().message();
  EXPECT_EQ(Slurp(p), "{\"step\": 10}\n{\"step\": 20}\n{\"step\": 30}\n");
  EXPECT_EQ(kept->last_step, 30);
  ASSERT_EQ(kept->dropped.size(), 2u);
  EXPECT_EQ(kept->dropped[0].rfind("line 2 (byte 13): ", 0), 0u) << kept->dropped[0];
  EXPECT_NE(kept->dropped[1].find("line 4 (byte 35): step 15"), std::string::npos)
      << kept->dropped[1];

  struct stat before {
  }, after{};
  ASSERT_EQ(::stat(p.c_str(), &before), 0);
  auto again = TruncateMetrics(p, 30);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->dropped.empty());
  ASSERT_EQ(::stat(p.c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino) << "rewritten although nothing was dropped";
}

TEST_F(RunDirTest, CheckpointsCommitWithDoneAndKeepTwo) {
  const std::string ckpt = dir_ + "/ckpt";
  for (int64_t step : {10, 20, 30}) {
    auto tmp = BeginCheckpoint(ckpt, step);
    ASSERT_TRUE(tmp.ok());
    std::ofstream(*tmp + "/x") << step;
    auto done = CommitCheckpoint(*tmp, ckpt, step);
    ASSERT_TRUE(done.ok()) << done.status().message();
    EXPECT_TRUE(fs::exists(*done + "/DONE"));
  }
  // An incomplete directory (crash before DONE) never counts, and a new commit removes it.
  fs::create_directories(ckpt + "/step-00000040");
  auto list = ListCheckpoints(ckpt);
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].step, 20);
  EXPECT_EQ(list[1].step, 30);
  auto tmp = BeginCheckpoint(ckpt, 50);
  ASSERT_TRUE(tmp.ok());
  ASSERT_TRUE(CommitCheckpoint(*tmp, ckpt, 50).ok());
  list = ListCheckpoints(ckpt);
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[1].step, 50);
  EXPECT_FALSE(fs::exists(ckpt + "/step-00000040"));
}

TEST_F(RunDirTest, AtomicWriteReplaces) {
  const std::string p = dir_ + "/status.json";
  ASSERT_TRUE(WriteFileAtomic(p, "a").ok());
  ASSERT_TRUE(WriteFileAtomic(p, "bb").ok());
  EXPECT_EQ(Slurp(p), "bb");
  EXPECT_FALSE(WriteFileAtomic(dir_ + "/no/such/dir/x", "a").ok());
}

}  // namespace
}  // namespace isoflop::trainer
