// Compute-optimal queries: closed form against the numerical optimum, the FLOPs convention,
// inverse queries and inference-aware sizing.
#include "isoflop/fit/query.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <tuple>
#include <vector>

namespace isoflop::fit {
namespace {

ScalingLaw Hoffmann() {
  ScalingLaw law;
  law.params = {1.69, 406.4, 410.7, 0.34, 0.28};
  return law;
}

TEST(QueryTest, ClosedFormMatchesNumericalOptimum) {
  for (double c : {1e18, 1e21, 5.88e23, 1e26}) {
    auto closed = ComputeOptimal(Hoffmann(), c);
    auto numeric = ComputeOptimal(Hoffmann(), c, /*numeric_only=*/true);
    ASSERT_TRUE(closed.ok() && numeric.ok());
    EXPECT_NEAR(numeric->n / closed->n, 1, 1e-6) << c;
    EXPECT_NEAR(numeric->d / closed->d, 1, 1e-6) << c;
    EXPECT_NEAR(closed->c, c, 1e-9 * c);  // 6·N·D is the budget
    EXPECT_LE(closed->loss, numeric->loss + 1e-12);
  }
}

// Hoffmann's rounded law at Chinchilla's own budget, C = 5.88e23: the closed form gives
// N_opt ≈ 3.25e10, D_opt ≈ 3.02e12 (Chinchilla is 70e9 params on 1.4e12 tokens: the rounded law is
// known to give a smaller, data-heavier optimum; Besiroglu et al. 2024, §4).
TEST(QueryTest, HoffmannRoundedLawAtChinchillaBudget) {
  auto a = ChinchillaClosedForm(Hoffmann(), 5.88e23);
  ASSERT_TRUE(a.ok());
  const double s = 0.34 + 0.28;
  const double g = std::pow(0.34 * 406.4 / (0.28 * 410.7), 1 / s);
  EXPECT_NEAR(a->n, g * std::pow(5.88e23 / 6, 0.28 / s), 1e-6 * a->n);
  EXPECT_NEAR(a->d, std::pow(5.88e23 / 6, 0.34 / s) / g, 1e-6 * a->d);
  EXPECT_GT(a->n, 2e10);
  EXPECT_LT(a->n, 5e10);
}

// A law whose loss rises with N (an exponent fitted below zero) has no optimal split: the
// closed form would give NaN and the search an end of its interval. Both refuse, naming it.
TEST(QueryTest, AnExponentAtOrBelowZeroHasNoOptimum) {
  for (const auto& [index, value, said] : std::vector<std::tuple<int, double, std::string>>{
           {3, -0.05, "alpha = -0.05 <= 0"}, {4, 0.0, "beta = 0 <= 0"}}) {
    ScalingLaw law = Hoffmann();
    law.params[index] = value;
    for (bool numeric : {false, true}) {
      auto a = ComputeOptimal(law, 1e21, numeric);
      ASSERT_FALSE(a.ok()) << said;
      EXPECT_EQ(a.status().code(), Status::Code::kFailedPrecondition);
      EXPECT_EQ(a.status().message(), "the law's " + said + ": the loss does not fall with " +
                                          (index == 3 ? "N" : "D") +
                                          ", so no compute budget has an optimal split of N and D");
    }
  }
}

TEST(QueryTest, FlopsConventionIsHonoured) {
  ScalingLaw six = Hoffmann(), eight = Hoffmann();
  eight.flops.k = 8;
  auto a = ComputeOptimal(six, 1e21), b = ComputeOptimal(eight, 1e21);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NEAR(b->c, 1e21, 1e12);
  EXPECT_NEAR(8 * b->n * b->d, 1e21, 1e12);
  EXPECT_LT(b->n, a->n);  // more FLOPs per token: smaller model and fewer tokens

  // A non-linear convention (6ND plus an attention-like 1e3·D term) is solved numerically.
  ScalingLaw custom = Hoffmann();
  custom.flops.name = "custom";
  custom.flops.custom = [](double n, double d) { return 6 * n * d + 1e3 * d; };
  auto c = ComputeOptimal(custom, 1e21);
  ASSERT_TRUE(c.ok());
  EXPECT_NEAR(6 * c->n * c->d + 1e3 * c->d, 1e21, 1e-6 * 1e21);
  EXPECT_NEAR(c->n / a->n, 1, 0.01);  // the extra term is small at this size
}

TEST(QueryTest, KaplanFormIsSolvedNumerically) {
  ScalingLaw law;
  law.form = "kaplan";
  law.params = {8.8e13, 5.4e13, 0.076, 0.095};
  // Kaplan's law has no interior optimum without E... its loss still has one along C = 6ND.
  auto a = ComputeOptimal(law, 1e21);
  ASSERT_TRUE(a.ok());
  auto lower = law.Loss(a->n * 1.5, 1e21 / (6 * a->n * 1.5));
  auto higher = law.Loss(a->n / 1.5, 1e21 / (6 * a->n / 1.5));
  EXPECT_LE(a->loss, lower);
  EXPECT_LE(a->loss, higher);
}

TEST(QueryTest, BestDataForParamsInvertsTheOptimum) {
  auto opt = ComputeOptimal(Hoffmann(), 1e22);
  ASSERT_TRUE(opt.ok());
  auto back = BestDataForParams(Hoffmann(), opt->n);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_NEAR(back->d / opt->d, 1, 1e-6);
  EXPECT_NEAR(back->c / 1e22, 1, 1e-6);
}

TEST(QueryTest, LeastComputeForLossInvertsTheOptimalLoss) {
  auto opt = ComputeOptimal(Hoffmann(), 1e22);
  ASSERT_TRUE(opt.ok());
  auto back = LeastComputeForLoss(Hoffmann(), opt->loss);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_NEAR(back->c / 1e22, 1, 1e-6);
  auto impossible = LeastComputeForLoss(Hoffmann(), 1.69);
  ASSERT_FALSE(impossible.ok());
  EXPECT_EQ(impossible.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(impossible.status().message().find("irreducible"), std::string::npos);
}

TEST(QueryTest, InferenceAwareShrinksTheModelAndKeepsTheLoss) {
  const double c = 1e22;
  auto none = InferenceAware(Hoffmann(), c, 0);
  auto lots = InferenceAware(Hoffmann(), c, 1e13);
  ASSERT_TRUE(none.ok() && lots.ok()) << lots.status().message();
  EXPECT_NEAR(none->chosen.n / none->compute_optimal.n, 1, 1e-3);  // no inference: same model
  EXPECT_LT(lots->chosen.n, lots->compute_optimal.n);
  EXPECT_GT(lots->chosen.d, lots->compute_optimal.d);
  EXPECT_NEAR(lots->chosen.loss, lots->compute_optimal.loss, 1e-9);
  const double ref_total = c + 2 * lots->compute_optimal.n * 1e13;
  EXPECT_LT(lots->total_flops, ref_total);
}

TEST(QueryTest, IntervalsFromDraws) {
  std::vector<std::vector<double>> draws;
  for (int i = 0; i < 50; ++i) draws.push_back({1.69, 406.4, 410.7, 0.34 + 0.002 * (i - 25), 0.28});
  Query q{Query::Kind::kCompute, 1e21, 0};
  auto ans = AnswerQuery(Hoffmann(), q, draws, 0.9);
  ASSERT_TRUE(ans.ok());
  EXPECT_EQ(ans->ci_draws_used, 50);
  EXPECT_LT(ans->ci.at("n").lo, ans->point.n);
  EXPECT_GT(ans->ci.at("n").hi, ans->point.n);
  EXPECT_DOUBLE_EQ(ans->ci.at("n").level, 0.9);
}

// A loss query: draws whose E lies above the loss can never reach it at any compute. They are
// the interval's upper tail (unbounded N and D), not dropped: 10 of 50 (20%) is more than the
// 5% a 90% interval leaves above it, so the upper ends are +inf, the lower ones finite.
TEST(QueryTest, LossIntervalsKeepDrawsThatNeverReachTheLoss) {
  std::vector<std::vector<double>> draws;
  for (int i = 0; i < 50; ++i)
    draws.push_back({i < 10 ? 2.5 : 1.69 + 0.001 * (i - 30), 406.4, 410.7, 0.34, 0.28});
  Query q{Query::Kind::kLoss, 2.0, 0};
  auto ans = AnswerQuery(Hoffmann(), q, draws, 0.9);
  ASSERT_TRUE(ans.ok()) << ans.status().message();
  EXPECT_EQ(ans->ci_draws_used, 50);
  EXPECT_EQ(ans->ci_draws_unbounded, 10);
  for (const char* k : {"n", "d", "c"}) {
    EXPECT_TRUE(std::isinf(ans->ci.at(k).hi)) << k;
    EXPECT_TRUE(std::isfinite(ans->ci.at(k).lo)) << k;
    EXPECT_LT(ans->ci.at(k).lo, k == std::string("n")   ? ans->point.n
                                : k == std::string("d") ? ans->point.d
                                                        : ans->point.c)
        << k;
  }
  // A few such draws (2 of 50) stay beyond the 95th percentile: the upper end is finite.
  for (int i = 2; i < 10; ++i) draws[i][0] = 1.69;
  auto few = AnswerQuery(Hoffmann(), q, draws, 0.9);
  ASSERT_TRUE(few.ok());
  EXPECT_EQ(few->ci_draws_unbounded, 2);
  EXPECT_TRUE(std::isfinite(few->ci.at("n").hi));
}

TEST(QueryTest, ChinchillaLawNamesTheMissingParameter) {
  auto law = ChinchillaLaw({{"E", 1.69}, {"A", 406.4}, {"B", 410.7}, {"alpha", 0.34}});
  ASSERT_FALSE(law.ok());
  EXPECT_NE(law.status().message().find("'beta'"), std::string::npos);
}

// The same law on both sides: an "MoE" worth exactly its own size and compute.
TEST(QueryTest, DenseEquivalentOfTheDenseLawIsItself) {
  auto eq = DenseEquivalentAt(Hoffmann(), Hoffmann(), 1e21);
  ASSERT_TRUE(eq.ok()) << eq.status().message();
  EXPECT_NEAR(eq->n_effective / eq->moe.n, 1.0, 1e-9);
  EXPECT_NEAR(eq->effective_ratio, 1.0, 1e-9);
  EXPECT_NEAR(eq->compute_multiplier, 1.0, 1e-6);
  EXPECT_TRUE(eq->note.empty());
}

// A law with half the parameter term (an MoE whose experts help) against Hoffmann's, by hand:
// N_eff = (A / (L - E - B / D^beta))^(1/alpha) with the MoE's compute-optimal D and L.
TEST(QueryTest, DenseEquivalentMatchesTheHandFormula) {
  ScalingLaw moe = Hoffmann();
  moe.params[1] = 0.5 * 406.4;
  const double c = 1e21;
  auto eq = DenseEquivalentAt(moe, Hoffmann(), c);
  ASSERT_TRUE(eq.ok()) << eq.status().message();
  // The MoE's optimum, closed form (Hoffmann et al. 2022 eq. 4) written out.
  const double E = 1.69, A = 406.4, B = 410.7, a = 0.34, b = 0.28, Am = 0.5 * A;
  const double g = std::pow(a * Am / (b * B), 1 / (a + b));
  const double n = g * std::pow(c / 6, b / (a + b)), d = std::pow(c / 6, a / (a + b)) / g;
  const double loss = E + Am / std::pow(n, a) + B / std::pow(d, b);
  EXPECT_NEAR(eq->moe.n / n, 1.0, 1e-9);
  EXPECT_NEAR(eq->moe.loss, loss, 1e-12);
  const double n_eff = std::pow(A / (loss - E - B / std::pow(d, b)), 1 / a);
  EXPECT_NEAR(eq->n_effective / n_eff, 1.0, 1e-9);
  EXPECT_NEAR(eq->effective_ratio, n_eff / n, 1e-9);
  EXPECT_NEAR(eq->effective_ratio, std::pow(2.0, 1 / a), 1e-6);  // A/2 = A/(2^(1/a) N)^a
  // The dense compute reaching the same loss, and that it is more than c.
  EXPECT_GT(eq->compute_multiplier, 1.0);
  auto dense_opt = ComputeOptimal(Hoffmann(), eq->compute_multiplier * c);
  ASSERT_TRUE(dense_opt.ok());
  EXPECT_NEAR(dense_opt->loss, loss, 1e-9);
}

// A dense law whose floor E lies above the MoE's loss: no dense model of any size matches it.
TEST(QueryTest, DenseEquivalentSaysWhenNoDenseModelReachesTheLoss) {
  ScalingLaw dense = Hoffmann();
  dense.params[0] = 3.0;
  auto eq = DenseEquivalentAt(Hoffmann(), dense, 1e21);
  ASSERT_TRUE(eq.ok()) << eq.status().message();
  EXPECT_TRUE(std::isnan(eq->n_effective));
  EXPECT_TRUE(std::isnan(eq->compute_multiplier));
  EXPECT_NE(eq->note.find("no dense model"), std::string::npos) << eq->note;
}

// Intervals over draw pairs contain the point; a draw pair whose dense law cannot reach the
// loss keeps the upper bound unbounded instead of being dropped.
TEST(QueryTest, DenseEquivalentIntervalsFromDrawPairs) {
  ScalingLaw moe = Hoffmann();
  moe.params[1] = 0.5 * 406.4;
  std::vector<std::vector<double>> md, dd;
  for (int i = 0; i < 40; ++i) {
    md.push_back({1.69, 203.2 * (1 + 0.01 * (i - 20)), 410.7, 0.34, 0.28});
    dd.push_back({1.69, 406.4, 410.7, 0.34 + 0.001 * (i - 20), 0.28});
  }
  auto eq = DenseEquivalentAt(moe, Hoffmann(), 1e21, md, dd, 0.9);
  ASSERT_TRUE(eq.ok());
  EXPECT_EQ(eq->ci_draws_used, 40);
  for (const char* k : {"n_effective", "effective_ratio", "compute_multiplier"}) {
    ASSERT_TRUE(eq->ci.count(k)) << k;
    EXPECT_DOUBLE_EQ(eq->ci.at(k).level, 0.9);
  }
  EXPECT_LT(eq->ci.at("n_effective").lo, eq->n_effective);
  EXPECT_GT(eq->ci.at("n_effective").hi, eq->n_effective);
  EXPECT_LT(eq->ci.at("effective_ratio").lo, eq->effective_ratio);
  EXPECT_GT(eq->ci.at("effective_ratio").hi, eq->effective_ratio);
  // Half the dense draws can never reach the loss: the upper bound is unbounded.
  for (int i = 0; i < 20; ++i) dd[i][0] = 3.0;
  auto wide = DenseEquivalentAt(moe, Hoffmann(), 1e21, md, dd, 0.9);
  ASSERT_TRUE(wide.ok());
  EXPECT_TRUE(std::isinf(wide->ci.at("n_effective").hi));
  EXPECT_TRUE(std::isfinite(wide->ci.at("n_effective").lo));
}

}  // namespace
}  // namespace isoflop::fit
