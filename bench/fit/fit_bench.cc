// Fit benchmark: the 4,500-start parametric fit on the 240 Chinchilla points, 1,000 bootstrap
// resamples, and Hoffmann's rounded law's optimum at Chinchilla's budget. Prints figures; the
// scipy cross-check is bench/fit/scipy_reference.py.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "isoflop/fit/bootstrap.h"
#include "isoflop/fit/parametric.h"
#include "isoflop/fit/query.h"
#include "isoflop/fit/run_fit.h"
#include "isoflop/store/observations_csv.h"

using namespace isoflop::fit;

// The 240 points of the replication: all 245 minus the 5 highest losses.
static std::vector<Observation> LoadChinchilla() {
  auto points = isoflop::store::ReadObservationsCsv(ISOFLOP_DATA_DIR
                                                    "/chinchilla/svg_extracted_data.csv");
  if (!points.ok()) {
    std::fprintf(stderr, "fit_bench: %s\n", points.status().message().c_str());
    std::exit(1);
  }
  std::vector<Observation> obs;
  for (const auto& p : *points) {
    Observation o;
    o.n = p.n;
    o.d = p.d;
    o.c = p.c;
    o.loss = p.loss;
    obs.push_back(o);
  }
  return ExcludeTopLoss(obs, 5);
}

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const auto obs = LoadChinchilla();
  std::printf("points=%zu threads=%d\n", obs.size(), threads);
  for (int prune : {15, 0}) {
    ParametricOptions opt;
    opt.num_threads = threads;
    opt.prune_after = prune;
    std::vector<double> times;
    ParametricFit fit;
    for (int rep = 0; rep < (prune ? 5 : 1); ++rep) {
      auto r = FitParametric(obs, opt);
      if (!r.ok()) return std::printf("fit failed: %s\n", r.status().message().c_str()), 1;
      fit = *r;
      times.push_back(fit.seconds);
    }
    std::sort(times.begin(), times.end());
    std::printf(
        "fit 4500 starts (%s): median %.3f s (min %.3f)  objective %.10g  converged %d"
        "  at best %d  pruned %d\n",
        prune ? "pruned after 15 it" : "no pruning", times[times.size() / 2], times[0],
        fit.objective, fit.starts_converged, fit.starts_at_best, fit.starts_pruned);
    std::printf("  E=%.5f A=%.2f B=%.2f alpha=%.5f beta=%.5f\n", fit.Param("E"), fit.Param("A"),
                fit.Param("B"), fit.Param("alpha"), fit.Param("beta"));
    if (prune == 0) break;
    BootstrapOptions b;
    b.num_threads = threads;
    b.derived_at_compute = {5.88e23};
    auto boot = BootstrapParametric(obs, opt, fit, b);
    if (!boot.ok()) return 1;
    std::printf("bootstrap %d resamples: %.3f s (failed %d)\n", boot->resamples, boot->seconds,
                boot->failed);
    for (const char* k : {"E", "A", "B", "alpha", "beta", "a", "N_opt@5.88e+23"}) {
      const Interval& iv = boot->intervals.at(k);
      std::printf("  95%% %-16s [%.5g, %.5g]\n", k, iv.lo, iv.hi);
    }
  }
  ScalingLaw hoffmann;
  hoffmann.params = {1.69, 406.4, 410.7, 0.34, 0.28};
  auto a = ComputeOptimal(hoffmann, 5.88e23);
  std::printf(
      "Hoffmann rounded law at C=5.88e23: N_opt=%.4g D_opt=%.4g tokens/param=%.2f "
      "loss=%.4f\n",
      a->n, a->d, a->tokens_per_param, a->loss);
  return 0;
}
