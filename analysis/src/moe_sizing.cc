// Active -> total parameters of an MoE sweep's runs (see moe_sizing.h).
#include "isoflop/analysis/moe_sizing.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace isoflop::analysis {

double MoeSizing::Total(double n_active) const {
  return std::exp(log_scale + exponent * std::log(n_active));
}

nlohmann::json MoeSizing::ToJson() const {
  return {{"n_experts", n_experts},         {"log_scale", log_scale},
          {"exponent", exponent},           {"runs", runs},
          {"n_active_lo", n_active_lo},     {"n_active_hi", n_active_hi},
          {"max_rel_error", max_rel_error}};
}

Result<MoeSizing> MoeSizing::FromJson(const nlohmann::json& j) {
  if (!j.is_object()) return Status::InvalidArgument("moe_sizing: expected an object");
  MoeSizing s;
  for (const char* key : {"n_experts", "log_scale", "exponent", "runs", "n_active_lo",
                          "n_active_hi", "max_rel_error"}) {
    if (!j.contains(key) || !j.at(key).is_number())
      return Status::InvalidArgument(std::string("moe_sizing.") + key + ": missing or not a number");
  }
  s.n_experts = j.at("n_experts").get<int>();
  s.log_scale = j.at("log_scale").get<double>();
  s.exponent = j.at("exponent").get<double>();
  s.runs = j.at("runs").get<size_t>();
  s.n_active_lo = j.at("n_active_lo").get<double>();
  s.n_active_hi = j.at("n_active_hi").get<double>();
  s.max_rel_error = j.at("max_rel_error").get<double>();
  return s;
}

std::optional<MoeSizing> FitMoeSizing(const Dataset& data) {
  if (data.source.kind != Source::Kind::kSweep || data.expert_counts.size() != 1 ||
      data.expert_counts[0] == 0) {
    return std::nullopt;
  }
  std::vector<std::pair<double, double>> xy;  // (log active, log total)
  std::set<double> sizes;
  for (const Point& p : data.points) {
    if (!(p.n_active > 0) || !(p.n_total > 0)) continue;
    xy.emplace_back(std::log(p.n_active), std::log(p.n_total));
    sizes.insert(p.n_active);
  }
  if (sizes.size() < 2) return std::nullopt;
  double mx = 0, my = 0;
  for (const auto& [x, y] : xy) mx += x, my += y;
  mx /= xy.size(), my /= xy.size();
  double sxx = 0, sxy = 0;
  for (const auto& [x, y] : xy) sxx += (x - mx) * (x - mx), sxy += (x - mx) * (y - my);
  MoeSizing s;
  s.n_experts = data.expert_counts[0];
  s.exponent = sxy / sxx;
  s.log_scale = my - s.exponent * mx;
  s.runs = xy.size();
  s.n_active_lo = *sizes.begin();
  s.n_active_hi = *sizes.rbegin();
  for (const auto& [x, y] : xy)
    s.max_rel_error = std::max(s.max_rel_error, std::abs(std::exp(s.log_scale + s.exponent * x - y) - 1));
  return s;
}

}  // namespace isoflop::analysis
