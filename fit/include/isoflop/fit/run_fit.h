// The one entry point callers use (cli/ `isoflop fit`, sweep/ after a sweep finishes): run
// the configured method over plain observations/curves and get a FitRecord ready to store.
// Then LawFromRecord + AnswerQuery (query.h) answer "what N, D for budget C".
//
//   fit::FitConfig cfg;                       // parametric chinchilla, 4,500 starts
//   cfg.bootstrap.resamples = 1000;
//   auto rec = fit::RunFit(observations, {}, cfg);           // Result<FitRecord>
//   auto law = fit::LawFromRecord(*rec);                      // Result<RecordLaw>
//   auto ans = fit::AnswerQuery(law->law, {fit::Query::Kind::kCompute, 1e21}, law->draws);
#pragma once

#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/fit/bootstrap.h"
#include "isoflop/fit/envelope.h"
#include "isoflop/fit/fit_record.h"
#include "isoflop/fit/isoflop_profile.h"
#include "isoflop/fit/parametric.h"
#include "isoflop/fit/query.h"

namespace isoflop::fit {

// Everything one fit needs. Validate() at the edge.
struct FitConfig {
  std::string method = "parametric";  // "parametric" | "isoflop" | "envelope"
  std::string convention = "total";   // which N the observations carry (recorded only)
  FlopsConvention flops;              // recorded, and used to derive C / solve queries
  int exclude_top_loss = 0;           // drop the K highest-loss observations first (the
                                      // Chinchilla replication drops 5 outliers)
  ParametricOptions parametric;
  IsoflopOptions isoflop;  // also the budget grouping of the extrapolation check
  EnvelopeOptions envelope;
  // Off unless asked for (resamples = 0): 1,000 resamples cost seconds.
  BootstrapOptions bootstrap = [] {
    BootstrapOptions b;
    b.resamples = 0;
    return b;
  }();
  bool extrapolation_check = true;  // parametric only; skipped (noted) with < 2 budgets
  // Parametric only: leave-one-budget-out scoring of every budget (one refit per budget), in
  // result "cross_validation". Off by default: it costs a fit per budget.
  bool cross_validate = false;

  Status Validate() const;
};

// Runs cfg.method. Errors: InvalidArgument for bad config or input (too few points, a single
// budget for isoflop, no curves for envelope); errors of the method pass through.
Result<FitRecord> RunFit(const std::vector<Observation>& obs, const std::vector<Curve>& curves,
                         const FitConfig& cfg);

// The observations without the k highest losses (order otherwise kept).
std::vector<Observation> ExcludeTopLoss(const std::vector<Observation>& obs, int k);

// A stored parametric fit as a queryable law, with its bootstrap draws (possibly empty).
struct RecordLaw {
  ScalingLaw law;
  std::vector<std::vector<double>> draws;
  double ci_level = 0.95;
  // The compute C = flops(N, D) (the law's convention) of the fit's smallest and largest
  // observation, from result "observed"; 0 when not recorded (a given law, fits stored before).
  double observed_c_lo = 0, observed_c_hi = 0;
};
// How far outside the fitted compute an optimum at compute `c` lies, for people: "the optimum's
// C = 1e+26 is 7.72e+03x above the largest C of the fit's observations (1.3e+22): that far out,
// nothing has checked the law" when more than kFarCompute times above the largest or below the
// smallest observed C; "" inside that, or when the law records no range.
constexpr double kFarCompute = 1000;
std::string FarComputeWarning(const RecordLaw& law, double c);

// FailedPrecondition when the record is not a parametric fit; InvalidArgument when a parameter
// or the FLOPs convention cannot be read.
Result<RecordLaw> LawFromRecord(const FitRecord& record);

}  // namespace isoflop::fit
