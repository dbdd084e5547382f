// Training-curve envelope (Hoffmann et al. 2022, Approach 1): at each FLOP level, the lowest
// loss any run's curve reaches, and the model size that reaches it; then N_opt = k·C^a.
#pragma once

#include <string>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/fit/observation.h"
#include "isoflop/fit/power_law.h"

namespace isoflop::fit {

struct EnvelopeOptions {
  int levels = 40;  // log-spaced FLOP levels, from the end of the shortest run to the largest FLOPs
  // Start the levels where the shortest run ends, not at the first logged point. Below it every
  // point is mid-schedule (often mid-warm-up) and only the smallest models have logged a loss
  // yet, which drags N_opt(C) down: on the quickstart the exponent is 0.27 over all points and
  // 0.63 from the shortest run's end (isoFLOP profiles: 0.71). Where every run ends at the same
  // FLOPs (a single budget) the whole range is used.
  bool from_shortest_end = true;
  FlopsConvention flops;  // D = tokens reached at C by a model of size N
  Status Validate() const;
};

struct EnvelopePoint {
  double c = 0, loss = 0, n = 0, d = 0;  // at FLOPs c the best curve has `loss`, size n
  int curve = -1;                        // index of that curve in the input
};

struct EnvelopeFit {
  std::vector<EnvelopePoint> points;  // ascending c
  PowerLaw n_opt, d_opt;              // with intervals after BootstrapEnvelope
  int n_curves = 0;
  int bootstrap_resamples = 0, bootstrap_failed = 0;
  std::vector<std::string> warnings;  // failed resamples, exponent intervals crossing zero
};

// Each curve is interpolated linearly in (log C, loss) within its own FLOP range only.
// Errors: InvalidArgument for bad curves, fewer than two curves, or fewer than two distinct
// winning model sizes' levels to fit a power law over.
Result<EnvelopeFit> FitEnvelope(const std::vector<Curve>& curves, const EnvelopeOptions& options);

}  // namespace isoflop::fit
