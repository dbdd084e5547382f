// Tests of the observations CSV reader: recognised headers, D from C, and errors that name
// the file, line and column.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "isoflop/store/observations_csv.h"

namespace isoflop::store {
namespace {

namespace fs = std::filesystem;

std::string WriteTemp(const std::string& name, const std::string& text) {
  fs::path p = fs::temp_directory_path() / ("isoflop_csv_" + std::to_string(::getpid()) + name);
  std::ofstream(p) << text;
  return p.string();
}

TEST(ObservationsCsv, ReadsChinchillaWithDFromC) {
  std::string path = std::string(ISOFLOP_SHARED_DATA_DIR) + "/chinchilla/svg_extracted_data.csv";
  auto r = ReadObservationsCsv(path);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->size(), 245u);
  const Observation& first = (*r)[0];
  EXPECT_DOUBLE_EQ(first.n, 6795600349.289497);
  EXPECT_DOUBLE_EQ(first.c, 9.993852799709755e+18);
  EXPECT_DOUBLE_EQ(first.d, 9.993852799709755e+18 / (6 * 6795600349.289497));
  EXPECT_DOUBLE_EQ(first.loss, 5.005581996196243);
  EXPECT_EQ(first.line, 2);
}

TEST(ObservationsCsv, NamedColumnsAndQuotes) {
  auto path = WriteTemp(
      "named.csv", "\xEF\xBB\xBF\"size, params\",tok,my loss\r\n1e6,2e7,3.5\r\n\"2e6\",4e7,3.25\n");
  CsvColumns cols;
  cols.n = "size, params";
  cols.d = "tok";
  cols.loss = "MY LOSS";
  auto r = ReadObservationsCsv(path, cols);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[1].n, 2e6);
  EXPECT_EQ((*r)[1].c, 6 * 2e6 * 4e7);
}

struct BadCase {
  const char* name;
  std::string text;
  std::string expect;  // substring of the error message (after the path)
};

TEST(ObservationsCsv, BadInputNamesFileLineAndColumn) {
  std::string many = "n,d,loss\n";
  for (int line = 2; line < 37; ++line) many += "1e6,1e7,3.0\n";
  many += "1e6,1e7,3.O\n";  // line 37: letter O, not zero
  const BadCase cases[] = {
      {"bad37", many, ":37: column 'loss': '3.O' is not a number"},
      {"header", "size,tokens,x\n1,2,3\n", ":1: no recognised N (parameters) column"},
      {"noloss", "n,d\n1,2\n", ":1: no recognised loss column"},
      {"nod", "n,loss\n1,2\n", "no recognised D (tokens) or C (compute) column"},
      {"negative", "n,d,loss\n1e6,-5,3\n", ":2: column 'd': -5 must be a positive"},
      {"short", "n,d,loss\n1e6,5\n", ":2: column 'loss': missing value"},
      {"empty", "", ":1: empty file"},
      {"nodata", "n,d,loss\n", "no data rows"},
      {"nan", "n,d,loss\n1e6,5,nan\n", "must be a positive finite number"},
  };
  for (const auto& c : cases) {
    std::string path = WriteTemp(c.name, c.text);
    auto r = ReadObservationsCsv(path);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_EQ(r.status().message().rfind(path, 0), 0u) << r.status().message();
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos)
        << c.name << ": " << r.status().message();
    fs::remove(path);
  }
  auto missing = ReadObservationsCsv("/nonexistent/x.csv");
  EXPECT_EQ(missing.status().code(), Status::Code::kNotFound);
}

}  // namespace
}  // namespace isoflop::store
