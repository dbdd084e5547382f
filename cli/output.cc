// Text, CSV and JSON rendering of Tables for the CLI.
#include "output.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "isoflop/common/format.h"

namespace isoflop::cli {

Result<Format> ParseFormat(const std::string& s) {
  if (s == "table") return Format::kTable;
  if (s == "csv") return Format::kCsv;
  if (s == "json") return Format::kJson;
  return Status::InvalidArgument("--format: '" + s + "' is not one of table, csv, json");
}

nlohmann::json BytesCell(int64_t bytes, Format format) {
  if (bytes <= 0) return nlohmann::json();
  return format == Format::kTable ? nlohmann::json(Bytes(double(bytes))) : nlohmann::json(bytes);
}

std::string Human(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) out.push_back(item);
  return out;
}

Result<double> ParseNumber(const std::string& s, const std::string& flag) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !(v > 0) || !std::isfinite(v))
    return Status::InvalidArgument(flag + ": '" + s + "' is not a positive number");
  return v;
}

Result<std::vector<double>> ParseBudgetList(const std::string& s, const std::string& flag,
                                            size_t max_count) {
  std::vector<double> cs;
  for (const std::string& c : Split(s, ',')) {
    ISOFLOP_ASSIGN_OR_RETURN(double v, ParseNumber(c, flag));
    cs.push_back(v);
    if (cs.size() > max_count) {
      return Status::InvalidArgument(flag + ": more than " + std::to_string(max_count) +
                                     " budgets");
    }
  }
  return cs;
}

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

namespace {

std::string TextCell(const nlohmann::json& v, const Column& col) {
  if (v.is_null()) return "-";
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) {
    char buf[64];
    std::snprintf(buf, sizeof buf, col.number_fmt.empty() ? "%.6g" : col.number_fmt.c_str(),
                  v.get<double>());
    return buf;
  }
  return v.dump();
}

std::string CsvCell(const nlohmann::json& v) {
  if (v.is_null()) return "";
  if (v.is_string()) return CsvField(v.get<std::string>());
  return v.dump();  // numbers in full (round-trip) precision
}

}  // namespace

void Print(std::ostream& out, const Table& table, Format format) {
  const auto& cols = table.columns;
  if (format == Format::kJson) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& row : table.rows) {
      nlohmann::json obj = nlohmann::json::object();
      for (size_t i = 0; i < cols.size() && i < row.size(); ++i) obj[cols[i].name] = row[i];
      arr.push_back(std::move(obj));
    }
    out << arr.dump(2) << "\n";
    return;
  }
  if (format == Format::kCsv) {
    for (size_t i = 0; i < cols.size(); ++i) out << (i ? "," : "") << CsvField(cols[i].name);
    out << "\n";
    for (const auto& row : table.rows) {
      for (size_t i = 0; i < cols.size(); ++i) {
        out << (i ? "," : "") << (i < row.size() ? CsvCell(row[i]) : "");
      }
      out << "\n";
    }
    return;
  }
  std::vector<std::vector<std::string>> cells;
  std::vector<size_t> width(cols.size());
  std::vector<bool> numeric(cols.size(), true);
  for (size_t i = 0; i < cols.size(); ++i) width[i] = cols[i].name.size();
  for (const auto& row : table.rows) {
    std::vector<std::string> line;
    for (size_t i = 0; i < cols.size(); ++i) {
      const nlohmann::json v = i < row.size() ? row[i] : nlohmann::json();
      if (v.is_string()) numeric[i] = false;
      line.push_back(TextCell(v, cols[i]));
      width[i] = std::max(width[i], line.back().size());
    }
    cells.push_back(std::move(line));
  }
  auto emit = [&](const std::vector<std::string>& line) {
    std::string s;
    for (size_t i = 0; i < cols.size(); ++i) {
      std::string pad(width[i] - line[i].size(), ' ');
      if (i) s += "  ";
      s += numeric[i] ? pad + line[i] : line[i] + (i + 1 < cols.size() ? pad : "");
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    out << s << "\n";
  };
  std::vector<std::string> header;
  for (const auto& c : cols) header.push_back(c.name);
  emit(header);
  std::vector<std::string> rule;
  for (size_t w : width) rule.push_back(std::string(w, '-'));
  emit(rule);
  for (const auto& line : cells) emit(line);
}

}  // namespace isoflop::cli
