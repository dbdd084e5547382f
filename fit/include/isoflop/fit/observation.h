// What the fit part consumes: plain vectors of final-loss observations (N, D, loss, and
// optionally C, MoE granularity G and a budget id) and optional training curves, plus the FLOPs
// convention C = flops(N, D). Callers (cli/, sweep/) fill these from the store; fit/ never
// sees a database.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "isoflop/common/status.h"

namespace isoflop::fit {

// One finished training run. Plain value type.
struct Observation {
  double n = 0;            // parameters, counted per the fit's convention (e.g. total); > 0
  double d = 0;            // training tokens; > 0
  double loss = 0;         // final loss (nats/token); > 0
  double c = 0;            // training FLOPs; 0 = unknown (then derived as flops(N, D))
  double g = 1;            // MoE granularity G (> 0); 1 for dense models (Krajewski 2024)
  int64_t budget_id = -1;  // the sweep's isoFLOP budget group; -1 = group by C instead
  // The nominal isoFLOP budget (FLOPs) the run was planned at, as its source records it (a
  // sweep cell's C, an imported file's budget column); 0 = none. It may differ from C = 6ND by
  // tens of percent (other FLOP counts); the isoFLOP fit groups by it when every run has one.
  double budget = 0;
};

// One run's training curve, for the envelope method (Hoffmann et al. 2022, Approach 1).
struct Curve {
  double n = 0;                                   // parameters of the run; > 0
  std::vector<std::pair<double, double>> points;  // (cumulative FLOPs, loss), any order
};

// How training compute relates to N and D. Copyable; thread-safe to read.
struct FlopsConvention {
  std::string name = "6nd";  // stored in the fits table's flops_convention column
  double k = 6;              // C = k·N·D (Kaplan 2020 / Hoffmann 2022 use k = 6)
  // When set, C = custom(N, D) instead of k·N·D (e.g. an exact count with attention). Must be
  // increasing in D for every N > 0; queries then solve numerically (no closed form).
  std::function<double(double n, double d)> custom;

  double Flops(double n, double d) const { return custom ? custom(n, d) : k * n * d; }
  bool IsLinear() const { return !custom; }

  // "6nd" -> k = 6; "<k>nd" (e.g. "8nd") -> k. InvalidArgument for anything else (a custom
  // convention cannot be named; set `custom` directly).
  static Result<FlopsConvention> FromName(const std::string& name);
};

// Checks that every N, D, loss (and C, G when given) is finite and positive. Returns
// InvalidArgument naming the first bad row (0-based) and field, else Ok.
Status ValidateObservations(const std::vector<Observation>& obs);

// Checks the curves: N > 0, at least one point each, FLOPs and losses finite and positive.
Status ValidateCurves(const std::vector<Curve>& curves);

// The observation's training FLOPs: `c` when set, else flops(N, D).
double ComputeOf(const Observation& o, const FlopsConvention& flops);

}  // namespace isoflop::fit
