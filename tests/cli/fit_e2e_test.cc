// End-to-end tests of `isoflop fit`, `isoflop fits` and `isoflop optimal` through the real
// binary on the real Chinchilla data (Besiroglu et al. 2024's extraction of Hoffmann et al.
// 2022, Figure 4).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "e2e_util.h"

namespace isoflop::testing {
namespace {

const std::string kChinchilla =
    std::string(ISOFLOP_SHARED_DATA_DIR) + "/chinchilla/svg_extracted_data.csv";

class FitCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(TempDir("fitcli"));
    db_ = new std::string(*dir_ + "/store.db");
    auto r = RunCommand({Binary("isoflop"), "--db", *db_, "import", kChinchilla, "--name", "chin"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(*dir_); }
  static CommandResult Isoflop(std::vector<std::string> args) {
    args.insert(args.begin(), {Binary("isoflop"), "--db", *db_});
    return RunCommand(args);
  }
  static std::string* dir_;
  static std::string* db_;
};
std::string* FitCliTest::dir_ = nullptr;
std::string* FitCliTest::db_ = nullptr;

TEST_F(FitCliTest, ParametricFitOnChinchillaIsStoredAndQueried) {
  auto fit = Isoflop({"fit", "--observations", "chin", "--exclude-top-loss", "5", "--bootstrap",
                      "50", "--format", "json"});
  ASSERT_EQ(fit.exit_code, 0) << fit.err;
  auto j = nlohmann::json::parse(fit.out);
  // The best summed-Huber objective known for these 240 points (scipy L-BFGS-B over the same
  // grid agrees to 10 digits; bench/fit).
  EXPECT_NEAR(j["objective"].get<double>(), 1.018274e-3, 1e-8);
  EXPECT_EQ(j["n_points"], 240);
  EXPECT_NEAR(j["params"]["E"].get<double>(), 1.817, 1.817 * 0.005);
  EXPECT_NEAR(j["params"]["alpha"].get<double>(), 0.348, 0.348 * 0.005);
  EXPECT_NEAR(j["params"]["beta"].get<double>(), 0.366, 0.366 * 0.01);
  ASSERT_TRUE(j["ci"].contains("E"));
  EXPECT_LT(j["ci"]["E"]["lo"].get<double>(), j["params"]["E"].get<double>());
  EXPECT_GT(j["ci"]["E"]["hi"].get<double>(), j["params"]["E"].get<double>());

  auto fits = Isoflop({"fits", "--format", "csv"});
  ASSERT_EQ(fits.exit_code, 0) << fits.err;
  EXPECT_NE(fits.out.find("observations:chin,parametric,chinchilla"), std::string::npos)
      << fits.out;

  auto opt = Isoflop({"optimal", "--compute", "1e21", "--format", "json"});
  ASSERT_EQ(opt.exit_code, 0) << opt.err;
  auto o = nlohmann::json::parse(opt.out);
  ASSERT_EQ(o.size(), 1u);
  EXPECT_EQ(o[0]["compute"].get<double>(), 1e21);
  const double n = o[0]["n_opt"].get<double>(), d = o[0]["d_opt"].get<double>();
  EXPECT_NEAR(6 * n * d / 1e21, 1.0, 1e-9);  // on the budget, C = 6ND
  EXPECT_LT(o[0]["n_lo"].get<double>(), n);
  EXPECT_GT(o[0]["n_hi"].get<double>(), n);
}

TEST_F(FitCliTest, HoffmannRoundedLawAtChinchillaBudget) {
  // Hoffmann et al. 2022's rounded Approach 3 law at Chinchilla's budget. The closed form
  // G = (αA/(βB))^(1/(α+β)) gives N_opt = G·(C/6)^(β/(α+β)) = 3.249e10 and D = C/(6N).
  auto r = Isoflop({"optimal", "--given", "E=1.69,A=406.4,B=410.7,alpha=0.34,beta=0.28",
                    "--compute", "5.88e23", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto o = nlohmann::json::parse(r.out);
  const double g = std::pow(0.34 * 406.4 / (0.28 * 410.7), 1 / 0.62);
  const double n = g * std::pow(5.88e23 / 6, 0.28 / 0.62);
  EXPECT_NEAR(o[0]["n_opt"].get<double>() / n, 1.0, 1e-9);
  EXPECT_NEAR(o[0]["d_opt"].get<double>() / (5.88e23 / (6 * n)), 1.0, 1e-9);
}

TEST_F(FitCliTest, BadFitInputsAreClearErrors) {
  auto missing = Isoflop({"fit", "--observations", "nope"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("no observation set named 'nope'"), std::string::npos) << missing.err;
  std::string tiny = *dir_ + "/tiny.csv";
  {
    std::ofstream f(tiny);
    f << "n,d,loss\n1e6,1e7,3.0\n2e6,1e7,2.9\n";
  }
  auto few = Isoflop({"fit", "--csv", tiny, "--no-store"});
  EXPECT_EQ(few.exit_code, 1);
  EXPECT_NE(few.err.find("point"), std::string::npos) << few.err;
  auto nofit =
      RunCommand({Binary("isoflop"), "--db", *dir_ + "/empty.db", "optimal", "--compute", "1e21"});
  EXPECT_EQ(nofit.exit_code, 1);
  auto bad = Isoflop({"optimal", "--compute", "abc"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--compute: 'abc' is not a positive number"), std::string::npos)
      << bad.err;
}

}  // namespace
}  // namespace isoflop::testing
