// Tests of the observations CSV reader: recognised headers, D from C, and errors that name
// the file, line and column.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>

#include "e2e_util.h"
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
  std::string path = std::string(ISOFLOP_DATA_DIR) + "/chinchilla/svg_extracted_data.csv";
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

TEST(ObservationsCsv, GranularityColumnIsOptionalAndRecognised) {
  // Recognised header "granularity" (any case); every row gets its G.
  auto path = WriteTemp("gran.csv", "n,d,loss,Granularity\n1e6,2e7,3.5,1\n2e6,4e7,3.25,0.5\n");
  auto r = ReadObservationsCsv(path);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].g, 1.0);
  EXPECT_EQ((*r)[1].g, 0.5);
  // Named with --g-column.
  auto named = WriteTemp("gnamed.csv", "n,d,loss,experts_split\n1e6,2e7,3.5,8\n");
  CsvColumns cols;
  cols.g = "experts_split";
  auto n = ReadObservationsCsv(named, cols);
  ASSERT_TRUE(n.ok()) << n.status().message();
  EXPECT_EQ((*n)[0].g, 8.0);
  // No G column: no G, not a default of 1.
  auto dense = WriteTemp("dense.csv", "n,d,loss\n1e6,2e7,3.5\n");
  auto d = ReadObservationsCsv(dense);
  ASSERT_TRUE(d.ok()) << d.status().message();
  EXPECT_FALSE((*d)[0].g.has_value());
  // An empty G cell (what `isoflop export` writes without G) is "not recorded".
  auto blank =
      WriteTemp("gblank.csv", "n,d,c,loss,line,g\n1e6,2e7,1.2e14,3.5,2,\n1e6,2e7,1.2e14,3.4,3,4\n");
  auto b = ReadObservationsCsv(blank);
  ASSERT_TRUE(b.ok()) << b.status().message();
  EXPECT_FALSE((*b)[0].g.has_value());
  EXPECT_EQ((*b)[1].g, 4.0);
  for (const auto& p : {path, named, dense, blank}) fs::remove(p);
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
      {"long", "n,d,loss\n1e6,5,3\n1,234e6,5,3.1\n",
       ":3: 4 values, but the header has 3 columns (a thousands separator? quote such a number)"},
      {"empty", "", ":1: empty file"},
      {"nodata", "n,d,loss\n", "no data rows"},
      {"nan", "n,d,loss\n1e6,5,nan\n", "must be a positive finite number"},
      {"underflow", "n,d,loss\n1e6,1e-400,3\n",
       ":2: column 'd': 1e-400 is beyond the range of a double (about 2.2e-308 to 1.8e308)"},
      {"overflow", "n,d,loss\n1e400,5,3\n", ":2: column 'n': 1e400 is beyond the range"},
      {"g_zero", "n,d,loss,g\n1e6,5,3,2\n1e6,5,3,0\n", ":3: column 'g': 0 must be a positive"},
      {"g_inf", "n,d,loss,granularity\n1e6,5,3,inf\n",
       ":2: column 'granularity': inf must be a positive finite number"},
      {"g_text", "n,d,loss,g\n1e6,5,3,eight\n", ":2: column 'g': 'eight' is not a number"},
      {"g_short", "n,d,loss,g\n1e6,5,3\n", ":2: column 'g': missing value"},
      // Two columns of one name (in any case): which is N would depend on the lookup order.
      {"dup_header", "n,d,loss,N\n1e6,5,3,2e6\n",
       ":1: duplicate column 'N' (columns 1 and 4); rename or remove one"},
      {"dup_unused", "n,d,loss,x,x\n1e6,5,3,1,2\n",
       ":1: duplicate column 'x' (columns 4 and 5); rename or remove one"},
      // D = C / (6N) must stay a finite positive number.
      {"d_overflow", "n,c,loss\n1e-300,1e300,3\n",
       ":2: D = C / (k N) is not a positive finite number (C 1e+300, N 1e-300)"},
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
  // A G column asked for by name must exist, and the message names the flag.
  std::string no_g = WriteTemp("nog.csv", "n,d,loss\n1e6,5,3\n");
  CsvColumns want_g;
  want_g.g = "gran";
  auto r = ReadObservationsCsv(no_g, want_g);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(no_g + ":1: no column named 'gran' for G (granularity)"),
            std::string::npos)
      << r.status().message();
  EXPECT_NE(r.status().message().find("--g-column"), std::string::npos);
  fs::remove(no_g);
  auto missing = ReadObservationsCsv("/nonexistent/x.csv");
  EXPECT_EQ(missing.status().code(), Status::Code::kNotFound);
}

// k in C = k N D: zero stored D = inf for every point, a negative or infinite k nonsense.
TEST(ObservationsCsv, FlopsPerParamTokenMustBePositiveAndFinite) {
  std::string path = WriteTemp("k.csv", "n,c,loss\n1e6,6e13,3\n");
  for (double k : {0.0, -6.0, std::numeric_limits<double>::infinity(),
                   std::numeric_limits<double>::quiet_NaN()}) {
    CsvColumns cols;
    cols.flops_per_param_token = k;
    auto r = ReadObservationsCsv(path, cols);
    ASSERT_FALSE(r.ok()) << k;
    EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
    EXPECT_EQ(r.status().message().rfind(
                  "--flops-per-param-token: must be a positive finite number (k in C = k N D", 0),
              0u)
        << r.status().message();
  }
  CsvColumns eight;
  eight.flops_per_param_token = 8;
  auto r = ReadObservationsCsv(path, eight);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_DOUBLE_EQ((*r)[0].d, 6e13 / (8 * 1e6));
  fs::remove(path);
}

TEST(ObservationsCsv, NotARegularFileIsRefusedBeforeOpening) {
  const fs::path dir =
      fs::temp_directory_path() / ("isoflop_csv_fifo_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string fifo = (dir / "points.csv").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  Result<std::vector<Observation>> r = [&] {
    testing::FifoWriter writer(fifo);
    return ReadObservationsCsv(fifo);
  }();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(r.status().message(), fifo + ": not a regular file (give the CSV file itself)");
  auto folder = ReadObservationsCsv(dir.string());
  ASSERT_FALSE(folder.ok());
  EXPECT_EQ(folder.status().message(),
            dir.string() + ": not a regular file (give the CSV file itself)");
  fs::remove_all(dir);
}

// C 10x or more from 6·N·D is a units mistake (D in billions here), not another FLOP count:
// said, with the first such row. Tens of percent apart (a nominal budget) is not.
TEST(ObservationsCsv, ComputeFarFromSixNDIsWarnedAbout) {
  auto path = WriteTemp("units.csv",
                        "n,d,c,loss\n"
                        "1e8,2e9,1.3e18,3.1\n"  // 1.08x 6ND: fine
                        "1e8,2,1.2e18,3.0\n"    // D in billions: 1e9x
                        "2e8,4,4.8e18,2.9\n");
  std::vector<std::string> notes;
  auto got = ReadObservations(path, {}, &notes);
  ASSERT_TRUE(got.ok()) << got.status().message();
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_EQ(notes[0], path +
                          ":3: C = 1.2e+18 is 1e+09x 6·N·D = 1.2e+09 (and 1 more rows 10x or more "
                          "apart): are columns 'n', 'd' and 'c' in the same units? (the "
                          "parametric fit reads N and D, the isoFLOP fit groups by C)");
  auto fine = WriteTemp("fine.csv", "n,d,c,loss\n1e8,2e9,1.3e18,3.1\n2e8,2e9,2e18,3.0\n");
  notes.clear();
  ASSERT_TRUE(ReadObservations(fine, {}, &notes).ok());
  EXPECT_TRUE(notes.empty()) << notes[0];
}

// Issue 14: a budget column, --where to take one experiment out of a file, a warning when a
// text column looks like an experiment label, and JSON input (an array or JSON lines).
TEST(ObservationsCsv, BudgetColumnWhereAndExperimentLabels) {
  const std::string text =
      "exp,n,d,loss,compute_budget\n"
      "a,1e7,1e9,3.1,6e16\n"
      "b,1e7,1e9,3.3,6e16\n"
      "a,2e7,5e8,3.0,6e16\n"
      "b,2e7,5e8,3.2,6e16\n"
      "a,4e7,2.5e8,3.05,6e16\n"
      "b,4e7,2.5e8,3.25,6e16\n";
  auto path = WriteTemp("where.csv", text);
  std::vector<std::string> notes;
  auto all = ReadObservations(path, {}, &notes);
  ASSERT_TRUE(all.ok()) << all.status().message();
  EXPECT_EQ(all->size(), 6u);
  EXPECT_EQ((*all)[0].budget, 6e16);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_EQ(notes[0], path +
                          ": column 'exp' holds 2 different values (a, b): the file may mix "
                          "experiments; take one with --where exp=a");
  CsvColumns one;
  one.where = {"exp=b"};
  notes.clear();
  auto b = ReadObservations(path, one, &notes);
  ASSERT_TRUE(b.ok()) << b.status().message();
  ASSERT_EQ(b->size(), 3u);
  EXPECT_EQ((*b)[0].loss, 3.3);
  EXPECT_EQ((*b)[0].line, 3);  // the file's line
  EXPECT_TRUE(notes.empty());
  one.where = {"experiment=b"};
  auto unknown = ReadObservations(path, one);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().message(),
            path +
                ":1: --where: no column named 'experiment' in header [exp, n, d, loss, "
                "compute_budget]");
  one.where = {"exp=c"};
  auto none = ReadObservations(path, one);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no data rows match --where"), std::string::npos);
  one.where = {"exp"};
  EXPECT_NE(ReadObservations(path, one).status().message().find("expected COLUMN=VALUE"),
            std::string::npos);
  // A C column beside D with repeated values is the budget; distinct per run it is not.
  auto repeated = ReadObservations(WriteTemp("rep.csv", "n,d,c,loss\n1,2,10,3\n2,1,10,3\n"));
  ASSERT_TRUE(repeated.ok());
  EXPECT_EQ((*repeated)[0].budget, 10);
  auto own = ReadObservations(WriteTemp("own.csv", "n,d,c,loss\n1,2,12,3\n2,1,13,3\n"));
  ASSERT_TRUE(own.ok());
  EXPECT_FALSE((*own)[0].budget.has_value());
  // An empty budget cell (what `isoflop export` writes for a point without one) is "not
  // recorded", as an empty G is; a column of them does not make C the budget.
  auto blank = ReadObservations(WriteTemp(
      "bblank.csv", "n,d,c,loss,line,g,budget\n1,2,10,3,2,,\n2,1,10,3,3,,20\n4,1,10,3,4,,\n"));
  ASSERT_TRUE(blank.ok()) << blank.status().message();
  EXPECT_FALSE((*blank)[0].budget.has_value());
  EXPECT_EQ((*blank)[1].budget, 20);
  EXPECT_FALSE((*blank)[2].budget.has_value());
  // A trailing comma (an empty value past the last column) is harmless.
  auto trailing = ReadObservations(WriteTemp("trail.csv", "n,d,loss\n1,2,3,\n2,1,3,\n"));
  ASSERT_TRUE(trailing.ok()) << trailing.status().message();
  EXPECT_EQ((*trailing)[1].n, 2);
}

TEST(ObservationsCsv, JsonArrayAndJsonLinesReadLikeCsv) {
  auto csv = ReadObservations(WriteTemp("same.csv", "n,d,loss\n1e7,1e9,3.1\n2e7,5e8,3.0\n"));
  ASSERT_TRUE(csv.ok());
  auto array = ReadObservations(
      WriteTemp("same.json", R"([{"n": 1e7, "d": 1e9, "loss": 3.1}, {"loss": 3.0, "n": 2e7,
                                 "d": "5e8"}])"));
  ASSERT_TRUE(array.ok()) << array.status().message();
  auto lines = ReadObservations(
      WriteTemp("same.jsonl",
                "{\"n\": 1e7, \"d\": 1e9, \"loss\": 3.1}\n\n{\"n\": 2e7, \"d\": 5e8, "
                "\"loss\": 3.0}\n"));
  ASSERT_TRUE(lines.ok()) << lines.status().message();
  for (const auto* r : {&*array, &*lines}) {
    ASSERT_EQ(r->size(), 2u);
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_EQ((*r)[i].n, (*csv)[i].n);
      EXPECT_EQ((*r)[i].d, (*csv)[i].d);
      EXPECT_EQ((*r)[i].loss, (*csv)[i].loss);
    }
  }
  EXPECT_EQ((*lines)[1].line, 3);
  // Errors name the file and the line (JSON lines) or the object (array), and the field.
  auto p1 = WriteTemp("bad.jsonl", "{\"n\": 1e7, \"d\": 1e9, \"loss\": 3.1}\n{\"n\": 2e7,\n");
  EXPECT_EQ(ReadObservations(p1).status().message().rfind(
                p1 + ":2: not a JSON object (JSON lines: one per line): ", 0),
            0u)
      << ReadObservations(p1).status().message();
  auto p2 = WriteTemp("bad.json", R"([{"n": 1e7, "d": 1e9, "loss": 3.1}, {"n": 2e7, "d": 1e9}])");
  EXPECT_EQ(ReadObservations(p2).status().message(),
            p2 + ": object 2: column 'loss': missing value");
  auto p3 = WriteTemp("bad3.json", R"([{"n": 1e7, "d": 1e9, "loss": "three"}])");
  EXPECT_EQ(ReadObservations(p3).status().message(),
            p3 + ": object 1: column 'loss': 'three' is not a number");
  auto p4 = WriteTemp("bad4.json", "[1, 2]");
  EXPECT_NE(ReadObservations(p4).status().message().find(p4 + ": object 1: expected an object"),
            std::string::npos);
  auto p5 = WriteTemp("bad5.json", "[{\"n\": 1");
  EXPECT_NE(ReadObservations(p5).status().message().find(p5 + ": not valid JSON"),
            std::string::npos);
  // Keys are columns without case: a second spelling of one must not replace the first.
  auto p6 = WriteTemp("bad6.jsonl", "{\"n\": 1e7, \"d\": 1e9, \"Loss\": 3.1, \"loss\": 2.9}\n");
  EXPECT_EQ(ReadObservations(p6).status().message(),
            p6 + ":1: keys 'Loss' and 'loss' name the same column (case is ignored); keep one");
}

}  // namespace
}  // namespace isoflop::store
