// The rough wall-time model of `sweep plan` (memory_estimate.h); the memory estimate itself is
// the trainer's (trainer/memory.h).
#include "isoflop/sweep/memory_estimate.h"

#include <algorithm>
#include <cmath>

namespace isoflop::sweep {

double EstimateFlopsPerSecond(int64_t n_total, bool gpu, int threads, double override_gflops) {
  if (override_gflops > 0) return override_gflops * 1e9;
  const double n = std::max<double>(n_total, 1.0);
  if (gpu) {
    // Small models cannot fill a GPU: ramp from 1% at 1M parameters to 35% at 1B.
    const double t = std::clamp((std::log10(n) - 6.0) / 3.0, 0.0, 1.0);
    return 400e12 * std::pow(10.0, std::log10(0.01) + t * (std::log10(0.35) - std::log10(0.01)));
  }
  // Log-log interpolation between (12e3, 8 GFLOP/s) and (800e3, 45 GFLOP/s) at 2 threads.
  const double t =
      std::clamp((std::log(n) - std::log(12e3)) / (std::log(800e3) - std::log(12e3)), -0.5, 1.5);
  const double gflops = std::exp(std::log(8.0) + t * (std::log(45.0) - std::log(8.0)));
  return gflops * 1e9 * std::max(1, threads) / 2.0;
}

}  // namespace isoflop::sweep
