// What an MoE law's N (active parameters per token) means in total parameters and memory.
// A law fitted on active parameters answers "train N_active on D tokens"; the model to build
// also holds every other expert, and its training state counts all of them. The map from
// active to total comes from the sweep's own runs (one routed-expert count): a least-squares
// line in log-log space, exact at the ladder's shapes when they share a depth and nearly so
// otherwise, extrapolated beyond them.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>

#include "isoflop/analysis/dataset.h"
#include "isoflop/common/status.h"

namespace isoflop::analysis {

// Bytes of training state per parameter: fp32 weights (4), gradients (4) and AdamW's two
// moments (8). Every expert's weights are trained, so this multiplies N_total.
inline constexpr double kTrainStateBytesPerParam = 16;
// Bytes per parameter of bf16 weights to serve the model.
inline constexpr double kServeBytesPerParam = 2;

struct MoeSizing {
  int n_experts = 0;           // routed experts of the runs it came from
  double log_scale = 0;        // log N_total = log_scale + exponent · log N_active
  double exponent = 1;
  size_t runs = 0;             // runs the line was fitted on
  double n_active_lo = 0, n_active_hi = 0;  // the sizes it was fitted over
  double max_rel_error = 0;    // largest |N_total fitted / recorded - 1| over those runs

  double Total(double n_active) const;
  nlohmann::json ToJson() const;
  // InvalidArgument naming the missing or malformed field.
  static Result<MoeSizing> FromJson(const nlohmann::json& j);
};

// The sizing of `data`'s MoE runs: nullopt when the data is not a sweep's, mixes expert counts,
// is dense, or has fewer than two distinct active sizes.
std::optional<MoeSizing> FitMoeSizing(const Dataset& data);

}  // namespace isoflop::analysis
