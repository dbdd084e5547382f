// Parsing and validation of sweep files: YAML (yaml-cpp) -> SweepConfig. Every error names the
// file, line, column and dotted key, and what was expected. yaml-cpp exceptions stop here.
#include "isoflop/sweep/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "isoflop/common/files.h"
#include "isoflop/trainer/run_config.h"

namespace isoflop::sweep {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string Join(const std::vector<std::string>& v, const std::string& sep = ", ") {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

// Parsing context: where the document came from, for messages.
class Parser {
 public:
  // `created`: the mappings an override made (path -> its key), for `--set a.b.c=v` where the
  // file has no `a` (its errors are the override's too).
  Parser(std::string file, std::map<std::string, std::string> overrides,
         std::map<std::string, std::string> created = {})
      : file_(std::move(file)), overrides_(std::move(overrides)), created_(std::move(created)) {}

  // "FILE:LINE:COL: path", or "--set k=v: path" when `path` came from an override.
  std::string Where(const YAML::Node& node, const std::string& path) const {
    const auto under = [&](const std::string& key) {
      return path == key || path.rfind(key + ".", 0) == 0 || path.rfind(key + "[", 0) == 0 ||
             path.rfind(key + " (", 0) == 0;  // "budgets (budget 2 of 5)"
    };
    for (const auto& [key, value] : overrides_) {
      if (under(key)) return "--set " + key + "=" + value + ": " + path;
    }
    for (const auto& [made, key] : created_) {
      if (under(made)) return "--set " + key + "=" + overrides_.at(key) + ": " + path;
    }
    std::string where = file_;
    if (node.IsDefined() && node.Mark().line >= 0) {
      where +=
          ":" + std::to_string(node.Mark().line + 1) + ":" + std::to_string(node.Mark().column + 1);
    }
    return where + ": " + path;
  }

  // "FILE:LINE:COL: path: msg", or "--set k=v: path: msg" when `path` came from an override.
  Status Error(const YAML::Node& node, const std::string& path, const std::string& msg) const {
    return Status::InvalidArgument(Where(node, path) + ": " + msg);
  }

  // Unknown keys of a map are errors that list the accepted ones.
  Status CheckKeys(const YAML::Node& map, const std::string& path,
                   const std::vector<std::string>& allowed) const {
    if (!map.IsMap()) return Error(map, path, "expected a mapping (key: value lines)");
    for (auto it = map.begin(); it != map.end(); ++it) {
      const std::string key = it->first.as<std::string>();
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        return Error(it->first, Sub(path, Printable(key)),
                     "unknown key (expected one of: " + Join(allowed) + ")");
      }
    }
    return Status::Ok();
  }

  // A key as one short line: a stray quote can make YAML read several lines as one key, which
  // must not spill the message over many lines. Control characters escaped, long keys cut.
  static std::string Printable(const std::string& key) {
    constexpr size_t kMax = 60;
    std::string out;
    for (const char ch : key) {
      if (out.size() >= kMax) return out + "...";
      if (ch == '\n') {
        out += "\\n";
      } else if (ch == '\t') {
        out += "\\t";
      } else if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) {
        out += '?';
      } else {
        out += ch;
      }
    }
    return out;
  }

  static std::string Sub(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }

  // What a node holds, for "got ..." in messages: 'text', a list, a mapping, or nothing.
  static std::string Got(const YAML::Node& n) {
    if (n.IsScalar()) return "'" + n.Scalar() + "'";
    if (n.IsSequence()) return "a list";
    if (n.IsMap()) return "a mapping";
    return "nothing (null)";
  }

  Result<double> Number(const YAML::Node& n, const std::string& path) const {
    if (!n.IsScalar()) return Error(n, path, "expected a number, got " + Got(n));
    const std::string s = n.Scalar();
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || errno == ERANGE || !std::isfinite(v)) {
      return Error(n, path, "expected a number, got '" + s + "'");
    }
    return v;
  }

  Result<int64_t> Integer(const YAML::Node& n, const std::string& path) const {
    ISOFLOP_ASSIGN_OR_RETURN(double v, Number(n, path));
    if (v != std::floor(v) || std::abs(v) > 9.0e15) {
      return Error(n, path, "expected an integer, got '" + n.Scalar() + "'");
    }
    return static_cast<int64_t>(v);
  }

  Result<bool> Bool(const YAML::Node& n, const std::string& path) const {
    if (n.IsScalar()) {
      // YAML 1.1's spellings, any case (True, TRUE, Yes, OFF...), as PyYAML reads them.
      std::string s = n.Scalar();
      std::transform(s.begin(), s.end(), s.begin(),
                     [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
      if (s == "true" || s == "yes" || s == "on") return true;
      if (s == "false" || s == "no" || s == "off") return false;
    }
    return Error(n, path, "expected true or false, got " + Got(n));
  }

  Result<std::string> String(const YAML::Node& n, const std::string& path) const {
    if (!n.IsScalar()) return Error(n, path, "expected a string, got " + Got(n));
    return n.Scalar();
  }

  // A positive number; `what` describes the bound in the message.
  Result<double> Positive(const YAML::Node& n, const std::string& path) const {
    ISOFLOP_ASSIGN_OR_RETURN(double v, Number(n, path));
    if (!(v > 0)) return Error(n, path, "must be > 0, got " + n.Scalar());
    return v;
  }

  Result<int> IntInRange(const YAML::Node& n, const std::string& path, int64_t lo,
                         int64_t hi) const {
    ISOFLOP_ASSIGN_OR_RETURN(int64_t v, Integer(n, path));
    if (v < lo || v > hi) {
      return Error(
          n, path,
          "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + n.Scalar());
    }
    return static_cast<int>(v);
  }

  // A scalar converted to JSON: number when it parses as one, bool for true/false, else string.
  static json ScalarJson(const YAML::Node& n) {
    const std::string s = n.Scalar();
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (!s.empty() && end == s.c_str() + s.size() && std::isfinite(v)) {
      if (v == std::floor(v) && std::abs(v) < 9.0e15 && s.find_first_of(".eE") == std::string::npos)
        return static_cast<int64_t>(v);
      return v;
    }
    if (s == "true") return true;
    if (s == "false") return false;
    return s;
  }

  const std::string& file() const { return file_; }

 private:
  std::string file_;
  std::map<std::string, std::string> overrides_;
  std::map<std::string, std::string> created_;
};

YAML::Node Child(const YAML::Node& map, const std::string& key) {
  const YAML::Node& m = map;
  return m[key];
}

// ---- data ----------------------------------------------------------------------------------

const std::map<std::string, std::vector<std::string>>& DataKeys() {
  static const std::map<std::string, std::vector<std::string>> keys = {
      {"synthetic",
       {"source", "vocab", "build_seed", "train_seed", "val_seed", "k1", "k2", "lambda", "zipf",
        "language", "skill_zipf"}},
      {"text", {"source", "paths", "val_fraction"}},
      {"bin", {"source", "train", "val"}},
      {"llmc", {"source", "train", "val"}},
  };
  return keys;
}

bool IsPathField(const std::string& source, const std::string& key) {
  return (source == "text" && key == "paths") ||
         ((source == "bin" || source == "llmc") && (key == "train" || key == "val"));
}

std::string Absolute(const std::string& cwd, const std::string& p) {
  fs::path path(p);
  if (path.is_absolute()) return path.lexically_normal().string();
  return (fs::path(cwd) / path).lexically_normal().string();
}

// Makes the path fields of a resolved run.json data object absolute (the trainer resolves
// relative paths against its own cwd; the manager always writes absolute ones).
void AbsolutizeDataPaths(json& data, const std::string& cwd) {
  const std::string source = data.value("source", "");
  for (auto& [key, value] : data.items()) {
    if (!IsPathField(source, key)) continue;
    if (value.is_string()) value = Absolute(cwd, value.get<std::string>());
    if (value.is_array()) {
      for (auto& v : value)
        if (v.is_string()) v = Absolute(cwd, v.get<std::string>());
    }
  }
}

Status ParseData(const Parser& p, const YAML::Node& n, const std::string& cwd, SweepConfig* c) {
  if (!n.IsDefined() || n.IsNull()) {
    return p.Error(n, "data", "required section is missing (e.g. data: {source: synthetic})");
  }
  if (!n.IsMap()) return p.Error(n, "data", "expected a mapping");
  const YAML::Node src = Child(n, "source");
  if (!src.IsDefined()) return p.Error(n, "data.source", "required key is missing");
  ISOFLOP_ASSIGN_OR_RETURN(std::string source, p.String(src, "data.source"));
  auto keys = DataKeys().find(source);
  if (keys == DataKeys().end()) {
    return p.Error(src, "data.source",
                   "unknown source '" + source + "' (expected synthetic, text, bin or llmc)");
  }
  ISOFLOP_RETURN_IF_ERROR(p.CheckKeys(n, "data", keys->second));
  json data = json::object();
  c->field_where["data"] = p.Where(n, "data");
  for (auto it = n.begin(); it != n.end(); ++it) {
    const std::string key = it->first.as<std::string>();
    const std::string path = "data." + key;
    const YAML::Node& v = it->second;
    c->field_where[path] = p.Where(v, path);
    if (key == "source") {
      data[key] = source;
    } else if (key == "vocab" || key == "k1" || key == "k2") {
      ISOFLOP_ASSIGN_OR_RETURN(int x, p.IntInRange(v, path, 1, 1 << 20));
      data[key] = x;
    } else if (key == "build_seed" || key == "train_seed" || key == "val_seed") {
      ISOFLOP_ASSIGN_OR_RETURN(int64_t x, p.Integer(v, path));
      if (x < 0) return p.Error(v, path, "must be >= 0");
      data[key] = x;
    } else if (key == "lambda" || key == "val_fraction") {
      ISOFLOP_ASSIGN_OR_RETURN(double x, p.Number(v, path));
      if (!(x >= 0 && x <= 1)) return p.Error(v, path, "must be in [0, 1], got " + v.Scalar());
      data[key] = x;
    } else if (key == "language") {  // the trainer names the allowed values (run_config.cc)
      ISOFLOP_ASSIGN_OR_RETURN(std::string s, p.String(v, path));
      data[key] = s;
    } else if (key == "zipf" || key == "skill_zipf") {
      ISOFLOP_ASSIGN_OR_RETURN(double x, p.Number(v, path));
      if (x < 0) return p.Error(v, path, "must be >= 0");
      data[key] = x;
    } else if (key == "paths" || (source == "llmc" && (key == "train" || key == "val"))) {
      std::vector<std::string> paths;
      if (v.IsScalar()) {
        paths.push_back(v.Scalar());
      } else if (v.IsSequence() && v.size() > 0) {
        for (size_t i = 0; i < v.size(); ++i) {
          ISOFLOP_ASSIGN_OR_RETURN(std::string s,
                                   p.String(v[i], path + "[" + std::to_string(i) + "]"));
          paths.push_back(s);
        }
      } else {
        return p.Error(v, path, "expected a path or a non-empty list of paths");
      }
      data[key] = paths;
    } else {  // bin train / val
      ISOFLOP_ASSIGN_OR_RETURN(std::string s, p.String(v, path));
      data[key] = s;
    }
  }
  if (source == "text" && !data.contains("paths")) {
    return p.Error(n, "data.paths", "required for source 'text'");
  }
  if ((source == "bin" || source == "llmc") && (!data.contains("train") || !data.contains("val"))) {
    return p.Error(n, "data.train", "source '" + source + "' needs both train and val");
  }
  AbsolutizeDataPaths(data, cwd);
  c->data = std::move(data);
  return Status::Ok();
}

// ---- model ---------------------------------------------------------------------------------

Status ParseShapeFields(const Parser& p, const YAML::Node& n, const std::string& path,
                        accounting::Shape* s) {
  for (auto it = n.begin(); it != n.end(); ++it) {
    const std::string key = it->first.as<std::string>();
    const std::string kp = path + "." + key;
    const YAML::Node& v = it->second;
    if (key == "n_layer") {
      ISOFLOP_ASSIGN_OR_RETURN(s->n_layer, p.IntInRange(v, kp, 1, 4096));
    } else if (key == "d_model") {
      ISOFLOP_ASSIGN_OR_RETURN(s->d_model, p.IntInRange(v, kp, 1, 1 << 20));
    } else if (key == "n_head") {
      ISOFLOP_ASSIGN_OR_RETURN(s->n_head, p.IntInRange(v, kp, 1, 1 << 16));
    } else if (key == "d_ff") {
      ISOFLOP_ASSIGN_OR_RETURN(s->d_ff, p.IntInRange(v, kp, 0, 1 << 22));
    }
  }
  return Status::Ok();
}

Status ParseLadder(const Parser& p, const YAML::Node& n, SweepConfig* c) {
  const std::string path = "model.ladder";
  std::vector<accounting::Shape> shapes;
  auto check = [&](const accounting::Shape& s, const YAML::Node& at,
                   const std::string& where) -> Status {
    Status st = s.Validate();
    if (!st.ok()) {
      const trainer::FieldError e = trainer::SplitFieldError(st.message());
      const std::string &field = e.field, &msg = e.what;
      // A model.moe setting the file wrote is named where it was written.
      if (auto w = c->field_where.find(field);
          field.rfind("model.moe.", 0) == 0 && w != c->field_where.end()) {
        return Status::InvalidArgument(w->second + ": " + msg + " (" + where + ")");
      }
      return p.Error(at, where, "invalid shape: " + msg);
    }
    return Status::Ok();
  };
  if (n.IsSequence()) {
    if (n.size() == 0) return p.Error(n, path, "the ladder is empty");
    for (size_t i = 0; i < n.size(); ++i) {
      const std::string ip = path + "[" + std::to_string(i) + "]";
      ISOFLOP_RETURN_IF_ERROR(p.CheckKeys(n[i], ip, {"n_layer", "d_model", "n_head", "d_ff"}));
      for (const char* req : {"n_layer", "d_model", "n_head"}) {
        if (!Child(n[i], req).IsDefined())
          return p.Error(n[i], ip + "." + req, "required key is missing");
      }
      accounting::Shape s = c->base;
      ISOFLOP_RETURN_IF_ERROR(ParseShapeFields(p, n[i], ip, &s));
      ISOFLOP_RETURN_IF_ERROR(check(s, n[i], ip));
      shapes.push_back(s);
    }
  } else if (n.IsMap()) {
    ISOFLOP_RETURN_IF_ERROR(p.CheckKeys(n, path, {"params", "aspect"}));
    const YAML::Node params = Child(n, "params");
    if (!params.IsDefined() || !params.IsSequence() || params.size() == 0) {
      return p.Error(params.IsDefined() ? params : n, path + ".params",
                     "expected a non-empty list of target parameter counts (e.g. [1e5, 2e5])");
    }
    accounting::AspectRule rule;
    const YAML::Node aspect = Child(n, "aspect");
    if (aspect.IsDefined()) {
      const std::string ap = path + ".aspect";
      ISOFLOP_RETURN_IF_ERROR(p.CheckKeys(
          aspect, ap,
          {"d_model_per_layer", "head_dim", "d_model_multiple", "min_layers", "max_layers"}));
      for (auto it = aspect.begin(); it != aspect.end(); ++it) {
        const std::string key = it->first.as<std::string>();
        const std::string kp = ap + "." + key;
        if (key == "d_model_per_layer") {
          ISOFLOP_ASSIGN_OR_RETURN(rule.d_model_per_layer, p.Positive(it->second, kp));
        } else if (key == "head_dim") {
          ISOFLOP_ASSIGN_OR_RETURN(rule.head_dim, p.IntInRange(it->second, kp, 1, 1 << 14));
        } else if (key == "d_model_multiple") {
          ISOFLOP_ASSIGN_OR_RETURN(rule.d_model_multiple, p.IntInRange(it->second, kp, 1, 1 << 14));
        } else if (key == "min_layers") {
          ISOFLOP_ASSIGN_OR_RETURN(rule.min_layers, p.IntInRange(it->second, kp, 1, 4096));
        } else if (key == "max_layers") {
          ISOFLOP_ASSIGN_OR_RETURN(rule.max_layers, p.IntInRange(it->second, kp, 1, 4096));
        }
      }
      if (rule.max_layers < rule.min_layers) {
        return p.Error(aspect, ap + ".max_layers", "must be >= min_layers");
      }
    }
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string ip = path + ".params[" + std::to_string(i) + "]";
      ISOFLOP_ASSIGN_OR_RETURN(double target, p.Positive(params[i], ip));
      Result<accounting::Shape> s = accounting::SolveShape(target, rule, c->base);
      if (!s.ok()) return p.Error(params[i], ip, "no shape for this size: " + s.status().message());
      shapes.push_back(*s);
    }
  } else {
    return p.Error(n, path,
                   "expected a list of shapes ({n_layer, d_model, n_head}) or "
                   "{params: [...], aspect: {...}}");
  }
  std::stable_sort(shapes.begin(), shapes.end(), [](const auto& a, const auto& b) {
    return accounting::ActiveParams(a) < accounting::ActiveParams(b);
  });
  c->ladder.clear();
  for (const auto& s : shapes) {
    bool dup = false;
    for (const auto& t : c->ladder) {
      dup |= t.n_layer == s.n_layer && t.d_model == s.d_model && t.n_head == s.n_head &&
             accounting::EffectiveDff(t) == accounting::EffectiveDff(s);
    }
    if (!dup) c->ladder.push_back(s);
  }
  return Status::Ok();
}

Status ParseModel(const Parser& p, const YAML::Node& n, SweepConfig* c) {
  if (!n.IsDefined()) return p.Error(n, "model", "required section is missing");
  ISOFLOP_RETURN_IF_ERROR(p.CheckKeys(n, "model",
                                      {"family", "vocab_size", "seq_len", "norm", "pos", "mlp",
                                       "tie_embeddings", "bias", "d_ff", "ladder", "moe"}));
  accounting::Shape& b = c->base;
  c->field_where["model"] = p.Where(n, "model");
  for (auto it = n.begin(); it != n.end(); ++it) {
    const std::string key = it->first.as<std::string>();
    const std::string kp = "model." + key;
    const YAML::Node& v = it->second;
    c->field_where[kp] = p.Where(v, kp);
    if (key == "family") {
      ISOFLOP_ASSIGN_OR_RETURN(c->family, p.String(v, kp));
      if (c->family != "dense" && c->family != "moe") {
        return p.Error(v, kp, "expected 'dense' or 'moe', got '" + c->family + "'");
      }
    } else if (key == "moe") {
      // The run.json definition reads it (trainer/run_config.h): the same fields, defaults and
      // checks as a one-off run; an error names this block's line and the field.
      if (!v.IsMap())
        return p.Error(v, kp, "expected a mapping of MoE settings (n_experts: 8, ...)");
      json moe = json::object();
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m->second.IsScalar()) {
          return p.Error(m->second, kp + "." + m->first.as<std::string>(), "expected a value");
        }
        moe[m->first.as<std::string>()] = Parser::ScalarJson(m->second);
        c->field_where[kp + "." + m->first.as<std::string>()] =
            p.Where(m->second, kp + "." + m->first.as<std::string>());
      }
      accounting::MoeShape shape;
      if (Status st = trainer::ParseMoeObject(moe, &shape); !st.ok()) {
        trainer::FieldError e = trainer::SplitFieldError(st.message());
        if (e.field.empty()) e.field = kp;
        const YAML::Node at = Child(v, e.field.substr(e.field.rfind('.') + 1));
        if (at.IsDefined()) return p.Error(at, e.field, e.what);
        return p.Error(v, e.field, e.what);
      }
      b.moe = shape;
    } else if (key == "vocab_size") {
      ISOFLOP_ASSIGN_OR_RETURN(b.vocab_size, p.IntInRange(v, kp, 2, 1 << 22));
    } else if (key == "seq_len") {
      ISOFLOP_ASSIGN_OR_RETURN(b.seq_len, p.IntInRange(v, kp, 1, 1 << 20));
    } else if (key == "d_ff") {
      ISOFLOP_ASSIGN_OR_RETURN(b.d_ff, p.IntInRange(v, kp, 0, 1 << 22));
    } else if (key == "tie_embeddings") {
      ISOFLOP_ASSIGN_OR_RETURN(b.tie_embeddings, p.Bool(v, kp));
    } else if (key == "bias") {
      ISOFLOP_ASSIGN_OR_RETURN(b.bias, p.Bool(v, kp));
    } else if (key == "norm" || key == "pos" || key == "mlp") {
      ISOFLOP_ASSIGN_OR_RETURN(std::string s, p.String(v, kp));
      Status st;
      if (key == "norm") {
        auto r = accounting::ParseNorm(s);
        if (r.ok())
          b.norm = *r;
        else
          st = r.status();
      } else if (key == "pos") {
        auto r = accounting::ParsePosEmbedding(s);
        if (r.ok())
          b.pos = *r;
        else
          st = r.status();
      } else {
        auto r = accounting::ParseMlp(s);
        if (r.ok())
          b.mlp = *r;
        else
          st = r.status();
      }
      if (!st.ok()) return p.Error(v, kp, st.message());
    }
  }
  if (c->family == "moe" && !b.moe) b.moe.emplace();  // every MoE setting at its default
  if (c->family != "moe" && b.moe) {
    return p.Error(Child(n, "moe"), "model.moe", "only with model.family: moe");
  }
  const YAML::Node ladder = Child(n, "ladder");
  if (!ladder.IsDefined()) {
    return p.Error(n, "model.ladder",
                   "required key is missing (a list of shapes or {params: [...]})");
  }
  return ParseLadder(p, ladder, c);
}

// ---- budgets, sizes, seeds ----------------------------------------------------------------

// A list of budgets, ascending and distinct, each with where it was written (for `where`).
Result<std::vector<double>> ParseBudgetList(const Parser& p, const YAML::Node& n,
                                            const std::string& path,
                                            std::vector<std::string>* where = nullptr) {
  std::vector<std::pair<double, std::string>> out;
  if (n.IsSequence() && n.size() > 0) {
    for (size_t i = 0; i < n.size(); ++i) {
      const std::string item = path + "[" + std::to_string(i) + "]";
      ISOFLOP_ASSIGN_OR_RETURN(double v, p.Positive(n[i], item));
      // Given twice is most likely a typo for another budget (1e15 for 1e16): refused, as a
      // seed given twice is, rather than run once.
      for (size_t j = 0; j < i; ++j) {
        if (out[j].first == v) {
          char text[32];
          std::snprintf(text, sizeof text, "%g", v);
          return p.Error(n[i], item,
                         "budget " + std::string(text) + " is given twice (also " + path + "[" +
                             std::to_string(j) + "])");
        }
      }
      out.emplace_back(v, p.Where(n[i], item));
    }
  } else if (n.IsMap()) {  // {min, max, count}: log-spaced, both ends included
    ISOFLOP_RETURN_IF_ERROR(p.CheckKeys(n, path, {"min", "max", "count"}));
    for (const char* k : {"min", "max", "count"}) {
      if (!Child(n, k).IsDefined()) return p.Error(n, path + "." + k, "required key is missing");
    }
    ISOFLOP_ASSIGN_OR_RETURN(double lo, p.Positive(Child(n, "min"), path + ".min"));
    ISOFLOP_ASSIGN_OR_RETURN(double hi, p.Positive(Child(n, "max"), path + ".max"));
    ISOFLOP_ASSIGN_OR_RETURN(int count, p.IntInRange(Child(n, "count"), path + ".count", 1, 1000));
    if (hi < lo) return p.Error(Child(n, "max"), path + ".max", "must be >= min");
    if (count == 1 && hi != lo) {
      return p.Error(Child(n, "count"), path + ".count",
                     "1 budget between a min and a different max: give count >= 2, or max = min");
    }
    if (count > 1 && hi == lo) {
      return p.Error(Child(n, "count"), path + ".count",
                     std::to_string(count) + " budgets between equal min and max are one budget");
    }
    for (int i = 0; i < count; ++i) {
      const double t = count == 1 ? 0.0 : static_cast<double>(i) / (count - 1);
      out.emplace_back(std::exp(std::log(lo) + t * (std::log(hi) - std::log(lo))),
                       p.Where(n, path + " (budget " + std::to_string(i + 1) + " of " +
                                      std::to_string(count) + ")"));
    }
  } else {
    return Status(p.Error(n, path, "expected a non-empty list of FLOPs (e.g. [1e15, 4e15])"));
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  out.erase(std::unique(out.begin(), out.end(),
                        [](const auto& a, const auto& b) { return a.first == b.first; }),
            out.end());
  std::vector<double> values;
  for (const auto& [v, w] : out) {
    values.push_back(v);
    if (where) where->push_back(w);
  }
  return values;
}

// A budget that gives even the largest ladder size more than 2^53 tokens (D = C / 6N) gives
// every size more; refused here, naming the budget. The planner checks each size it selects.
Status CheckBudgetTokens(const SweepConfig& c) {
  double flops_per_token = 0;
  for (const auto& s : c.ladder) {
    flops_per_token = std::max(flops_per_token, accounting::FlopsPerToken6N(s));
  }
  if (!(flops_per_token > 0)) return Status::Ok();
  for (size_t i = 0; i < c.budgets.size(); ++i) {
    const double d = c.budgets[i] / flops_per_token;
    if (d > kMaxTokens) {
      char buf[160];
      std::snprintf(buf, sizeof buf,
                    ": %.3g FLOPs gives every ladder size more than 2^53 tokens (D = C / 6N = "
                    "%.3g for the largest); the count exceeds 2^53",
                    c.budgets[i], d);
      return Status::InvalidArgument(c.budget_where[i] + buf +
                                     ": lower the budget or add larger sizes to model.ladder");
    }
  }
  return Status::Ok();
}

Status ParseSizes(const Parser& p, const YAML::Node& n, SweepConfig* c) {
  if (!n.IsDefined()) return Status::Ok();
  ISOFLOP_RETURN_IF_ERROR(p.CheckKeys(
      n, "sizes", {"tokens_per_param", "points_per_budget", "guess_tokens_per_param", "shift"}));
  SizeSelection& s = c->sizes;
  const YAML::Node window = Child(n, "tokens_per_param");
  const YAML::Node points = Child(n, "points_per_budget");
  if (window.IsDefined() && points.IsDefined()) {
    return p.Error(points, "sizes.points_per_budget",
                   "give either tokens_per_param (a window) or points_per_budget, not both");
  }
  if (window.IsDefined()) {
    s.mode = SizeSelection::Mode::kWindow;
    if (!window.IsSequence() || window.size() != 2) {
      return p.Error(window, "sizes.tokens_per_param", "expected [min, max] (e.g. [5, 500])");
    }
    ISOFLOP_ASSIGN_OR_RETURN(s.min_tokens_per_param,
                             p.Number(window[0], "sizes.tokens_per_param[0]"));
    ISOFLOP_ASSIGN_OR_RETURN(s.max_tokens_per_param,
                             p.Number(window[1], "sizes.tokens_per_param[1]"));
    if (s.min_tokens_per_param < 0 || s.max_tokens_per_param <= s.min_tokens_per_param) {
      return p.Error(window, "sizes.tokens_per_param", "need 0 <= min < max");
    }
  }
  if (!points.IsDefined()) {
    // Without points_per_budget these would be silently ignored (every size at every budget).
    for (const char* k : {"guess_tokens_per_param", "shift"}) {
      if (Child(n, k).IsDefined()) {
        return p.Error(Child(n, k), std::string("sizes.") + k,
                       "only applies with points_per_budget");
      }
    }
  }
  if (points.IsDefined()) {
    s.mode = SizeSelection::Mode::kPoints;
    ISOFLOP_ASSIGN_OR_RETURN(s.points_per_budget,
                             p.IntInRange(points, "sizes.points_per_budget", 1, 1000));
    if (YAML::Node g = Child(n, "guess_tokens_per_param"); g.IsDefined()) {
      ISOFLOP_ASSIGN_OR_RETURN(s.guess_tokens_per_param,
                               p.Positive(g, "sizes.guess_tokens_per_param"));
    }
    if (YAML::Node sh = Child(n, "shift"); sh.IsDefined()) {
      ISOFLOP_ASSIGN_OR_RETURN(s.shift, p.IntInRange(sh, "sizes.shift", -1000, 1000));
    }
  }
  return Status::Ok();
}

Status ParseSeeds(const Parser& p, const YAML::Node& n, SweepConfig* c) {
  if (!n.IsDefined()) return Status::Ok();
  c->seeds.clear();
  if (n.IsScalar()) {
    ISOFLOP_ASSIGN_OR_RETURN(int64_t v, p.Integer(n, "seeds"));
    if (v < 0) return p.Error(n, "seeds", "must be >= 0");
    c->seeds.push_back(static_cast<uint64_t>(v));
    return Status::Ok();
  }
  if (!n.IsSequence() || n.size() == 0) {
    return p.Error(n, "seeds", "expected a seed or a non-empty list of seeds");
  }
  for (size_t i = 0; i < n.size(); ++i) {
    const std::string ip = "seeds[" + std::to_string(i) + "]";
    ISOFLOP_ASSIGN_OR_RETURN(int64_t v, p.Integer(n[i], ip));
    if (v < 0) return p.Error(n[i], ip, "must be >= 0");
    if (std::find(c->seeds.begin(), c->seeds.end(), static_cast<uint64_t>(v)) != c->seeds.end()) {
      return p.Error(n[i], ip, "duplicate seed " + std::to_string(v));
    }
    c->seeds.push_back(static_cast<uint64_t>(v));
  }
  return Status::Ok();
}

// ---- train ---------------------------------------------------------------------------------

// The train fields a sweep file may set, with the trainer's defaults (trainer::TrainConfig, the
// one definition), so the resolved cell config (and its key) is complete. tokens, threads and
// device are the planner's and the scheduler's; activation_checkpointing is executor.*.
json TrainDefaults() {
  const json all = trainer::TrainToJson(trainer::TrainConfig{});
  json out = json::object();
  for (const auto& [key, value] : all.items()) {
    if (key != "tokens" && key != "threads" && key != "device" &&
        key != "activation_checkpointing") {
      out[key] = value;
    }
  }
  return out;
}

const std::set<std::string>& IntegerTrainFields() {
  static const std::set<std::string> f = {
      "batch_tokens", "micro_batch",        "warmup_tokens",      "eval_interval_steps",
      "eval_tokens",  "log_interval_steps", "ckpt_interval_steps"};
  return f;
}

// Checks one train field's value (shared by the train section and parameters axes).
Status CheckTrainValue(const Parser& p, const YAML::Node& at, const std::string& path,
                       const std::string& key, const json& v) {
  if (key == "schedule") {
    if (!v.is_string() || (v != "cosine" && v != "wsd" && v != "constant")) {
      return p.Error(at, path, "expected cosine, wsd or constant, got " + Parser::Got(at));
    }
    return Status::Ok();
  }
  if (!v.is_number()) return p.Error(at, path, "expected a number, got " + Parser::Got(at));
  const double x = v.get<double>();
  if (IntegerTrainFields().count(key) && x != std::floor(x)) {
    return p.Error(at, path, "expected an integer, got " + Parser::Got(at));
  }
  auto bad = [&](const std::string& why) { return p.Error(at, path, why + ", got " + v.dump()); };
  if ((key == "batch_tokens" || key == "micro_batch" || key == "lr" || key == "eps" ||
       key == "eval_interval_steps" || key == "eval_tokens" || key == "log_interval_steps" ||
       key == "ckpt_interval_steps") &&
      !(x > 0)) {
    return bad("must be > 0");
  }
  if ((key == "min_lr" || key == "warmup_tokens" || key == "weight_decay" || key == "grad_clip") &&
      x < 0) {
    return bad(key == "grad_clip" ? "must be >= 0 (0 turns clipping off)" : "must be >= 0");
  }
  if (key == "micro_batch" && x > double(kMaxMicroBatch)) {
    return bad("must be at most " + std::to_string(kMaxMicroBatch) +
               " sequences per forward pass (lower it; the trainer accumulates gradients over "
               "micro-batches)");
  }
  if (key == "eval_tokens" && x > double(kMaxEvalTokens)) {
    return bad("must be at most 2^28 = " + std::to_string(kMaxEvalTokens) +
               " tokens (the trainer keeps the held-out set in memory and evaluates all of it "
               "every eval_interval_steps)");
  }
  if (IntegerTrainFields().count(key) && x > kMaxTokens) {
    return bad("the count exceeds 2^53 (9007199254740992), above which it is not exact");
  }
  if ((key == "lr" || key == "grad_clip") && x > 3.4e38) {
    return bad("must be at most 3.4e38 (LibTorch uses it as a 32-bit float)");
  }
  if (key == "warmup_frac" && !(x >= 0 && x < 1)) return bad("must be in [0, 1)");
  if (key == "decay_frac" && !(x > 0 && x <= 1)) return bad("must be in (0, 1]");
  if ((key == "beta1" || key == "beta2") && !(x >= 0 && x < 1)) return bad("must be in [0, 1)");
  return Status::Ok();
}

Status ParseTrain(const Parser& p, const YAML::Node& n, SweepConfig* c) {
  c->train = TrainDefaults();
  if (!n.IsDefined()) return Status::Ok();
  c->field_where["train"] = p.Where(n, "train");
  std::vector<std::string> allowed;
  for (const auto& [k, v] : c->train.items()) allowed.push_back(k);
  allowed.push_back("rules");
  if (n.IsMap() && Child(n, "tokens").IsDefined()) {
    return p.Error(Child(n, "tokens"), "train.tokens",
                   "set by the planner from each budget (C = 6 N D); remove it");
  }
  ISOFLOP_RETURN_IF_ERROR(p.CheckKeys(n, "train", allowed));
  for (auto it = n.begin(); it != n.end(); ++it) {
    const std::string key = it->first.as<std::string>();
    const std::string kp = "train." + key;
    if (key == "rules") continue;
    c->field_where[kp] = p.Where(it->second, kp);
    json v = it->second.IsScalar() ? Parser::ScalarJson(it->second) : json();
    if (key != "schedule" && v.is_string())
      return p.Error(it->second, kp, "expected a number, got " + Parser::Got(it->second));
    ISOFLOP_RETURN_IF_ERROR(CheckTrainValue(p, it->second, kp, key, v));
    if (IntegerTrainFields().count(key))
      v = static_cast<int64_t>(v.get<double>());
    else if (key != "schedule")
      v = v.get<double>();
    c->train[key] = v;
  }
  if (c->train["min_lr"].get<double>() > c->train["lr"].get<double>()) {
    if (!Child(n, "min_lr").IsDefined()) {  // the default's fault, not a field they wrote
      char text[64];
      std::snprintf(text, sizeof text, "%g", c->train["min_lr"].get<double>());
      return p.Error(Child(n, "lr"), "train.lr",
                     "is below train.min_lr, whose default is " + std::string(text) +
                         ": set train.min_lr too (at most train.lr)");
    }
    return p.Error(Child(n, "min_lr"), "train.min_lr", "must be <= train.lr");
  }
  const int64_t bt = c->train["batch_tokens"].get<int64_t>();
  if (bt % c->base.seq_len != 0) {
    return p.Error(Child(n, "batch_tokens").IsDefined() ? Child(n, "batch_tokens") : n,
                   "train.batch_tokens",
                   "must be a multiple of model.seq_len (" + std::to_string(c->base.seq_len) +
                       "), got " + std::to_string(bt));
  }
  const YAML::Node rules = Child(n, "rules");
  if (rules.IsDefined()) {
    if (!rules.IsSequence()) return p.Error(rules, "train.rules", "expected a list of rules");
    for (size_t i = 0; i < rules.size(); ++i) {
      const std::string rp = "train.rules[" + std::to_string(i) + "]";
      const YAML::Node r = rules[i];
      ISOFLOP_RETURN_IF_ERROR(p.CheckKeys(r, rp, {"field", "per", "exponent", "reference"}));
      for (const char* k : {"field", "per", "exponent"}) {
        if (!Child(r, k).IsDefined()) return p.Error(r, rp + "." + k, "required key is missing");
      }
      TrainRule rule;
      ISOFLOP_ASSIGN_OR_RETURN(rule.field, p.String(Child(r, "field"), rp + ".field"));
      if (!c->train.contains(rule.field) || rule.field == "schedule" ||
          IntegerTrainFields().count(rule.field)) {
        return p.Error(Child(r, "field"), rp + ".field",
                       "expected a real-valued train field such as lr or weight_decay, got '" +
                           rule.field + "'");
      }
      ISOFLOP_ASSIGN_OR_RETURN(rule.per, p.String(Child(r, "per"), rp + ".per"));
      if (rule.per != "d_model" && rule.per != "n_layer" && rule.per != "n_total" &&
          rule.per != "n_non_embedding") {
        return p.Error(Child(r, "per"), rp + ".per",
                       "expected d_model, n_layer, n_total or n_non_embedding");
      }
      ISOFLOP_ASSIGN_OR_RETURN(rule.exponent, p.Number(Child(r, "exponent"), rp + ".exponent"));
      if (YAML::Node ref = Child(r, "reference"); ref.IsDefined()) {
        ISOFLOP_ASSIGN_OR_RETURN(rule.reference, p.Positive(ref, rp + ".reference"));
      }
      c->rules.push_back(rule);
    }
  }
  return Status::Ok();
}

// ---- parameters (W&B-style grid axes) -------------------------------------------------------

const std::set<std::string>& MoeAxisFields() {
  static const std::set<std::string> k = {"moe.n_experts", "moe.top_k", "moe.granularity",
                                          "moe.n_shared_experts"};
  return k;
}

Status ParseParameters(const Parser& p, const YAML::Node& n, const std::string& cwd,
                       SweepConfig* c) {
  if (!n.IsDefined()) return Status::Ok();
  if (!n.IsMap()) return p.Error(n, "parameters", "expected a mapping of 'train.lr: {...}' axes");
  const std::string source = c->data.value("source", "");
  for (auto it = n.begin(); it != n.end(); ++it) {
    const std::string axis = it->first.as<std::string>();
    const std::string ap = "parameters." + axis;
    const YAML::Node spec = it->second;
    const size_t dot = axis.find('.');
    const std::string section = axis.substr(0, dot);
    const std::string field = dot == std::string::npos ? "" : axis.substr(dot + 1);
    bool known = false;
    if (section == "train") known = c->train.contains(field);
    if (section == "data") {
      const auto& keys = DataKeys().at(source);
      known = field != "source" && std::find(keys.begin(), keys.end(), field) != keys.end();
    }
    // An MoE sweep's expert settings: dense (n_experts 0) against 4, 8, 16 experts at every
    // budget, top-k, granularity, shared experts.
    const bool moe_axis = section == "model" && MoeAxisFields().count(field) > 0;
    if (moe_axis && c->family != "moe") {
      return p.Error(it->first, ap, "expert axes need model.family: moe (and a moe: block)");
    }
    known = known || moe_axis;
    if (!known) {
      return p.Error(it->first, ap,
                     "unknown axis: expected train.<field>, data.<field> of this source (e.g. "
                     "train.lr), or with family moe model.moe.n_experts, model.moe.top_k, "
                     "model.moe.granularity or model.moe.n_shared_experts");
    }
    ISOFLOP_RETURN_IF_ERROR(
        p.CheckKeys(spec, ap, {"values", "value", "min", "max", "distribution", "count", "q"}));
    ParameterAxis ax;
    ax.path = axis;
    c->field_where[axis] = p.Where(spec, ap);
    auto to_json = [](const YAML::Node& v) -> json {
      if (v.IsScalar()) return Parser::ScalarJson(v);
      json arr = json::array();
      if (v.IsSequence())
        for (size_t i = 0; i < v.size(); ++i) arr.push_back(Parser::ScalarJson(v[i]));
      return arr;
    };
    if (YAML::Node values = Child(spec, "values"); values.IsDefined()) {
      if (!values.IsSequence() || values.size() == 0) {
        return p.Error(values, ap + ".values", "expected a non-empty list");
      }
      for (size_t i = 0; i < values.size(); ++i) ax.values.push_back(to_json(values[i]));
    } else if (YAML::Node value = Child(spec, "value"); value.IsDefined()) {
      ax.values.push_back(to_json(value));
    } else {
      for (const char* k : {"min", "max"}) {
        if (!Child(spec, k).IsDefined()) {
          return p.Error(spec, ap + "." + k, "required: give values, value, or min and max");
        }
      }
      ISOFLOP_ASSIGN_OR_RETURN(double lo, p.Number(Child(spec, "min"), ap + ".min"));
      ISOFLOP_ASSIGN_OR_RETURN(double hi, p.Number(Child(spec, "max"), ap + ".max"));
      if (hi < lo) return p.Error(Child(spec, "max"), ap + ".max", "must be >= min");
      std::string dist = "uniform";
      if (YAML::Node d = Child(spec, "distribution"); d.IsDefined()) {
        ISOFLOP_ASSIGN_OR_RETURN(dist, p.String(d, ap + ".distribution"));
      }
      const bool log = dist == "log_uniform_values" || dist == "q_log_uniform_values";
      if (!log && dist != "uniform" && dist != "q_uniform" && dist != "int_uniform") {
        return p.Error(Child(spec, "distribution"), ap + ".distribution",
                       "expected uniform, log_uniform_values, q_uniform, q_log_uniform_values or "
                       "int_uniform");
      }
      if (log && !(lo > 0)) {
        return p.Error(Child(spec, "min"), ap + ".min", "must be > 0 for " + dist);
      }
      int count = 3;
      if (YAML::Node cn = Child(spec, "count"); cn.IsDefined()) {
        ISOFLOP_ASSIGN_OR_RETURN(count, p.IntInRange(cn, ap + ".count", 1, 1000));
      }
      double q = dist == "int_uniform" ? 1.0 : 0.0;
      if (YAML::Node qn = Child(spec, "q"); qn.IsDefined()) {
        ISOFLOP_ASSIGN_OR_RETURN(q, p.Positive(qn, ap + ".q"));
      }
      // A grid, not random draws: `count` points evenly spaced (in log space for log_*), both
      // ends included, each rounded to a multiple of q when q is set.
      for (int i = 0; i < count; ++i) {
        const double t = count == 1 ? 0.5 : static_cast<double>(i) / (count - 1);
        double v =
            log ? std::exp(std::log(lo) + t * (std::log(hi) - std::log(lo))) : lo + t * (hi - lo);
        if (q > 0) v = std::round(v / q) * q;
        json jv = (q > 0 && q == std::floor(q)) ? json(static_cast<int64_t>(v)) : json(v);
        if (std::find(ax.values.begin(), ax.values.end(), jv) == ax.values.end())
          ax.values.push_back(jv);
      }
    }
    if (section == "train") {
      for (auto& v : ax.values) {
        ISOFLOP_RETURN_IF_ERROR(CheckTrainValue(p, spec, ap, field, v));
        if (IntegerTrainFields().count(field)) v = static_cast<int64_t>(v.get<double>());
      }
    }
    if (moe_axis) {
      for (size_t i = 0; i < ax.values.size(); ++i) {
        json& v = ax.values[i];
        const int64_t lo = field == "moe.n_experts" || field == "moe.n_shared_experts" ? 0 : 1;
        if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > 4096) {
          return p.Error(spec, ap + "[" + std::to_string(i) + "]",
                         "expected a whole number in [" + std::to_string(lo) + ", 4096]" +
                             (field == "moe.n_experts" ? " (0 = a dense model)" : "") + ", got " +
                             v.dump());
        }
      }
    }
    if (section == "data" && IsPathField(source, field)) {
      for (auto& v : ax.values) {
        json d = {{"source", source}, {field, v}};
        AbsolutizeDataPaths(d, cwd);
        v = d[field];
      }
    }
    c->parameters.push_back(std::move(ax));
  }
  return Status::Ok();
}

// ---- executor, fit, report -----------------------------------------------------------------

// A string that goes into a batch script's #SBATCH line or the cell list: one line.
Result<std::string> OneLine(const Parser& p, const YAML::Node& v, const std::string& kp) {
  ISOFLOP_ASSIGN_OR_RETURN(std::string s, p.String(v, kp));
  if (s.find_first_of("\n\r") != std::string::npos || s.find('\0') != std::string::npos) {
    return p.Error(v, kp, "must be one line");
  }
  return s;
}

// SLURM's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S. Seconds, or -1.
int64_t SlurmTimeSeconds(const std::string& t) {
  int64_t days = 0;
  std::string rest = t;
  const size_t dash = t.find('-');
  std::vector<int64_t> parts;
  auto number = [](const std::string& s, int64_t* out) {
    if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos)
      return false;
    *out = std::stoll(s);
    return true;
  };
  if (dash != std::string::npos) {
    if (!number(t.substr(0, dash), &days)) return -1;
    rest = t.substr(dash + 1);
  }
  std::stringstream ss(rest);
  for (std::string tok; std::getline(ss, tok, ':');) {
    int64_t x = 0;
    if (!number(tok, &x)) return -1;
    parts.push_back(x);
  }
  if (parts.empty() || parts.size() > 3 || rest.back() == ':') return -1;
  if (dash != std::string::npos) {  // D-H, D-H:M, D-H:M:S
    while (parts.size() < 3) parts.push_back(0);
    return ((days * 24 + parts[0]) * 60 + parts[1]) * 60 + parts[2];
  }
  if (parts.size() == 1) return parts[0] * 60;             // minutes
  if (parts.size() == 2) return parts[0] * 60 + parts[1];  // M:S
  return (parts[0] * 60 + parts[1]) * 60 + parts[2];       // H:M:S
}

// executor.setup: a list of shell lines (strings) or commands (lists, quoted word by word).
Status ParseSetup(const Parser& p, const YAML::Node& v, const std::string& kp,
                  std::vector<ExecutorConfig::SetupLine>* out) {
  if (!v.IsSequence()) {
    return p.Error(v, kp,
                   "expected a list: shell lines (\"module load cuda\") or commands as lists of "
                   "arguments ([source, /path/venv/bin/activate])");
  }
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string ip = kp + "[" + std::to_string(i) + "]";
    ExecutorConfig::SetupLine line;
    if (v[i].IsSequence()) {
      if (v[i].size() == 0) return p.Error(v[i], ip, "an empty command");
      for (size_t j = 0; j < v[i].size(); ++j) {
        ISOFLOP_ASSIGN_OR_RETURN(std::string a,
                                 OneLine(p, v[i][j], ip + "[" + std::to_string(j) + "]"));
        line.argv.push_back(std::move(a));
      }
    } else {
      ISOFLOP_ASSIGN_OR_RETURN(line.shell, OneLine(p, v[i], ip));
    }
    out->push_back(std::move(line));
  }
  return Status::Ok();
}

// The keys that only the slurm executor reads.
const std::vector<std::string>& SlurmKeys() {
  static const std::vector<std::string> k = {
      "partition", "account",   "qos",         "time",           "constraint",
      "gres",      "mem",       "max_array_size", "signal_grace",
      "poll_seconds", "sbatch_args", "setup",  "run_root"};
  return k;
}

Status ParseSlurmKey(const Parser& p, const std::string& key, const YAML::Node& v,
                     ExecutorConfig::Slurm* s) {
  const std::string kp = "executor." + key;
  if (key == "partition") {
    ISOFLOP_ASSIGN_OR_RETURN(s->partition, OneLine(p, v, kp));
  } else if (key == "account") {
    ISOFLOP_ASSIGN_OR_RETURN(s->account, OneLine(p, v, kp));
  } else if (key == "qos") {
    ISOFLOP_ASSIGN_OR_RETURN(s->qos, OneLine(p, v, kp));
  } else if (key == "constraint") {
    ISOFLOP_ASSIGN_OR_RETURN(s->constraint, OneLine(p, v, kp));
  } else if (key == "gres") {
    ISOFLOP_ASSIGN_OR_RETURN(s->gres, OneLine(p, v, kp));
  } else if (key == "mem") {
    ISOFLOP_ASSIGN_OR_RETURN(s->mem, OneLine(p, v, kp));
    // sbatch's --mem: a whole number of MiB, or of K, M, G or T (0: all of the node's memory);
    // or auto: each run asks for its own memory estimate (slurm_executor.h).
    const size_t digits = s->mem.find_first_not_of("0123456789");
    if (s->mem != ExecutorConfig::Slurm::kAutoMem &&
        (digits == 0 || (digits != std::string::npos &&
                         (digits + 1 != s->mem.size() ||
                          std::string("KMGTkmgt").find(s->mem[digits]) == std::string::npos)))) {
      return p.Error(v, kp,
                     "expected a whole number with an optional unit K, M, G or T, as sbatch "
                     "--mem takes (e.g. 64G), or auto, got '" +
                         s->mem + "'");
    }
  } else if (key == "time") {
    ISOFLOP_ASSIGN_OR_RETURN(s->time, OneLine(p, v, kp));
    if (SlurmTimeSeconds(s->time) <= 0) {
      return p.Error(v, kp,
                     "expected a SLURM time limit (minutes, M:S, H:M:S, D-H, D-H:M or D-H:M:S), "
                     "got '" + s->time + "'");
    }
  } else if (key == "max_array_size") {
    ISOFLOP_ASSIGN_OR_RETURN(s->max_array_size, p.IntInRange(v, kp, 1, 4000000));
  } else if (key == "signal_grace") {
    ISOFLOP_ASSIGN_OR_RETURN(s->signal_grace_s, p.IntInRange(v, kp, 1, 65535));
  } else if (key == "poll_seconds") {
    ISOFLOP_ASSIGN_OR_RETURN(s->poll_seconds, p.Positive(v, kp));
  } else if (key == "sbatch_args") {
    if (!v.IsSequence()) return p.Error(v, kp, "expected a list of sbatch arguments");
    for (size_t i = 0; i < v.size(); ++i) {
      ISOFLOP_ASSIGN_OR_RETURN(std::string a, OneLine(p, v[i], kp + "[" + std::to_string(i) + "]"));
      s->sbatch_args.push_back(std::move(a));
    }
  } else if (key == "setup") {
    ISOFLOP_RETURN_IF_ERROR(ParseSetup(p, v, kp, &s->setup));
  } else if (key == "run_root") {
    ISOFLOP_ASSIGN_OR_RETURN(s->run_root, OneLine(p, v, kp));
    if (s->run_root.empty() || s->run_root[0] != '/') {
      return p.Error(v, kp,
                     "expected an absolute folder that every compute node sees (a shared "
                     "filesystem), got '" + s->run_root + "'");
    }
  }
  return Status::Ok();
}

Status ParseExecutor(const Parser& p, const YAML::Node& n, SweepConfig* c) {
  if (!n.IsDefined()) return Status::Ok();
  std::vector<std::string> allowed = {
      "kind",           "device",          "cpus_per_run",      "gpus",  "ranks_per_run",
      "max_parallel",   "max_retries",     "device_memory_gib", "mixed_precision",
      "activation_checkpointing", "fused_attention", "throughput_gflops", "gpus_per_run"};
  allowed.insert(allowed.end(), SlurmKeys().begin(), SlurmKeys().end());
  ISOFLOP_RETURN_IF_ERROR(p.CheckKeys(n, "executor", allowed));
  ExecutorConfig& e = c->executor;
  YAML::Node first_slurm_key;
  std::string first_slurm_name;
  for (auto it = n.begin(); it != n.end(); ++it) {
    const std::string key = it->first.as<std::string>();
    const std::string kp = "executor." + key;
    const YAML::Node& v = it->second;
    if (std::find(SlurmKeys().begin(), SlurmKeys().end(), key) != SlurmKeys().end()) {
      if (first_slurm_name.empty()) {
        first_slurm_key = it->first;
        first_slurm_name = key;
      }
      ISOFLOP_RETURN_IF_ERROR(ParseSlurmKey(p, key, v, &e.slurm));
    } else if (key == "kind") {
      ISOFLOP_ASSIGN_OR_RETURN(e.kind, p.String(v, kp));
      if (e.kind != "local" && e.kind != "slurm") {
        return p.Error(v, kp, "expected local or slurm, got '" + e.kind + "'");
      }
    } else if (key == "device") {
      ISOFLOP_ASSIGN_OR_RETURN(e.device, p.String(v, kp));
      if (e.device != "auto" && e.device != "cpu" && e.device != "cuda") {
        return p.Error(v, kp, "expected auto, cpu or cuda, got '" + e.device + "'");
      }
    } else if (key == "cpus_per_run") {
      if (v.IsScalar() && v.Scalar() == "auto") {
        e.cpus_per_run = ExecutorConfig::kAutoCpusPerRun;
        continue;
      }
      if (v.IsScalar() && !v.Scalar().empty() && !std::isdigit(uint8_t(v.Scalar()[0])) &&
          v.Scalar()[0] != '-' && v.Scalar()[0] != '+') {
        return p.Error(
            v, kp,
            "expected auto or a number of threads (0 = all cores), got '" + v.Scalar() + "'");
      }
      ISOFLOP_ASSIGN_OR_RETURN(e.cpus_per_run, p.IntInRange(v, kp, 0, 4096));
    } else if (key == "gpus") {
      if (v.IsScalar() && v.Scalar() == "all") continue;
      if (!v.IsSequence()) return p.Error(v, kp, "expected 'all' or a list of GPU indices");
      for (size_t i = 0; i < v.size(); ++i) {
        ISOFLOP_ASSIGN_OR_RETURN(int g,
                                 p.IntInRange(v[i], kp + "[" + std::to_string(i) + "]", 0, 1023));
        e.gpus.push_back(g);
      }
    } else if (key == "max_parallel") {
      ISOFLOP_ASSIGN_OR_RETURN(e.max_parallel, p.IntInRange(v, kp, 0, 4096));
    } else if (key == "ranks_per_run") {
      ISOFLOP_ASSIGN_OR_RETURN(e.ranks_per_run, p.IntInRange(v, kp, 1, 1024));
    } else if (key == "gpus_per_run") {
      ISOFLOP_ASSIGN_OR_RETURN(e.slurm.gpus_per_run, p.IntInRange(v, kp, 0, 1024));
    } else if (key == "max_retries") {
      ISOFLOP_ASSIGN_OR_RETURN(e.max_retries, p.IntInRange(v, kp, 0, 100));
    } else if (key == "device_memory_gib") {
      ISOFLOP_ASSIGN_OR_RETURN(e.device_memory_gib, p.Positive(v, kp));
    } else if (key == "throughput_gflops") {
      ISOFLOP_ASSIGN_OR_RETURN(e.throughput_gflops, p.Positive(v, kp));
    } else if (key == "mixed_precision") {
      ISOFLOP_ASSIGN_OR_RETURN(bool on, p.Bool(v, kp));
      e.mixed_precision = on;
    } else if (key == "activation_checkpointing") {
      ISOFLOP_ASSIGN_OR_RETURN(e.activation_checkpointing, p.Bool(v, kp));
    } else if (key == "fused_attention") {
      ISOFLOP_ASSIGN_OR_RETURN(bool on, p.Bool(v, kp));
      e.fused_attention = on;
    }
  }
  // A run on K GPUs is K data-parallel ranks, one GPU each (a rank drives one device).
  const int gpus_per_run = e.slurm.gpus_per_run;
  if (gpus_per_run > 0) {
    if (e.device == "cpu") {
      return p.Error(n["device"], "executor.device",
                     "device cpu with gpus_per_run " + std::to_string(gpus_per_run) +
                         ": ask for no GPUs, or use device cuda");
    }
    if (n["ranks_per_run"].IsDefined() && e.ranks_per_run != gpus_per_run) {
      return p.Error(n["ranks_per_run"], "executor.ranks_per_run",
                     "a GPU run has one rank per GPU: with gpus_per_run " +
                         std::to_string(gpus_per_run) + " leave ranks_per_run out or make it " +
                         std::to_string(gpus_per_run));
    }
    e.ranks_per_run = gpus_per_run;
    if (e.device == "auto") e.device = "cuda";
  }
  if (e.ranks_per_run > 1 && e.cpus_per_run == ExecutorConfig::kAutoCpusPerRun) {
    return p.Error(n["cpus_per_run"], "executor.cpus_per_run",
                   "auto measures one-process runs; with ranks_per_run give the threads of each "
                   "rank (a number)");
  }
  if (e.kind != "slurm" && !first_slurm_name.empty()) {
    return p.Error(first_slurm_key, "executor." + first_slurm_name,
                   "only the slurm executor reads this key; add `kind: slurm` to executor");
  }
  if (e.kind == "slurm") {
    if (e.cpus_per_run == ExecutorConfig::kAutoCpusPerRun || e.cpus_per_run == 0) {
      if (e.cpus_per_run == ExecutorConfig::kAutoCpusPerRun) {
        return p.Error(n["cpus_per_run"], "executor.cpus_per_run",
                       "auto is for the local executor; give the CPUs each SLURM job asks for");
      }
      e.cpus_per_run = e.slurm.gpus_per_run > 0 ? 8 : 1;
    }
    if (!e.gpus.empty()) {
      return p.Error(n["gpus"], "executor.gpus",
                     "SLURM chooses the GPUs; use gpus_per_run (and gres or constraint for a "
                     "GPU model)");
    }
    if (e.device == "auto") e.device = "cpu";  // gpus_per_run > 0 made it cuda above
    // device cuda alone: one GPU per rank.
    if (e.device == "cuda" && e.slurm.gpus_per_run == 0) e.slurm.gpus_per_run = e.ranks_per_run;
    if (e.slurm.mem == ExecutorConfig::Slurm::kAutoMem && e.slurm.gpus_per_run > 0) {
      return p.Error(n["mem"], "executor.mem",
                     "auto asks for a CPU run's memory estimate; a GPU run's estimate is of its "
                     "GPU memory, not of the host memory SLURM limits: give a size (e.g. 64G) "
                     "or leave mem out for the cluster's default");
    }
    if (!e.slurm.time.empty() && e.slurm.signal_grace_s >= SlurmTimeSeconds(e.slurm.time)) {
      const YAML::Node at = n["signal_grace"].IsDefined() ? n["signal_grace"] : n["time"];
      return p.Error(at, "executor.signal_grace",
                     "the checkpoint signal comes " + std::to_string(e.slurm.signal_grace_s) +
                         " s before the time limit, which is " +
                         std::to_string(SlurmTimeSeconds(e.slurm.time)) +
                         " s: lower signal_grace or raise time");
    }
  }
  return Status::Ok();
}

Status ParseFit(const Parser& p, const YAML::Node& n, SweepConfig* c) {
  c->fit.fixed_entropy = c->data.value("source", "") == "synthetic";
  if (!n.IsDefined()) return Status::Ok();
  ISOFLOP_RETURN_IF_ERROR(p.CheckKeys(
      n, "fit",
      {"method", "form", "convention", "bootstrap", "fixed_entropy", "include_diverged"}));
  FitSection& f = c->fit;
  for (auto it = n.begin(); it != n.end(); ++it) {
    const std::string key = it->first.as<std::string>();
    const std::string kp = "fit." + key;
    const YAML::Node& v = it->second;
    if (key == "method") {
      ISOFLOP_ASSIGN_OR_RETURN(f.method, p.String(v, kp));
      if (f.method != "parametric" && f.method != "isoflop" && f.method != "envelope") {
        return p.Error(v, kp, "expected parametric, isoflop or envelope, got '" + f.method + "'");
      }
    } else if (key == "form") {
      ISOFLOP_ASSIGN_OR_RETURN(f.form, p.String(v, kp));
      if (f.form != "chinchilla") {
        return p.Error(v, kp, "expected chinchilla for dense sweeps, got '" + f.form + "'");
      }
    } else if (key == "convention") {
      ISOFLOP_ASSIGN_OR_RETURN(f.convention, p.String(v, kp));
      if (f.convention != "total" && f.convention != "non_embedding" &&
          f.convention != "active") {
        return p.Error(v, kp,
                       "expected total, non_embedding or active (MoE: the parameters a token "
                       "uses), got '" + f.convention + "'");
      }
    } else if (key == "bootstrap") {
      ISOFLOP_ASSIGN_OR_RETURN(f.bootstrap, p.IntInRange(v, kp, 0, 100000));
    } else if (key == "fixed_entropy") {
      ISOFLOP_ASSIGN_OR_RETURN(f.fixed_entropy, p.Bool(v, kp));
      if (f.fixed_entropy && c->data.value("source", "") != "synthetic") {
        return p.Error(v, kp,
                       "only for synthetic data, whose entropy is known; " +
                           c->data.value("source", std::string("this")) +
                           " data has none to hold E at");
      }
    } else if (key == "include_diverged") {
      ISOFLOP_ASSIGN_OR_RETURN(f.include_diverged, p.Bool(v, kp));
    }
  }
  return Status::Ok();
}

Status ParseReport(const Parser& p, const YAML::Node& n, SweepConfig* c) {
  if (n.IsDefined()) {
    ISOFLOP_RETURN_IF_ERROR(p.CheckKeys(n, "report", {"budgets"}));
    if (YAML::Node b = Child(n, "budgets"); b.IsDefined()) {
      ISOFLOP_ASSIGN_OR_RETURN(c->report_budgets, ParseBudgetList(p, b, "report.budgets"));
    }
  }
  if (c->report_budgets.empty() && !c->budgets.empty()) {
    // The next budget up: the largest one times the sweep's budget ratio (4x by default).
    const size_t k = c->budgets.size();
    const double ratio = k >= 2 ? c->budgets[k - 1] / c->budgets[k - 2] : 4.0;
    c->report_budgets.push_back(c->budgets.back() * ratio);
  }
  return Status::Ok();
}

// ---- names, duplicate keys ----------------------------------------------------------------

// yaml-cpp keeps the first of two equal keys in a mapping and drops the second without a word;
// a file with `lr:` twice would train with the value its author did not mean. Walks every
// mapping (each node once: aliases share nodes) and names the second occurrence.
// `where` names the text in messages; `marks`: add the line and column (false for a --set
// value, whose positions are within the value).
Status CheckDuplicateKeys(const YAML::Node& n, const std::string& path, const std::string& where,
                          bool marks, std::set<size_t>* seen_nodes) {
  if (!n.IsMap() && !n.IsSequence()) return Status::Ok();
  if (n.Mark().pos >= 0 && !seen_nodes->insert(static_cast<size_t>(n.Mark().pos)).second) {
    return Status::Ok();
  }
  auto at = [&](const YAML::Mark& m) {
    return !marks || m.line < 0
               ? where
               : where + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
  };
  if (n.IsSequence()) {
    for (size_t i = 0; i < n.size(); ++i) {
      ISOFLOP_RETURN_IF_ERROR(
          CheckDuplicateKeys(n[i], path + "[" + std::to_string(i) + "]", where, marks, seen_nodes));
    }
    return Status::Ok();
  }
  std::map<std::string, YAML::Mark> keys;
  for (auto it = n.begin(); it != n.end(); ++it) {
    if (!it->first.IsScalar()) continue;  // a complex key is reported as an unknown key later
    const std::string key = it->first.Scalar();
    const std::string kp = path.empty() ? key : path + "." + key;
    auto [first, inserted] = keys.emplace(key, it->first.Mark());
    if (!inserted) {
      return Status::InvalidArgument(
          at(it->first.Mark()) + ": " + kp + ": duplicate key" +
          (marks ? " (first given at line " + std::to_string(first->second.line + 1) + ")" : "") +
          "; keep one of them");
    }
    ISOFLOP_RETURN_IF_ERROR(CheckDuplicateKeys(it->second, kp, where, marks, seen_nodes));
  }
  return Status::Ok();
}

// ---- overrides -----------------------------------------------------------------------------

Status ApplyOverride(YAML::Node& root, const std::string& arg,
                     std::map<std::string, std::string>* seen,
                     std::map<std::string, std::string>* created) {
  const size_t eq = arg.find('=');
  if (eq == std::string::npos || eq == 0) {
    return Status::InvalidArgument("--set " + arg + ": expected key.path=value");
  }
  const std::string key = arg.substr(0, eq);
  const std::string value = arg.substr(eq + 1);
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string part; std::getline(ss, part, '.');) {
    if (part.empty()) return Status::InvalidArgument("--set " + arg + ": empty key component");
    parts.push_back(part);
  }
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument("--set " + arg + ": value is not valid YAML: " + e.msg);
  }
  {
    std::set<size_t> seen_nodes;
    ISOFLOP_RETURN_IF_ERROR(CheckDuplicateKeys(parsed, key, "--set " + arg, false, &seen_nodes));
  }
  // Walk the key path. A mapping's key may itself hold dots (a parameter axis, `train.lr`):
  // at each level the longest run of components naming an existing key is that key; a new key
  // under `parameters` is an axis, so it takes every remaining component but a trailing axis
  // field (`--set parameters.train.lr.values=[1e-3]`); anywhere else a new key is one component.
  const auto join = [&](size_t from, size_t to) {
    std::string s = parts[from];
    for (size_t k = from + 1; k < to; ++k) s += "." + parts[k];
    return s;
  };
  static const std::set<std::string> kAxisFields = {"values",       "value", "min", "max",
                                                    "distribution", "count", "q"};
  YAML::Node cur = root;
  std::string path;  // the mapping `cur` is, as a dotted path ("" = the root)
  for (size_t i = 0; i < parts.size();) {
    if (!cur.IsMap()) {
      return Status::InvalidArgument("--set " + arg + ": '" + path + "' is not a mapping");
    }
    size_t j = 0;
    const YAML::Node& look = cur;  // const: a missing key is not inserted
    for (size_t to = parts.size(); to > i && j == 0; --to) {
      if (look[join(i, to)].IsDefined()) j = to;
    }
    if (j == 0) {
      j = i + 1;
      if (path == "parameters") {
        j = parts.size();
        if (j - i >= 2 && kAxisFields.count(parts.back())) --j;
      }
    }
    const std::string name = join(i, j);
    const std::string child = path.empty() ? name : path + "." + name;
    if (j == parts.size()) {
      cur[name] = parsed;
      break;
    }
    YAML::Node next = cur[name];
    if (!next.IsDefined() || next.IsNull()) {
      cur[name] = YAML::Node(YAML::NodeType::Map);
      next = cur[name];
      created->emplace(child, key);
    }
    cur.reset(next);
    path = child;
    i = j;
  }
  (*seen)[key] = value;
  return Status::Ok();
}

bool SafeRelative(const std::string& p) {
  fs::path path(p);
  if (p.empty() || path.is_absolute()) return false;
  for (const auto& part : path) {
    if (part == "..") return false;
  }
  return true;
}

}  // namespace

Result<SweepConfig> ParseSweepConfig(const std::string& text, const std::string& file_path,
                                     const std::vector<std::string>& overrides,
                                     const std::string& cwd) {
  YAML::Node root;
  try {
    // One sweep per file: a second document (after `---`) was silently ignored.
    const std::vector<YAML::Node> docs = YAML::LoadAll(text);
    if (docs.size() > 1) {
      const YAML::Mark m = docs[1].Mark();
      return Status::InvalidArgument(
          file_path + (m.line >= 0 ? ":" + std::to_string(m.line + 1) : std::string()) +
          ": a second YAML document (after ---): a sweep file holds one sweep");
    }
    if (!docs.empty()) root = docs[0];
  } catch (const YAML::ParserException& e) {
    return Status::InvalidArgument(file_path + ":" + std::to_string(e.mark.line + 1) + ":" +
                                   std::to_string(e.mark.column + 1) + ": " + e.msg);
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(file_path + ": " + e.msg);
  }
  if (!root.IsMap()) {
    return Status::InvalidArgument(file_path +
                                   ": expected a mapping of sections (name:, data:, "
                                   "model:, budgets:, ...)");
  }
  {
    std::set<size_t> seen_nodes;
    ISOFLOP_RETURN_IF_ERROR(CheckDuplicateKeys(root, "", file_path, true, &seen_nodes));
  }
  std::map<std::string, std::string> seen, created;
  for (const auto& o : overrides) ISOFLOP_RETURN_IF_ERROR(ApplyOverride(root, o, &seen, &created));
  Parser p(file_path, seen, created);
  SweepConfig c;
  c.file_path = file_path;
  c.text = text;
  c.overrides = overrides;
  std::string hashed = text;
  for (const auto& o : overrides) hashed += "\n#--set " + o;
  c.hash = Sha256Hex(hashed);

  try {
    ISOFLOP_RETURN_IF_ERROR(
        p.CheckKeys(root, "",
                    {"name", "description", "data", "model", "budgets", "sizes", "train", "seeds",
                     "parameters", "executor", "fit", "report", "output"}));
    const YAML::Node name = Child(root, "name");
    if (!name.IsDefined()) return p.Error(root, "name", "required key is missing");
    ISOFLOP_ASSIGN_OR_RETURN(c.name, p.String(name, "name"));
    if (c.name.size() > kMaxSweepNameBytes) {
      return p.Error(name, "name",
                     "expected at most " + std::to_string(kMaxSweepNameBytes) +
                         " bytes (it names the run folder), got " + std::to_string(c.name.size()));
    }
    if (!IsPlainName(c.name)) {
      return p.Error(name, "name",
                     "expected letters, digits, '.', '_' or '-' (it names the run folder), got '" +
                         c.name + "'");
    }
    if (YAML::Node d = Child(root, "description"); d.IsDefined()) {
      ISOFLOP_RETURN_IF_ERROR(p.String(d, "description").status());
    }
    ISOFLOP_RETURN_IF_ERROR(ParseData(p, Child(root, "data"), cwd, &c));
    ISOFLOP_RETURN_IF_ERROR(ParseModel(p, Child(root, "model"), &c));
    if (c.data.value("source", "") == "synthetic") {
      if (!c.data.contains("vocab")) c.data["vocab"] = c.base.vocab_size;
      if (c.data["vocab"].get<int>() != c.base.vocab_size) {
        return p.Error(Child(Child(root, "data"), "vocab"), "data.vocab",
                       "must equal model.vocab_size (" + std::to_string(c.base.vocab_size) + ")");
      }
    }
    const YAML::Node budgets = Child(root, "budgets");
    if (!budgets.IsDefined()) {
      return p.Error(root, "budgets", "required key is missing (a list of FLOPs, e.g. [1e15])");
    }
    ISOFLOP_ASSIGN_OR_RETURN(c.budgets, ParseBudgetList(p, budgets, "budgets", &c.budget_where));
    ISOFLOP_RETURN_IF_ERROR(CheckBudgetTokens(c));
    ISOFLOP_RETURN_IF_ERROR(ParseSizes(p, Child(root, "sizes"), &c));
    ISOFLOP_RETURN_IF_ERROR(ParseTrain(p, Child(root, "train"), &c));
    ISOFLOP_RETURN_IF_ERROR(ParseSeeds(p, Child(root, "seeds"), &c));
    ISOFLOP_RETURN_IF_ERROR(ParseParameters(p, Child(root, "parameters"), cwd, &c));
    ISOFLOP_RETURN_IF_ERROR(ParseExecutor(p, Child(root, "executor"), &c));
    ISOFLOP_RETURN_IF_ERROR(ParseFit(p, Child(root, "fit"), &c));
    ISOFLOP_RETURN_IF_ERROR(ParseReport(p, Child(root, "report"), &c));
    std::string output = "runs/" + c.name;
    if (YAML::Node o = Child(root, "output"); o.IsDefined()) {
      ISOFLOP_ASSIGN_OR_RETURN(output, p.String(o, "output"));
      if (!SafeRelative(output)) {
        return p.Error(o, "output",
                       "expected a relative folder without '..' (run folders stay under the "
                       "current directory), got '" +
                           output + "'");
      }
    }
    c.output_dir = Absolute(cwd, output);
    c.base_dir = cwd;
    if (!c.executor.slurm.run_root.empty()) {
      // On a cluster the runs live where every node sees them.
      c.output_dir = (std::filesystem::path(c.executor.slurm.run_root) / c.name).string();
    }
  } catch (const YAML::Exception& e) {
    return Status::InvalidArgument(file_path + ":" + std::to_string(e.mark.line + 1) + ":" +
                                   std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  return c;
}

std::string FieldWhere(const SweepConfig& c, const std::string& field) {
  if (auto it = c.field_where.find(field); it != c.field_where.end()) return it->second;
  const std::string section = field.substr(0, field.find('.'));
  if (auto it = c.field_where.find(section); it != c.field_where.end()) {
    return it->second.substr(0, it->second.rfind(": ")) + ": " + field;
  }
  return c.file_path + ": " + field;
}

Result<SweepConfig> LoadSweepConfig(const std::string& path,
                                    const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (fs::exists(path, ec) && !fs::is_regular_file(path, ec)) {
    // A FIFO would block the open below forever, a directory reads as empty.
    return Status::InvalidArgument(path + ": not a regular file (give the sweep file itself)");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(path + ": cannot read the sweep file");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string cwd = fs::current_path(ec).string();
  return ParseSweepConfig(ss.str(), path, overrides, cwd);
}

}  // namespace isoflop::sweep
