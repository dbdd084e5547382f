// Tabular output for people and programs: one Table rendered as an aligned text table,
// CSV, or JSON (an array of objects). Every listing command builds a Table and calls Print.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "isoflop/common/status.h"

namespace isoflop::cli {

enum class Format { kTable, kCsv, kJson };

// Parses "table", "csv" or "json"; InvalidArgument otherwise.
Result<Format> ParseFormat(const std::string& s);

struct Column {
  std::string name;        // header and JSON key
  std::string number_fmt;  // printf format for numbers in the text table (e.g. "%.4g")
};

// Cells are JSON values: strings, numbers, or null (printed "-" in the table, empty in CSV).
struct Table {
  std::vector<Column> columns;
  std::vector<std::vector<nlohmann::json>> rows;
};

// Writes `table` in `format`. Text tables right-align numbers and left-align text.
void Print(std::ostream& out, const Table& table, Format format);

// A size in bytes as a cell: "1.5 GiB" in a text table, the number in CSV and JSON; null when
// not known (0 or less).
nlohmann::json BytesCell(int64_t bytes, Format format);

// "1.23e+21"-style compact number for people (%.3g with an exponent when large or small).
std::string Human(double v, int digits = 3);

// A string as a CSV field: quoted when it holds a comma, quote or newline.
std::string CsvField(const std::string& s);

// `s` split at every `sep` (empty pieces kept).
std::vector<std::string> Split(const std::string& s, char sep);

// A positive finite number written as `s`; InvalidArgument naming `flag` otherwise.
Result<double> ParseNumber(const std::string& s, const std::string& flag);

// Compute budgets written as "C,C,..." (each a positive finite number), at most `max_count` of
// them; InvalidArgument naming `flag` otherwise.
Result<std::vector<double>> ParseBudgetList(const std::string& s, const std::string& flag,
                                            size_t max_count = SIZE_MAX);

}  // namespace isoflop::cli
