// End-to-end tests of `isoflop` through the real binary: import the Chinchilla CSV and
// export it back, db info, listing formats, and one-line errors with the right exit codes.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "e2e_util.h"

namespace isoflop::testing {
namespace {

const std::string kChinchilla =
    std::string(ISOFLOP_DATA_DIR) + "/chinchilla/svg_extracted_data.csv";

std::vector<std::vector<std::string>> ParseCsv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ls(line);
    std::string cell;
    while (std::getline(ls, cell, ',')) f.push_back(cell);
    if (!line.empty() && line.back() == ',') f.push_back("");  // a trailing empty field
    rows.push_back(f);
  }
  return rows;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("cli");
    db_ = dir_ + "/store.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  CommandResult Isoflop(std::vector<std::string> args) {
    args.insert(args.begin(), {Binary("isoflop"), "--db", db_});
    return RunCommand(args);
  }
  std::string dir_, db_;
};

TEST_F(CliTest, ImportChinchillaThenExportMatchesTheSource) {
  auto imp = Isoflop({"import", kChinchilla, "--name", "chinchilla"});
  ASSERT_EQ(imp.exit_code, 0) << imp.err;
  EXPECT_NE(imp.out.find("imported 245 observations"), std::string::npos) << imp.out;

  auto exp = Isoflop({"export", "--observations", "chinchilla", "--format", "csv"});
  ASSERT_EQ(exp.exit_code, 0) << exp.err;
  auto rows = ParseCsv(exp.out);
  ASSERT_EQ(rows.size(), 246u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"n", "d", "c", "loss", "line", "g", "budget"}));

  auto src = ParseCsv([&] {
    std::ifstream f(kChinchilla);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }());
  ASSERT_EQ(src.size(), 246u);
  for (size_t i = 1; i < src.size(); ++i) {
    double n = std::stod(src[i][3]), c = std::stod(src[i][4]), loss = std::stod(src[i][6]);
    EXPECT_EQ(std::stod(rows[i][0]), n) << "row " << i;  // exact: full precision round trip
    EXPECT_EQ(std::stod(rows[i][2]), c) << "row " << i;
    EXPECT_EQ(std::stod(rows[i][3]), loss) << "row " << i;
    EXPECT_DOUBLE_EQ(std::stod(rows[i][1]), c / (6 * n)) << "row " << i;
    EXPECT_EQ(rows[i][4], std::to_string(i + 1));
    EXPECT_EQ(rows[i][5], "");  // the Chinchilla data have no MoE granularity
  }

  // The export imports again as the same set, its empty budget cells read as "none".
  std::ofstream(dir_ + "/exported.csv") << exp.out;
  const std::string db2 = dir_ + "/again.db";
  auto again = RunCommand(
      {Binary("isoflop"), "--db", db2, "import", dir_ + "/exported.csv", "--name", "chinchilla"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("imported 245 observations"), std::string::npos) << again.out;
  auto exp2 = RunCommand({Binary("isoflop"), "--db", db2, "export", "--observations", "chinchilla",
                          "--format", "csv"});
  ASSERT_EQ(exp2.exit_code, 0) << exp2.err;
  auto rows2 = ParseCsv(exp2.out);
  ASSERT_EQ(rows2.size(), rows.size());
  for (size_t i = 1; i < rows.size(); ++i) {
    EXPECT_EQ(rows2[i][0], rows[i][0]) << "row " << i;  // n, d, c, loss at full precision
    EXPECT_EQ(rows2[i][1], rows[i][1]) << "row " << i;
    EXPECT_EQ(rows2[i][2], rows[i][2]) << "row " << i;
    EXPECT_EQ(rows2[i][3], rows[i][3]) << "row " << i;
    EXPECT_EQ(rows2[i][5], "") << "row " << i;
    EXPECT_EQ(rows2[i][6], "") << "row " << i;
  }

  auto json = Isoflop({"export", "--observations", "chinchilla", "--format", "json"});
  ASSERT_EQ(json.exit_code, 0);
  EXPECT_NE(json.out.find("\"loss\": 5.005581996196243"), std::string::npos);

  auto info = Isoflop({"db", "info"});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("observations      245"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("schema_version"), std::string::npos);

  auto sets = Isoflop({"observations", "--format", "csv"});
  ASSERT_EQ(sets.exit_code, 0) << sets.err;
  EXPECT_NE(sets.out.find(",chinchilla,245," + kChinchilla + ","), std::string::npos) << sets.out;

  // Importing the same name again is refused; nothing changes.
  auto dup = Isoflop({"import", kChinchilla, "--name", "chinchilla"});
  EXPECT_EQ(dup.exit_code, 1);
  EXPECT_NE(dup.err.find("already exists"), std::string::npos) << dup.err;
}

TEST_F(CliTest, BadCsvImportsNothingAndNamesTheLine) {
  std::string path = dir_ + "/bad.csv";
  {
    std::ofstream f(path);
    f << "Model Size,Training FLOP,loss\n";
    for (int line = 2; line < 37; ++line) f << "1e8,1e18,3.0\n";
    f << "1e8,1e18,three\n";
  }
  auto r = Isoflop({"import", path, "--name", "bad"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "isoflop: error: " + path + ":37: column 'loss': 'three' is not a number\n");
  EXPECT_FALSE(std::filesystem::exists(db_)) << "a failed import must not create the store";

  std::string hdr = dir_ + "/hdr.csv";
  std::ofstream(hdr) << "a,b,c\n1,2,3\n";
  auto h = Isoflop({"import", hdr, "--name", "h"});
  EXPECT_EQ(h.exit_code, 1);
  EXPECT_NE(h.err.find(hdr + ":1: no recognised N (parameters) column in header [a, b, c]"),
            std::string::npos)
      << h.err;
  auto named = Isoflop(
      {"import", hdr, "--name", "h", "--n-column", "a", "--d-column", "b", "--loss-column", "c"});
  EXPECT_EQ(named.exit_code, 0) << named.err;
}

TEST_F(CliTest, MissingAndCorruptStoresAreOneLineErrors) {
  auto missing = Isoflop({"runs"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find(db_ + ": no such database"), std::string::npos) << missing.err;
  EXPECT_EQ(std::count(missing.err.begin(), missing.err.end(), '\n'), 1);

  std::ofstream(db_) << std::string(4096, 'x');
  auto corrupt = Isoflop({"db", "info"});
  EXPECT_EQ(corrupt.exit_code, 1);
  EXPECT_NE(corrupt.err.find("not a readable isoflop database"), std::string::npos) << corrupt.err;
  EXPECT_EQ(std::count(corrupt.err.begin(), corrupt.err.end(), '\n'), 1);
}

TEST_F(CliTest, UsageErrorsExitWithTwoAndHelpWithZero) {
  EXPECT_EQ(Isoflop({"no-such-command"}).exit_code, 2);
  EXPECT_EQ(Isoflop({"runs", "--format"}).exit_code, 2);
  auto help = RunCommand({Binary("isoflop"), "--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* cmd : {"import", "export", "runs", "db", "train"}) {
    EXPECT_NE(help.out.find(cmd), std::string::npos) << cmd;
  }
  auto version = RunCommand({Binary("isoflop"), "--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.out.rfind("isoflop ", 0), 0u) << version.out;
}

// The names a help text lists under "Subcommands:".
std::vector<std::string> SubcommandsOf(const std::string& help) {
  std::vector<std::string> names;
  std::istringstream in(help.substr(std::min(help.size(), help.find("\nSubcommands:\n"))));
  std::string line;
  std::getline(in, line);
  std::getline(in, line);
  while (std::getline(in, line) && line.rfind("  ", 0) == 0) {
    if (line[2] != ' ') names.push_back(line.substr(2, line.find(' ', 2) - 2));
  }
  return names;
}

// Every command's help fits 100 columns (a line runs over only where one word is longer than
// its column), says which options need or exclude which in words after the description, and
// shows types without their validators' text; a positional is named in capitals (FILE).
TEST_F(CliTest, EveryHelpFitsAHundredColumns) {
  std::vector<std::vector<std::string>> commands = {{}};
  const std::string top = RunCommand({Binary("isoflop"), "--help"}).out;
  for (const std::string& c : SubcommandsOf(top)) {
    commands.push_back({c});
    const std::string sub = RunCommand({Binary("isoflop"), c, "--help"}).out;
    for (const std::string& cc : SubcommandsOf(sub)) commands.push_back({c, cc});
  }
  ASSERT_GE(commands.size(), 20u) << top;
  for (const auto& command : commands) {
    std::vector<std::string> args = {Binary("isoflop")};
    args.insert(args.end(), command.begin(), command.end());
    args.push_back("--help");
    auto help = RunCommand(args);
    std::string what;
    for (const auto& a : args) what += a + " ";
    ASSERT_EQ(help.exit_code, 0) << what << help.err;
    std::istringstream in(help.out);
    std::string line;
    while (std::getline(in, line)) {
      if (line.size() > 100) {
        const size_t last_space = line.find_last_of(' ');
        EXPECT_TRUE(last_space != std::string::npos && line.find_first_not_of(' ') >= last_space)
            << what << "\n"
            << line;
      }
      EXPECT_EQ(line.find("Needs:"), std::string::npos) << what << "\n" << line;
      EXPECT_EQ(line.find("Excludes:"), std::string::npos) << what << "\n" << line;
      EXPECT_EQ(line.find(":NONNEGATIVE"), std::string::npos) << what << "\n" << line;
    }
  }
  const std::string plan = RunCommand({Binary("isoflop"), "sweep", "plan", "--help"}).out;
  EXPECT_NE(plan.find("Usage: isoflop sweep plan [OPTIONS] FILE\n"), std::string::npos) << plan;
  EXPECT_NE(plan.find("\n  FILE REQUIRED               Sweep file (.yaml)\n"), std::string::npos)
      << plan;
  const std::string fit = RunCommand({Binary("isoflop"), "fit", "--help"}).out;
  EXPECT_NE(fit.find("  --n-column TEXT             Column holding N (parameters) (with --csv)\n"),
            std::string::npos)
      << fit;
}

TEST_F(CliTest, EnvironmentSelectsTheStore) {
  std::string other = dir_ + "/env.db";
  auto r = RunCommand({Binary("isoflop"), "import", kChinchilla, "--name", "c"},
                      {"ISOFLOP_DB=" + other});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(other));
  auto runs = RunCommand({Binary("isoflop"), "runs", "--format", "csv"}, {"ISOFLOP_DB=" + other});
  EXPECT_EQ(runs.exit_code, 0) << runs.err;
  EXPECT_EQ(runs.out.rfind("id,sweep,cell,status", 0), 0u) << runs.out;
}

TEST_F(CliTest, TrainForwardsToTheWorkerBinary) {
  const std::string out = dir_ + "/run";
  auto r = Isoflop({"train", "--out",          out,         "--n-layer",     "1",  "--d-model",
                    "16",    "--n-head",       "2",         "--seq-len",     "16", "--tokens",
                    "4096",  "--batch-tokens", "256",       "--micro-batch", "16", "--eval-tokens",
                    "512",   "--data",         "synthetic", "--threads",     "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(out + "/run.json"));
  std::ifstream status(out + "/status.json");
  std::stringstream ss;
  ss << status.rdbuf();
  EXPECT_NE(ss.str().find("\"finished\""), std::string::npos) << ss.str();
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << "progress lines on stderr: " << r.err;
  // Its exit codes come through unchanged: a bad shape is a config error (2).
  auto bad = Isoflop({"train", "--out", dir_ + "/bad", "--d-model", "30", "--n-head", "4",
                      "--tokens", "4096", "--data", "synthetic"});
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_NE(bad.err.find("n_head"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace isoflop::testing
