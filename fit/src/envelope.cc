// Training-curve envelope (Hoffmann et al. 2022, §3.1, Approach 1).
#include "isoflop/fit/envelope.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace isoflop::fit {

Status EnvelopeOptions::Validate() const {
  if (levels < 2) return Status::InvalidArgument("envelope levels must be >= 2");
  return Status::Ok();
}

Result<EnvelopeFit> FitEnvelope(const std::vector<Curve>& curves, const EnvelopeOptions& options) {
  ISOFLOP_RETURN_IF_ERROR(options.Validate());
  ISOFLOP_RETURN_IF_ERROR(ValidateCurves(curves));
  if (curves.size() < 2)
    return Status::InvalidArgument(
        "the envelope method needs training curves of at least two "
        "runs; got " +
        std::to_string(curves.size()));
  // Each curve sorted by FLOPs, in log C.
  std::vector<std::vector<std::pair<double, double>>> sorted;
  double lo = HUGE_VAL, hi = 0, shortest_end = HUGE_VAL;
  for (const Curve& c : curves) {
    std::vector<std::pair<double, double>> pts;
    for (const auto& [f, l] : c.points) pts.emplace_back(std::log(f), l);
    std::sort(pts.begin(), pts.end());
    lo = std::min(lo, pts.front().first);
    hi = std::max(hi, pts.back().first);
    shortest_end = std::min(shortest_end, pts.back().first);
    sorted.push_back(std::move(pts));
  }
  if (options.from_shortest_end && shortest_end < hi) lo = std::max(lo, shortest_end);
  EnvelopeFit fit;
  fit.n_curves = static_cast<int>(curves.size());
  for (int k = 0; k < options.levels; ++k) {
    const double x = lo + (hi - lo) * k / (options.levels - 1);
    EnvelopePoint best;
    best.loss = HUGE_VAL;
    for (size_t i = 0; i < sorted.size(); ++i) {
      const auto& p = sorted[i];
      if (x < p.front().first || x > p.back().first) continue;
      auto it = std::lower_bound(p.begin(), p.end(), std::make_pair(x, -HUGE_VAL));
      double l = it->second;
      if (it != p.begin() && it->first > x) {
        const auto& a = *(it - 1);
        l = a.second + (x - a.first) / (it->first - a.first) * (it->second - a.second);
      }
      if (l < best.loss) {
        best.loss = l;
        best.curve = static_cast<int>(i);
      }
    }
    if (best.curve < 0) continue;
    best.c = std::exp(x);
    best.n = curves[best.curve].n;
    // D such that flops(N, D) = C: closed form for k·N·D, else bisection in log D.
    if (options.flops.IsLinear()) {
      best.d = best.c / (options.flops.k * best.n);
    } else {
      double a = -50, b = 100;
      for (int it = 0; it < 200; ++it) {
        const double m = 0.5 * (a + b);
        (options.flops.Flops(best.n, std::exp(m)) < best.c ? a : b) = m;
      }
      best.d = std::exp(0.5 * (a + b));
    }
    fit.points.push_back(best);
  }
  std::vector<double> cs, ns, ds;
  std::set<double> sizes;
  for (const auto& p : fit.points) {
    cs.push_back(p.c);
    ns.push_back(p.n);
    ds.push_back(p.d);
    sizes.insert(p.n);
  }
  if (sizes.size() < 2)
    return Status::InvalidArgument(
        "the envelope is won by a single model size at every FLOP "
        "level; train a wider range of sizes to fit N_opt(C)");
  ISOFLOP_ASSIGN_OR_RETURN(fit.n_opt, FitPowerLaw(cs, ns));
  ISOFLOP_ASSIGN_OR_RETURN(fit.d_opt, FitPowerLaw(cs, ds));
  return fit;
}

}  // namespace isoflop::fit
