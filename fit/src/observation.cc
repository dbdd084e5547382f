// Input checks and the FLOPs convention of the fit part.
#include "isoflop/fit/observation.h"

#include <cmath>
#include <cstdlib>
#include <string>

namespace isoflop::fit {
namespace {

bool Positive(double v) { return std::isfinite(v) && v > 0; }

std::string Row(size_t i) { return "observation " + std::to_string(i); }

}  // namespace

Result<FlopsConvention> FlopsConvention::FromName(const std::string& name) {
  if (name.size() > 2 && name.substr(name.size() - 2) == "nd") {
    const std::string num = name.substr(0, name.size() - 2);
    char* end = nullptr;
    const double k = std::strtod(num.c_str(), &end);
    if (end == num.c_str() + num.size() && Positive(k)) {
      FlopsConvention conv;
      conv.name = name;
      conv.k = k;
      return conv;
    }
  }
  return Status::InvalidArgument("unknown FLOPs convention '" + name +
                                 "': expected '<k>nd' meaning C = k·N·D, e.g. '6nd'");
}

Status ValidateObservations(const std::vector<Observation>& obs) {
  for (size_t i = 0; i < obs.size(); ++i) {
    const Observation& o = obs[i];
    if (!Positive(o.n))
      return Status::InvalidArgument(Row(i) + ": N (parameters) must be finite and > 0, got " +
                                     std::to_string(o.n));
    if (!Positive(o.d))
      return Status::InvalidArgument(Row(i) + ": D (tokens) must be finite and > 0, got " +
                                     std::to_string(o.d));
    if (!Positive(o.loss))
      return Status::InvalidArgument(Row(i) + ": loss must be finite and > 0, got " +
                                     std::to_string(o.loss));
    if (!(o.c == 0 || Positive(o.c)))
      return Status::InvalidArgument(Row(i) +
                                     ": C (FLOPs) must be finite and > 0 (or 0 for "
                                     "unknown), got " +
                                     std::to_string(o.c));
    if (!Positive(o.g))
      return Status::InvalidArgument(Row(i) + ": granularity G must be finite and > 0, got " +
                                     std::to_string(o.g));
  }
  return Status::Ok();
}

Status ValidateCurves(const std::vector<Curve>& curves) {
  for (size_t i = 0; i < curves.size(); ++i) {
    const std::string where = "curve " + std::to_string(i);
    if (!Positive(curves[i].n)) return Status::InvalidArgument(where + ": N must be > 0");
    if (curves[i].points.empty()) return Status::InvalidArgument(where + ": has no points");
    for (const auto& [c, l] : curves[i].points) {
      if (!Positive(c) || !Positive(l))
        return Status::InvalidArgument(where + ": FLOPs and loss must be finite and > 0");
    }
  }
  return Status::Ok();
}

double ComputeOf(const Observation& o, const FlopsConvention& flops) {
  return o.c > 0 ? o.c : flops.Flops(o.n, o.d);
}

}  // namespace isoflop::fit
