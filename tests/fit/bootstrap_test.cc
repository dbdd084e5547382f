// Bootstrap intervals (coverage of the truth, seeding, derived quantities) and the
// extrapolation check.
#include "isoflop/fit/bootstrap.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "isoflop/fit/fit_record.h"
#include "test_data.h"

namespace isoflop::fit {
namespace {

using testing::Synthetic;

TEST(BootstrapTest, IntervalsCoverTheTruthAndAreSeeded) {
  const auto obs = Synthetic(1.69, 406.4, 410.7, 0.34, 0.28, 0.01, 21);
  ParametricOptions opt;
  auto full = FitParametric(obs, opt);
  ASSERT_TRUE(full.ok());
  BootstrapOptions b;
  b.resamples = 200;
  b.seed = 9;
  b.derived_at_compute = {1e21};
  auto boot = BootstrapParametric(obs, opt, *full, b);
  ASSERT_TRUE(boot.ok()) << boot.status().message();
  EXPECT_EQ(boot->resamples, 200);
  EXPECT_LE(boot->failed, 2);
  EXPECT_EQ(boot->draws.size(), std::min<size_t>(200, b.keep_draws) - boot->failed);
  // 95% intervals of E, alpha and beta should contain the truth (1% noise, 64 points).
  const std::map<std::string, double> truth = {{"E", 1.69}, {"alpha", 0.34}, {"beta", 0.28}};
  for (const auto& [name, value] : truth) {
    const Interval& iv = boot->intervals.at(name);
    EXPECT_LT(iv.lo, value) << name;
    EXPECT_GT(iv.hi, value) << name;
    EXPECT_DOUBLE_EQ(iv.level, 0.95);
  }
  // Derived quantities exist and bracket the point estimate.
  const Interval& n = boot->intervals.at("N_opt@1e+21");
  ScalingLaw law;
  law.params = full->params;
  auto opt_alloc = ComputeOptimal(law, 1e21);
  EXPECT_LT(n.lo, opt_alloc->n);
  EXPECT_GT(n.hi, opt_alloc->n);
  EXPECT_TRUE(boot->intervals.count("a") && boot->intervals.count("tokens_per_param@1e+21"));
  // Same seed, same draws.
  auto again = BootstrapParametric(obs, opt, *full, b);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->draws, boot->draws);
}

// Issue 14: on this generated set (seed 7, found by scanning seeds 0..249 with the code before
// the fix) every start that reached the best objective stopped at the iteration cap, so the
// best optimum was not among the bootstrap's seeds; the refits fell into a worse basin and gave
// alpha = 0.354 [4055, 4055], E = 1.70 [2.89, 3.40]. Every interval must contain its point.
TEST(BootstrapTest, IntervalsContainThePointWhenTheBestStartHitTheIterationCap) {
  const auto obs = testing::IsoflopGrid(0.01, 7);
  ParametricOptions opt;
  auto full = FitParametric(obs, opt);
  ASSERT_TRUE(full.ok()) << full.status().message();
  // The reported optimum seeds the bootstrap: it is always the first kept optimum.
  ASSERT_FALSE(full->optima.empty());
  EXPECT_EQ(full->optima[0], full->internal);
  BootstrapOptions b;
  b.resamples = 100;
  b.seed = 0;
  b.derived_at_compute = {1e21};
  auto boot = BootstrapParametric(obs, opt, *full, b);
  ASSERT_TRUE(boot.ok()) << boot.status().message();
  ScalingLaw law;
  law.params = full->params;
  auto at = ComputeOptimal(law, 1e21);
  ASSERT_TRUE(at.ok());
  std::map<std::string, double> point = {{"N_opt@1e+21", at->n}, {"loss@1e+21", at->loss}};
  for (size_t j = 0; j < full->params.size(); ++j) point[full->param_names[j]] = full->params[j];
  for (const auto& [name, value] : point) {
    const Interval& iv = boot->intervals.at(name);
    EXPECT_LE(iv.lo, value) << name;
    EXPECT_GE(iv.hi, value) << name;
  }
  EXPECT_TRUE(boot->excludes_point.empty());
}

TEST(BootstrapTest, ReportsAnIntervalThatExcludesItsPoint) {
  // A "fit" whose reported parameters are not the data's optimum: the refits (seeded from the
  // reported point and its true optimum) land elsewhere, and the bootstrap says so.
  const auto obs = Synthetic(1.69, 406.4, 410.7, 0.34, 0.28, 0.01, 21);
  ParametricOptions opt;
  auto full = FitParametric(obs, opt);
  ASSERT_TRUE(full.ok());
  ParametricFit off = *full;
  off.params[3] += 0.2;  // alpha far from its optimum
  off.internal[3] += 0.2;
  BootstrapOptions b;
  b.resamples = 50;
  auto boot = BootstrapParametric(obs, opt, off, b);
  ASSERT_TRUE(boot.ok());
  bool alpha_flagged = false;
  for (const auto& e : boot->excludes_point) {
    if (e.name != "alpha") continue;
    alpha_flagged = true;
    EXPECT_DOUBLE_EQ(e.value, off.params[3]);
    EXPECT_GT(e.lo, e.value - 0.2 - 0.05);
    EXPECT_LT(e.hi, e.value);
  }
  EXPECT_TRUE(alpha_flagged);
}

TEST(BootstrapTest, IsoflopPowerLawIntervals) {
  std::vector<Observation> obs;
  std::mt19937_64 rng(3);
  std::normal_distribution<double> z(0, 0.002);
  for (double c : {1e18, 1e19, 1e20, 1e21}) {
    const double xs = std::log(0.1 * std::sqrt(c));
    for (int i = -3; i <= 3; ++i) {
      Observation o;
      o.n = std::exp(xs + 0.5 * i);
      o.c = c;
      o.d = c / (6 * o.n);
      o.loss = 2 + 0.1 * 0.25 * i * i + z(rng);
      obs.push_back(o);
    }
  }
  IsoflopOptions iso;
  auto fit = FitIsoflop(obs, iso);
  ASSERT_TRUE(fit.ok());
  BootstrapOptions b;
  b.resamples = 200;
  auto ci = BootstrapIsoflop(obs, iso, b, &*fit);
  ASSERT_TRUE(ci.ok());
  EXPECT_LT(ci->at("a").lo, 0.5);
  EXPECT_GT(ci->at("a").hi, 0.5);
  EXPECT_DOUBLE_EQ(fit->n_opt.a_ci.lo, ci->at("a").lo);
}

// Runs whose C scatter around their budget (imported data without a budget column): each
// resample keeps the full fit's clustered budgets, so its intervals are exactly those of the
// same runs given those budgets as ids. Clustering a resample anew would split budgets: its
// repeated draws add zero gaps in log C, shrinking the median gap the clustering scales by.
TEST(BootstrapTest, IsoflopResamplesKeepTheClusteredBudgets) {
  std::vector<Observation> clustered;
  std::mt19937_64 rng(11);
  std::normal_distribution<double> z(0, 0.003);
  for (double c : {1e17, 1e18, 1e19, 1e20, 1e21}) {
    const double xs = std::log(0.1 * std::sqrt(c));
    for (int i = -3; i <= 3; ++i) {  // C rising with i, -14% .. +14%
      Observation o;
      o.n = std::exp(xs + 0.5 * i);
      o.c = c * std::exp(0.045 * i + 0.004 * (i * i % 3));
      o.d = o.c / (6 * o.n);
      o.loss = 2 + 0.025 * i * i + z(rng);
      o.budget_id = -1;
      clustered.push_back(o);
    }
  }
  std::vector<Observation> by_id = clustered;
  for (size_t k = 0; k < by_id.size(); ++k) by_id[k].budget_id = static_cast<int64_t>(k / 7);
  IsoflopOptions iso;
  auto fit = FitIsoflop(clustered, iso);
  ASSERT_TRUE(fit.ok()) << fit.status().message();
  ASSERT_EQ(fit->grouping, "clustered");
  ASSERT_EQ(fit->budgets.size(), 5u);
  BootstrapOptions b;
  b.resamples = 300;
  auto a = BootstrapIsoflop(clustered, iso, b, nullptr);
  auto ref = BootstrapIsoflop(by_id, iso, b, nullptr);
  ASSERT_TRUE(a.ok() && ref.ok());
  for (const char* name : {"a", "b", "k_n", "k_d"}) {
    EXPECT_DOUBLE_EQ(a->at(name).lo, ref->at(name).lo) << name;
    EXPECT_DOUBLE_EQ(a->at(name).hi, ref->at(name).hi) << name;
  }
  EXPECT_LT(a->at("a").lo, 0.5);
  EXPECT_GT(a->at("a").hi, 0.5);
}

// Two budgets of three sizes each: a resample has a parabola at a budget only when its three
// draws are the three sizes (3!/3^3 = 6/27), so the fit (two budgets needed) fails with
// probability 1 - (6/27)^2 = 0.9506. The failures are counted, stored and warned about.
TEST(BootstrapTest, IsoflopCountsTheResamplesWhoseFitFailed) {
  std::vector<Observation> obs;
  for (double c : {1e18, 1e20}) {
    const double xs = std::log(0.1 * std::sqrt(c));
    for (int i = -1; i <= 1; ++i) {
      Observation o;
      o.n = std::exp(xs + i);
      o.c = c;
      o.d = c / (6 * o.n);
      o.loss = 2 + 0.05 * i * i + 0.001 * i;
      o.budget_id = c == 1e18 ? 0 : 1;
      obs.push_back(o);
    }
  }
  IsoflopOptions iso;
  auto fit = FitIsoflop(obs, iso);
  ASSERT_TRUE(fit.ok()) << fit.status().message();
  BootstrapOptions b;
  b.resamples = 1000;
  ASSERT_TRUE(BootstrapIsoflop(obs, iso, b, &*fit).ok());
  EXPECT_EQ(fit->bootstrap_resamples, 1000);
  // 950.6 expected, binomial sd 6.9: within 4 sd.
  EXPECT_GE(fit->bootstrap_failed, 923);
  EXPECT_LE(fit->bootstrap_failed, 978);
  ASSERT_FALSE(fit->warnings.empty());
  EXPECT_NE(fit->warnings.back().find(std::to_string(fit->bootstrap_failed) +
                                      " of 1000 bootstrap resamples"),
            std::string::npos)
      << fit->warnings.back();
  IsoflopFit back;
  ASSERT_TRUE(FromJson(ToJson(*fit), &back).ok());
  EXPECT_EQ(back.bootstrap_resamples, 1000);
  EXPECT_EQ(back.bootstrap_failed, fit->bootstrap_failed);
  // Nine sizes a budget: every resample has its minimum, nothing fails, nothing is said.
  std::vector<Observation> wide;
  for (double c : {1e18, 1e20}) {
    const double xs = std::log(0.1 * std::sqrt(c));
    for (int i = -4; i <= 4; ++i) {
      Observation o;
      o.n = std::exp(xs + 0.5 * i);
      o.c = c;
      o.d = c / (6 * o.n);
      o.loss = 2 + 0.02 * i * i;
      o.budget_id = c == 1e18 ? 0 : 1;
      wide.push_back(o);
    }
  }
  iso.drop_outside_range = false;  // a resample drawing one side only keeps its budget
  auto wide_fit = FitIsoflop(wide, iso);
  ASSERT_TRUE(wide_fit.ok());
  b.resamples = 200;
  ASSERT_TRUE(BootstrapIsoflop(wide, iso, b, &*wide_fit).ok());
  EXPECT_EQ(wide_fit->bootstrap_failed, 0);
  EXPECT_TRUE(wide_fit->warnings.empty()) << wide_fit->warnings.front();
}

// Training curves of L = 2 + 400/N^0.3 + 400/D^0.3 (N_opt ∝ C^0.5) along D = C/6N, for the
// given budgets and sizes per budget (multiples of sqrt(C/6)), each shifted by `offset(i)`.
std::vector<Curve> LawCurves(const std::vector<double>& budgets, const std::vector<double>& sizes,
                             const std::function<double(int)>& offset) {
  std::vector<Curve> curves;
  for (double budget : budgets) {
    for (double m : sizes) {
      Curve c;
      c.n = m * std::sqrt(budget / 6);
      const double d_end = budget / (6 * c.n);
      const double shift = offset(static_cast<int>(curves.size()));
      for (int i = 1; i <= 50; ++i) {
        const double d = d_end * i / 50.0;
        c.points.emplace_back(6 * c.n * d,
                              2 + 400 / std::pow(c.n, 0.3) + 400 / std::pow(d, 0.3) + shift);
      }
      curves.push_back(std::move(c));
    }
  }
  return curves;
}

// Four budgets of five sizes, each curve shifted by a little noise: the interval of the
// envelope's exponent holds its estimate and the truth and is not a point; a seed repeats it.
TEST(BootstrapTest, EnvelopePowerLawIntervals) {
  std::mt19937_64 rng(5);
  std::normal_distribution<double> z(0, 0.003);
  const auto curves =
      LawCurves({1e16, 4e16, 1.6e17, 6.4e17}, {0.25, 0.5, 1, 2, 4}, [&](int) { return z(rng); });
  EnvelopeOptions env;
  auto fit = FitEnvelope(curves, env);
  ASSERT_TRUE(fit.ok()) << fit.status().message();
  BootstrapOptions b;
  b.resamples = 200;
  auto ci = BootstrapEnvelope(curves, env, b, &*fit);
  ASSERT_TRUE(ci.ok()) << ci.status().message();
  EXPECT_LT(ci->at("a").lo, fit->n_opt.a);
  EXPECT_GT(ci->at("a").hi, fit->n_opt.a);
  EXPECT_GT(ci->at("a").hi - ci->at("a").lo, 0.01);
  EXPECT_DOUBLE_EQ(fit->n_opt.a_ci.lo, ci->at("a").lo);
  EXPECT_DOUBLE_EQ(fit->d_opt.a_ci.hi, ci->at("b").hi);
  EXPECT_EQ(fit->bootstrap_resamples, 200);
  auto again = BootstrapEnvelope(curves, env, b, nullptr);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->at("a").lo, ci->at("a").lo);
  EXPECT_EQ(again->at("a").hi, ci->at("a").hi);
  // The truth, N_opt ∝ C^0.5, inside too (measured: 0.541 [0.315, 0.607]; the envelope's N
  // takes the 20 sizes' values only, so its exponents are coarse).
  EXPECT_LT(ci->at("a").lo, 0.5);
  EXPECT_GT(ci->at("a").hi, 0.5);
}

// Resamples are drawn within budgets: with one run per budget every resample is the data
// itself, so each interval is its point (drawing from all runs at once would lose budgets).
TEST(BootstrapTest, EnvelopeResamplesKeepEveryBudgetsRunCount) {
  auto curves = LawCurves({1e16, 4e16, 1.6e17}, {1}, [](int) { return 0.0; });
  // Budgets 4x apart, one size each: the largest model wins wherever its curve reaches.
  EnvelopeOptions env;
  auto fit = FitEnvelope(curves, env);
  ASSERT_TRUE(fit.ok()) << fit.status().message();
  BootstrapOptions b;
  b.resamples = 50;
  auto ci = BootstrapEnvelope(curves, env, b, &*fit);
  ASSERT_TRUE(ci.ok());
  EXPECT_EQ(fit->bootstrap_failed, 0);
  EXPECT_DOUBLE_EQ(ci->at("a").lo, fit->n_opt.a);
  EXPECT_DOUBLE_EQ(ci->at("a").hi, fit->n_opt.a);
}

// One budget, two sizes whose curves cross: a resample that draws the same run twice has one
// size winning everywhere and no power law (probability 1/2). Those are counted, warned about,
// and kept through the fit's JSON.
TEST(BootstrapTest, EnvelopeCountsTheResamplesWhoseFitFailed) {
  const auto curves = LawCurves({1e17}, {0.2, 3}, [](int) { return 0.0; });
  EnvelopeOptions env;
  auto fit = FitEnvelope(curves, env);
  ASSERT_TRUE(fit.ok()) << fit.status().message();
  BootstrapOptions b;
  b.resamples = 1000;
  ASSERT_TRUE(BootstrapEnvelope(curves, env, b, &*fit).ok());
  // 500 expected, binomial sd 15.8: within 4 sd.
  EXPECT_GE(fit->bootstrap_failed, 437);
  EXPECT_LE(fit->bootstrap_failed, 563);
  ASSERT_EQ(fit->warnings.size(), 1u);
  EXPECT_NE(fit->warnings[0].find(std::to_string(fit->bootstrap_failed) +
                                  " of 1000 bootstrap resamples had one model size win"),
            std::string::npos)
      << fit->warnings[0];
  EnvelopeFit back;
  ASSERT_TRUE(FromJson(ToJson(*fit), &back).ok());
  EXPECT_EQ(back.bootstrap_resamples, 1000);
  EXPECT_EQ(back.bootstrap_failed, fit->bootstrap_failed);
  EXPECT_EQ(back.warnings, fit->warnings);
  EXPECT_DOUBLE_EQ(back.n_opt.a_ci.lo, fit->n_opt.a_ci.lo);
}

TEST(BootstrapTest, ExtrapolationCheckPredictsTheLargestBudget) {
  // Isoflop-style sampling from a known chinchilla law: prediction error is the noise level.
  std::vector<Observation> obs;
  std::mt19937_64 rng(5);
  std::normal_distribution<double> z(0, 0.003);
  for (double c : {1e17, 1e18, 1e19, 1e20, 1e21}) {
    for (int i = -4; i <= 4; ++i) {
      Observation o;
      o.c = c;
      o.n = 0.3 * std::pow(c, 0.5) * std::exp(0.4 * i);
      o.d = c / (6 * o.n);
      o.loss =
          (1.69 + 406.4 / std::pow(o.n, 0.34) + 410.7 / std::pow(o.d, 0.28)) * std::exp(z(rng));
      obs.push_back(o);
    }
  }
  auto check = CheckExtrapolation(obs, ParametricOptions{}, IsoflopOptions{});
  ASSERT_TRUE(check.ok()) << check.status().message();
  EXPECT_EQ(check->n_test, 9);
  EXPECT_EQ(check->n_train, 36);
  EXPECT_NEAR(check->held_out_c, 1e21, 1e15);
  EXPECT_LT(check->mean_abs_rel_error, 0.01);
  EXPECT_GT(check->n_opt_observed, 0);
  EXPECT_LT(std::abs(check->n_opt_rel_error), 0.5);
}

// Issue 14: the held-out budget has at least three runs (a lone run at a larger budget is not
// "the largest budget"), and the observed N_opt is NaN without an interior minimum.
std::vector<Observation> FiveBudgets(bool shift_last) {
  std::vector<Observation> obs;
  std::mt19937_64 rng(5);
  std::normal_distribution<double> z(0, 0.003);
  for (double c : {1e17, 1e18, 1e19, 1e20, 1e21}) {
    for (int i = -4; i <= 4; ++i) {
      Observation o;
      o.c = c;
      o.n = 0.3 * std::pow(c, 0.5) * std::exp(0.4 * (shift_last && c == 1e21 ? i + 9 : i));
      o.d = c / (6 * o.n);
      o.loss =
          (1.69 + 406.4 / std::pow(o.n, 0.34) + 410.7 / std::pow(o.d, 0.28)) * std::exp(z(rng));
      obs.push_back(o);
    }
  }
  return obs;
}

TEST(BootstrapTest, ExtrapolationHoldsOutTheLargestBudgetWithThreeRuns) {
  auto obs = FiveBudgets(false);
  Observation lone = obs.back();
  lone.c = 1e22;
  lone.n *= 3;
  lone.d = lone.c / (6 * lone.n);
  obs.push_back(lone);
  auto check = CheckExtrapolation(obs, ParametricOptions{}, IsoflopOptions{});
  ASSERT_TRUE(check.ok()) << check.status().message();
  EXPECT_NEAR(check->held_out_c, 1e21, 1e15);
  EXPECT_EQ(check->n_test, 9);
  EXPECT_EQ(check->n_train, 37);
  // Only budgets of one or two runs: it says it cannot check.
  std::vector<Observation> pairs;
  for (size_t i = 0; i < obs.size(); i += 9)
    pairs.insert(pairs.end(), obs.begin() + i, obs.begin() + std::min(i + 2, obs.size()));
  auto none = CheckExtrapolation(pairs, ParametricOptions{}, IsoflopOptions{});
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("cannot check extrapolation"), std::string::npos)
      << none.status().message();
}

TEST(BootstrapTest, ObservedNoptIsNullWithoutAnInteriorMinimum) {
  auto check = CheckExtrapolation(FiveBudgets(true), ParametricOptions{}, IsoflopOptions{});
  ASSERT_TRUE(check.ok()) << check.status().message();
  EXPECT_TRUE(std::isnan(check->n_opt_observed));
  EXPECT_TRUE(std::isnan(check->n_opt_rel_error));
  EXPECT_TRUE(ToJson(*check)["n_opt_observed"].is_null());
}

TEST(BootstrapTest, CrossValidationHoldsOutEveryBudget) {
  auto folds = CrossValidateBudgets(FiveBudgets(false), ParametricOptions{}, IsoflopOptions{});
  ASSERT_TRUE(folds.ok()) << folds.status().message();
  ASSERT_EQ(folds->size(), 5u);
  for (size_t k = 0; k < 5; ++k) {
    const ExtrapolationCheck& f = (*folds)[k];
    EXPECT_NEAR(f.held_out_c, std::pow(10.0, 17 + k), std::pow(10.0, 17 + k) * 1e-9);
    EXPECT_EQ(f.n_test, 9);
    EXPECT_EQ(f.n_train, 36);
    EXPECT_LT(f.mean_abs_rel_error, 0.01) << k;  // the noise is 0.3%
    EXPECT_GT(f.n_opt_observed, 0) << k;
  }
}

}  // namespace
}  // namespace isoflop::fit
