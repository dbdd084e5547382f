// FitRecord and result types survive JSON round trips (what the store keeps), and RunFit
// produces the documented record for each method.
#include <gtest/gtest.h>

#include "isoflop/fit/fit_record.h"
#include "isoflop/fit/run_fit.h"
#include "test_data.h"

namespace isoflop::fit {
namespace {

using testing::Chinchilla240;
using testing::ChinchillaAll;

TEST(FitJsonTest, ParametricRecordRoundTripsThroughColumns) {
  FitConfig cfg;
  cfg.exclude_top_loss = 5;
  cfg.parametric.grid = {{0, 0.5}, {5, 10}, {5, 10}, {0.5}, {0.5}};
  cfg.bootstrap.resamples = 20;
  cfg.bootstrap.derived_at_compute = {1e21};
  auto rec = RunFit(ChinchillaAll(), {}, cfg);
  ASSERT_TRUE(rec.ok()) << rec.status().message();
  EXPECT_EQ(rec->method, "parametric");
  EXPECT_EQ(rec->form, "chinchilla");
  EXPECT_EQ(rec->n_points, 240);
  EXPECT_EQ(rec->flops_convention, "6nd");
  EXPECT_TRUE(rec->params.count("alpha"));
  EXPECT_TRUE(rec->ci.count("N_opt@1e+21"));
  EXPECT_TRUE(rec->result.contains("extrapolation"));
  EXPECT_EQ(rec->result["bootstrap"]["draws"].size(), 20u);

  auto back = FitRecord::FromColumns(rec->method, rec->form, rec->convention, rec->flops_convention,
                                     rec->ParamsJson().dump(), rec->CiJson().dump(), rec->objective,
                                     rec->n_points, rec->result.dump());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->params, rec->params);
  EXPECT_DOUBLE_EQ(back->ci.at("alpha").lo, rec->ci.at("alpha").lo);
  EXPECT_DOUBLE_EQ(back->objective, rec->objective);

  ParametricFit fit;
  ASSERT_TRUE(FromJson(back->result["parametric"], &fit).ok());
  EXPECT_EQ(fit.param_names.size(), 5u);
  EXPECT_DOUBLE_EQ(fit.objective, rec->objective);

  auto law = LawFromRecord(*back);
  ASSERT_TRUE(law.ok()) << law.status().message();
  EXPECT_EQ(law->draws.size(), 20u);
  auto ans = AnswerQuery(law->law, {Query::Kind::kCompute, 1e21, 0}, law->draws);
  ASSERT_TRUE(ans.ok());
  EXPECT_EQ(ans->ci_draws_used, 20);
}

TEST(FitJsonTest, IsoflopRecordHasBudgetsForPlots) {
  FitConfig cfg;
  cfg.method = "isoflop";
  cfg.isoflop.budget_rel_tol = 0.25;  // the figure's budgets: 6e18, 1e19, 3e19, ... ±20%
  auto rec = RunFit(Chinchilla240(), {}, cfg);
  ASSERT_TRUE(rec.ok()) << rec.status().message();
  IsoflopFit fit;
  ASSERT_TRUE(FromJson(rec->result["isoflop"], &fit).ok());
  EXPECT_GE(fit.budgets.size(), 5u);
  EXPECT_TRUE(rec->params.count("n_opt_a"));
  // Hoffmann's Approach 2 gives a ≈ 0.49; the extracted data land near it.
  EXPECT_NEAR(rec->params["n_opt_a"], 0.5, 0.1);
  const auto& b = rec->result["isoflop"]["budgets"][0];
  for (const char* key : {"c", "parabola_n", "n_opt", "loss_at_n_opt", "n_lo", "n_hi"})
    EXPECT_TRUE(b.contains(key)) << key;
}

TEST(FitJsonTest, BadColumnsAreCorrupt) {
  auto r = FitRecord::FromColumns("parametric", "chinchilla", "total", "6nd", "{not json", "{}",
                                  1.0, 3, "{}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kCorrupt);
  EXPECT_NE(r.status().message().find("params_json"), std::string::npos);
}

TEST(FitJsonTest, UnknownMethodIsRejected) {
  FitConfig cfg;
  cfg.method = "magic";
  auto rec = RunFit(Chinchilla240(), {}, cfg);
  ASSERT_FALSE(rec.ok());
  EXPECT_NE(rec.status().message().find("unknown fit method"), std::string::npos);
}

}  // namespace
}  // namespace isoflop::fit
