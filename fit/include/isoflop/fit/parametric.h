// Parametric scaling-law fit (Hoffmann et al. 2022, Approach 3; Besiroglu et al. 2024):
// minimise Σ_i Huber_δ(log L_i − log L̂(x; N_i, D_i, G_i)) from a grid of starts, in parallel,
// keeping the best. Each start runs ceres::TinySolver (Levenberg–Marquardt) on the residuals
// f_i = sign(r_i)·sqrt(2·Huber_δ(r_i)), so ½‖f‖² is exactly the summed Huber objective and the
// Jacobian is analytic.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/fit/form.h"
#include "isoflop/fit/observation.h"

namespace isoflop::fit {

// Options of one parametric fit. Validate() once at the edge; FitParametric validates again.
struct ParametricOptions {
  std::string form = "chinchilla";  // a GetForm() name
  // Loss on the log residuals r_i: "huber" (summed Huber_δ(r), Hoffmann 2022 / Besiroglu 2024)
  // or "mse" (½ Σ r², the log-MSE of Llama 3 and several reproductions).
  std::string loss = "huber";
  double huber_delta = 1e-3;  // Huber threshold on log residuals; 1e-3 as Hoffmann/Besiroglu
  // Start grid, internal units, one axis per parameter in the form's order; empty = the form's
  // default grid (4,500 starts for chinchilla). Fixed/tied parameters' axes are ignored.
  std::vector<std::vector<double>> grid;
  // Explicit starts (internal units, full length) used instead of the grid when not empty.
  std::vector<std::vector<double>> starts;
  std::map<std::string, double> fixed;  // reported name -> value held fixed (e.g. E=1.69)
  // (leader, follower): follower is held equal to leader (e.g. {"alpha","beta"}); both must be
  // plain (not log-scale) or both log-scale parameters.
  std::vector<std::pair<std::string, std::string>> ties;
  int num_threads = 0;       // worker threads; 0 = std::thread::hardware_concurrency()
  int max_iterations = 200;  // Levenberg–Marquardt iterations per start
  // Stop a start when ‖Δx‖ ≤ tol·(‖x‖ + tol). Independent of the objective's scale on purpose:
  // scale-dependent cost tolerances made the averaged Chinchilla fit stop early.
  double parameter_tolerance = 1e-10;
  // Pruning: after `prune_after` iterations, drop starts whose objective exceeds
  // prune_ratio × the best objective any start had then (deterministic: two phases).
  // 0 disables pruning.
  int prune_after = 15;
  double prune_ratio = 4.0;
  double best_rel_tol = 1e-6;  // a start "reaches the best" when obj ≤ best·(1 + this)
  int keep_optima = 8;         // distinct local optima kept in the result (bootstrap seeds)

  // InvalidArgument naming the bad field; also checks `fixed`/`ties` names against the form.
  Status Validate() const;
};

// Result of one parametric fit. Plain value type.
struct ParametricFit {
  std::string form;                      // form name
  std::vector<std::string> param_names;  // reported names, form order
  std::vector<double> params;            // reported values (E, A, B, alpha, beta, ...)
  std::vector<double> internal;          // solver units (e = log E, ...)
  std::vector<bool> is_fixed;            // held fixed or tied (not a free parameter)
  double objective = 0;                  // Σ Huber_δ(r_i) (or ½ Σ r_i² for mse) at `params`
  std::string loss = "huber";            // ParametricOptions::loss
  double huber_delta = 1e-3;             // NaN (JSON null) for mse
  int n_points = 0;
  int starts_total = 0;      // starts tried
  int starts_converged = 0;  // stopped on the step-size criterion (not iteration cap/pruning)
  int starts_at_best = 0;    // reached objective ≤ best·(1 + best_rel_tol)
  int starts_pruned = 0;
  double seconds = 0;  // wall time of the fit
  // Up to keep_optima distinct local optima (internal units), with objectives: the reported
  // optimum (`internal`) first, always, then the other converged ones, best first.
  std::vector<std::vector<double>> optima;
  std::vector<double> optima_objectives;

  // Reported value of the named parameter; NaN when the form has no such parameter.
  double Param(const std::string& name) const;
};

// Fits `form` to `obs`. Errors: InvalidArgument for bad options or observations, or when
// there are fewer points than free parameters; Internal when no start gives a finite
// objective. Thread-safe (spawns its own threads; shares nothing).
Result<ParametricFit> FitParametric(const std::vector<Observation>& obs,
                                    const ParametricOptions& options);

// True when `x` differs from every vector of `kept` by at least 1e-3 in some internal
// coordinate (the rule that makes optima "distinct").
bool IsDistinct(const std::vector<double>& x, const std::vector<std::vector<double>>& kept);

// Summed Huber objective of the given reported parameters on `obs` (no fitting); an infinite
// huber_delta gives ½ Σ r² (the mse loss).
Result<double> HuberObjective(const std::vector<Observation>& obs, const std::string& form,
                              const std::vector<double>& reported, double huber_delta = 1e-3);

// One point of a profile: best objective with `param` held at `value`.
struct ProfilePoint {
  double value = 0;
  double objective = 0;
  std::vector<double> params;  // reported, best fit at this value
};

// Profile of the best objective over one parameter: refits with `param` fixed at each of
// `values` (reported units), the other settings taken from `options` (typical: E from 0 to
// min loss; for log-scale parameters 0 is not allowed, use a small positive value).
// Errors as FitParametric, plus InvalidArgument for an unknown parameter.
Result<std::vector<ProfilePoint>> ProfileParameter(const std::vector<Observation>& obs,
                                                   const ParametricOptions& options,
                                                   const std::string& param,
                                                   const std::vector<double>& values);

// Evenly spaced values lo..hi inclusive (helper for ProfileParameter).
std::vector<double> Linspace(double lo, double hi, int count);

}  // namespace isoflop::fit
