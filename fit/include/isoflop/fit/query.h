// Compute-optimal queries on a fitted law: N_opt and D_opt for a budget (Chinchilla closed
// form when it applies, else numerical), the best D for a fixed N, the least compute to reach
// a loss, and inference-aware sizing (Sardana et al. 2023). With bootstrap parameter draws,
// every answer gets percentile intervals.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/fit/form.h"
#include "isoflop/fit/observation.h"
#include "isoflop/fit/power_law.h"

namespace isoflop::fit {

// A fitted law ready to query. Copyable; queries are const and thread-safe.
struct ScalingLaw {
  std::string form = "chinchilla";
  std::vector<double> params;  // reported values in the form's order (E, A, B, alpha, beta)
  FlopsConvention flops;       // the convention the fit used (C = k·N·D by default)
  double g = 1;                // MoE granularity at which to answer (moe form only)

  double Loss(double n, double d) const;  // L̂(N, D); NaN when the form name is unknown
};

// Builds a chinchilla law from named values {E, A, B, alpha, beta}. InvalidArgument naming
// a missing or non-positive value.
Result<ScalingLaw> ChinchillaLaw(const std::map<std::string, double>& named);

struct Allocation {
  double c = 0;                 // training FLOPs
  double n = 0, d = 0;          // parameters, tokens
  double tokens_per_param = 0;  // d / n
  double loss = 0;              // predicted loss L̂(n, d)
};

// Hoffmann et al. 2022 (Appendix D.2, eq. 4): G = (αA/(βB))^(1/(α+β)),
// N_opt = G·(C/k)^(β/(α+β)), D_opt = G⁻¹·(C/k)^(α/(α+β)), for C = k·N·D.
// InvalidArgument when the law is not chinchilla with a linear FLOPs convention or c <= 0.
Result<Allocation> ChinchillaClosedForm(const ScalingLaw& law, double c);

// The N, D minimising L̂ subject to flops(N, D) = c: closed form when it applies, else a
// bracketed golden-section search over log N (D solved from the convention).
// `numeric_only` forces the numerical path (tests compare both). InvalidArgument for c <= 0.
Result<Allocation> ComputeOptimal(const ScalingLaw& law, double c, bool numeric_only = false);

// For a model of n parameters: the budget at which n is compute-optimal and its D.
// FailedPrecondition when no budget in [1e0, 1e40] FLOPs makes n optimal.
Result<Allocation> BestDataForParams(const ScalingLaw& law, double n);

// The least compute reaching `loss`, with its N and D. InvalidArgument when loss is at or below
// the irreducible loss (no budget reaches it).
Result<Allocation> LeastComputeForLoss(const ScalingLaw& law, double loss);

// Sardana et al. 2023: minimise training + inference FLOPs, k·N·D + 2·N·T, subject to
// L̂(N, D) = the loss of the compute-optimal model at budget c.
struct InferenceAllocation {
  Allocation compute_optimal;  // the reference model at budget c
  Allocation chosen;           // the smaller, longer-trained model (chosen.c = training FLOPs)
  double inference_tokens = 0;
  double inference_flops = 0;  // 2·N·T of the chosen model
  double total_flops = 0;      // chosen.c + inference_flops
};
Result<InferenceAllocation> InferenceAware(const ScalingLaw& law, double c,
                                           double inference_tokens);

// One question for Answer().
struct Query {
  enum class Kind { kCompute, kParams, kLoss, kInference };
  Kind kind = Kind::kCompute;
  double value = 0;             // C (kCompute, kInference), N (kParams) or loss (kLoss)
  double inference_tokens = 0;  // kInference only
};

// An answer with intervals over bootstrap draws (keys "n", "d", "c", "tokens_per_param",
// "loss", and for kInference "n_inference", "d_inference", "total_flops"). `ci` is empty
// without draws. A kLoss draw whose law never reaches the loss counts as +inf N, D and C (an
// interval's upper end may then be +inf); other draws where the query has no answer are
// skipped (`ci_draws_used` says how many counted).
struct Answer {
  Query query;
  Allocation point;
  InferenceAllocation inference;  // kInference only
  std::map<std::string, Interval> ci;
  int ci_draws_used = 0;
  int ci_draws_unbounded = 0;  // kLoss: draws that never reach the loss (in ci_draws_used)
};

// Answers `q` for `law`, and over each draw (reported parameters, same form) for intervals at
// `level`. Errors: those of the underlying query at the point estimate.
Result<Answer> AnswerQuery(const ScalingLaw& law, const Query& q,
                           const std::vector<std::vector<double>>& draws = {}, double level = 0.95);

// What an MoE is worth in dense parameters and compute, from two laws fitted on the same data
// and FLOPs convention (N = active parameters for the MoE): at budget c the MoE law's
// compute-optimal allocation reaches loss L; `n_effective` is the dense parameter count that
// reaches L with the same D tokens (Clark et al. 2022's effective parameter count), and
// `dense` the least dense compute reaching L, so compute_multiplier = dense.c / c is the MoE's
// compute advantage (below 1: the dense model is better at this budget).
struct DenseEquivalent {
  double c = 0;
  Allocation moe;               // compute-optimal under the MoE law
  double n_effective = 0;       // NaN when no dense model reaches moe.loss with moe.d tokens
  double effective_ratio = 0;   // n_effective / moe.n
  Allocation dense;             // least dense compute reaching moe.loss (NaN c when none)
  double compute_multiplier = 0;  // dense.c / c; NaN when the dense law never reaches moe.loss
  std::string note;             // why a value is NaN, else empty
  // Keys "n_effective", "effective_ratio", "compute_multiplier": percentile intervals over
  // pairs (moe draw i, dense draw i), the two fits' bootstraps being independent.
  std::map<std::string, Interval> ci;
  int ci_draws_used = 0;
};
// InvalidArgument when either law cannot be queried at c.
Result<DenseEquivalent> DenseEquivalentAt(const ScalingLaw& moe, const ScalingLaw& dense, double c,
                                          const std::vector<std::vector<double>>& moe_draws = {},
                                          const std::vector<std::vector<double>>& dense_draws = {},
                                          double level = 0.95);

}  // namespace isoflop::fit
