// Sentences about fits, for people (the numbers come from the fit record).
#include "fit_text.h"

#include <cmath>
#include <cstdio>

namespace isoflop::cli {

std::string ExtrapolationSummary(const fit::FitRecord& rec) {
  const auto found = rec.result.find("extrapolation");
  if (found == rec.result.end() || !found->is_object()) return "";
  const nlohmann::json& e = *found;
  if (auto skipped = e.find("skipped"); skipped != e.end() && skipped->is_string())
    return "extrapolation check: " + skipped->get<std::string>();
  auto num = [&](const char* key) {
    const auto it = e.find(key);
    return it != e.end() && it->is_number() ? it->get<double>() : NAN;
  };
  const double c = num("held_out_c"), mean = num("mean_abs_rel_error"),
               max = num("max_abs_rel_error");
  if (!std::isfinite(c) || !std::isfinite(mean)) return "";
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "extrapolation check: fitted without the largest budget of %d or more runs "
                "(C=%.3g, %d runs), the law predicts their final losses within %.2f%% on average "
                "(max %.2f%%)",
                fit::kMinHeldOutRuns, c, static_cast<int>(num("n_test")), 100 * mean, 100 * max);
  std::string out = buf;
  const double predicted = num("n_opt_predicted"), observed = num("n_opt_observed");
  if (std::isfinite(predicted) && std::isfinite(observed) && observed > 0) {
    std::snprintf(buf, sizeof buf, "; N_opt %.3g predicted, %.3g observed (isoFLOP minimum)",
                  predicted, observed);
    out += buf;
  } else {
    out += "; that budget has no interior isoFLOP minimum to compare N_opt with";
  }
  return out;
}

std::string IntervalWarning(const std::string& name, double value, double lo, double hi) {
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "warning: the bootstrap interval of %s [%.4g, %.4g] does not contain its estimate "
                "%.4g: the refits found other optima than the fit; do not quote this interval "
                "(check the fit's starts, or the data)",
                name.c_str(), lo, hi, value);
  return buf;
}

std::vector<std::string> PowerLawWarnings(const fit::FitRecord& rec) {
  std::vector<std::string> out;
  for (const char* key : {"parametric", "isoflop", "envelope"}) {
    const auto m = rec.result.find(key);
    if (m == rec.result.end() || !m->is_object()) continue;
    for (const auto& w : m->value("warnings", nlohmann::json::array()))
      if (w.is_string()) out.push_back(w.get<std::string>());
  }
  return out;
}

std::vector<std::string> IntervalWarnings(const fit::FitRecord& rec) {
  std::vector<std::string> out;
  // Refits left out of every interval: the intervals are those of the others.
  if (auto b = rec.result.find("bootstrap"); b != rec.result.end() && b->is_object()) {
    const int n = b->value("resamples", 0), failed = b->value("failed", 0),
              non_finite = b->value("non_finite", 0);
    if (failed + non_finite > 0) {
      std::string w = "warning: " + std::to_string(failed + non_finite) + " of " +
                      std::to_string(n) + " bootstrap refits ";
      if (failed > 0 && non_finite > 0) {
        w += "were left out (" + std::to_string(failed) + " failed, " + std::to_string(non_finite) +
             " gave a non-finite parameter)";
      } else {
        w += failed > 0 ? "failed" : "gave a non-finite parameter";
      }
      w += ": the intervals come from the other " + std::to_string(n - failed - non_finite) +
           (failed > 0 ? " (a resample fails where it draws one model size or one token count "
                         "only, or too few points for the law)"
                       : "");
      out.push_back(w);
    }
  }
  const auto found = rec.result.find("excludes_point");
  if (found == rec.result.end() || !found->is_array()) return out;
  for (const auto& e : *found) {
    if (!e.is_object()) continue;
    auto num = [&](const char* k) {
      const auto it = e.find(k);
      return it != e.end() && it->is_number() ? it->get<double>() : NAN;
    };
    const auto name = e.find("name");
    out.push_back(IntervalWarning(
        name != e.end() && name->is_string() ? name->get<std::string>() : std::string("?"),
        num("value"), num("lo"), num("hi")));
  }
  return out;
}

std::vector<std::string> LossFloorWarnings(
    const std::vector<std::pair<std::string, double>>& losses, double fitted_e, double floor,
    const std::string& floor_name) {
  std::vector<std::string> out;
  char buf[400];
  for (const auto& [label, loss] : losses) {
    if (std::isfinite(floor) && loss < floor) {
      std::snprintf(buf, sizeof buf,
                    "warning: %s: predicted loss %.4f is below %s %.4f: no model can reach it; "
                    "use a fit that respects it (isoflop fit --fix E=%.6g)",
                    label.c_str(), loss, floor_name.c_str(), floor, floor);
      out.push_back(buf);
    } else if (std::isfinite(fitted_e) && loss < fitted_e) {
      std::snprintf(buf, sizeof buf,
                    "warning: %s: predicted loss %.4f is below the law's own irreducible loss "
                    "E = %.4f",
                    label.c_str(), loss, fitted_e);
      out.push_back(buf);
    }
  }
  return out;
}

}  // namespace isoflop::cli
