// The manager's check of a plan's token files before launch: token ids against each cell's
// model.vocab_size (the largest id and where it first is), windows of seq_len + 1 per split, a
// damaged llm.c header, files this machine does not see, and the store remembering each scan
// under the file's identity (a changed file is scanned again).
#include "isoflop/sweep/data_check.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "isoflop/store/store.h"
#include "isoflop/sweep/config.h"
#include "isoflop/sweep/planner.h"
#include "isoflop/trainer/data.h"

namespace isoflop::sweep {
namespace {

namespace fs = std::filesystem;

class DataCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "data_check_" + std::to_string(::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A sweep over `data` (a YAML flow mapping) with a 300-token vocabulary and seq_len 16.
  SweepConfig Config(const std::string& data, int vocab = 300) {
    const std::string text = "name: d\ndata: " + data +
                             "\nmodel:\n  vocab_size: " + std::to_string(vocab) +
                             "\n  seq_len: 16\n  ladder:\n    - {n_layer: 1, d_model: 16, "
                             "n_head: 2}\n    - {n_layer: 1, d_model: 32, n_head: 4}\n"
                             "budgets: [1e8]\ntrain: {batch_tokens: 64}\n";
    Result<SweepConfig> c = ParseSweepConfig(text, "d.yaml", {}, dir_);
    EXPECT_TRUE(c.ok()) << c.status().message();
    return *c;
  }
  Plan MustPlan(const SweepConfig& c) {
    Result<Plan> p = PlanSweep(c, PlanEnvironment{});
    EXPECT_TRUE(p.ok()) << p.status().message();
    return *p;
  }
  // Tokens 0..99 repeated, with `big` at index `at` (when at >= 0).
  std::vector<uint16_t> Tokens(int n, int at = -1, uint16_t big = 0) {
    std::vector<uint16_t> t(n);
    for (int i = 0; i < n; ++i) t[i] = static_cast<uint16_t>(i % 100);
    if (at >= 0) t[at] = big;
    return t;
  }
  std::string dir_;
};

TEST_F(DataCheckTest, ATokenIdAtOrAboveTheVocabularyIsRefusedWhereTheFileIsSet) {
  ASSERT_TRUE(trainer::WriteBinTokens(dir_ + "/train.bin", Tokens(5000, 4321, 300)).ok());
  ASSERT_TRUE(trainer::WriteBinTokens(dir_ + "/val.bin", Tokens(500)).ok());
  SweepConfig c = Config("{source: bin, train: train.bin, val: val.bin}");
  Result<DataCheckReport> r = CheckPlanData(c, MustPlan(c), {}, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
  const std::string path = (fs::path(dir_) / "train.bin").lexically_normal().string();
  EXPECT_EQ(r.status().message().rfind("d.yaml:2:", 0), 0u) << r.status().message();
  EXPECT_NE(r.status().message().find(": data.train: " + path + ": token id 300 at token 4321 " +
                                      "is >= model.vocab_size 300; raise model.vocab_size"),
            std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("(the trainer would refuse cell "), std::string::npos);
  // One more id and it fits; cells already finished are not checked at all.
  SweepConfig wider = Config("{source: bin, train: train.bin, val: val.bin}", 301);
  Result<DataCheckReport> ok = CheckPlanData(wider, MustPlan(wider), {}, {});
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->files, 2);
  EXPECT_EQ(ok->scanned, 2);
  EXPECT_EQ(ok->bytes_scanned, 2 * (5000 + 500));
  std::set<std::string> all;
  for (const Cell& cell : MustPlan(c).cells) all.insert(cell.key);
  Result<DataCheckReport> skipped = CheckPlanData(c, MustPlan(c), all, {});
  ASSERT_TRUE(skipped.ok()) << skipped.status().message();
  EXPECT_EQ(skipped->files, 0);
}

TEST_F(DataCheckTest, LlmcShardsAreCheckedAcrossTheListAndADamagedHeaderIsNamed) {
  std::vector<uint32_t> a(3000, 7), b(3000, 9);
  b[2999] = 70000;  // a version-7 (uint32) shard holds ids above 65535
  ASSERT_TRUE(trainer::WriteLlmcShard(dir_ + "/a.bin", a, 7).ok());
  ASSERT_TRUE(trainer::WriteLlmcShard(dir_ + "/b.bin", b, 7).ok());
  ASSERT_TRUE(trainer::WriteLlmcShard(dir_ + "/v.bin", a, 1).ok());
  SweepConfig c = Config("{source: llmc, train: [a.bin, b.bin], val: [v.bin]}");
  Result<DataCheckReport> r = CheckPlanData(c, MustPlan(c), {}, {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("b.bin: token id 70000 at token 2999 is >= "
                                      "model.vocab_size 300"),
            std::string::npos)
      << r.status().message();
  // A shard whose header promises more tokens than it holds: refused before any run.
  fs::resize_file(dir_ + "/b.bin", 1024 + 100);
  r = CheckPlanData(c, MustPlan(c), {}, {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kCorrupt);
  EXPECT_EQ(r.status().message().rfind("d.yaml:2:", 0), 0u) << r.status().message();
  EXPECT_NE(r.status().message().find("data.train: "), std::string::npos);
  EXPECT_NE(r.status().message().find("header says 3000 tokens"), std::string::npos)
      << r.status().message();
}

TEST_F(DataCheckTest, ASplitWithoutOneWindowIsRefusedAndAnUnseenFileIsLeftToTheRuns) {
  // seq_len 16: a window is 17 tokens. 16 validation tokens hold none.
  ASSERT_TRUE(trainer::WriteBinTokens(dir_ + "/train.bin", Tokens(5000)).ok());
  ASSERT_TRUE(trainer::WriteBinTokens(dir_ + "/val.bin", Tokens(16)).ok());
  SweepConfig c = Config("{source: bin, train: train.bin, val: val.bin}");
  Result<DataCheckReport> r = CheckPlanData(c, MustPlan(c), {}, {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(": data.val: validation data ("), std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("holds no window of 17 tokens"), std::string::npos);
  ASSERT_TRUE(trainer::WriteBinTokens(dir_ + "/val.bin", Tokens(17)).ok());
  EXPECT_TRUE(CheckPlanData(c, MustPlan(c), {}, {}).ok());
  // Text: the held-out tail of each file is its validation split (10%: 10 of 100 bytes).
  std::ofstream(dir_ + "/small.txt") << std::string(100, 'x');
  SweepConfig text = Config("{source: text, paths: [small.txt]}");
  r = CheckPlanData(text, MustPlan(text), {}, {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("data.paths: validation data ("), std::string::npos)
      << r.status().message();
  // A file this machine does not see (a SLURM cluster's): no error here.
  fs::remove(dir_ + "/val.bin");
  Result<DataCheckReport> unseen = CheckPlanData(c, MustPlan(c), {}, {});
  ASSERT_TRUE(unseen.ok()) << unseen.status().message();
  EXPECT_EQ(unseen->files, 1);
}

TEST_F(DataCheckTest, TheStoreRemembersAScanUntilTheFileChanges) {
  ASSERT_TRUE(trainer::WriteBinTokens(dir_ + "/train.bin", Tokens(5000)).ok());
  ASSERT_TRUE(trainer::WriteBinTokens(dir_ + "/val.bin", Tokens(500)).ok());
  auto db = store::Store::Open(dir_ + "/s.db");
  ASSERT_TRUE(db.ok()) << db.status().message();
  SweepConfig c = Config("{source: bin, train: train.bin, val: val.bin}");
  DataCheckOptions o;
  o.cache = db->get();
  std::ostringstream lines;
  o.out = &lines;
  o.progress_bytes = 0;  // a line for every scan
  Result<DataCheckReport> first = CheckPlanData(c, MustPlan(c), {}, o);
  ASSERT_TRUE(first.ok()) << first.status().message();
  EXPECT_EQ(first->scanned, 2);
  const std::string path = (fs::path(dir_) / "train.bin").lexically_normal().string();
  EXPECT_NE(lines.str().find(path + ": 5000 tokens, largest id 99, read in "), std::string::npos)
      << lines.str();
  auto rec = (*db)->GetTokenFile(path, "bin");
  ASSERT_TRUE(rec.ok() && rec->has_value());
  EXPECT_EQ((*rec)->tokens, 5000);
  EXPECT_EQ((*rec)->max_id, 99);
  EXPECT_EQ((*rec)->max_at, 99);
  // Unchanged: nothing is read again, and nothing printed.
  lines.str("");
  Result<DataCheckReport> second = CheckPlanData(c, MustPlan(c), {}, o);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->files, 2);
  EXPECT_EQ(second->scanned, 0);
  EXPECT_EQ(lines.str(), "");
  // The same size, rewritten with an id the vocabulary cannot hold: a new identity, a new scan.
  ASSERT_TRUE(trainer::WriteBinTokens(dir_ + "/train.bin", Tokens(5000, 17, 400)).ok());
  Result<DataCheckReport> third = CheckPlanData(c, MustPlan(c), {}, o);
  ASSERT_FALSE(third.ok());
  EXPECT_NE(third.status().message().find("token id 400 at token 17"), std::string::npos)
      << third.status().message();
}

}  // namespace
}  // namespace isoflop::sweep
