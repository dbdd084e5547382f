// IsoFLOP profiles on synthetic parabolas with known minima, budget grouping, flags and errors;
// and the training-curve envelope.
#include "isoflop/fit/isoflop_profile.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "isoflop/fit/envelope.h"

namespace isoflop::fit {
namespace {

// Budgets C_k; at each, loss = 2 + 0.1·(ln N − ln N*(C))² exactly, N* = 0.1·C^0.5, and
// seven N spread ±1.5 in ln N around N* (or shifted by `shift` to move the minimum out).
std::vector<Observation> Parabolas(const std::vector<double>& budgets, double shift = 0,
                                   bool ids = false) {
  std::vector<Observation> obs;
  for (size_t k = 0; k < budgets.size(); ++k) {
    const double c = budgets[k], xs = std::log(0.1 * std::sqrt(c));
    for (int i = -3; i <= 3; ++i) {
      Observation o;
      const double x = xs + shift + 0.5 * i;
      o.n = std::exp(x);
      o.c = c * (1 + 0.005 * i);  // imported data: C varies by ±1.5% within a budget
      o.d = o.c / (6 * o.n);
      o.loss = 2 + 0.1 * (x - xs) * (x - xs);
      if (ids) o.budget_id = static_cast<int64_t>(k);
      obs.push_back(o);
    }
  }
  return obs;
}

TEST(IsoflopTest, RecoversMinimaAndPowerLaw) {
  auto fit = FitIsoflop(Parabolas({1e18, 1e19, 1e20, 1e21}), IsoflopOptions{});
  ASSERT_TRUE(fit.ok()) << fit.status().message();
  ASSERT_EQ(fit->budgets.size(), 4u);
  for (const auto& b : fit->budgets) {
    EXPECT_TRUE(b.usable);
    EXPECT_FALSE(b.outside_range);
    EXPECT_NEAR(b.n_opt / (0.1 * std::sqrt(b.c)), 1, 0.01);  // C per point varies by ±1.5%
    EXPECT_NEAR(b.loss_at_n_opt, 2, 1e-9);
    EXPECT_EQ(b.n_points, 7);
  }
  EXPECT_NEAR(fit->n_opt.a, 0.5, 0.01);
  EXPECT_NEAR(fit->d_opt.a, 0.5, 0.02);  // D* = C/(6N*) ∝ C^0.5
  EXPECT_EQ(fit->n_opt.n_budgets, 4);
}

TEST(IsoflopTest, GroupsByIdWhenEveryObservationHasOne) {
  auto obs = Parabolas({1e18, 1.01e18}, 0, /*ids=*/true);  // within tolerance, distinct ids
  auto groups = GroupByBudget(obs, 0.05, FlopsConvention{});
  EXPECT_EQ(groups.size(), 2u);
  for (auto& o : obs) o.budget_id = -1;
  EXPECT_EQ(GroupByBudget(obs, 0.05, FlopsConvention{}).size(), 1u);
}

TEST(IsoflopTest, FlagsMinimaOutsideTheSampledRange) {
  auto obs = Parabolas({1e18, 1e19, 1e20}, /*shift=*/2.5);  // all sampled N above N*
  IsoflopOptions keep;
  keep.drop_outside_range = false;
  auto fit = FitIsoflop(obs, keep);
  ASSERT_TRUE(fit.ok());
  for (const auto& b : fit->budgets) EXPECT_TRUE(b.outside_range);
  for (const auto& b : fit->budgets) EXPECT_EQ(b.note.rfind("kept: ", 0), 0u) << b.note;
  auto dropped = FitIsoflop(obs, IsoflopOptions{});  // the default leaves them out
  ASSERT_FALSE(dropped.ok());
  // Says plainly that they were left out, why, and which switch keeps them.
  EXPECT_NE(dropped.status().message().find("left out: the parabola's minimum N = "),
            std::string::npos)
      << dropped.status().message();
  EXPECT_NE(dropped.status().message().find("outside the sampled sizes"), std::string::npos);
  EXPECT_NE(dropped.status().message().find("--keep-outside-range"), std::string::npos);
}

// Issue 14: real isoFLOP files record each run's nominal budget; their 6ND differs from it by
// up to ±35%. Grouping by C within 5% shredded each budget into fragments; the recorded budget
// groups them exactly, and the clustering fallback says what it did and how to fix it.
std::vector<Observation> JitteredBudgets(bool record_budget) {
  auto obs = Parabolas({1e18, 1e19, 1e20, 1e21});
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> jitter(std::log(0.65), std::log(1.35));
  for (size_t i = 0; i < obs.size(); ++i) {
    Observation& o = obs[i];
    const double nominal = std::pow(10.0, 18 + static_cast<double>(i / 7));
    o.c = 0;  // C = 6ND, as a plain import derives it
    o.d = nominal / (6 * o.n) * std::exp(jitter(rng));
    if (record_budget) o.budget = nominal;
  }
  return obs;
}

TEST(IsoflopTest, GroupsByTheRecordedBudget) {
  const auto obs = JitteredBudgets(true);
  const BudgetGroups g = GroupBudgets(obs, 0.05, FlopsConvention{});
  EXPECT_EQ(g.how, "budget");
  ASSERT_EQ(g.groups.size(), 4u);
  EXPECT_TRUE(g.fragmented.empty());
  IsoflopOptions keep;
  keep.drop_outside_range = false;  // the log-D parabolas see the jitter; N* is what is checked
  auto fit = FitIsoflop(obs, keep);
  ASSERT_TRUE(fit.ok()) << fit.status().message();
  EXPECT_EQ(fit->grouping, "budget");
  for (size_t k = 0; k < 4; ++k) EXPECT_EQ(fit->budgets[k].c, std::pow(10.0, 18 + k));
  EXPECT_NEAR(fit->n_opt.a, 0.5, 1e-9);  // N* = 0.1·C^0.5 exactly, at the nominal budgets
}

TEST(IsoflopTest, ClusteringWithoutABudgetSaysSoAndNamesTheFixWhenFragmented) {
  const auto obs = JitteredBudgets(false);
  const BudgetGroups g = GroupBudgets(obs, 0.05, FlopsConvention{});
  EXPECT_EQ(g.how, "clustered");
  // Within-budget 6ND spread ±35%, budgets a decade apart: the clusters are the budgets
  // (grouping within 5% of each budget's smallest C, as before, made 24 of these 28 runs).
  EXPECT_EQ(g.groups.size(), 4u);
  EXPECT_TRUE(g.fragmented.empty()) << g.fragmented;
  // Exact budgets (no jitter) cluster into one budget each, and the fit says it clustered.
  auto exact = FitIsoflop(Parabolas({1e18, 1e19, 1e20}), IsoflopOptions{});
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(exact->grouping, "clustered");
  ASSERT_FALSE(exact->warnings.empty());
  EXPECT_NE(exact->warnings[0].find("clustering C = 6ND in log space"), std::string::npos);
  // Many budgets of 1-2 runs: the warning names the fix.
  std::vector<Observation> shredded;
  for (int i = 0; i < 12; ++i) {
    Observation o;
    o.n = 1e8 * (1 + i % 3);
    o.c = std::pow(10.0, 18 + 0.2 * i);
    o.d = o.c / (6 * o.n);
    o.loss = 3;
    shredded.push_back(o);
  }
  const BudgetGroups s = GroupBudgets(shredded, 0.05, FlopsConvention{});
  EXPECT_EQ(s.groups.size(), 12u);
  EXPECT_NE(s.fragmented.find("12 budgets, 12 of them with only 1-2 runs"), std::string::npos)
      << s.fragmented;
  EXPECT_NE(s.fragmented.find("--budget-column"), std::string::npos);
}

TEST(IsoflopTest, ArgminEstimatorTakesEachBudgetsLowestLossRun) {
  IsoflopOptions opt;
  opt.estimator = "argmin";
  auto fit = FitIsoflop(Parabolas({1e18, 1e19, 1e20}), opt);
  ASSERT_TRUE(fit.ok()) << fit.status().message();
  EXPECT_EQ(fit->estimator, "argmin");
  for (const auto& b : fit->budgets) {
    EXPECT_NEAR(b.n_opt / (0.1 * std::sqrt(b.c)), 1, 1e-4);  // the sampled N at N* (C ±1.5%)
    EXPECT_DOUBLE_EQ(b.loss_at_n_opt, 2);
  }
  EXPECT_NEAR(fit->n_opt.a, 0.5, 0.01);
  // A lowest loss at the edge of the sampled sizes is left out unless kept.
  auto edge = FitIsoflop(Parabolas({1e18, 1e19, 1e20}, /*shift=*/2.5), opt);
  ASSERT_FALSE(edge.ok());
  EXPECT_NE(edge.status().message().find("lowest loss is at the smallest sampled size"),
            std::string::npos)
      << edge.status().message();
  opt.estimator = "mean";
  EXPECT_FALSE(opt.Validate().ok());
}

TEST(IsoflopTest, SingleBudgetIsAClearError) {
  auto fit = FitIsoflop(Parabolas({1e19}), IsoflopOptions{});
  ASSERT_FALSE(fit.ok());
  EXPECT_EQ(fit.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(fit.status().message().find("at least two compute budgets"), std::string::npos);
}

TEST(IsoflopTest, TooFewSizesPerBudgetIsExplained) {
  auto obs = Parabolas({1e18, 1e19});
  obs.erase(obs.begin() + 2, obs.begin() + 7);  // budget 1e18 keeps 2 sizes
  auto fit = FitIsoflop(obs, IsoflopOptions{});
  ASSERT_FALSE(fit.ok());
  EXPECT_NE(fit.status().message().find("distinct model size"), std::string::npos);
}

TEST(EnvelopeTest, LowestCurveAtEachFlopLevel) {
  // Three model sizes; loss(C) = 2 + A/N^0.3 + B/(C/6N)^0.3: the larger model wins at larger C.
  std::vector<Curve> curves;
  for (double n : {1e6, 1e7, 1e8}) {
    Curve c;
    c.n = n;
    for (int i = 0; i <= 60; ++i) {
      const double flops = std::pow(10.0, 12 + 8.0 * i / 60);
      const double d = flops / (6 * n);
      c.points.emplace_back(flops, 2 + 400 / std::pow(n, 0.3) + 400 / std::pow(d, 0.3));
    }
    curves.push_back(c);
  }
  auto fit = FitEnvelope(curves, EnvelopeOptions{});
  ASSERT_TRUE(fit.ok()) << fit.status().message();
  EXPECT_EQ(fit->points.front().n, 1e6);
  EXPECT_EQ(fit->points.back().n, 1e8);
  EXPECT_GT(fit->n_opt.a, 0.2);  // true exponent 0.5, coarse with three sizes
  EXPECT_LT(fit->n_opt.a, 0.8);
  auto one = FitEnvelope({curves[0]}, EnvelopeOptions{});
  EXPECT_FALSE(one.ok());
}

TEST(EnvelopeTest, LevelsStartWhereTheShortestRunEnds) {
  // Runs of three sizes at two budgets (C = 1e16, 1e17), each logged from 1% of its tokens, with
  // a warm-up penalty early in each run. Below 1e16 only mid-run points exist.
  std::vector<Curve> curves;
  for (double budget : {1e16, 1e17}) {
    for (double n : {1e7, 4e7, 1.6e8}) {  // N_opt = sqrt(C/6): 4e7 at 1e16, 1.3e8 at 1e17
      Curve c;
      c.n = n;
      const double d_end = budget / (6 * n);
      for (int i = 1; i <= 100; ++i) {
        const double d = d_end * i / 100.0;
        const double warmup = i < 10 ? 0.5 * (10 - i) / 10.0 : 0.0;
        c.points.emplace_back(6 * n * d,
                              2 + 400 / std::pow(n, 0.3) + 400 / std::pow(d, 0.3) + warmup);
      }
      curves.push_back(c);
    }
  }
  auto fit = FitEnvelope(curves, EnvelopeOptions{});
  ASSERT_TRUE(fit.ok()) << fit.status().message();
  EXPECT_NEAR(fit->points.front().c, 1e16, 1e16 * 1e-9);  // the shortest runs end at 1e16
  EXPECT_NEAR(fit->points.back().c, 1e17, 1e17 * 1e-9);
  EnvelopeOptions all;
  all.from_shortest_end = false;
  auto whole = FitEnvelope(curves, all);
  ASSERT_TRUE(whole.ok()) << whole.status().message();
  EXPECT_LT(whole->points.front().c, 1e15);  // 1% of the smallest model's tokens
}

}  // namespace
}  // namespace isoflop::fit
