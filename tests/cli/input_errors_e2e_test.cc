// End-to-end tests of the one error boundary through the real `isoflop` binary: hostile or
// mistaken inputs (huge or reversed ranges, negative counts, unknown names, duplicate CSV
// headers, FIFOs, stored fits with mistyped fields, a 25k-character sweep name) each end in a
// one-line message naming the option, field or file and a plain exit code, never a crash, a
// hang or a silently stored nonsense value.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "e2e_util.h"
#include "isoflop/store/store.h"

namespace isoflop::testing {
namespace {

namespace fs = std::filesystem;

const std::string kChinchilla =
    std::string(ISOFLOP_DATA_DIR) + "/chinchilla/svg_extracted_data.csv";
const std::string kLaw = "E=1.69,A=406.4,B=410.7,alpha=0.34,beta=0.28";

void WriteFile(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

struct ErrorCase {
  std::string label;
  std::vector<std::string> args;  // after `isoflop --db STORE`
  int exit_code;
  std::string message;  // the whole of stderr
};

class InputErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("input_errors");
    db_ = dir_ + "/store.db";
  }
  void TearDown() override { fs::remove_all(dir_); }
  CommandResult Isoflop(std::vector<std::string> args) {
    args.insert(args.begin(), {Binary("isoflop"), "--db", db_});
    return RunCommand(args, {}, dir_);
  }
  void ExpectErrors(const std::vector<ErrorCase>& cases) {
    for (const auto& c : cases) {
      CommandResult r = Isoflop(c.args);
      EXPECT_EQ(r.exit_code, c.exit_code) << c.label << "\n" << r.err;
      EXPECT_EQ(r.err, c.message) << c.label;
    }
  }
  std::string dir_, db_;
};

TEST_F(InputErrorsTest, OptimalOptionsAreCheckedAndBounded) {
  ExpectErrors({
      // 1e8 budgets allocated gigabytes and died of std::bad_alloc.
      {"huge count",
       {"optimal", "--compute-range", "1e12:1e15:100000000", "--given", kLaw},
       2,
       "isoflop: error: --compute-range: COUNT '100000000' must be a whole number of "
       "budgets from 1 to 10000\n"},
      {"fractional count",
       {"optimal", "--compute-range", "1e12:1e15:2.5", "--given", kLaw},
       2,
       "isoflop: error: --compute-range: COUNT '2.5' must be a whole number of budgets from "
       "1 to 10000\n"},
      {"descending range",
       {"optimal", "--compute-range", "1e15:1e12:3", "--given", kLaw},
       2,
       "isoflop: error: --compute-range: HI 1e12 is below LO 1e15; expected LO:HI:COUNT "
       "with LO <= HI\n"},
      {"negative inference tokens",
       {"optimal", "--compute", "1e21", "--inference-tokens", "-1", "--given", kLaw},
       2,
       "isoflop: error: --inference-tokens: expected a number of tokens >= 0 (0 = no "
       "inference), got -1\n"},
      {"zero params",  // 0 was taken for "not asked": "give --compute, ..."
       {"optimal", "--params", "0", "--given", kLaw},
       2,
       "isoflop: error: --params: expected a number of parameters > 0, got 0\n"},
      {"zero loss",
       {"optimal", "--loss", "0", "--given", kLaw},
       2,
       "isoflop: error: --loss: expected a loss > 0, got 0\n"},
      {"negative fit id",
       {"optimal", "--compute", "1e21", "--fit", "-1"},
       2,
       "isoflop: error: --fit: expected a stored fit id >= 1 (see `isoflop fits`), got -1\n"},
      {"unknown law parameter",
       {"optimal", "--compute", "1e21", "--given", kLaw + std::string(",Q=2")},
       2,
       "isoflop: error: --given: 'Q' is not a parameter of the law (E, A, B, alpha, beta)\n"},
      {"law parameter twice",
       {"optimal", "--compute", "1e21", "--given", std::string("E=2,") + kLaw},
       2,
       "isoflop: error: --given: E given twice\n"},
      {"fit id zero",
       {"optimal", "--compute", "1e21", "--fit", "0"},
       2,
       "isoflop: error: --fit: expected a stored fit id >= 1 (see `isoflop fits`), got 0\n"},
  });
  // The largest count still answers, one row per budget.
  CommandResult most = Isoflop(
      {"optimal", "--compute-range", "1e19:1e23:10000", "--given", kLaw, "--format", "csv"});
  ASSERT_EQ(most.exit_code, 0) << most.err;
  EXPECT_EQ(std::count(most.out.begin(), most.out.end(), '\n'), 10001);
}

// A command line that cannot mean anything is a usage error (exit 2), found before any work:
// an unknown command, a flag value outside its choices or range, a query or source not given.
TEST_F(InputErrorsTest, UsageErrorsExitTwo) {
  const std::string more = "Run with --help for more information.\n";
  ExpectErrors({
      {"unknown command",
       {"fitt"},
       2,
       "isoflop: error: unknown command 'fitt' for isoflop (expected one of sweep, sweeps, "
       "train, runs, fit, fits, optimal, import, observations, export, curves, plot, serve, db; "
       "see `isoflop --help`)\n"},
      {"unknown sweep command",
       {"sweep", "stat"},
       2,
       "isoflop: error: unknown command 'stat' for isoflop sweep (expected one of plan, run, "
       "sync, status, retry, cancel; see `isoflop sweep --help`)\n"},
      {"unknown method",
       {"fit", "--observations", "x", "--method", "parabolic"},
       2,
       "--method: expected parametric, isoflop, envelope or all, not 'parabolic'\n" + more},
      {"fit has no csv format",
       {"fit", "--observations", "x", "--format", "csv"},
       2,
       "--format: expected table or json, not 'csv'\n" + more},
      {"unknown form",
       {"fit", "--form", "hoffmann"},
       2,
       "--form: expected chinchilla, kaplan or moe, not 'hoffmann'\n" + more},
      {"port out of range",
       {"serve", "--port", "70000"},
       2,
       "--port: Value 70000 not in range 0 to 65535\n" + more},
      {"negative max-parallel",  // -1 was taken for "not given"
       {"sweep", "run", "x.yaml", "--max-parallel", "-1"},
       2,
       "--max-parallel: Value -1 not in range 0 to 4096\n" + more},
      {"no query",
       {"optimal", "--fit", "1"},
       2,
       "isoflop: error: give --compute, --compute-range, --params or --loss\n"},
      {"no source",
       {"curves"},
       2,
       "isoflop: error: give exactly one of --fit ID, --sweep NAME or --observations NAME\n"},
  });
  EXPECT_FALSE(fs::exists(db_));  // nothing was opened, let alone created
}

TEST_F(InputErrorsTest, NamesAndNumbersThatWouldBeStoredWrongAreRefused) {
  const std::string k_csv = dir_ + "/c.csv";
  WriteFile(k_csv, "n,c,loss\n1e6,6e13,3\n2e6,2.4e14,2.9\n");
  const std::string dup = dir_ + "/dup.csv";
  WriteFile(dup, "n,d,loss,loss\n1e6,1e7,3,2\n");
  ASSERT_EQ(Isoflop({"import", kChinchilla, "--name", "chin"}).exit_code, 0);
  ExpectErrors({
      // k = 0 stored D = inf for every point.
      {"zero k",
       {"import", k_csv, "--name", "k", "--flops-per-param-token", "0"},
       1,
       "isoflop: error: --flops-per-param-token: must be a positive finite number (k in C = "
       "k N D, 6 for Hoffmann et al. 2022), got 0\n"},
      {"infinite k",
       {"fit", "--csv", k_csv, "--flops-per-param-token", "inf", "--no-store"},
       1,
       "isoflop: error: --flops-per-param-token: must be a positive finite number (k in C = "
       "k N D, 6 for Hoffmann et al. 2022), got inf\n"},
      {"duplicate header on import",
       {"import", dup, "--name", "dup"},
       1,
       "isoflop: error: " + dup +
           ":1: duplicate column 'loss' (columns 3 and 4); rename or remove one\n"},
      {"duplicate header on fit",
       {"fit", "--csv", dup, "--no-store"},
       1,
       "isoflop: error: " + dup +
           ":1: duplicate column 'loss' (columns 3 and 4); rename or remove one\n"},
      // It was stored as a fit of convention 'bogus'.
      {"unknown convention",
       {"fit", "--observations", "chin", "--convention", "bogus"},
       1,
       "isoflop: error: convention: 'bogus' is not one of total, non_embedding, active (the "
       "parameter count N of the observations)\n"},
      // A typo listed nothing, like an empty sweep.
      {"unknown run state",
       {"runs", "--status", "bogus"},
       2,
       "--status: expected planned, running, finished, failed, diverged, preempted or "
       "cancelled, not 'bogus'\nRun with --help for more information.\n"},
      {"unknown run state on export",
       {"export", "--status", "finshed"},
       2,
       "--status: expected planned, running, finished, failed, diverged, preempted or "
       "cancelled, not 'finshed'\nRun with --help for more information.\n"},
  });
  CommandResult sets = Isoflop({"observations", "--format", "csv"});
  ASSERT_EQ(sets.exit_code, 0) << sets.err;
  EXPECT_EQ(sets.out.find("dup"), std::string::npos) << sets.out;  // nothing imported
  CommandResult fits = Isoflop({"fits", "--format", "csv"});
  ASSERT_EQ(fits.exit_code, 0) << fits.err;
  EXPECT_EQ(fits.out.find("bogus"), std::string::npos) << fits.out;  // nothing stored
  EXPECT_EQ(Isoflop({"runs", "--status", "finished"}).exit_code, 0);
}

TEST_F(InputErrorsTest, AFifoIsNotADataFile) {
  const std::string fifo = dir_ + "/points.csv";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string sweep_fifo = dir_ + "/sweep.yaml";
  ASSERT_EQ(::mkfifo(sweep_fifo.c_str(), 0600), 0);
  struct Case {
    std::vector<std::string> args;
    std::string fifo, message;
  };
  const std::vector<Case> cases = {
      {{"import", fifo, "--name", "f"},
       fifo,
       "isoflop: error: " + fifo + ": not a regular file (give the CSV file itself)\n"},
      {{"fit", "--csv", fifo, "--no-store"},
       fifo,
       "isoflop: error: " + fifo + ": not a regular file (give the CSV file itself)\n"},
      {{"sweep", "plan", sweep_fifo, "--no-probe"},
       sweep_fifo,
       "isoflop: error: " + sweep_fifo + ": not a regular file (give the sweep file itself)\n"},
  };
  for (const auto& c : cases) {
    CommandResult r;
    {
      FifoWriter writer(c.fifo);  // today's reader sees an empty file instead of hanging
      r = Isoflop(c.args);
    }
    EXPECT_EQ(r.exit_code, 1) << c.args[0] << "\n" << r.err;
    EXPECT_EQ(r.err, c.message) << c.args[0];
  }
}

// A token id the model cannot embed is found before anything launches, by `sweep plan` and by
// `sweep run`, named where the sweep file sets the data file, with the id and its position:
// not by every run failing in turn.
TEST_F(InputErrorsTest, ATokenIdBeyondTheVocabularyStopsTheSweepBeforeAnyRun) {
  auto write_bin = [](const std::string& path, int n, int at, uint16_t big) {
    std::ofstream f(path, std::ios::binary);
    for (int i = 0; i < n; ++i) {
      const uint16_t v = i == at ? big : static_cast<uint16_t>(i % 100);
      f.put(static_cast<char>(v & 0xff)).put(static_cast<char>(v >> 8));
    }
  };
  write_bin(dir_ + "/train.bin", 20000, 12345, 300);
  write_bin(dir_ + "/val.bin", 2000, -1, 0);
  const std::string yaml = dir_ + "/sweep.yaml";
  WriteFile(yaml,
            "name: vocab\n"
            "data: {source: bin, train: train.bin, val: val.bin}\n"
            "model:\n  vocab_size: 300\n  seq_len: 16\n"
            "  ladder:\n    - {n_layer: 1, d_model: 16, n_head: 2}\n"
            "budgets: [1e8]\ntrain: {batch_tokens: 64}\nexecutor: {cpus_per_run: 1}\n");
  const std::string train = (fs::path(dir_) / "train.bin").lexically_normal().string();
  const std::string expected_head = "isoflop: error: " + yaml + ":2:";
  const std::string expected_body = ": data.train: " + train +
                                    ": token id 300 at token 12345 is >= model.vocab_size 300; "
                                    "raise model.vocab_size to the tokenizer's vocabulary (the "
                                    "trainer would refuse cell ";
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"sweep", "plan", yaml, "--no-probe"},
        std::vector<std::string>{"sweep", "run", yaml, "--no-probe", "--no-plot"}}) {
    CommandResult r = Isoflop(args);
    EXPECT_EQ(r.exit_code, 1) << args[1] << "\n" << r.out << r.err;
    EXPECT_EQ(r.err.rfind(expected_head, 0), 0u) << r.err;
    EXPECT_NE(r.err.find(expected_body), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  // Nothing ran: no run folder, no run in the store; the store remembers the scan.
  EXPECT_FALSE(fs::exists(dir_ + "/runs")) << "a run folder was made";
  auto db = store::Store::Open(db_);
  ASSERT_TRUE(db.ok()) << db.status().message();
  EXPECT_TRUE((*db)->ListRuns()->empty());
  auto scan = (*db)->GetTokenFile(train, "bin");
  ASSERT_TRUE(scan.ok() && scan->has_value());
  EXPECT_EQ((*scan)->max_id, 300);
  EXPECT_EQ((*scan)->max_at, 12345);
  db->reset();
  // One id more and the plan stands (from the remembered scan).
  CommandResult ok =
      Isoflop({"sweep", "plan", yaml, "--no-probe", "--set", "model.vocab_size=301"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

// A stored fit is data another version or a hand edit may have left incomplete: a missing or
// mistyped field is an error naming the fit, not a crash (a json::type_error used to abort).
TEST_F(InputErrorsTest, StoredFitsWithMissingOrMistypedFieldsAreErrors) {
  int64_t bad_draws = 0, missing_param = 0;
  {
    auto db = store::Store::Open(db_);
    ASSERT_TRUE(db.ok()) << db.status().message();
    store::FitRecord row;
    row.source_kind = "observations";
    row.source_name = "hand";
    row.method = "parametric";
    row.form = "chinchilla";
    row.params_json = R"({"E":1.69,"A":406.4,"B":410.7,"alpha":0.34,"beta":0.28})";
    row.result_json =
        R"({"bootstrap":{"resamples":1,"failed":0,"seconds":0,"draws":[[1,2,3,0.3,"x"]]}})";
    auto id = (*db)->InsertFit(row);
    ASSERT_TRUE(id.ok()) << id.status().message();
    bad_draws = *id;
    row.params_json = R"({"E":1.69,"A":406.4,"alpha":0.34,"beta":0.28})";
    row.result_json = "{}";
    id = (*db)->InsertFit(row);
    ASSERT_TRUE(id.ok()) << id.status().message();
    missing_param = *id;
  }
  ExpectErrors({
      {"mistyped draw",
       {"optimal", "--compute", "1e21", "--fit", std::to_string(bad_draws)},
       1,
       "isoflop: error: stored fit " + std::to_string(bad_draws) +
           ": fit JSON: array 'draws' holds \"x\", not a number\n"},
      {"missing parameter",
       {"optimal", "--compute", "1e21", "--fit", std::to_string(missing_param)},
       1,
       "isoflop: error: stored fit " + std::to_string(missing_param) +
           ": no finite value for parameter 'B' of the chinchilla form\n"},
  });
}

// A long name crashed the sweep-file parser (std::regex recursion: 300k characters segfault,
// 25k were accepted as a folder name no file system takes); the message names the file, line
// and field.
TEST_F(InputErrorsTest, AnOverlongSweepNameIsAnErrorNotACrash) {
  const std::string file = dir_ + "/long.yaml";
  WriteFile(file, "name: " + std::string(300000, 'a') +
                      "\ndata: {source: synthetic}\nmodel:\n  vocab_size: 32\n  seq_len: 32\n"
                      "  ladder:\n    - {n_layer: 1, d_model: 16, n_head: 2}\nbudgets: [1e9]\n");
  CommandResult r = Isoflop({"sweep", "plan", file, "--no-probe"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.err, "isoflop: error: " + file +
                       ":1:7: name: expected at most 255 bytes (it names the run folder), got "
                       "300000\n");
}

// An exception no command turned into a Status (here nlohmann::json refusing to write a store
// path that is not UTF-8) is one line and exit code 1 at main's boundary, not an abort.
TEST_F(InputErrorsTest, AnExceptionInACommandIsAnInternalErrorWithExitCodeOne) {
  const std::string odd_db = dir_ + "/store-\xff.db";
  const std::string csv = dir_ + "/p.csv";
  WriteFile(csv, "n,d,loss\n1e6,1e7,3\n");
  CommandResult made =
      RunCommand({Binary("isoflop"), "--db", odd_db, "import", csv, "--name", "p"}, {}, dir_);
  ASSERT_EQ(made.exit_code, 0) << made.err;
  CommandResult r =
      RunCommand({Binary("isoflop"), "--db", odd_db, "db", "info", "--format", "json"}, {}, dir_);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.err.rfind("isoflop: internal error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("invalid UTF-8"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;  // one line
}

// Mutation fuzzing of the two files users write or bring (seeded, so every run tries the same
// cases): every ready sweep file under sweeps/ and the Chinchilla CSV, each with one to three
// lines damaged (a value swapped for a hostile token, a line dropped, doubled, indented or cut,
// a stray character). Each case must either work (a sweep plan is then one valid JSON
// document) or end with exit status 1 and one "isoflop: error: FILE:..." message naming the
// damaged file: never a crash, a hang, an internal error or a message without its file.
std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::string Damage(std::vector<std::string> lines, std::mt19937_64& rng,
                   const std::vector<std::string>& tokens, char sep) {
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  const int edits = 1 + static_cast<int>(pick(3));
  for (int e = 0; e < edits && !lines.empty(); ++e) {
    const size_t i = pick(lines.size());
    std::string& l = lines[i];
    switch (pick(6)) {
      case 0:
      case 1: {  // a value swapped for a hostile token
        const size_t at = l.rfind(sep);
        l = (at == std::string::npos ? l : l.substr(0, at + 1)) + (sep == ':' ? " " : "") +
            tokens[pick(tokens.size())];
        break;
      }
      case 2:
        lines.erase(lines.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      case 3:
        lines.insert(lines.begin() + static_cast<std::ptrdiff_t>(i), lines[pick(lines.size())]);
        break;
      case 4:
        l.insert(pick(l.size() + 1), 1, " :-[]{}#'\",\t"[pick(12)]);
        break;
      default:
        l = sep == ':' ? "  " + l : l.substr(0, pick(l.size() + 1));
        break;
    }
  }
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

TEST_F(InputErrorsTest, DamagedSweepFilesAndCsvsAreClearErrorsNeverCrashes) {
  const std::vector<std::string> tokens = {"-1",
                                           "0",
                                           "1e400",
                                           "nan",
                                           ".inf",
                                           "abc",
                                           "[]",
                                           "{}",
                                           "null",
                                           "~",
                                           "1e-400",
                                           "3.5",
                                           "99999999999999999999",
                                           "true",
                                           "''",
                                           "[1, 2]",
                                           "{a: 1}",
                                           "!!binary aGk=",
                                           "*x",
                                           "0x10",
                                           "1_000",
                                           "\"\"",
                                           ",",
                                           "é"};
  std::mt19937_64 rng(20261204);
  std::vector<std::string> sweeps;
  for (const auto& f : fs::directory_iterator(std::string(ISOFLOP_SOURCE_DIR) + "/sweeps"))
    if (f.path().extension() == ".yaml") sweeps.push_back(f.path().string());
  std::sort(sweeps.begin(), sweeps.end());
  ASSERT_GE(sweeps.size(), 3u);
  const std::string yaml = dir_ + "/damaged.yaml", csv = dir_ + "/damaged.csv";
  const std::string chinchilla = Slurp(kChinchilla);
  int worked = 0, refused = 0;
  for (int k = 0; k < 400; ++k) {
    const bool sweep = k % 2 == 0;
    const std::string& file = sweep ? yaml : csv;
    const std::string text =
        sweep ? Damage(Lines(Slurp(sweeps[rng() % sweeps.size()])), rng, tokens, ':')
              : Damage(Lines(chinchilla), rng, tokens, ',');
    WriteFile(file, text);
    CommandResult r = sweep ? Isoflop({"sweep", "plan", yaml, "--no-probe", "--format", "json"})
                            : Isoflop({"import", csv, "--name", "damaged", "--replace"});
    const std::string what = "case " + std::to_string(k) + ":\n" + text;
    if (r.exit_code == 0) {
      ++worked;
      if (sweep) {
        EXPECT_TRUE(nlohmann::json::accept(r.out)) << what << r.out;
      }
      continue;
    }
    ++refused;
    EXPECT_EQ(r.exit_code, 1) << what << r.err;
    EXPECT_EQ(r.err.rfind("isoflop: error: " + file, 0), 0u) << what << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << what << r.err;
    EXPECT_EQ(r.err.find("internal error"), std::string::npos) << what << r.err;
  }
  // Both outcomes occur: the damage is neither always harmless nor always fatal.
  EXPECT_GT(worked, 10);
  EXPECT_GT(refused, 150);
}

}  // namespace
}  // namespace isoflop::testing
