// JSON (de)serialisation of fit results: the columns of the store's `fits` table and the
// result_json document (layout: docs/fit-json.md). NaN is written as null and read back as NaN.
#include <algorithm>
#include <cmath>
#include <limits>

#include "isoflop/fit/fit_record.h"

namespace isoflop::fit {
namespace {

using nlohmann::json;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

json Num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

bool AllFinite(const std::vector<double>& row) {
  return std::all_of(row.begin(), row.end(), [](double x) { return std::isfinite(x); });
}

// Reads key `k` of object `j` into *out; null -> NaN. InvalidArgument when missing/mistyped.
Status Get(const json& j, const char* k, double* out) {
  if (!j.is_object() || !j.contains(k))
    return Status::InvalidArgument(std::string("fit JSON: missing key '") + k + "'");
  const json& v = j.at(k);
  if (v.is_null()) {
    *out = kNaN;
    return Status::Ok();
  }
  if (!v.is_number())
    return Status::InvalidArgument(std::string("fit JSON: key '") + k + "' is not a number");
  *out = v.get<double>();
  return Status::Ok();
}

template <typename T>
Status GetAs(const json& j, const char* k, T* out) {
  if (!j.is_object() || !j.contains(k))
    return Status::InvalidArgument(std::string("fit JSON: missing key '") + k + "'");
  try {
    *out = j.at(k).get<T>();
  } catch (const json::exception& e) {
    return Status::InvalidArgument(std::string("fit JSON: key '") + k + "': " + e.what());
  }
  return Status::Ok();
}

Status GetInt(const json& j, const char* k, int* out) { return GetAs(j, k, out); }

json Matrix(const std::vector<std::vector<double>>& m) {
  json a = json::array();
  for (const auto& row : m) {
    json r = json::array();
    for (double v : row) r.push_back(Num(v));
    a.push_back(r);
  }
  return a;
}

// One element of a stored array: a number, or null (NaN). get<double>() would throw on
// anything else, and a stored fit is data, not a reason to abort.
Status Element(const json& v, const char* k, double* out) {
  if (v.is_null()) {
    *out = kNaN;
    return Status::Ok();
  }
  if (!v.is_number())
    return Status::InvalidArgument(std::string("fit JSON: array '") + k + "' holds " + v.dump() +
                                   ", not a number");
  *out = v.get<double>();
  return Status::Ok();
}

Status ReadMatrix(const json& j, const char* k, std::vector<std::vector<double>>* m) {
  if (!j.is_object() || !j.contains(k) || !j.at(k).is_array())
    return Status::InvalidArgument(std::string("fit JSON: missing array '") + k + "'");
  m->clear();
  for (const auto& row : j.at(k)) {
    if (!row.is_array())
      return Status::InvalidArgument(std::string("fit JSON: '") + k + "' is not an array of rows");
    std::vector<double> r;
    for (const auto& v : row) {
      double x;
      ISOFLOP_RETURN_IF_ERROR(Element(v, k, &x));
      r.push_back(x);
    }
    m->push_back(std::move(r));
  }
  return Status::Ok();
}

json Vector(const std::vector<double>& v) {
  json a = json::array();
  for (double x : v) a.push_back(Num(x));
  return a;
}

Status ReadVector(const json& j, const char* k, std::vector<double>* v) {
  if (!j.is_object() || !j.contains(k) || !j.at(k).is_array())
    return Status::InvalidArgument(std::string("fit JSON: missing array '") + k + "'");
  v->clear();
  for (const auto& x : j.at(k)) {
    double e;
    ISOFLOP_RETURN_IF_ERROR(Element(x, k, &e));
    v->push_back(e);
  }
  return Status::Ok();
}

json Params(const std::vector<std::string>& names, const std::vector<double>& values) {
  json o = json::object();
  for (size_t i = 0; i < names.size() && i < values.size(); ++i) o[names[i]] = Num(values[i]);
  return o;
}

json IntervalMap(const std::map<std::string, Interval>& m) {
  json o = json::object();
  for (const auto& [k, v] : m) o[k] = ToJson(v);
  return o;
}

Status ReadIntervalMap(const json& j, std::map<std::string, Interval>* m) {
  if (!j.is_object()) return Status::InvalidArgument("fit JSON: intervals must be an object");
  for (const auto& [k, v] : j.items()) {
    Interval iv;
    ISOFLOP_RETURN_IF_ERROR(FromJson(v, &iv).WithPrefix(k));
    (*m)[k] = iv;
  }
  return Status::Ok();
}

}  // namespace

json ToJson(const Interval& v) {
  return {{"lo", Num(v.lo)}, {"hi", Num(v.hi)}, {"level", Num(v.level)}};
}
Status FromJson(const json& j, Interval* v) {
  ISOFLOP_RETURN_IF_ERROR(Get(j, "lo", &v->lo));
  ISOFLOP_RETURN_IF_ERROR(Get(j, "hi", &v->hi));
  return Get(j, "level", &v->level);
}

json ToJson(const PowerLaw& v) {
  return {{"k", Num(v.k)},
          {"a", Num(v.a)},
          {"n_budgets", v.n_budgets},
          {"k_ci", ToJson(v.k_ci)},
          {"a_ci", ToJson(v.a_ci)}};
}
Status FromJson(const json& j, PowerLaw* v) {
  ISOFLOP_RETURN_IF_ERROR(Get(j, "k", &v->k));
  ISOFLOP_RETURN_IF_ERROR(Get(j, "a", &v->a));
  ISOFLOP_RETURN_IF_ERROR(GetInt(j, "n_budgets", &v->n_budgets));
  if (j.contains("k_ci")) ISOFLOP_RETURN_IF_ERROR(FromJson(j.at("k_ci"), &v->k_ci));
  if (j.contains("a_ci")) ISOFLOP_RETURN_IF_ERROR(FromJson(j.at("a_ci"), &v->a_ci));
  return Status::Ok();
}

json ToJson(const ParametricFit& v) {
  json fixed = json::array();
  for (bool b : v.is_fixed) fixed.push_back(b);
  return {{"form", v.form},
          {"param_names", v.param_names},
          {"params", Params(v.param_names, v.params)},
          {"internal", Vector(v.internal)},
          {"is_fixed", fixed},
          {"objective", Num(v.objective)},
          {"loss", v.loss},
          {"huber_delta", Num(v.huber_delta)},
          {"n_points", v.n_points},
          {"starts_total", v.starts_total},
          {"starts_converged", v.starts_converged},
          {"starts_at_best", v.starts_at_best},
          {"starts_pruned", v.starts_pruned},
          {"seconds", v.seconds},
          {"optima", Matrix(v.optima)},
          {"optima_objectives", Vector(v.optima_objectives)}};
}
Status FromJson(const json& j, ParametricFit* v) {
  ISOFLOP_RETURN_IF_ERROR(GetAs(j, "form", &v->form));
  ISOFLOP_RETURN_IF_ERROR(GetAs(j, "param_names", &v->param_names));
  v->params.clear();
  if (!j.contains("params") || !j.at("params").is_object())
    return Status::InvalidArgument("fit JSON: missing object 'params'");
  for (const auto& name : v->param_names) {
    double x;
    ISOFLOP_RETURN_IF_ERROR(Get(j.at("params"), name.c_str(), &x));
    v->params.push_back(x);
  }
  ISOFLOP_RETURN_IF_ERROR(ReadVector(j, "internal", &v->internal));
  ISOFLOP_RETURN_IF_ERROR(GetAs(j, "is_fixed", &v->is_fixed));
  ISOFLOP_RETURN_IF_ERROR(Get(j, "objective", &v->objective));
  ISOFLOP_RETURN_IF_ERROR(Get(j, "huber_delta", &v->huber_delta));
  v->loss = "huber";  // fits stored before the loss was recorded
  if (j.contains("loss")) ISOFLOP_RETURN_IF_ERROR(GetAs(j, "loss", &v->loss));
  ISOFLOP_RETURN_IF_ERROR(GetInt(j, "n_points", &v->n_points));
  ISOFLOP_RETURN_IF_ERROR(GetInt(j, "starts_total", &v->starts_total));
  ISOFLOP_RETURN_IF_ERROR(GetInt(j, "starts_converged", &v->starts_converged));
  ISOFLOP_RETURN_IF_ERROR(GetInt(j, "starts_at_best", &v->starts_at_best));
  ISOFLOP_RETURN_IF_ERROR(GetInt(j, "starts_pruned", &v->starts_pruned));
  ISOFLOP_RETURN_IF_ERROR(Get(j, "seconds", &v->seconds));
  ISOFLOP_RETURN_IF_ERROR(ReadMatrix(j, "optima", &v->optima));
  return ReadVector(j, "optima_objectives", &v->optima_objectives);
}

namespace {
// A power-law fit's optional {"bootstrap": {"resamples", "failed"}}; 0 and 0 without it.
Status ReadBootstrapCounts(const json& j, int* resamples, int* failed) {
  *resamples = *failed = 0;
  if (!j.contains("bootstrap")) return Status::Ok();
  const json& b = j.at("bootstrap");
  ISOFLOP_RETURN_IF_ERROR(GetInt(b, "resamples", resamples).WithPrefix("bootstrap"));
  return GetInt(b, "failed", failed).WithPrefix("bootstrap");
}
}  // namespace

json ToJson(const IsoflopFit& v) {
  json budgets = json::array();
  for (const BudgetProfile& b : v.budgets) {
    budgets.push_back(
        {{"c", Num(b.c)},
         {"budget_id", b.budget_id},
         {"n_points", b.n_points},
         {"n_lo", Num(b.n_lo)},
         {"n_hi", Num(b.n_hi)},
         {"d_lo", Num(b.d_lo)},
         {"d_hi", Num(b.d_hi)},
         {"parabola_n", {Num(b.parabola_n[0]), Num(b.parabola_n[1]), Num(b.parabola_n[2])}},
         {"parabola_d", {Num(b.parabola_d[0]), Num(b.parabola_d[1]), Num(b.parabola_d[2])}},
         {"n_opt", Num(b.n_opt)},
         {"loss_at_n_opt", Num(b.loss_at_n_opt)},
         {"d_opt", Num(b.d_opt)},
         {"loss_at_d_opt", Num(b.loss_at_d_opt)},
         {"outside_range", b.outside_range},
         {"usable", b.usable},
         {"note", b.note}});
  }
  json out = {{"budgets", budgets},     {"n_opt", ToJson(v.n_opt)}, {"d_opt", ToJson(v.d_opt)},
              {"n_points", v.n_points}, {"estimator", v.estimator}, {"grouping", v.grouping},
              {"warnings", v.warnings}};
  if (v.bootstrap_resamples > 0)
    out["bootstrap"] = {{"resamples", v.bootstrap_resamples}, {"failed", v.bootstrap_failed}};
  return out;
}
Status FromJson(const json& j, IsoflopFit* v) {
  if (!j.contains("budgets") || !j.at("budgets").is_array())
    return Status::InvalidArgument("fit JSON: missing array 'budgets'");
  v->budgets.clear();
  for (const json& b : j.at("budgets")) {
    BudgetProfile p;
    ISOFLOP_RETURN_IF_ERROR(Get(b, "c", &p.c));
    ISOFLOP_RETURN_IF_ERROR(GetAs(b, "budget_id", &p.budget_id));
    ISOFLOP_RETURN_IF_ERROR(GetInt(b, "n_points", &p.n_points));
    ISOFLOP_RETURN_IF_ERROR(Get(b, "n_lo", &p.n_lo));
    ISOFLOP_RETURN_IF_ERROR(Get(b, "n_hi", &p.n_hi));
    ISOFLOP_RETURN_IF_ERROR(Get(b, "d_lo", &p.d_lo));
    ISOFLOP_RETURN_IF_ERROR(Get(b, "d_hi", &p.d_hi));
    std::vector<double> pn, pd;
    ISOFLOP_RETURN_IF_ERROR(ReadVector(b, "parabola_n", &pn));
    ISOFLOP_RETURN_IF_ERROR(ReadVector(b, "parabola_d", &pd));
    if (pn.size() != 3 || pd.size() != 3)
      return Status::InvalidArgument("fit JSON: parabolas must have 3 coefficients");
    for (int k = 0; k < 3; ++k) p.parabola_n[k] = pn[k], p.parabola_d[k] = pd[k];
    ISOFLOP_RETURN_IF_ERROR(Get(b, "n_opt", &p.n_opt));
    ISOFLOP_RETURN_IF_ERROR(Get(b, "loss_at_n_opt", &p.loss_at_n_opt));
    ISOFLOP_RETURN_IF_ERROR(Get(b, "d_opt", &p.d_opt));
    ISOFLOP_RETURN_IF_ERROR(Get(b, "loss_at_d_opt", &p.loss_at_d_opt));
    ISOFLOP_RETURN_IF_ERROR(GetAs(b, "outside_range", &p.outside_range));
    ISOFLOP_RETURN_IF_ERROR(GetAs(b, "usable", &p.usable));
    ISOFLOP_RETURN_IF_ERROR(GetAs(b, "note", &p.note));
    v->budgets.push_back(p);
  }
  ISOFLOP_RETURN_IF_ERROR(FromJson(j.value("n_opt", json()), &v->n_opt).WithPrefix("n_opt"));
  ISOFLOP_RETURN_IF_ERROR(FromJson(j.value("d_opt", json()), &v->d_opt).WithPrefix("d_opt"));
  // Fits stored before these keys existed: a parabola estimator, grouping unknown, no
  // bootstrap counts.
  if (j.contains("estimator")) ISOFLOP_RETURN_IF_ERROR(GetAs(j, "estimator", &v->estimator));
  ISOFLOP_RETURN_IF_ERROR(ReadBootstrapCounts(j, &v->bootstrap_resamples, &v->bootstrap_failed));
  if (j.contains("grouping")) ISOFLOP_RETURN_IF_ERROR(GetAs(j, "grouping", &v->grouping));
  if (j.contains("warnings")) ISOFLOP_RETURN_IF_ERROR(GetAs(j, "warnings", &v->warnings));
  return GetInt(j, "n_points", &v->n_points);
}

json ToJson(const EnvelopeFit& v) {
  json pts = json::array();
  for (const auto& p : v.points)
    pts.push_back({{"c", Num(p.c)},
                   {"loss", Num(p.loss)},
                   {"n", Num(p.n)},
                   {"d", Num(p.d)},
                   {"curve", p.curve}});
  json out = {{"points", pts},
              {"n_opt", ToJson(v.n_opt)},
              {"d_opt", ToJson(v.d_opt)},
              {"n_curves", v.n_curves},
              {"warnings", v.warnings}};
  if (v.bootstrap_resamples > 0)
    out["bootstrap"] = {{"resamples", v.bootstrap_resamples}, {"failed", v.bootstrap_failed}};
  return out;
}
Status FromJson(const json& j, EnvelopeFit* v) {
  if (!j.contains("points") || !j.at("points").is_array())
    return Status::InvalidArgument("fit JSON: missing array 'points'");
  v->points.clear();
  for (const json& p : j.at("points")) {
    EnvelopePoint e;
    ISOFLOP_RETURN_IF_ERROR(Get(p, "c", &e.c));
    ISOFLOP_RETURN_IF_ERROR(Get(p, "loss", &e.loss));
    ISOFLOP_RETURN_IF_ERROR(Get(p, "n", &e.n));
    ISOFLOP_RETURN_IF_ERROR(Get(p, "d", &e.d));
    ISOFLOP_RETURN_IF_ERROR(GetInt(p, "curve", &e.curve));
    v->points.push_back(e);
  }
  ISOFLOP_RETURN_IF_ERROR(FromJson(j.value("n_opt", json()), &v->n_opt).WithPrefix("n_opt"));
  ISOFLOP_RETURN_IF_ERROR(FromJson(j.value("d_opt", json()), &v->d_opt).WithPrefix("d_opt"));
  // Fits stored before envelope bootstraps: no counts, no warnings.
  ISOFLOP_RETURN_IF_ERROR(ReadBootstrapCounts(j, &v->bootstrap_resamples, &v->bootstrap_failed));
  if (j.contains("warnings")) ISOFLOP_RETURN_IF_ERROR(GetAs(j, "warnings", &v->warnings));
  return GetInt(j, "n_curves", &v->n_curves);
}

// Draws are written finite only: a non-finite parameter would be written as null, which
// readers (the notebook's arithmetic, queries' intervals) cannot use. Such draws are counted in
// "non_finite" instead (BootstrapParametric already leaves them out; this holds for any caller).
json ToJson(const ParametricBootstrap& v) {
  json draws = json::array();
  int non_finite = v.non_finite;
  for (const auto& row : v.draws) {
    if (AllFinite(row))
      draws.push_back(Vector(row));
    else
      ++non_finite;
  }
  return {{"resamples", v.resamples},  {"failed", v.failed},
          {"non_finite", non_finite},  {"seconds", v.seconds},
          {"draws", std::move(draws)}, {"intervals", IntervalMap(v.intervals)}};
}
// Fits stored before "non_finite" existed may hold draws with nulls: left out and counted.
Status FromJson(const json& j, ParametricBootstrap* v) {
  ISOFLOP_RETURN_IF_ERROR(GetInt(j, "resamples", &v->resamples));
  ISOFLOP_RETURN_IF_ERROR(GetInt(j, "failed", &v->failed));
  v->non_finite = 0;
  if (j.contains("non_finite")) ISOFLOP_RETURN_IF_ERROR(GetInt(j, "non_finite", &v->non_finite));
  ISOFLOP_RETURN_IF_ERROR(Get(j, "seconds", &v->seconds));
  std::vector<std::vector<double>> stored;
  ISOFLOP_RETURN_IF_ERROR(ReadMatrix(j, "draws", &stored));
  v->draws.clear();
  for (auto& row : stored) {
    if (AllFinite(row))
      v->draws.push_back(std::move(row));
    else
      ++v->non_finite;
  }
  v->all_draws = v->draws;
  const json intervals = j.value("intervals", json::object());
  return ReadIntervalMap(intervals, &v->intervals);
}

json ToJson(const ExtrapolationCheck& v) {
  return {{"held_out_c", Num(v.held_out_c)},
          {"n_train", v.n_train},
          {"n_test", v.n_test},
          {"test_loss", Vector(v.test_loss)},
          {"predicted_loss", Vector(v.predicted_loss)},
          {"mean_abs_rel_error", Num(v.mean_abs_rel_error)},
          {"max_abs_rel_error", Num(v.max_abs_rel_error)},
          {"n_opt_predicted", Num(v.n_opt_predicted)},
          {"n_opt_observed", Num(v.n_opt_observed)},
          {"n_opt_rel_error", Num(v.n_opt_rel_error)}};
}
Status FromJson(const json& j, ExtrapolationCheck* v) {
  ISOFLOP_RETURN_IF_ERROR(Get(j, "held_out_c", &v->held_out_c));
  ISOFLOP_RETURN_IF_ERROR(GetInt(j, "n_train", &v->n_train));
  ISOFLOP_RETURN_IF_ERROR(GetInt(j, "n_test", &v->n_test));
  ISOFLOP_RETURN_IF_ERROR(ReadVector(j, "test_loss", &v->test_loss));
  ISOFLOP_RETURN_IF_ERROR(ReadVector(j, "predicted_loss", &v->predicted_loss));
  ISOFLOP_RETURN_IF_ERROR(Get(j, "mean_abs_rel_error", &v->mean_abs_rel_error));
  ISOFLOP_RETURN_IF_ERROR(Get(j, "max_abs_rel_error", &v->max_abs_rel_error));
  ISOFLOP_RETURN_IF_ERROR(Get(j, "n_opt_predicted", &v->n_opt_predicted));
  ISOFLOP_RETURN_IF_ERROR(Get(j, "n_opt_observed", &v->n_opt_observed));
  return Get(j, "n_opt_rel_error", &v->n_opt_rel_error);
}

json ToJson(const std::vector<IntervalExclusion>& v) {
  json a = json::array();
  for (const auto& e : v)
    a.push_back({{"name", e.name}, {"value", Num(e.value)}, {"lo", Num(e.lo)}, {"hi", Num(e.hi)}});
  return a;
}

json FitRecord::ParamsJson() const {
  json o = json::object();
  for (const auto& [k, v] : params) o[k] = Num(v);
  return o;
}

json FitRecord::CiJson() const { return IntervalMap(ci); }

json ToJson(const FitRecord& v) {
  return {{"method", v.method},
          {"form", v.form},
          {"convention", v.convention},
          {"flops_convention", v.flops_convention},
          {"params", v.ParamsJson()},
          {"ci", v.CiJson()},
          {"objective", Num(v.objective)},
          {"n_points", v.n_points},
          {"result", v.result}};
}

Status FromJson(const json& j, FitRecord* v) {
  ISOFLOP_RETURN_IF_ERROR(GetAs(j, "method", &v->method));
  ISOFLOP_RETURN_IF_ERROR(GetAs(j, "form", &v->form));
  ISOFLOP_RETURN_IF_ERROR(GetAs(j, "convention", &v->convention));
  ISOFLOP_RETURN_IF_ERROR(GetAs(j, "flops_convention", &v->flops_convention));
  v->params.clear();
  if (!j.contains("params") || !j.at("params").is_object())
    return Status::InvalidArgument("fit JSON: missing object 'params'");
  for (const auto& [k, x] : j.at("params").items()) {
    if (!x.is_null() && !x.is_number())
      return Status::InvalidArgument("fit JSON: parameter '" + k + "' is " + x.dump() +
                                     ", not a number");
    v->params[k] = x.is_null() ? kNaN : x.get<double>();
  }
  v->ci.clear();
  ISOFLOP_RETURN_IF_ERROR(ReadIntervalMap(j.value("ci", json::object()), &v->ci));
  ISOFLOP_RETURN_IF_ERROR(Get(j, "objective", &v->objective));
  ISOFLOP_RETURN_IF_ERROR(GetInt(j, "n_points", &v->n_points));
  v->result = j.value("result", json::object());
  return Status::Ok();
}

Result<FitRecord> FitRecord::FromColumns(const std::string& method, const std::string& form,
                                         const std::string& convention,
                                         const std::string& flops_convention,
                                         const std::string& params_json, const std::string& ci_json,
                                         double objective, int n_points,
                                         const std::string& result_json) {
  json j = {{"method", method},
            {"form", form},
            {"convention", convention},
            {"flops_convention", flops_convention},
            {"objective", Num(objective)},
            {"n_points", n_points}};
  const std::pair<const char*, const std::string*> cols[] = {
      {"params", &params_json}, {"ci", &ci_json}, {"result", &result_json}};
  for (const auto& [name, text] : cols) {
    json parsed = json::parse(text->empty() ? std::string("{}") : *text, nullptr, false);
    if (parsed.is_discarded())
      return Status::Corrupt(std::string("fits table: column ") + name + "_json is not JSON");
    j[name] = parsed;
  }
  FitRecord r;
  ISOFLOP_RETURN_IF_ERROR(FromJson(j, &r));
  return r;
}

}  // namespace isoflop::fit
