// FitRecord and result types survive JSON round trips (what the store keeps), and RunFit
// produces the documented record for each method.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

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

// Issue 14: an isoFLOP exponent whose bootstrap interval holds zero is flagged. Here the
// optimum does not move with the budget (N* = 1e8 at every C) and the losses are noisy.
TEST(FitJsonTest, IsoflopExponentIntervalCrossingZeroIsFlagged) {
  std::vector<Observation> obs;
  std::mt19937_64 rng(2);
  std::normal_distribution<double> z(0, 0.01);
  for (double c : {1e18, 1e19, 1e20}) {
    for (int i = -3; i <= 3; ++i) {
      Observation o;
      o.n = 1e8 * std::exp(0.5 * i);
      o.c = c;
      o.d = c / (6 * o.n);
      o.loss = 2 + 0.02 * 0.25 * i * i + z(rng);
      obs.push_back(o);
    }
  }
  FitConfig cfg;
  cfg.method = "isoflop";
  cfg.isoflop.drop_outside_range = false;
  cfg.bootstrap.resamples = 200;
  cfg.bootstrap.seed = 1;
  auto rec = RunFit(obs, {}, cfg);
  ASSERT_TRUE(rec.ok()) << rec.status().message();
  const Interval& a = rec->ci.at("a");
  ASSERT_LT(a.lo, 0) << a.hi;
  ASSERT_GT(a.hi, 0) << a.lo;
  bool flagged = false;
  for (const auto& w : rec->result["isoflop"]["warnings"])
    flagged |= w.get<std::string>().rfind("the interval of the exponent a [", 0) == 0 &&
               w.get<std::string>().find("crosses zero") != std::string::npos;
  EXPECT_TRUE(flagged) << rec->result["isoflop"]["warnings"].dump();
}

// Losses that rise with N: the fit's alpha comes out below zero, the record warns, and no
// compute-optimal quantity is derived from it.
TEST(FitJsonTest, ParametricExponentFittedBelowZeroIsFlagged) {
  std::vector<Observation> obs;
  for (double n : {1e7, 3e7, 1e8, 3e8, 1e9}) {
    for (double d : {1e9, 3e9, 1e10, 3e10, 1e11}) {
      Observation o;
      o.n = n, o.d = d, o.c = 6 * n * d;
      o.loss = 1.7 + 0.12 * std::pow(n, 0.05) + 400 / std::pow(d, 0.3);
      obs.push_back(o);
    }
  }
  FitConfig cfg;
  cfg.bootstrap.derived_at_compute = {1e21};
  auto rec = RunFit(obs, {}, cfg);
  ASSERT_TRUE(rec.ok()) << rec.status().message();
  ASSERT_LT(rec->params.at("alpha"), 0);
  const nlohmann::json& warnings = rec->result["parametric"]["warnings"];
  ASSERT_EQ(warnings.size(), 1u) << warnings.dump();
  const std::string w = warnings[0].get<std::string>();
  EXPECT_EQ(w.rfind("alpha = -", 0), 0u) << w;
  EXPECT_NE(w.find(" <= 0: the loss does not fall with N in these observations: no "
                   "compute-optimal N and D follow from this fit"),
            std::string::npos)
      << w;
  EXPECT_FALSE(rec->result["derived"].contains("N_opt@1e+21")) << rec->result["derived"].dump();
  EXPECT_FALSE(rec->result["derived"].contains("a")) << rec->result["derived"].dump();
}

// A leave-one-budget-out scoring that cannot run (one budget) is noted, not a failed fit.
TEST(FitJsonTest, CrossValidationThatCannotRunIsNoted) {
  std::vector<Observation> obs;
  for (int i = 0; i < 9; ++i) {
    Observation o;
    o.n = 2e7 * std::pow(2.0, i);
    o.c = 1e20;
    o.d = o.c / (6 * o.n);
    o.loss = 1.69 + 406.4 / std::pow(o.n, 0.34) + 410.7 / std::pow(o.d, 0.28);
    obs.push_back(o);
  }
  FitConfig cfg;
  cfg.cross_validate = true;
  auto rec = RunFit(obs, {}, cfg);
  ASSERT_TRUE(rec.ok()) << rec.status().message();
  const auto& cv = rec->result["cross_validation"];
  ASSERT_TRUE(cv.is_object()) << cv.dump();
  EXPECT_NE(cv["skipped"].get<std::string>().find("at least two budgets"), std::string::npos);
}

TEST(FitJsonTest, BadColumnsAreCorrupt) {
  auto r = FitRecord::FromColumns("parametric", "chinchilla", "total", "6nd", "{not json", "{}",
                                  1.0, 3, "{}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kCorrupt);
  EXPECT_NE(r.status().message().find("params_json"), std::string::npos);
}

// A stored row is data: a missing or mistyped field is an error naming it, never an exception
// (get<double>() on a string threw json::type_error through the library, and `isoflop optimal`
// aborted).
TEST(FitJsonTest, MistypedStoredFieldsAreErrorsNotExceptions) {
  const std::string params = R"({"E":1.69,"A":406.4,"B":410.7,"alpha":0.34,"beta":0.28})";
  auto boot = [](const std::string& draws) {
    return R"({"bootstrap":{"resamples":2,"failed":0,"seconds":0,"draws":)" + draws + "}}";
  };
  struct Case {
    const char* label;
    std::string params_json, result_json, message;
  };
  const std::vector<Case> cases = {
      {"string parameter", R"({"E":"1.69"})", "{}",
       "fit JSON: parameter 'E' is \"1.69\", not a number"},
      {"string in a draw", params, boot(R"([[1.7, 400, 410, 0.3, "x"]])"),
       "fit JSON: array 'draws' holds \"x\", not a number"},
      {"draws not rows", params, boot("[1, 2]"), "fit JSON: 'draws' is not an array of rows"},
      {"draws missing", params, R"({"bootstrap":{"resamples":2,"failed":0,"seconds":0}})",
       "fit JSON: missing array 'draws'"},
  };
  for (const auto& c : cases) {
    Result<FitRecord> rec = FitRecord::FromColumns("parametric", "chinchilla", "total", "6nd",
                                                   c.params_json, "{}", 1.0, 3, c.result_json);
    Status st = rec.ok() ? LawFromRecord(*rec).status() : rec.status();
    ASSERT_FALSE(st.ok()) << c.label;
    EXPECT_EQ(st.code(), Status::Code::kInvalidArgument) << c.label;
    EXPECT_EQ(st.message(), c.message) << c.label;
  }
  // A parametric record without one of its form's parameters names the parameter.
  auto partial = FitRecord::FromColumns("parametric", "chinchilla", "total", "6nd",
                                        R"({"E":1.69,"A":406.4})", "{}", 1.0, 3, "{}");
  ASSERT_TRUE(partial.ok()) << partial.status().message();
  EXPECT_EQ(LawFromRecord(*partial).status().message(),
            "no finite value for parameter 'B' of the chinchilla form");
}

// JSON has no infinity: a draw with an infinite parameter was stored with a null, which broke
// the notebook (TypeError) and the intervals of queries. Draws are stored finite only and the
// others counted; a record stored before that still reads, without its non-finite draws.
TEST(FitJsonTest, NonFiniteBootstrapDrawsAreLeftOutAndCounted) {
  ParametricBootstrap b;
  b.resamples = 3;
  b.draws = {{1.7, 400, 410, 0.34, 0.28},
             {1.7, std::numeric_limits<double>::infinity(), 410, 0.34, 0.28},
             {1.6, 390, 400, 0.33, std::numeric_limits<double>::quiet_NaN()}};
  const nlohmann::json j = ToJson(b);
  ASSERT_EQ(j["draws"].size(), 1u) << j.dump();
  EXPECT_EQ(j["draws"][0][1], 400.0);
  EXPECT_EQ(j["non_finite"], 2);
  ParametricBootstrap back;
  ASSERT_TRUE(FromJson(j, &back).ok());
  EXPECT_EQ(back.draws.size(), 1u);
  EXPECT_EQ(back.non_finite, 2);

  // As stored by earlier versions: nulls in the rows, no "non_finite".
  const auto old = nlohmann::json::parse(
      R"({"resamples":2,"failed":0,"seconds":0,"draws":[[1.7,null,410,0.34,0.28],)"
      R"([1.7,400,410,0.34,0.28]]})");
  ParametricBootstrap read;
  ASSERT_TRUE(FromJson(old, &read).ok());
  ASSERT_EQ(read.draws.size(), 1u);
  EXPECT_EQ(read.draws[0][1], 400.0);
  EXPECT_EQ(read.all_draws.size(), 1u);
  EXPECT_EQ(read.non_finite, 1);
}

TEST(FitJsonTest, UnknownConventionIsRejected) {
  FitConfig cfg;
  cfg.convention = "bogus";
  Status st = cfg.Validate();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(st.message(),
            "convention: 'bogus' is not one of total, non_embedding, active (the parameter count "
            "N of the observations)");
  for (const char* ok : {"total", "non_embedding", "active"}) {
    cfg.convention = ok;
    EXPECT_TRUE(cfg.Validate().ok()) << ok;
  }
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
