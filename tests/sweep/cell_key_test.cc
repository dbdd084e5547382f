// Cell keys are a promise: a store made by an earlier isoflop must find its cells again (their
// run folders and metrics are filed under them). These are the keys of tests/sweep/testdata/
// tiny.yaml as isoflop computed them before run.json got one definition and SHA-256 came from
// libcrypto; any change to either that moves a key fails here.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "isoflop/sweep/config.h"
#include "isoflop/sweep/planner.h"

namespace isoflop::sweep {
namespace {

TEST(CellKeyTest, KeysOfTheTinySweepAreUnchanged) {
  Result<SweepConfig> cfg = LoadSweepConfig(
      std::string(ISOFLOP_SOURCE_DIR) + "/tests/sweep/testdata/tiny.yaml", {"budgets=[2e9]"});
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  Result<Plan> plan = PlanSweep(*cfg, PlanEnvironment{});
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  std::map<std::string, std::string> got;
  for (const Cell& c : plan->cells) got[c.ShapeString()] = c.key;
  const std::map<std::string, std::string> pinned = {{"1x16h2", "c514f93a904d443e"},
                                                     {"1x24h3", "fb001e82a0ca8029"},
                                                     {"1x32h4", "4acbfd9b881ac3fc"}};
  EXPECT_EQ(got, pinned);
}

TEST(CellKeyTest, Sha256MatchesTheStandardVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// `model.family: moe` with a `moe:` block plans cells whose run.json carries the block (the
// trainer's definition of it), sized by active parameters (D = C / 6 N_active), with keys of
// their own; a bad MoE field is an error at its line.
TEST(MoeSweepTest, MoeCellsCarryTheirBlockAndAreSizedByActiveParameters) {
  Result<SweepConfig> cfg =
      LoadSweepConfig(std::string(ISOFLOP_SOURCE_DIR) + "/tests/sweep/testdata/tiny_moe.yaml");
  ASSERT_TRUE(cfg.ok()) << cfg.status().message();
  Result<Plan> plan = PlanSweep(*cfg, PlanEnvironment{});
  ASSERT_TRUE(plan.ok()) << plan.status().message();
  ASSERT_EQ(plan->cells.size(), 3u);
  for (const Cell& c : plan->cells) {
    EXPECT_EQ(c.config["model"]["family"], "moe");
    EXPECT_EQ(c.config["model"]["moe"]["n_experts"], 4);
    EXPECT_EQ(c.config["model"]["moe"]["top_k"], 2);
    EXPECT_LT(c.n_active, c.n_total);
    EXPECT_EQ(c.tokens, std::llround(2e9 / c.flops_per_token_6n));
    EXPECT_NEAR(c.flops_per_token_6n, 6.0 * double(c.n_active), 1e-9 * c.flops_per_token_6n);
    Result<std::string> run = RunJson(c, "x", 1, "cpu");
    ASSERT_TRUE(run.ok()) << run.status().message();
  }
  const std::string bad = R"(name: m
data: {source: synthetic}
model:
  family: moe
  vocab_size: 32
  seq_len: 32
  moe: {n_experts: 4, top_k: 5}
  ladder:
    - {n_layer: 1, d_model: 16, n_head: 2}
budgets: [1e9]
train: {batch_tokens: 256}
)";
  Result<SweepConfig> b = ParseSweepConfig(bad, "m.yaml", {}, "/a");
  Status st = b.ok() ? PlanSweep(*b, PlanEnvironment{}).status() : b.status();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("m.yaml:7:"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("model.moe.top_k"), std::string::npos) << st.message();
  const std::string dense_with_block = R"(name: m
data: {source: synthetic}
model:
  vocab_size: 32
  seq_len: 32
  moe: {n_experts: 4}
  ladder:
    - {n_layer: 1, d_model: 16, n_head: 2}
budgets: [1e9]
)";
  Result<SweepConfig> d = ParseSweepConfig(dense_with_block, "m.yaml", {}, "/a");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("m.yaml:6:8: model.moe: only with model.family: moe"),
            std::string::npos)
      << d.status().message();
}

}  // namespace
}  // namespace isoflop::sweep
