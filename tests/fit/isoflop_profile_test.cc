// IsoFLOP profiles on synthetic parabolas with known minima, budget grouping, flags and errors;
// and the training-curve envelope.
#include "isoflop/fit/isoflop_profile.h"

#include <gtest/gtest.h>

#include <cmath>

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
  auto dropped = FitIsoflop(obs, IsoflopOptions{});  // the default leaves them out
  ASSERT_FALSE(dropped.ok());
  EXPECT_NE(dropped.status().message().find("outside the sampled range"), std::string::npos);
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
