// Sentences about fits, for people (the numbers come from the fit record).
#include "fit_text.h"

#include <cmath>
#include <cstdio>

namespace isoflop::cli {

std::string ExtrapolationSummary(const fit::FitRecord& rec) {
  const auto found = rec.result.find("extrapolation");
  if (found == rec.result.end() || !found->is_object()) return "";
  const nlohmann::json& e = *found;
  auto num = [&](const char* key) {
    const auto it = e.find(key);
    return it != e.end() && it->is_number() ? it->get<double>() : NAN;
  };
  const double c = num("held_out_c"), mean = num("mean_abs_rel_error"),
               max = num("max_abs_rel_error");
  if (!std::isfinite(c) || !std::isfinite(mean)) return "";
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "extrapolation check: fitted without the largest budget (C=%.3g), the law predicts "
                "its %d final losses within %.2f%% on average (max %.2f%%)",
                c, static_cast<int>(num("n_test")), 100 * mean, 100 * max);
  std::string out = buf;
  const double predicted = num("n_opt_predicted"), observed = num("n_opt_observed");
  if (std::isfinite(predicted) && std::isfinite(observed) && observed > 0) {
    std::snprintf(buf, sizeof buf, "; N_opt %.3g predicted, %.3g observed (isoFLOP minimum)",
                  predicted, observed);
    out += buf;
  }
  return out;
}

}  // namespace isoflop::cli
