// The dashboard's JSON API (see api.h and docs/serve.md). Each endpoint is a few lines over one
// analysis/ call; this file only checks inputs, routes and writes JSON.
#include "isoflop/serve/api.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "isoflop/analysis/curves.h"
#include "isoflop/analysis/dataset.h"
#include "isoflop/analysis/sweep_view.h"
#include "isoflop/fit/fit_record.h"
#include "isoflop/store/store.h"

namespace isoflop::serve {
namespace {

using nlohmann::json;

// Curves the page draws: no loss surface (it draws no contours; `isoflop curves` has it).
constexpr int kSurfacePoints = 2;
constexpr int kDefaultMaxPoints = 400;  // per training curve: enough for a smooth line
constexpr int kMaxMaxPoints = 100000;

std::string Dump(const json& j) {
  // Replace invalid UTF-8 (a run's reason is free text) rather than throw mid-response.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

ApiResponse Json(const json& j) { return {200, Dump(j)}; }

ApiResponse FromStatus(const Status& st) {
  switch (st.code()) {
    case Status::Code::kInvalidArgument:
      return ErrorResponse(400, st.message());
    case Status::Code::kNotFound:
      return ErrorResponse(404, st.message());
    default:
      return ErrorResponse(500, st.message());
  }
}

// A path segment used as a name (sweep, observation set): 400 unless it is a plain name.
Status CheckName(const std::string& what, const std::string& name) {
  if (name.empty()) return Status::InvalidArgument(what + ": empty name");
  if (name.size() > 256) return Status::InvalidArgument(what + ": name longer than 256 bytes");
  if (name == "." || name == ".." || name.find("..") != std::string::npos ||
      name.find_first_of("/\\") != std::string::npos) {
    return Status::InvalidArgument(what + " '" + name +
                                   "': a path-like name (with '/', '\\' or '..') is refused");
  }
  for (unsigned char ch : name) {
    if (ch < 0x20 || ch == 0x7f) {
      return Status::InvalidArgument(what + ": control characters in the name are refused");
    }
  }
  return Status::Ok();
}

const std::string* Param(const std::multimap<std::string, std::string>& params,
                         const std::string& key) {
  auto it = params.find(key);
  return it == params.end() ? nullptr : &it->second;
}

// ?c=: a budget in FLOPs, a positive finite number written in full ("1e21", "3.5e20").
Result<double> BudgetParam(const std::multimap<std::string, std::string>& params) {
  const std::string* s = Param(params, "c");
  if (!s) return Status::InvalidArgument("c: give the budget in FLOPs, e.g. ?c=1e21");
  char* end = nullptr;
  const double v = std::strtod(s->c_str(), &end);
  if (s->empty() || end != s->c_str() + s->size() || !(v > 0) || !std::isfinite(v)) {
    return Status::InvalidArgument("c: '" + *s + "' is not a positive number of FLOPs (e.g. 1e21)");
  }
  return v;
}

// ?max_points=: points per curve, 2..kMaxMaxPoints, default kDefaultMaxPoints.
Result<int> MaxPointsParam(const std::multimap<std::string, std::string>& params) {
  const std::string* s = Param(params, "max_points");
  if (!s) return kDefaultMaxPoints;
  int v = 0;
  auto [p, ec] = std::from_chars(s->data(), s->data() + s->size(), v);
  if (ec != std::errc() || p != s->data() + s->size() || v < 2 || v > kMaxMaxPoints) {
    return Status::InvalidArgument("max_points: '" + *s + "' is not a whole number from 2 to " +
                                   std::to_string(kMaxMaxPoints));
  }
  return v;
}

Result<int64_t> RunIdSegment(const std::string& s) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size() || v < 1) {
    return Status::InvalidArgument("run id: '" + s + "' is not a run id (a whole number >= 1)");
  }
  return v;
}

json ObservationSets(store::Store& db) {
  json out = json::array();
  Result<std::vector<store::ObservationSet>> sets = db.ListObservationSets();
  if (!sets.ok()) return out;
  for (const auto& s : *sets) {
    out.push_back({{"name", s.name},
                   {"source_file", s.source_file},
                   {"created_at", s.created_at},
                   {"points", s.n_points}});
  }
  return out;
}

Result<json> SweepsJson(store::Store& db) {
  ISOFLOP_ASSIGN_OR_RETURN(auto sums, analysis::ListSweepSummaries(db));
  json sweeps = json::array();
  for (const auto& s : sums) sweeps.push_back(s.ToJson());
  return json{{"sweeps", sweeps}, {"observation_sets", ObservationSets(db)}};
}

// A change token for polling: any cell's state or tokens, or a new fit, changes it.
std::string Revision(const std::vector<analysis::CellView>& cells, int64_t newest_fit) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a over the fields that move
  auto mix = [&h](const std::string& s) {
    for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
  };
  for (const auto& c : cells) {
    mix(c.run.cell_key);
    mix(c.run.status);
    mix(std::to_string(c.run.tokens_done));
    mix(std::to_string(c.latest_step));
  }
  mix(std::to_string(newest_fit));
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// The newest fit id of a source (0 when none).
Result<int64_t> NewestFitId(store::Store& db, const std::string& kind, const std::string& name) {
  ISOFLOP_ASSIGN_OR_RETURN(auto fits, db.ListFits());
  int64_t newest = 0;
  for (const auto& f : fits)
    if (f.source_kind == kind && f.source_name == name) newest = std::max(newest, f.id);
  return newest;
}

Result<json> SweepJson(store::Store& db, const std::string& name) {
  ISOFLOP_ASSIGN_OR_RETURN(auto cells, analysis::SweepCells(db, name));
  ISOFLOP_ASSIGN_OR_RETURN(auto sums, analysis::ListSweepSummaries(db));
  json summary = nullptr;
  for (const auto& s : sums)
    if (s.sweep.name == name) summary = s.ToJson();
  json cells_j = json::array();
  for (const auto& c : cells) cells_j.push_back(c.ToJson());
  ISOFLOP_ASSIGN_OR_RETURN(int64_t newest, NewestFitId(db, "sweep", name));
  return json{{"sweep", summary},
              {"cells", cells_j},
              {"newest_fit_id", newest},
              {"revision", Revision(cells, newest)}};
}

Result<json> SweepSeriesJson(store::Store& db, const std::string& name, int max_points) {
  ISOFLOP_ASSIGN_OR_RETURN(auto cells, analysis::SweepCells(db, name));
  json runs = json::array();
  for (const auto& c : cells) {
    ISOFLOP_ASSIGN_OR_RETURN(analysis::RunSeries s,
                             analysis::LoadRunSeries(db, c.run.id, max_points));
    json j = s.ToJson();
    j["cell"] = c.run.cell_key;
    j["shape"] = c.shape;
    j["status"] = c.run.status;
    j["n_total"] = c.run.n_total;
    j["budget"] = c.run.budget_flops;
    runs.push_back(std::move(j));
  }
  return json{{"max_points", max_points}, {"runs", runs}};
}

Result<json> FitsJson(store::Store& db, const std::string& kind, const std::string& name) {
  analysis::Source source;
  source.kind =
      kind == "sweep" ? analysis::Source::Kind::kSweep : analysis::Source::Kind::kObservations;
  source.name = name;
  if (kind == "sweep") {
    ISOFLOP_ASSIGN_OR_RETURN(auto sweep, db.GetSweep(name));
    if (!sweep) return Status::NotFound("no sweep named '" + name + "' in " + db.path());
  } else {
    ISOFLOP_ASSIGN_OR_RETURN(auto sets, db.ListObservationSets());
    bool found = false;
    for (const auto& s : sets) found = found || s.name == name;
    if (!found) return Status::NotFound("no observation set named '" + name + "' in " + db.path());
  }
  analysis::CurveOptions co;
  co.surface_points = kSurfacePoints;
  ISOFLOP_ASSIGN_OR_RETURN(json curves, analysis::SourceCurves(db, source, co));
  // Every stored fit of the source, newest first, with parameters and intervals.
  ISOFLOP_ASSIGN_OR_RETURN(auto rows, db.ListFits());
  json fits = json::array();
  for (auto it = rows.rbegin(); it != rows.rend(); ++it) {
    if (it->source_kind != kind || it->source_name != name) continue;
    Result<analysis::StoredFit> f = analysis::LoadFit(db, it->id);
    if (!f.ok()) {
      fits.push_back({{"id", it->id}, {"error", f.status().message()}});
      continue;
    }
    json j = fit::ToJson(f->record);
    j["id"] = f->id;
    j["created_at"] = it->created_at;
    fits.push_back(std::move(j));
  }
  return json{{"source", {{"kind", kind}, {"name", name}}}, {"fits", fits}, {"curves", curves}};
}

Result<json> OptimalJson(store::Store& db, const std::string& kind, const std::string& name,
                         const std::multimap<std::string, std::string>& params) {
  ISOFLOP_ASSIGN_OR_RETURN(double c, BudgetParam(params));
  ISOFLOP_ASSIGN_OR_RETURN(analysis::OptimalView v, analysis::OptimalAt(db, kind, name, c));
  return v.ToJson();
}

// %XX -> the byte; nullopt for a malformed escape.
std::optional<std::string> PercentDecode(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int v = 0;
    auto [p, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
    if (ec != std::errc() || p != s.data() + i + 3) return std::nullopt;
    out += static_cast<char>(v);
    i += 2;
  }
  return out;
}

// The segments of a raw path, each percent-decoded after splitting, so an encoded '/' stays
// inside its segment (and is refused there) instead of making a new one.
std::optional<std::vector<std::string>> Segments(const std::string& raw_path) {
  std::vector<std::string> out;
  size_t start = 1;  // past the leading '/'
  while (start <= raw_path.size()) {
    size_t end = raw_path.find('/', start);
    if (end == std::string::npos) end = raw_path.size();
    std::optional<std::string> seg = PercentDecode(raw_path.substr(start, end - start));
    if (!seg) return std::nullopt;
    out.push_back(std::move(*seg));
    start = end + 1;
  }
  return out;
}

ApiResponse Answer(const Result<json>& r) { return r.ok() ? Json(*r) : FromStatus(r.status()); }

}  // namespace

ApiResponse ErrorResponse(int status, const std::string& message) {
  return {status, Dump(json{{"error", message}, {"status", status}})};
}

ApiResponse HandleApi(const std::string& db_path, const std::string& path,
                      const std::multimap<std::string, std::string>& params) {
  if (path.rfind("/api/", 0) != 0) return ErrorResponse(404, "no such endpoint: " + path);
  std::optional<std::vector<std::string>> segments = Segments(path);
  if (!segments) return ErrorResponse(400, "path '" + path + "': a malformed %-escape");
  std::vector<std::string> seg = std::move(*segments);
  if (!seg.empty() && seg.back().empty()) seg.pop_back();  // a trailing '/'
  // A '.' or '..' segment, or one that decodes to a path of its own, is a traversal attempt,
  // whatever endpoint it aims at.
  for (const auto& s : seg) {
    if (s == "." || s == "..") {
      return ErrorResponse(400, "path '" + path + "': '.' and '..' segments are refused");
    }
    if (s.find("..") != std::string::npos || s.find_first_of("/\\") != std::string::npos) {
      return ErrorResponse(400, "path '" + path + "': a path-like segment ('" + s +
                                    "', with '/', '\\' or '..') is refused");
    }
  }
  // seg[0] == "api".
  const std::string kind = seg.size() >= 2 ? seg[1] : "";
  if (kind != "sweeps" && kind != "observations" && kind != "runs") {
    return ErrorResponse(404, "no such endpoint: " + path + " (see docs/serve.md)");
  }
  if (seg.size() >= 3) {
    Status st = kind == "runs" ? RunIdSegment(seg[2]).status()
                               : CheckName(kind == "sweeps" ? "sweep" : "observation set", seg[2]);
    if (!st.ok()) return FromStatus(st);
  }
  if (seg.size() > 4)
    return ErrorResponse(404, "no such endpoint: " + path + " (see docs/serve.md)");

  store::OpenOptions ro;
  ro.read_only = true;
  ro.create_if_missing = false;
  Result<std::unique_ptr<store::Store>> opened = store::Store::Open(db_path, ro);
  if (!opened.ok()) return ErrorResponse(503, opened.status().message());
  store::Store& db = **opened;

  const std::string sub = seg.size() == 4 ? seg[3] : "";
  if (kind == "sweeps") {
    if (seg.size() == 2) return Answer(SweepsJson(db));
    const std::string& name = seg[2];
    if (sub.empty()) return Answer(SweepJson(db, name));
    if (sub == "series") {
      Result<int> mp = MaxPointsParam(params);
      if (!mp.ok()) return FromStatus(mp.status());
      return Answer(SweepSeriesJson(db, name, *mp));
    }
    if (sub == "fits") return Answer(FitsJson(db, "sweep", name));
    if (sub == "optimal") return Answer(OptimalJson(db, "sweep", name, params));
  } else if (kind == "observations") {
    if (seg.size() == 2) return Json({{"observation_sets", ObservationSets(db)}});
    const std::string& name = seg[2];
    if (sub == "fits" || sub.empty()) return Answer(FitsJson(db, "observations", name));
    if (sub == "optimal") return Answer(OptimalJson(db, "observations", name, params));
  } else if (kind == "runs" && seg.size() == 4 && sub == "series") {
    Result<int> mp = MaxPointsParam(params);
    if (!mp.ok()) return FromStatus(mp.status());
    Result<int64_t> id = RunIdSegment(seg[2]);
    Result<analysis::RunSeries> s = analysis::LoadRunSeries(db, *id, *mp);
    return s.ok() ? Json(s->ToJson()) : FromStatus(s.status());
  }
  return ErrorResponse(404, "no such endpoint: " + path + " (see docs/serve.md)");
}

}  // namespace isoflop::serve
