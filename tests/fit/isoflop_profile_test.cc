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

}  // namespace
}  // namespace isoflop::fit
