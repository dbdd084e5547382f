// The stored form of a fit (one row of the store's `fits` table) and JSON (de)serialisation of
// every result type. Layout documented in docs/fit-json.md; summarised here:
//   method           "parametric" | "isoflop" | "envelope"
//   form             "chinchilla" | "kaplan" | "moe"   (parametric; "" otherwise)
//   convention       parameter-count convention, e.g. "total", "non_embedding"
//   flops_convention e.g. "6nd"
//   params_json      {"E":1.82,"A":482,...}; isoflop/envelope: {"n_opt_k","n_opt_a","d_opt_k",
//                    "d_opt_b"}
//   ci_json          {"<name>":{"lo":..,"hi":..,"level":0.95}} incl. derived ("a","b",
//                    "N_opt@1e+21",...)
//   objective        summed Huber objective (parametric), NaN/NULL otherwise
//   n_points         observations (or curves for envelope) used
//   result_json      everything else: {"parametric": ToJson(ParametricFit), "bootstrap": ...,
//                    "extrapolation": ..., "isoflop": ..., "envelope": ...,
//                    "excludes_point": [...] (with a bootstrap)}
#pragma once

#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "isoflop/common/status.h"
#include "isoflop/fit/bootstrap.h"
#include "isoflop/fit/envelope.h"
#include "isoflop/fit/isoflop_profile.h"
#include "isoflop/fit/parametric.h"
#include "isoflop/fit/power_law.h"

namespace isoflop::fit {

// One stored fit. Plain value type.
struct FitRecord {
  std::string method;
  std::string form;
  std::string convention = "total";
  std::string flops_convention = "6nd";
  std::map<std::string, double> params;
  std::map<std::string, Interval> ci;
  double objective = std::numeric_limits<double>::quiet_NaN();
  int n_points = 0;
  nlohmann::json result = nlohmann::json::object();  // the result_json column

  nlohmann::json ParamsJson() const;  // params_json column
  nlohmann::json CiJson() const;      // ci_json column
  // Rebuilds a record from the columns. InvalidArgument (naming the column) on bad JSON.
  static Result<FitRecord> FromColumns(const std::string& method, const std::string& form,
                                       const std::string& convention,
                                       const std::string& flops_convention,
                                       const std::string& params_json, const std::string& ci_json,
                                       double objective, int n_points,
                                       const std::string& result_json);
};

// ToJson never fails. FromJson returns InvalidArgument naming the missing or mistyped key.
nlohmann::json ToJson(const Interval& v);
nlohmann::json ToJson(const PowerLaw& v);
nlohmann::json ToJson(const ParametricFit& v);
nlohmann::json ToJson(const IsoflopFit& v);
nlohmann::json ToJson(const EnvelopeFit& v);
nlohmann::json ToJson(const ParametricBootstrap& v);
nlohmann::json ToJson(const ExtrapolationCheck& v);
nlohmann::json ToJson(const FitRecord& v);  // all columns in one object (for --format json)
// [{"name","value","lo","hi"}, ...]: the result's "excludes_point".
nlohmann::json ToJson(const std::vector<IntervalExclusion>& v);

Status FromJson(const nlohmann::json& j, Interval* v);
Status FromJson(const nlohmann::json& j, PowerLaw* v);
Status FromJson(const nlohmann::json& j, ParametricFit* v);
Status FromJson(const nlohmann::json& j, IsoflopFit* v);
Status FromJson(const nlohmann::json& j, EnvelopeFit* v);
Status FromJson(const nlohmann::json& j, ParametricBootstrap* v);
Status FromJson(const nlohmann::json& j, ExtrapolationCheck* v);
Status FromJson(const nlohmann::json& j, FitRecord* v);

}  // namespace isoflop::fit
