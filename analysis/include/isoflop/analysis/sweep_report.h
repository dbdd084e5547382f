// The fits a sweep asks for (its file's `fit:` and `report:` sections), run and stored, and
// the compute-optimal answers at its report budgets: what `isoflop sweep run` prints at the
// end, as a struct (and JSON) the CLI only formats.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "isoflop/analysis/dataset.h"
#include "isoflop/fit/query.h"
#include "isoflop/fit/run_fit.h"

namespace isoflop::analysis {

struct SweepFitRequest {
  std::string sweep;              // the sweep's name in the store
  fit::FitConfig config;          // method, form, convention, bootstrap (validated)
  bool include_diverged = false;  // fit.include_diverged
  std::optional<std::set<std::string>> only_keys;     // the current file's cells
  bool fixed_entropy = true;                          // also fit with E held at the data's entropy
  std::vector<double> report_budgets;                 // budgets C to answer for
  nlohmann::json options = nlohmann::json::object();  // stored with each fit
};

// One fit the report made: stored (id > 0), or the reason it could not be made.
struct FitOutcome {
  std::string method;
  std::optional<StoredFit> fit;
  std::string error;
};

// The answer at one report budget under the free fit, and under the E-at-entropy fit.
struct BudgetAnswer {
  double c = 0;
  std::optional<fit::Answer> answer;
  std::string error;
  std::string far;  // fit::FarComputeWarning: C far outside the runs' compute ("" = none)
  std::optional<fit::Answer> fixed_entropy;
  // Expert-count laws of MoE runs only: what the MoE at this budget is worth in dense
  // parameters and compute, against the dense runs' law (absent without dense runs).
  std::optional<fit::DenseEquivalent> dense_equivalent;
  std::string dense_equivalent_error;
};

// An MoE sweep with an expert-count axis: one Chinchilla law per routed-expert count (0 =
// dense), E held at the data's entropy when it is known so the laws differ only where the
// expert count acts, and its answers at the report budgets (for an MoE count, with its dense
// equivalent against the dense law).
struct ExpertCountFit {
  int n_experts = 0;
  size_t runs = 0;
  std::optional<StoredFit> fit;
  std::string error;
  std::vector<BudgetAnswer> answers;
};

struct SweepReport {
  Dataset data;                            // what was fitted (excluded runs, entropy)
  StoredFit main;                          // the requested method's fit (free E)
  std::optional<StoredFit> fixed_entropy;  // parametric with E = the data's entropy
  std::string fixed_entropy_error;
  std::vector<FitOutcome> others;     // isoflop and envelope beside a parametric fit
  std::vector<BudgetAnswer> answers;  // parametric only, one per report budget
  // The free E differs from the entropy by more than 2%: the budgets (spanning this factor)
  // cannot separate E from the other terms. 0 when it does not.
  double entropy_gap_budget_span = 0;
  // Which fit the answers lead with: "fixed_entropy" when the data's entropy is known and the
  // free fit's E lies below it (its predicted losses can fall below what any model reaches),
  // else "free". The other is shown beside it.
  std::string headline = "free";
  // Sweeps whose runs have several routed-expert counts (dense and MoE side by side).
  std::vector<ExpertCountFit> by_experts;

  nlohmann::json ToJson() const;
};

// An answer as JSON: {c, n, d, tokens_per_param, loss, ci: {key: {lo, hi, level}},
// ci_draws_used}. Shared by the sweep report and the dashboard's `optimal`.
nlohmann::json AnswerJson(const fit::Answer& a);
// A dense equivalent as JSON: {c, moe: {n, d, loss}, n_effective, effective_ratio,
// dense: {c, n, d}, compute_multiplier, note, ci: {key: {lo, hi, level}}, ci_draws_used};
// null where a value is NaN or an interval end unbounded.
nlohmann::json DenseEquivalentJson(const fit::DenseEquivalent& e);

// Loads the sweep's finished runs, runs the requested fit, for a parametric one also the
// E-at-entropy fit (of the two, the headline one is stored last, so `optimal --sweep` and
// `plot`, which take the newest parametric fit, answer with it) and the isoFLOP and envelope
// fits, stores every fit, and answers the report budgets.
// FailedPrecondition with fewer than 5 finished runs; fit and store errors otherwise (a failed
// secondary fit is an outcome, not an error).
Result<SweepReport> FitSweep(store::Store& db, const SweepFitRequest& request);

}  // namespace isoflop::analysis
