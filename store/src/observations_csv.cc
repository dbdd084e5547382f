// CSV reader for external (N, D, loss[, G]) observations. Handles quoted fields (RFC 4180, no
// embedded newlines), CRLF line ends and a UTF-8 byte-order mark.
#include "isoflop/store/observations_csv.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <initializer_list>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace isoflop::store {
namespace {

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

// Splits one CSV line. Returns false on an unterminated quote.
bool SplitCsv(const std::string& line, std::vector<std::string>* out) {
  out->clear();
  std::string cur;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char ch = line[i];
    if (quoted) {
      if (ch == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        cur += '"';
        ++i;
      } else if (ch == '"') {
        quoted = false;
      } else {
        cur += ch;
      }
    } else if (ch == '"') {
      quoted = true;
    } else if (ch == ',') {
      out->push_back(Trim(cur));
      cur.clear();
    } else {
      cur += ch;
    }
  }
  out->push_back(Trim(cur));
  return !quoted;
}

// Index of the column named `given` (when set) or of the first recognised alias; -1 if none.
int FindColumn(const std::vector<std::string>& header, const std::string& given,
               std::initializer_list<const char*> aliases) {
  for (size_t i = 0; i < header.size(); ++i) {
    std::string h = Lower(header[i]);
    if (!given.empty()) {
      if (h == Lower(given)) return static_cast<int>(i);
      continue;
    }
    for (const char* a : aliases) {
      if (h == a) return static_cast<int>(i);
    }
  }
  return -1;
}

std::string FormatNumber(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// A whole field as a double: std::errc() when it is one, result_out_of_range when it is a
// number no double holds (1e-400, 1e400), invalid_argument otherwise.
std::errc ParseNumberField(const std::string& s, double* v) {
  if (s.empty()) return std::errc::invalid_argument;
  const char* b = s.data();
  const char* e = s.data() + s.size();
  if (*b == '+') ++b;
  auto [p, ec] = std::from_chars(b, e, *v);
  if (p != e) return std::errc::invalid_argument;
  return ec;
}

bool ParseDouble(const std::string& s, double* v) { return ParseNumberField(s, v) == std::errc(); }

}  // namespace

namespace {

// A file's rows as text cells under one header, each row with where it came from ("FILE:LINE"
// for CSV and JSON lines, "FILE: object K" for a JSON array).
struct RawTable {
  std::vector<std::string> header;
  struct Row {
    std::string where;
    std::vector<std::string> fields;
  };
  std::vector<Row> rows;
};

Status CheckDuplicateColumns(const std::string& path, const std::vector<std::string>& header) {
  // Two columns of one name: which one is N (or loss) would depend on the order of lookup.
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i].empty()) continue;
    for (size_t j = 0; j < i; ++j) {
      if (Lower(header[j]) == Lower(header[i])) {
        return Status::InvalidArgument(path + ":1: duplicate column '" + header[i] + "' (columns " +
                                       std::to_string(j + 1) + " and " + std::to_string(i + 1) +
                                       "); rename or remove one");
      }
    }
  }
  return Status::Ok();
}

Result<RawTable> ReadCsvTable(const std::string& path, std::istream& in) {
  RawTable t;
  std::string line;
  if (!std::getline(in, line))
    return Status::InvalidArgument(path + ":1: empty file, expected a header line");
  if (line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);
  if (!SplitCsv(line, &t.header))
    return Status::InvalidArgument(path + ":1: unterminated quote in header");
  ISOFLOP_RETURN_IF_ERROR(CheckDuplicateColumns(path, t.header));
  int64_t line_no = 1;
  while (std::getline(in, line)) {
    ++line_no;
    if (Trim(line).empty()) continue;
    RawTable::Row row;
    row.where = path + ":" + std::to_string(line_no);
    if (!SplitCsv(line, &row.fields))
      return Status::InvalidArgument(row.where + ": unterminated quote");
    t.rows.push_back(std::move(row));
  }
  if (in.bad()) return Status::IoError(path + ": read error");
  return t;
}

// One JSON object as a row: numbers in round-trip precision, strings as they are, null empty.
Status AddJsonRow(const nlohmann::json& obj, const std::string& where, RawTable* t) {
  if (!obj.is_object())
    return Status::InvalidArgument(where + ": expected an object {\"n\": .., \"loss\": ..}, got " +
                                   std::string(obj.type_name()));
  RawTable::Row row;
  row.where = where;
  std::map<size_t, std::string> given;  // column -> the key that filled it, in this object
  for (const auto& [key, value] : obj.items()) {
    size_t col = 0;
    while (col < t->header.size() && Lower(t->header[col]) != Lower(key)) ++col;
    if (col == t->header.size()) t->header.push_back(key);
    // Columns are matched without case, as CSV headers are: "loss" and "Loss" are one column,
    // and the second must not silently replace the first.
    if (auto [it, fresh] = given.emplace(col, key); !fresh)
      return Status::InvalidArgument(where + ": keys '" + it->second + "' and '" + key +
                                     "' name the same column (case is ignored); keep one");
    if (row.fields.size() < t->header.size()) row.fields.resize(t->header.size());
    row.fields[col] = value.is_string() ? value.get<std::string>()
                      : value.is_null() ? std::string()
                                        : value.dump();
  }
  t->rows.push_back(std::move(row));
  return Status::Ok();
}

// A JSON array of objects, or JSON lines (one object per line).
Result<RawTable> ReadJsonTable(const std::string& path, const std::string& text) {
  RawTable t;
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {
    nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
    if (doc.is_discarded() || !doc.is_array()) {
      try {
        [[maybe_unused]] const nlohmann::json again = nlohmann::json::parse(text);  // throws
      } catch (const nlohmann::json::exception& e) {
        return Status::InvalidArgument(path + ": not valid JSON: " + e.what());
      }
      return Status::InvalidArgument(path + ": expected a JSON array of objects");
    }
    for (size_t k = 0; k < doc.size(); ++k)
      ISOFLOP_RETURN_IF_ERROR(AddJsonRow(doc[k], path + ": object " + std::to_string(k + 1), &t));
  } else {
    std::istringstream in(text);
    std::string line;
    int64_t line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      if (Trim(line).empty()) continue;
      const std::string where = path + ":" + std::to_string(line_no);
      nlohmann::json obj;
      try {
        obj = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        return Status::InvalidArgument(
            where + ": not a JSON object (JSON lines: one per line): " + e.what());
      }
      ISOFLOP_RETURN_IF_ERROR(AddJsonRow(obj, where, &t));
    }
  }
  for (auto& row : t.rows) row.fields.resize(t.header.size());
  return t;
}

bool LooksLikeJson(const std::string& path, const std::string& head) {
  auto ends = [&](const char* ext) {
    const std::string e = ext;
    return path.size() >= e.size() && Lower(path.substr(path.size() - e.size())) == e;
  };
  if (ends(".json") || ends(".jsonl") || ends(".ndjson")) return true;
  const size_t first = head.find_first_not_of(" \t\r\n");
  return first != std::string::npos && (head[first] == '[' || head[first] == '{');
}

Result<std::vector<Observation>> FromTable(const std::string& path, const RawTable& table,
                                           const CsvColumns& columns,
                                           std::vector<std::string>* notes) {
  const double k = columns.flops_per_param_token;
  const std::vector<std::string>& header = table.header;
  int n_col = FindColumn(header, columns.n,
                         {"n", "params", "parameters", "model size", "model_size", "n_params"});
  int d_col = FindColumn(header, columns.d, {"d", "tokens", "training tokens", "n_tokens", "data"});
  int c_col =
      FindColumn(header, columns.c,
                 {"c", "flops", "compute", "training flop", "training flops", "training_flops"});
  int loss_col = FindColumn(header, columns.loss, {"loss", "final_loss", "val_loss", "final loss"});
  int g_col = FindColumn(header, columns.g, {"g", "granularity"});
  int budget_col = FindColumn(header, columns.budget,
                              {"budget", "compute_budget", "budget_flops", "isoflop_budget"});
  std::string header_list;
  for (const auto& h : header) header_list += (header_list.empty() ? "" : ", ") + h;
  auto missing = [&](const std::string& what, const std::string& given, const std::string& flag) {
    return Status::InvalidArgument(path + ":1: " +
                                   (given.empty() ? "no recognised " + what + " column"
                                                  : "no column named '" + given + "' for " + what) +
                                   " in header [" + header_list + "]; name it with " + flag);
  };
  if (n_col < 0) return missing("N (parameters)", columns.n, "--n-column");
  if (loss_col < 0) return missing("loss", columns.loss, "--loss-column");
  if (d_col < 0 && c_col < 0) {
    if (!columns.d.empty()) return missing("D (tokens)", columns.d, "--d-column");
    if (!columns.c.empty()) return missing("C (compute)", columns.c, "--c-column");
    return missing("D (tokens) or C (compute)", "", "--d-column or --c-column");
  }
  // G is optional, but a column asked for by name must exist.
  if (g_col < 0 && !columns.g.empty()) return missing("G (granularity)", columns.g, "--g-column");
  if (budget_col < 0 && !columns.budget.empty())
    return missing("the budget", columns.budget, "--budget-column");
  // --where COLUMN=VALUE: keep only the rows whose cell equals VALUE (all conditions).
  std::vector<std::pair<int, std::string>> where;
  for (const std::string& w : columns.where) {
    const size_t eq = w.find('=');
    if (eq == std::string::npos || eq == 0)
      return Status::InvalidArgument("--where '" + w + "': expected COLUMN=VALUE");
    const std::string name = Trim(w.substr(0, eq));
    const int col = FindColumn(header, name, {});
    if (col < 0)
      return Status::InvalidArgument(path + ":1: --where: no column named '" + name +
                                     "' in header [" + header_list + "]");
    where.emplace_back(col, Trim(w.substr(eq + 1)));
  }

  std::vector<Observation> out;
  std::vector<const RawTable::Row*> kept;
  int64_t index = 0;
  for (const RawTable::Row& row : table.rows) {
    ++index;
    const std::vector<std::string>& fields = row.fields;
    // More values than columns: which value belongs to which column is a guess (a thousands
    // separator, "1,234", splits one number in two). Empty extras (a trailing comma) are harmless.
    for (size_t i = header.size(); i < fields.size(); ++i) {
      if (!fields[i].empty()) {
        return Status::InvalidArgument(row.where + ": " + std::to_string(fields.size()) +
                                       " values, but the header has " +
                                       std::to_string(header.size()) +
                                       " columns (a thousands separator? quote such a number)");
      }
    }
    auto cell = [&](int col) {
      return static_cast<size_t>(col) < fields.size() ? fields[static_cast<size_t>(col)]
                                                      : std::string();
    };
    if (!std::all_of(where.begin(), where.end(),
                     [&](const auto& w) { return cell(w.first) == w.second; }))
      continue;
    auto value = [&](int col, double* v) -> Status {
      const std::string at = row.where + ": column '" + header[static_cast<size_t>(col)] + "'";
      if (static_cast<size_t>(col) >= fields.size()) {
        return Status::InvalidArgument(at + ": missing value (line has " +
                                       std::to_string(fields.size()) + " fields, header has " +
                                       std::to_string(header.size()) + ")");
      }
      const std::string& s = fields[static_cast<size_t>(col)];
      if (s.empty()) return Status::InvalidArgument(at + ": missing value");
      if (const std::errc ec = ParseNumberField(s, v); ec == std::errc::result_out_of_range) {
        return Status::InvalidArgument(at + ": " + s +
                                       " is beyond the range of a double (about 2.2e-308 to "
                                       "1.8e308)");
      } else if (ec != std::errc()) {
        return Status::InvalidArgument(at + ": '" + s + "' is not a number");
      }
      if (!std::isfinite(*v) || *v <= 0) {
        return Status::InvalidArgument(at + ": " + s + " must be a positive finite number");
      }
      return Status::Ok();
    };
    Observation o;
    // The file's line (CSV, JSON lines) or object number (JSON array).
    const size_t colon = row.where.rfind(':');
    o.line = index;
    if (colon != std::string::npos) {
      int64_t line = 0;
      const std::string tail = row.where.substr(colon + 1);
      if (std::from_chars(tail.data(), tail.data() + tail.size(), line).ec == std::errc())
        o.line = line;
    }
    ISOFLOP_RETURN_IF_ERROR(value(n_col, &o.n));
    ISOFLOP_RETURN_IF_ERROR(value(loss_col, &o.loss));
    if (d_col >= 0) {
      ISOFLOP_RETURN_IF_ERROR(value(d_col, &o.d));
      o.c = c_col >= 0 ? 0 : k * o.n * o.d;
      if (c_col >= 0) ISOFLOP_RETURN_IF_ERROR(value(c_col, &o.c));
    } else {
      ISOFLOP_RETURN_IF_ERROR(value(c_col, &o.c));
      o.d = o.c / (k * o.n);
      if (!std::isfinite(o.d) || !(o.d > 0)) {
        return Status::InvalidArgument(row.where +
                                       ": D = C / (k N) is not a positive finite "
                                       "number (C " +
                                       FormatNumber(o.c) + ", N " + FormatNumber(o.n) + ")");
      }
    }
    // An empty G or budget cell means "not recorded" (what `isoflop export` writes for a point
    // without one), so exported sets import again; anything else must be a positive finite
    // number.
    auto recorded = [&](int col, std::optional<double>* v) -> Status {
      if (col < 0 ||
          (static_cast<size_t>(col) < fields.size() && fields[static_cast<size_t>(col)].empty()))
        return Status::Ok();
      double x = 0;
      ISOFLOP_RETURN_IF_ERROR(value(col, &x));
      *v = x;
      return Status::Ok();
    };
    ISOFLOP_RETURN_IF_ERROR(recorded(g_col, &o.g));
    ISOFLOP_RETURN_IF_ERROR(recorded(budget_col, &o.budget));
    out.push_back(o);
    kept.push_back(&row);
  }
  if (out.empty()) {
    if (!where.empty())
      return Status::InvalidArgument(path + ": no data rows match --where (" +
                                     std::to_string(table.rows.size()) + " rows in the file)");
    return Status::InvalidArgument(path + ": no data rows after the header");
  }
  // A C column beside D whose values repeat is a nominal budget per run (isoFLOP files), not
  // each run's own count: at most half the rows distinct.
  if (budget_col < 0 && d_col >= 0 && c_col >= 0) {
    std::vector<double> cs;
    for (const auto& o : out) cs.push_back(o.c);
    std::sort(cs.begin(), cs.end());
    const size_t distinct = std::unique(cs.begin(), cs.end()) - cs.begin();
    if (2 * distinct <= out.size())
      for (auto& o : out) o.budget = o.c;
  }
  // C and k·N·D differ by tens of percent between FLOP counts (attention, embeddings, a nominal
  // budget); by 10x or more, a column is in other units (D in billions, C in PF-days): the
  // parametric fit reads N and D, the isoFLOP fit groups by C, and they would disagree.
  if (notes && d_col >= 0 && c_col >= 0) {
    size_t off = 0, at = 0;
    for (size_t i = 0; i < out.size(); ++i) {
      const double ratio = out[i].c / (k * out[i].n * out[i].d);
      if (ratio >= 0.1 && ratio <= 10) continue;
      if (off++ == 0) at = i;
    }
    if (off > 0) {
      const Observation* first = &out[at];
      notes->push_back(
          kept[at]->where + ": C = " + FormatNumber(first->c) + " is " +
          FormatNumber(first->c / (k * first->n * first->d)) + "x " + FormatNumber(k) +
          "·N·D = " + FormatNumber(k * first->n * first->d) +
          (off > 1 ? " (and " + std::to_string(off - 1) + " more rows 10x or more apart)" : "") +
          ": are columns '" + header[n_col] + "', '" + header[d_col] + "' and '" + header[c_col] +
          "' in the same units? (the parametric fit reads N and D, the isoFLOP fit groups by C)");
    }
  }
  // A text column with a few repeated values (2 to 10, each row's value one of them) is most
  // likely an experiment label: the file mixes experiments that should be fitted apart.
  if (notes) {
    const std::vector<int> used = {n_col, d_col, c_col, loss_col, g_col, budget_col};
    for (size_t col = 0; col < header.size(); ++col) {
      if (std::find(used.begin(), used.end(), static_cast<int>(col)) != used.end()) continue;
      if (std::any_of(where.begin(), where.end(),
                      [&](const auto& w) { return w.first == static_cast<int>(col); }))
        continue;
      std::set<std::string> values;
      bool text = false;
      for (const RawTable::Row* row : kept) {
        const std::string v = col < row->fields.size() ? row->fields[col] : std::string();
        if (v.empty()) continue;
        double x;
        if (!ParseDouble(v, &x)) text = true;
        values.insert(v);
      }
      if (!text || values.size() < 2 || values.size() > 10 || 3 * values.size() > kept.size())
        continue;
      std::string list;
      for (const auto& v : values) list += (list.empty() ? "" : ", ") + v;
      notes->push_back(path + ": column '" + header[col] + "' holds " +
                       std::to_string(values.size()) + " different values (" + list +
                       "): the file may mix experiments; take one with --where " + header[col] +
                       "=" + *values.begin());
    }
  }
  return out;
}

Status CheckK(double k) {
  if (!(k > 0) || !std::isfinite(k)) {
    return Status::InvalidArgument(
        "--flops-per-param-token: must be a positive finite number (k in C = k N D, 6 for "
        "Hoffmann et al. 2022), got " +
        FormatNumber(k));
  }
  return Status::Ok();
}

Status CheckRegularFile(const std::string& path) {
  // A FIFO or a device would block the open below or never end; a directory reads as nothing.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    return Status::InvalidArgument(path + ": not a regular file (give the CSV file itself)");
  return Status::Ok();
}

}  // namespace

Result<std::vector<Observation>> ReadObservationsCsv(const std::string& path,
                                                     const CsvColumns& columns,
                                                     std::vector<std::string>* notes) {
  ISOFLOP_RETURN_IF_ERROR(CheckK(columns.flops_per_param_token));
  ISOFLOP_RETURN_IF_ERROR(CheckRegularFile(path));
  std::ifstream in(path);
  if (!in) return Status::NotFound(path + ": cannot open CSV file");
  ISOFLOP_ASSIGN_OR_RETURN(RawTable table, ReadCsvTable(path, in));
  return FromTable(path, table, columns, notes);
}

Result<std::vector<Observation>> ReadObservations(const std::string& path,
                                                  const CsvColumns& columns,
                                                  std::vector<std::string>* notes) {
  ISOFLOP_RETURN_IF_ERROR(CheckK(columns.flops_per_param_token));
  ISOFLOP_RETURN_IF_ERROR(CheckRegularFile(path));
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound(path + ": cannot open file");
  std::ostringstream all;
  all << in.rdbuf();
  if (in.bad()) return Status::IoError(path + ": read error");
  std::string text = all.str();
  if (text.rfind("\xEF\xBB\xBF", 0) == 0) text.erase(0, 3);
  if (LooksLikeJson(path, text.substr(0, 4096))) {
    ISOFLOP_ASSIGN_OR_RETURN(RawTable table, ReadJsonTable(path, text));
    if (table.rows.empty()) return Status::InvalidArgument(path + ": no objects in the file");
    return FromTable(path, table, columns, notes);
  }
  std::istringstream csv(text);
  ISOFLOP_ASSIGN_OR_RETURN(RawTable table, ReadCsvTable(path, csv));
  return FromTable(path, table, columns, notes);
}

}  // namespace isoflop::store
