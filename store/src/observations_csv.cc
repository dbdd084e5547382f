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

bool ParseDouble(const std::string& s, double* v) {
  if (s.empty()) return false;
  const char* b = s.data();
  const char* e = s.data() + s.size();
  if (*b == '+') ++b;
  auto [p, ec] = std::from_chars(b, e, *v);
  return ec == std::errc() && p == e;
}

}  // namespace

Result<std::vector<Observation>> ReadObservationsCsv(const std::string& path,
                                                     const CsvColumns& columns) {
  const double k = columns.flops_per_param_token;
  if (!(k > 0) || !std::isfinite(k)) {
    return Status::InvalidArgument(
        "--flops-per-param-token: must be a positive finite number (k in C = k N D, 6 for "
        "Hoffmann et al. 2022), got " +
        FormatNumber(k));
  }
  // A FIFO or a device would block the open below or never end; a directory reads as nothing.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    return Status::InvalidArgument(path + ": not a regular file (give the CSV file itself)");
  std::ifstream in(path);
  if (!in) return Status::NotFound(path + ": cannot open CSV file");
  std::string line;
  if (!std::getline(in, line))
    return Status::InvalidArgument(path + ":1: empty file, expected a header line");
  if (line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);
  std::vector<std::string> header;
  if (!SplitCsv(line, &header))
    return Status::InvalidArgument(path + ":1: unterminated quote in header");

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

  std::vector<Observation> out;
  std::vector<std::string> fields;
  int64_t line_no = 1;
  while (std::getline(in, line)) {
    ++line_no;
    if (Trim(line).empty()) continue;
    if (!SplitCsv(line, &fields)) {
      return Status::InvalidArgument(path + ":" + std::to_string(line_no) + ": unterminated quote");
    }
    auto value = [&](int col, double* v) -> Status {
      const std::string where = path + ":" + std::to_string(line_no) + ": column '" +
                                header[static_cast<size_t>(col)] + "'";
      if (static_cast<size_t>(col) >= fields.size()) {
        return Status::InvalidArgument(where + ": missing value (line has " +
                                       std::to_string(fields.size()) + " fields, header has " +
                                       std::to_string(header.size()) + ")");
      }
      const std::string& s = fields[static_cast<size_t>(col)];
      if (!ParseDouble(s, v)) {
        return Status::InvalidArgument(where + ": '" + s + "' is not a number");
      }
      if (!std::isfinite(*v) || *v <= 0) {
        return Status::InvalidArgument(where + ": " + s + " must be a positive finite number");
      }
      return Status::Ok();
    };
    Observation o;
    o.line = line_no;
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
        return Status::InvalidArgument(path + ":" + std::to_string(line_no) +
                                       ": D = C / (k N) is not a positive finite number (C " +
                                       FormatNumber(o.c) + ", N " + FormatNumber(o.n) + ")");
      }
    }
    // An empty G cell means "not recorded" (what `isoflop export` writes for a point without
    // G), so exported sets import again; anything else must be a positive finite number.
    const bool g_empty = g_col >= 0 && static_cast<size_t>(g_col) < fields.size() &&
                         fields[static_cast<size_t>(g_col)].empty();
    if (g_col >= 0 && !g_empty) {
      double g = 0;
      ISOFLOP_RETURN_IF_ERROR(value(g_col, &g));
      o.g = g;
    }
    if (budget_col >= 0) {
      double b = 0;
      ISOFLOP_RETURN_IF_ERROR(value(budget_col, &b));
      o.budget = b;
    }
    out.push_back(o);
  }
  if (in.bad()) return Status::IoError(path + ": read error");
  if (out.empty()) return Status::InvalidArgument(path + ": no data rows after the header");
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
  return out;
}

}  // namespace isoflop::store
