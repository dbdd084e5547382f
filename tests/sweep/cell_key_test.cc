// Cell keys are a promise: a store made by an earlier isoflop must find its cells again (their
// run folders and metrics are filed under them). These are the keys of tests/sweep/testdata/
// tiny.yaml as isoflop computed them before run.json got one definition and SHA-256 came from
// libcrypto; any change to either that moves a key fails here.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace isoflop::sweep
