// Every curve a figure of a fit draws, evaluated by the fit library (never re-implemented by
// the notebook or the browser): the parametric law's compute-optimal frontier with its
// bootstrap band, its loss surface over (C, N) for contours, its prediction and residual at
// each observation; the isoFLOP fit's parabolas; the power laws of Approaches 1 and 2.
#pragma once

#include <nlohmann/json.hpp>

#include "isoflop/analysis/dataset.h"
#include "isoflop/common/status.h"

namespace isoflop::analysis {

struct CurveOptions {
  // The C range: from the smallest observed C / c_below to the largest x c_above.
  double c_below = 3, c_above = 30;
  // The N range of the loss surface: smallest observed N / n_below to largest x n_above.
  double n_below = 3, n_above = 10;
  int frontier_points = 200;  // log-spaced C values of the frontier and the band
  int surface_points = 120;   // per axis of the loss surface
  int parabola_points = 60;   // per isoFLOP parabola, over its sampled range
  int max_band_draws = 1000;  // bootstrap draws the band uses (all stored ones up to this)
};

// The curves of `fit` for `data` (the observations it was fitted on, for ranges and
// residuals) as one JSON object; docs/fit-json.md, "Evaluated curves", describes it.
// InvalidArgument when the fit's law cannot be read; FailedPrecondition for empty data.
Result<nlohmann::json> FitCurves(const StoredFit& fit, const Dataset& data,
                                 const CurveOptions& options = {});

// The curves of a source's newest fits, one per method, as {"points": [{n, d, c, loss,
// budget}] (the source's observations and the budget each belongs to), "parametric":
// FitCurves(..) or null, "isoflop": .., "envelope": ..}: the parametric fit of the chinchilla form
// when there is one (the figures' "parametric law"), else the newest parametric fit of any form.
// Each is evaluated over the source's observations loaded with the fit's own N convention.
// "by_expert_count": for a sweep with one law per routed-expert count, [{n_experts, fit_id,
// curves: FitCurves(..) over that count's runs}] (else []). Store and data errors; a fit whose
// curves cannot be evaluated is {"error": "..."} in its slot.
Result<nlohmann::json> SourceCurves(store::Store& db, const Source& source,
                                    const CurveOptions& options = {});

}  // namespace isoflop::analysis
