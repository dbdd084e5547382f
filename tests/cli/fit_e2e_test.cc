// End-to-end tests of `isoflop fit`, `isoflop fits` and `isoflop optimal` through the real
// binary on the real Chinchilla data (Besiroglu et al. 2024's extraction of Hoffmann et al.
// 2022, Figure 4), and of the fine-grained MoE law on imported data with a granularity column.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <sstream>

#include "e2e_util.h"

namespace isoflop::testing {
namespace {

const std::string kChinchilla =
    std::string(ISOFLOP_DATA_DIR) + "/chinchilla/svg_extracted_data.csv";

class FitCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(TempDir("fitcli"));
    db_ = new std::string(*dir_ + "/store.db");
    auto r = RunCommand({Binary("isoflop"), "--db", *db_, "import", kChinchilla, "--name", "chin"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() { std::filesystem::remove_all(*dir_); }
  static CommandResult Isoflop(std::vector<std::string> args) {
    args.insert(args.begin(), {Binary("isoflop"), "--db", *db_});
    return RunCommand(args);
  }
  static std::string* dir_;
  static std::string* db_;
};
std::string* FitCliTest::dir_ = nullptr;
std::string* FitCliTest::db_ = nullptr;

TEST_F(FitCliTest, ParametricFitOnChinchillaIsStoredAndQueried) {
  auto fit = Isoflop({"fit", "--observations", "chin", "--exclude-top-loss", "5", "--bootstrap",
                      "50", "--format", "json"});
  ASSERT_EQ(fit.exit_code, 0) << fit.err;
  auto j = nlohmann::json::parse(fit.out);
  // The best summed-Huber objective known for these 240 points (scipy L-BFGS-B over the same
  // grid agrees to 10 digits; bench/fit).
  EXPECT_NEAR(j["objective"].get<double>(), 1.018274e-3, 1e-8);
  EXPECT_EQ(j["n_points"], 240);
  EXPECT_NEAR(j["params"]["E"].get<double>(), 1.817, 1.817 * 0.005);
  EXPECT_NEAR(j["params"]["alpha"].get<double>(), 0.348, 0.348 * 0.005);
  EXPECT_NEAR(j["params"]["beta"].get<double>(), 0.366, 0.366 * 0.01);
  ASSERT_TRUE(j["ci"].contains("E"));
  EXPECT_LT(j["ci"]["E"]["lo"].get<double>(), j["params"]["E"].get<double>());
  EXPECT_GT(j["ci"]["E"]["hi"].get<double>(), j["params"]["E"].get<double>());

  auto fits = Isoflop({"fits", "--format", "csv"});
  ASSERT_EQ(fits.exit_code, 0) << fits.err;
  EXPECT_NE(fits.out.find("observations:chin,parametric,chinchilla"), std::string::npos)
      << fits.out;

  auto opt = Isoflop({"optimal", "--compute", "1e21", "--format", "json"});
  ASSERT_EQ(opt.exit_code, 0) << opt.err;
  auto o = nlohmann::json::parse(opt.out);
  ASSERT_EQ(o.size(), 1u);
  EXPECT_EQ(o[0]["compute"].get<double>(), 1e21);
  const double n = o[0]["n_opt"].get<double>(), d = o[0]["d_opt"].get<double>();
  EXPECT_NEAR(6 * n * d / 1e21, 1.0, 1e-9);  // on the budget, C = 6ND
  EXPECT_LT(o[0]["n_lo"].get<double>(), n);
  EXPECT_GT(o[0]["n_hi"].get<double>(), n);

  // The same answer when the source is named instead of taking the latest fit.
  auto named =
      Isoflop({"optimal", "--observations", "chin", "--compute", "1e21", "--format", "json"});
  ASSERT_EQ(named.exit_code, 0) << named.err;
  EXPECT_EQ(nlohmann::json::parse(named.out)[0]["n_opt"].get<double>(), n);
  auto none = Isoflop({"optimal", "--sweep", "absent", "--compute", "1e21"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("no parametric fit of sweep 'absent'"), std::string::npos) << none.err;
}

// `optimal` answers from every stored bootstrap draw (all 300 after --bootstrap 300, not the
// first 200), so its interval at C = 1e21 is the fit's own N_opt@1e+21 interval.
TEST_F(FitCliTest, OptimalUsesEveryBootstrapDraw) {
  auto fit = Isoflop({"fit", "--observations", "chin", "--exclude-top-loss", "5", "--bootstrap",
                      "300", "--format", "json"});
  ASSERT_EQ(fit.exit_code, 0) << fit.err;
  const auto j = nlohmann::json::parse(fit.out);
  const auto& boot = j["result"]["bootstrap"];
  EXPECT_EQ(boot["draws"].size() + boot.value("failed", 0) + boot.value("non_finite", 0), 300u)
      << boot.dump().substr(0, 300);
  auto opt = Isoflop({"optimal", "--fit", std::to_string(j["id"].get<int64_t>()), "--compute",
                      "1e21", "--format", "json"});
  ASSERT_EQ(opt.exit_code, 0) << opt.err;
  const auto o = nlohmann::json::parse(opt.out)[0];
  const auto& ci = j["ci"]["N_opt@1e+21"];
  EXPECT_NEAR(o["n_lo"].get<double>(), ci["lo"].get<double>(), 1e-9 * ci["lo"].get<double>());
  EXPECT_NEAR(o["n_hi"].get<double>(), ci["hi"].get<double>(), 1e-9 * ci["hi"].get<double>());
}

// `optimal` against numpy over the fit's own bootstrap draws: the closed form (DESIGN.md:
// G = (αA/(βB))^(1/(α+β)), N_opt = G·(C/6)^(β/(α+β)), D_opt = C/(6·N_opt)), the law's loss
// there, and numpy.percentile's 2.5% and 97.5% of each across the draws; and the fit's own
// exponent intervals against numpy.percentile of the draws' α and β. All to 1e-9 relative.
TEST_F(FitCliTest, OptimalAndIntervalsAgreeWithNumpyOverTheDraws) {
  auto fit = Isoflop({"fit", "--observations", "chin", "--exclude-top-loss", "5", "--bootstrap",
                      "200", "--seed", "5", "--format", "json"});
  ASSERT_EQ(fit.exit_code, 0) << fit.err;
  const std::string fit_json = *dir_ + "/numpy_fit.json";
  std::ofstream(fit_json) << fit.out;
  const auto j = nlohmann::json::parse(fit.out);
  auto opt = Isoflop({"optimal", "--fit", std::to_string(j["id"].get<int64_t>()), "--compute",
                      "5.88e23,1e20", "--format", "json"});
  ASSERT_EQ(opt.exit_code, 0) << opt.err;
  const char kNumpy[] = R"PY(
import json, sys
import numpy as np
fit = json.load(open(sys.argv[1]))
p = fit["params"]
draws = np.array(fit["result"]["bootstrap"]["draws"])  # rows E, A, B, alpha, beta
def optimum(E, A, B, al, be, c):
    g = (al * A / (be * B)) ** (1 / (al + be))
    n = g * (c / 6) ** (be / (al + be))
    d = c / (6 * n)
    return n, d, E + A / n ** al + B / d ** be
out = {"n_draws": len(draws), "alpha": np.percentile(draws[:, 3], [2.5, 97.5]).tolist(),
       "beta": np.percentile(draws[:, 4], [2.5, 97.5]).tolist(), "budgets": []}
for c in map(float, sys.argv[2:]):
    n, d, loss = optimum(p["E"], p["A"], p["B"], p["alpha"], p["beta"], c)
    dn, dd, dl = optimum(draws[:, 0], draws[:, 1], draws[:, 2], draws[:, 3], draws[:, 4], c)
    q = lambda v: np.percentile(v, [2.5, 97.5]).tolist()
    out["budgets"].append({"n_opt": n, "d_opt": d, "loss": loss,
                           "n": q(dn), "d": q(dd), "l": q(dl)})
print(json.dumps(out))
)PY";
  auto py = RunCommand({"/usr/bin/python3", "-c", kNumpy, fit_json, "5.88e23", "1e20"});
  ASSERT_EQ(py.exit_code, 0) << py.err;
  const auto ref = nlohmann::json::parse(py.out);
  EXPECT_EQ(ref["n_draws"].get<size_t>(), j["result"]["bootstrap"]["draws"].size());
  EXPECT_GT(ref["n_draws"].get<int>(), 150);
  const auto near = [](double ours, double theirs, const std::string& what) {
    EXPECT_LT(std::abs(ours - theirs), 1e-9 * std::abs(theirs))
        << what << ": " << ours << " vs " << theirs;
  };
  for (const char* k : {"alpha", "beta"}) {
    near(j["ci"][k]["lo"].get<double>(), ref[k][0].get<double>(), std::string(k) + " lo");
    near(j["ci"][k]["hi"].get<double>(), ref[k][1].get<double>(), std::string(k) + " hi");
  }
  const auto o = nlohmann::json::parse(opt.out);
  ASSERT_EQ(o.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const auto &ours = o[i], &r = ref["budgets"][i];
    const std::string at = " at C=" + ours["compute"].dump();
    near(ours["n_opt"].get<double>(), r["n_opt"].get<double>(), "n_opt" + at);
    near(ours["d_opt"].get<double>(), r["d_opt"].get<double>(), "d_opt" + at);
    near(ours["loss"].get<double>(), r["loss"].get<double>(), "loss" + at);
    near(ours["n_lo"].get<double>(), r["n"][0].get<double>(), "n_lo" + at);
    near(ours["n_hi"].get<double>(), r["n"][1].get<double>(), "n_hi" + at);
    near(ours["d_lo"].get<double>(), r["d"][0].get<double>(), "d_lo" + at);
    near(ours["d_hi"].get<double>(), r["d"][1].get<double>(), "d_hi" + at);
    near(ours["loss_lo"].get<double>(), r["l"][0].get<double>(), "loss_lo" + at);
    near(ours["loss_hi"].get<double>(), r["l"][1].get<double>(), "loss_hi" + at);
  }
}

// `isoflop curves`: one JSON document with what the figures draw, the frontier passing
// through the same N_opt that `optimal` answers (the same fit library, evaluated once).
TEST_F(FitCliTest, CurvesOfAFitAreOneJsonDocumentAgreeingWithOptimal) {
  auto fit = Isoflop({"fit", "--observations", "chin", "--exclude-top-loss", "5", "--bootstrap",
                      "20", "--format", "json"});
  ASSERT_EQ(fit.exit_code, 0) << fit.err;
  const int64_t id = nlohmann::json::parse(fit.out)["id"].get<int64_t>();
  auto curves = Isoflop({"curves", "--fit", std::to_string(id)});
  ASSERT_EQ(curves.exit_code, 0) << curves.err;
  const auto j = nlohmann::json::parse(curves.out);  // throws (fails) unless one valid document
  EXPECT_EQ(j["fit_id"], id);
  const auto& fr = j["parametric"]["frontier"];
  ASSERT_EQ(fr["c"].size(), 200u);
  EXPECT_EQ(j["parametric"]["band"]["draws_used"], 20);
  EXPECT_EQ(j["parametric"]["points"].size(), 245u);
  const double c = fr["c"][120].get<double>();
  char budget[64];
  std::snprintf(budget, sizeof budget, "%.17g", c);
  auto opt =
      Isoflop({"optimal", "--fit", std::to_string(id), "--compute", budget, "--format", "json"});
  ASSERT_EQ(opt.exit_code, 0) << opt.err;
  const double n = nlohmann::json::parse(opt.out)[0]["n_opt"].get<double>();
  EXPECT_NEAR(fr["n_opt"][120].get<double>(), n, 1e-9 * n);
  auto by_source = Isoflop({"curves", "--observations", "chin"});
  ASSERT_EQ(by_source.exit_code, 0) << by_source.err;
  const auto s = nlohmann::json::parse(by_source.out);
  EXPECT_EQ(s["parametric"]["fit_id"], id);
  EXPECT_TRUE(s["envelope"].is_null());
  for (const char* source : {"--sweep", "--observations"}) {
    auto unknown = Isoflop({"curves", source, "nope"});
    EXPECT_EQ(unknown.exit_code, 1) << unknown.out;
    EXPECT_EQ(unknown.out, "");
    EXPECT_NE(unknown.err.find("named 'nope'"), std::string::npos) << unknown.err;
  }
  auto bad = Isoflop({"curves"});
  EXPECT_EQ(bad.exit_code, 2);  // a usage error
  EXPECT_NE(bad.err.find("give exactly one of --fit ID, --sweep NAME or --observations NAME"),
            std::string::npos)
      << bad.err;
}

// --at chooses the budgets of the derived intervals (default for imported data: 1e19, 1e21,
// 1e23); a budget that is not a positive number is a usage error naming the option.
TEST_F(FitCliTest, AtChoosesTheBudgetsOfTheDerivedIntervals) {
  auto plain = Isoflop({"fit", "--observations", "chin", "--exclude-top-loss", "5", "--bootstrap",
                        "20", "--no-store", "--format", "json"});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  const auto pj = nlohmann::json::parse(plain.out);
  for (const char* k : {"N_opt@1e+19", "N_opt@1e+21", "D_opt@1e+23", "loss@1e+21"})
    EXPECT_TRUE(pj["ci"].contains(k)) << k;
  auto at = Isoflop({"fit", "--observations", "chin", "--exclude-top-loss", "5", "--bootstrap",
                     "20", "--no-store", "--format", "json", "--at", "5.88e23,1e25"});
  ASSERT_EQ(at.exit_code, 0) << at.err;
  const auto aj = nlohmann::json::parse(at.out);
  for (const char* k : {"N_opt@5.88e+23", "D_opt@1e+25", "tokens_per_param@5.88e+23", "loss@1e+25"})
    EXPECT_TRUE(aj["ci"].contains(k)) << k;
  EXPECT_FALSE(aj["ci"].contains("N_opt@1e+21"));
  // The point values at those budgets are the closed form's (the same law as without --at).
  const auto& p = aj["params"];
  const double al = p["alpha"], be = p["beta"], a = p["A"], b = p["B"];
  const double g = std::pow(al * a / (be * b), 1 / (al + be));
  const double n = g * std::pow(5.88e23 / 6, be / (al + be));
  EXPECT_NEAR(aj["result"]["derived"]["N_opt@5.88e+23"].get<double>(), n, 1e-9 * n);
  auto bad = Isoflop({"fit", "--observations", "chin", "--at", "1e21,0", "--no-store"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--at: '0' is not a positive number"), std::string::npos) << bad.err;
}

TEST_F(FitCliTest, TableOutputReportsStartsAndTheExtrapolationCheck) {
  auto r = Isoflop({"fit", "--observations", "chin", "--exclude-top-loss", "5", "--no-store"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("fit (not stored): parametric chinchilla, 240 points"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("starts: 4500 total"), std::string::npos) << r.out;
  // The largest budget of the 240 points is one run at C = 1.3e22; the law fitted on the rest
  // predicts its loss within a few percent.
  // The largest budgets of the 240 points hold one run each (C = 1.3e22, 5e21): the check
  // holds out the largest budget with 3 or more runs instead of "predicting its 1 final loss".
  EXPECT_NE(r.out.find("extrapolation check: fitted without the largest budget of 3 or more runs "
                       "(C="),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("its 1 final losses"), std::string::npos) << r.out;
}

TEST_F(FitCliTest, HoffmannRoundedLawAtChinchillaBudget) {
  // Hoffmann et al. 2022's rounded Approach 3 law at Chinchilla's budget. The closed form
  // G = (αA/(βB))^(1/(α+β)) gives N_opt = G·(C/6)^(β/(α+β)) = 3.249e10 and D = C/(6N).
  auto r = Isoflop({"optimal", "--given", "E=1.69,A=406.4,B=410.7,alpha=0.34,beta=0.28",
                    "--compute", "5.88e23", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto o = nlohmann::json::parse(r.out);
  const double g = std::pow(0.34 * 406.4 / (0.28 * 410.7), 1 / 0.62);
  const double n = g * std::pow(5.88e23 / 6, 0.28 / 0.62);
  EXPECT_NEAR(o[0]["n_opt"].get<double>() / n, 1.0, 1e-9);
  EXPECT_NEAR(o[0]["d_opt"].get<double>() / (5.88e23 / (6 * n)), 1.0, 1e-9);
}

// The table prints every size to 4 significant digits with an exponent, small or large: a size
// near 5e3 reads "5.xyze+03", never "5xyz." (what %#.4g gives), so a column reads alike.
TEST_F(FitCliTest, OptimalTablePrintsSizesToFourDigitsWithAnExponent) {
  auto r = Isoflop({"optimal", "--given", "E=1.69,A=406.4,B=410.7,alpha=0.34,beta=0.28",
                    "--compute", "5e8,5.88e23"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line;
  std::getline(lines, line);
  ASSERT_EQ(line.rfind("query", 0), 0u) << r.out;
  std::getline(lines, line);  // the rule under the header
  int rows = 0;
  for (; std::getline(lines, line); ++rows) {
    std::istringstream cells(line);
    std::vector<std::string> c{std::istream_iterator<std::string>(cells), {}};
    ASSERT_GE(c.size(), 8u) << line;
    for (size_t i = 2; i < 8; ++i)  // n_opt n_lo n_hi d_opt d_lo d_hi ("-": no bootstrap)
      if (i == 2 || i == 5 || c[i] != "-")
        EXPECT_TRUE(std::regex_match(c[i], std::regex(R"([1-9]\.[0-9]{3}e[+-][0-9]{2})")))
            << "column " << i << ": " << c[i] << " in\n"
            << r.out;
  }
  EXPECT_EQ(rows, 2) << r.out;
}

TEST_F(FitCliTest, BadFitInputsAreClearErrors) {
  auto missing = Isoflop({"fit", "--observations", "nope"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("no observation set named 'nope'"), std::string::npos) << missing.err;
  std::string tiny = *dir_ + "/tiny.csv";
  {
    std::ofstream f(tiny);
    f << "n,d,loss\n1e6,1e7,3.0\n2e6,1e7,2.9\n";
  }
  auto few = Isoflop({"fit", "--csv", tiny, "--no-store"});
  EXPECT_EQ(few.exit_code, 1);
  EXPECT_NE(few.err.find("point"), std::string::npos) << few.err;
  auto nofit =
      RunCommand({Binary("isoflop"), "--db", *dir_ + "/empty.db", "optimal", "--compute", "1e21"});
  EXPECT_EQ(nofit.exit_code, 1);
  auto bad = Isoflop({"optimal", "--compute", "abc"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--compute: 'abc' is not a positive number"), std::string::npos)
      << bad.err;
}

// The fine-grained MoE law of Krajewski et al. 2024 (eq. 5), L = c + (g/G^γ + a)/N^α + b/D^β,
// with the constants of tests/fit/parametric_test.cc (of the order the paper reports).
struct MoeLaw {
  double c = 1.5, g = 30, a = 20, b = 300, alpha = 0.25, beta = 0.3, gamma = 0.6;
  double Loss(double n, double d, double gran) const {
    return c + (g / std::pow(gran, gamma) + a) / std::pow(n, alpha) + b / std::pow(d, beta);
  }
};

// Writes `path`: the law on a 5x5x5 grid, N = 1e7..1e9, D = 1e8..1e10 (half decades),
// G ∈ {1, 2, 4, 8, 16}, times (1 + 0.3% Gaussian noise) drawn with std::mt19937_64 seeded
// `seed` through Box-Muller (written out so the data do not depend on the standard library's
// normal_distribution). G is in a column named "expert_granularity" (found by --g-column).
void WriteMoeCsv(const std::string& path, const MoeLaw& law, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uniform = [&] { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53; };
  auto gaussian = [&] {
    return std::sqrt(-2 * std::log(uniform())) * std::cos(2 * M_PI * uniform());
  };
  std::ofstream f(path);
  f << "n,d,loss,expert_granularity\n" << std::setprecision(17);
  for (double gran : {1.0, 2.0, 4.0, 8.0, 16.0})
    for (int i = 0; i < 5; ++i)
      for (int j = 0; j < 5; ++j) {
        const double n = std::pow(10.0, 7 + 0.5 * i), d = std::pow(10.0, 8 + 0.5 * j);
        f << n << "," << d << "," << law.Loss(n, d, gran) * (1 + 0.003 * gaussian()) << "," << gran
          << "\n";
      }
}

TEST_F(FitCliTest, MoeFormRecoversTheGranularityLawFromAnImportedSet) {
  const MoeLaw law;
  const std::string csv = *dir_ + "/moe.csv";
  WriteMoeCsv(csv, law, 2024);
  auto imp = Isoflop({"import", csv, "--name", "moe", "--g-column", "expert_granularity"});
  ASSERT_EQ(imp.exit_code, 0) << imp.err;
  EXPECT_NE(imp.out.find("granularity G 1 .. 16"), std::string::npos) << imp.out;
  auto fit = Isoflop({"fit", "--observations", "moe", "--form", "moe", "--format", "json"});
  ASSERT_EQ(fit.exit_code, 0) << fit.err;
  auto j = nlohmann::json::parse(fit.out);
  EXPECT_EQ(j["form"], "moe");
  EXPECT_EQ(j["n_points"], 125);
  auto p = [&](const char* name) { return j["params"][name].get<double>(); };
  // Tolerances: over 12 other noise draws of this grid the estimates stayed within γ ±0.033,
  // c ±0.024, α ±0.010, β ±0.007, g ±17%, a ±12%, b ±15% of the truth (measured); we allow
  // about twice that, so noise never fails the test but G ignored, inverted or mis-scaled
  // (γ ≤ 0, or g off by 2^γ ≈ 1.5x) does.
  EXPECT_NEAR(p("gamma"), law.gamma, 0.06);
  EXPECT_NEAR(p("c"), law.c, 0.04);
  EXPECT_NEAR(p("alpha"), law.alpha, 0.02);
  EXPECT_NEAR(p("beta"), law.beta, 0.015);
  EXPECT_NEAR(std::log(p("g")), std::log(law.g), 0.3);
  EXPECT_NEAR(std::log(p("a")), std::log(law.a), 0.22);
  EXPECT_NEAR(std::log(p("b")), std::log(law.b), 0.26);

  // `optimal` answers the moe form at one granularity, G = 1 unless --granularity says, and
  // says so: at fixed G the law is Chinchilla's with A = g/G^gamma + a (hand formula).
  for (double gran : {1.0, 8.0}) {
    std::vector<std::string> cmd = {"optimal", "--observations", "moe", "--compute",
                                    "1e20",    "--format",       "json"};
    if (gran != 1.0) cmd.insert(cmd.end(), {"--granularity", "8"});
    auto opt = Isoflop(cmd);
    ASSERT_EQ(opt.exit_code, 0) << opt.err;
    EXPECT_NE(opt.err.find(gran == 1.0 ? "moe form: answered at granularity G = 1 (--granularity"
                                       : "moe form: answered at granularity G = 8\n"),
              std::string::npos)
        << opt.err;
    const double big_a = p("g") / std::pow(gran, p("gamma")) + p("a");
    const double gg =
        std::pow(p("alpha") * big_a / (p("beta") * p("b")), 1 / (p("alpha") + p("beta")));
    const double n_opt = gg * std::pow(1e20 / 6, p("beta") / (p("alpha") + p("beta")));
    const double n = nlohmann::json::parse(opt.out)[0]["n_opt"].get<double>();
    EXPECT_NEAR(n, n_opt, 1e-6 * n_opt) << "G = " << gran;
  }
  auto dense_g = Isoflop({"optimal", "--given", "E=1.69,A=406.4,B=410.7,alpha=0.34,beta=0.28",
                          "--compute", "1e20", "--granularity", "4"});
  EXPECT_EQ(dense_g.exit_code, 1);
  EXPECT_NE(dense_g.err.find("--granularity: only for a fit of the moe form"), std::string::npos)
      << dense_g.err;

  // The stored fit is the moe form of this set.
  auto fits = Isoflop({"fits", "--format", "csv"});
  EXPECT_NE(fits.out.find("observations:moe,parametric,moe"), std::string::npos) << fits.out;
  // Export round trip keeps G (last column).
  auto exp = Isoflop({"export", "--observations", "moe", "--format", "csv"});
  ASSERT_EQ(exp.exit_code, 0) << exp.err;
  std::istringstream lines(exp.out);
  std::string header, first;
  std::getline(lines, header);
  std::getline(lines, first);
  EXPECT_EQ(header, "n,d,c,loss,line,g,budget");
  // CSV line 2: G = 1 (the sixth column); no budget recorded (the last, empty).
  std::vector<std::string> fields;
  std::stringstream row(first);
  for (std::string f; std::getline(row, f, ',');) fields.push_back(f);
  ASSERT_EQ(fields.size(), 6u) << first;  // the empty trailing budget ends the line with ','
  EXPECT_EQ(std::stod(fields[5]), 1.0) << first;
  EXPECT_EQ(first.back(), ',') << first;
}

// `fit --csv` takes the import's column options: the same file fitted directly gives the same
// parameters as the imported set, to the last printed digit.
// Refits that fail are in no interval, and the output says how many. Parametric: two sizes
// by three token counts, so a resample of the six runs has one size with probability
// 2/2^6 = 3.1% and one token count with 3/3^6 = 0.4% (both 0.01%): about 35 of 1000 fail.
// isoFLOP: two budgets of three sizes, so a resample has a minimum at both only when each
// budget draws its three sizes (6/27 each): about 951 of 1000 fail.
TEST_F(FitCliTest, FailedBootstrapRefitsAreCountedAndSaid) {
  const std::string csv = *dir_ + "/few.csv";
  {
    std::ofstream out(csv);
    out << "n,d,loss\n" << std::setprecision(17);
    for (double n : {1e7, 4e7})
      for (double d : {2e8, 8e8, 3.2e9})
        out << n << "," << d << "," << 1.69 + 406.4 / std::pow(n, 0.34) + 410.7 / std::pow(d, 0.28)
            << "\n";
  }
  const auto warned = [](const std::string& out, const std::string& what) {
    std::smatch m;
    EXPECT_TRUE(
        std::regex_search(out, m, std::regex("warning: ([0-9]+) of 1000 bootstrap " + what)))
        << out;
    return m.size() > 1 ? std::stoi(m[1]) : -1;
  };
  auto table = Isoflop({"fit", "--csv", csv, "--bootstrap", "1000", "--no-store"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  const int failed = warned(table.out, "refits failed");
  EXPECT_GE(failed, 12);  // 35.2 expected, sd 5.8: 4 sd either side
  EXPECT_LE(failed, 59);
  auto json_out =
      Isoflop({"fit", "--csv", csv, "--bootstrap", "1000", "--no-store", "--format", "json"});
  ASSERT_EQ(json_out.exit_code, 0) << json_out.err;
  const auto boot = nlohmann::json::parse(json_out.out)["result"]["bootstrap"];
  EXPECT_EQ(boot["failed"].get<int>() + boot["non_finite"].get<int>(), failed);

  const std::string iso_csv = *dir_ + "/two_budgets.csv";
  {
    std::ofstream out(iso_csv);
    out << "n,d,loss,budget\n" << std::setprecision(17);
    for (double c : {1e18, 1e20})
      for (int i = -1; i <= 1; ++i) {
        const double n = 0.1 * std::sqrt(c) * std::exp(i), d = c / (6 * n);
        out << n << "," << d << "," << 2 + 0.05 * i * i + 0.001 * i << "," << c << "\n";
      }
  }
  auto iso = Isoflop(
      {"fit", "--csv", iso_csv, "--method", "isoflop", "--bootstrap", "1000", "--no-store"});
  ASSERT_EQ(iso.exit_code, 0) << iso.err;
  const int iso_failed = warned(iso.out, "resamples had fewer than two budgets");
  EXPECT_GE(iso_failed, 923);  // 950.6 expected, sd 6.9
  EXPECT_LE(iso_failed, 978);
}

TEST_F(FitCliTest, FitCsvTakesColumnOptions) {
  const std::string csv = *dir_ + "/moe.csv";
  WriteMoeCsv(csv, MoeLaw{}, 7);
  ASSERT_EQ(
      Isoflop({"import", csv, "--name", "moe7", "--g-column", "expert_granularity"}).exit_code, 0);
  auto imported =
      Isoflop({"fit", "--observations", "moe7", "--form", "moe", "--no-store", "--format", "json"});
  ASSERT_EQ(imported.exit_code, 0) << imported.err;
  auto direct = Isoflop({"fit", "--csv", csv, "--g-column", "expert_granularity", "--form", "moe",
                         "--no-store", "--format", "json"});
  ASSERT_EQ(direct.exit_code, 0) << direct.err;
  EXPECT_EQ(nlohmann::json::parse(direct.out)["params"],
            nlohmann::json::parse(imported.out)["params"]);
  // Without --g-column the G column is not found, and the error says how to name it.
  auto unnamed = Isoflop({"fit", "--csv", csv, "--form", "moe", "--no-store"});
  EXPECT_EQ(unnamed.exit_code, 1);
  EXPECT_NE(unnamed.err.find("--g-column NAME"), std::string::npos) << unnamed.err;
  // Column options belong to --csv.
  auto stray = Isoflop({"fit", "--observations", "moe7", "--g-column", "g", "--no-store"});
  EXPECT_EQ(stray.exit_code, 2);
  EXPECT_NE(stray.err.find("--csv"), std::string::npos) << stray.err;
}

TEST_F(FitCliTest, MoeFormWithoutGranularityIsAClearError) {
  // The Chinchilla set has no G column.
  auto none = Isoflop({"fit", "--observations", "chin", "--form", "moe", "--no-store"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("--form moe needs the MoE granularity G of every observation, but "
                          "observation set 'chin' has none"),
            std::string::npos)
      << none.err;
  EXPECT_NE(none.err.find("--g-column"), std::string::npos) << none.err;
  // A CSV with one G for every point cannot identify γ.
  std::string one_g = *dir_ + "/one_g.csv";
  {
    std::ofstream f(one_g);
    f << "n,d,loss,g\n";
    for (int i = 0; i < 12; ++i)
      f << 1e7 * (i + 1) << "," << 1e9 * (1 + i % 3) << "," << 3.0 - 0.05 * i << ",4\n";
  }
  auto same = Isoflop({"fit", "--csv", one_g, "--form", "moe", "--no-store"});
  EXPECT_EQ(same.exit_code, 1);
  EXPECT_NE(same.err.find("two or more granularities"), std::string::npos) << same.err;
  EXPECT_NE(same.err.find("G = 4"), std::string::npos) << same.err;
  // Other forms ignore G.
  auto dense = Isoflop({"fit", "--csv", one_g, "--no-store"});
  EXPECT_EQ(dense.exit_code, 0) << dense.err;
}

// Issue 14: `fit --method all --format json` is one JSON document, an object keyed by method,
// on success and when one method fails (then exit 1, the failure as {"error": ...}). Before, it
// printed one document per method, which no JSON parser reads.
TEST_F(FitCliTest, MethodAllIsOneJsonDocument) {
  auto r = Isoflop({"fit", "--observations", "chin", "--method", "all", "--bootstrap", "20",
                    "--no-store", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out.substr(0, 400);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["parametric"]["method"], "parametric");
  EXPECT_EQ(j["isoflop"]["method"], "isoflop");
  EXPECT_FALSE(j.contains("envelope"));  // an imported set has no training curves

  // One budget: the isoFLOP fit cannot run; the parametric one still does.
  const std::string csv = *dir_ + "/one_budget.csv";
  {
    std::ofstream f(csv);
    f << "n,c,loss\n";
    for (int i = 0; i < 9; ++i) {
      const double n = 2e7 * std::pow(2.0, i), d = 1e20 / (6 * n);
      f << n << ",1e20," << 1.69 + 406.4 / std::pow(n, 0.34) + 410.7 / std::pow(d, 0.28) << "\n";
    }
  }
  auto partial =
      Isoflop({"fit", "--csv", csv, "--method", "all", "--no-store", "--format", "json"});
  EXPECT_EQ(partial.exit_code, 1);
  const auto p = nlohmann::json::parse(partial.out, nullptr, false);
  ASSERT_FALSE(p.is_discarded()) << partial.out.substr(0, 400);
  EXPECT_EQ(p["parametric"]["method"], "parametric");
  ASSERT_TRUE(p["isoflop"].contains("error")) << p.dump();
  EXPECT_NE(p["isoflop"]["error"].get<std::string>().find("two compute budgets"),
            std::string::npos);
  EXPECT_NE(partial.err.find("1 of 2 fits failed"), std::string::npos) << partial.err;
}

// Tables print every interval beside its point value: the exponents a and b, N_opt and loss
// at each budget (parametric), and each isoFLOP exponent with its interval in one row.
TEST_F(FitCliTest, TablesPrintIntervalsBesideTheirValues) {
  auto r = Isoflop({"fit", "--observations", "chin", "--exclude-top-loss", "5", "--method", "all",
                    "--bootstrap", "30", "--no-store"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto row = [&](const std::string& name) {
    const size_t at = r.out.find("\n" + name + " ");
    if (at == std::string::npos) return std::vector<std::string>{};
    std::istringstream line(r.out.substr(at + 1, r.out.find('\n', at + 1) - at - 1));
    std::vector<std::string> cells;
    for (std::string c; line >> c;) cells.push_back(c);
    return cells;
  };
  for (const std::string name : {"a", "b", "N_opt@1e+21", "loss@1e+21", "D_opt@1e+23"}) {
    const auto cells = row(name);
    ASSERT_EQ(cells.size(), 4u) << name << " in\n" << r.out;
    const double v = std::stod(cells[1]), lo = std::stod(cells[2]), hi = std::stod(cells[3]);
    EXPECT_LE(lo, v) << name;
    EXPECT_GE(hi, v) << name;
  }
  // Parametric a = beta/(alpha+beta) on these 240 points (0.513 with the published fit).
  EXPECT_NEAR(std::stod(row("a")[1]), 0.513, 0.01);
  for (const std::string name : {"n_opt_a", "d_opt_b"}) {
    const auto cells = row(name);
    ASSERT_EQ(cells.size(), 5u) << name << " in\n" << r.out;  // name, (alias), value, lo, hi
    EXPECT_LE(std::stod(cells[3]), std::stod(cells[2])) << name;
    EXPECT_GE(std::stod(cells[4]), std::stod(cells[2])) << name;
  }
  EXPECT_EQ(r.out.find("\na  "), r.out.rfind("\na  "));  // the isoFLOP a is not a row of its own
}

// Issue 14: an isoFLOP file records each run's nominal budget; its 6ND differs from it by up to
// ±35%. Imported with its budget column, the isoFLOP fit groups by it (8 budgets, the law's
// exponent); without one it clusters 6ND, says so, and names the fix when budgets fragment.
// Before, the budget column was ignored and the budgets split into fragments.
// 8 budgets × 8 sizes of Hoffmann's rounded law, D = C/(6N) jittered ±35% (a file whose 6ND
// differs from its recorded budgets), exact losses; with a compute_budget column or without.
void WriteJitteredIsoflopCsv(const std::string& path, bool with_budget) {
  const double e = 1.69, a = 406.4, b = 410.7, alpha = 0.34, beta = 0.28;
  const double g = std::pow(alpha * a / (beta * b), 1 / (alpha + beta));
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> jitter(std::log(0.65), std::log(1.35));
  std::ofstream f(path);
  f << (with_budget ? "n,d,loss,compute_budget\n" : "n,d,loss,note\n") << std::setprecision(10);
  for (int k = 0; k < 8; ++k) {
    const double c = std::pow(10.0, 17 + 4.0 * k / 7);
    const double n_opt = g * std::pow(c / 6, beta / (alpha + beta));
    for (int j = 0; j < 8; ++j) {
      const double n = n_opt * std::pow(10.0, -0.9 + 1.8 * j / 7);
      const double d = c / (6 * n) * std::exp(jitter(rng));
      f << n << "," << d << "," << e + a / std::pow(n, alpha) + b / std::pow(d, beta) << ",";
      if (with_budget)
        f << c << "\n";
      else
        f << "x\n";
    }
  }
}

TEST_F(FitCliTest, IsoflopGroupsByTheImportedBudgetColumn) {
  const double alpha = 0.34, beta = 0.28;
  const std::string with = *dir_ + "/budgets.csv", without = *dir_ + "/no_budgets.csv";
  WriteJitteredIsoflopCsv(with, true);
  WriteJitteredIsoflopCsv(without, false);
  auto imp = Isoflop({"import", with, "--name", "budgets"});
  ASSERT_EQ(imp.exit_code, 0) << imp.err;
  EXPECT_NE(imp.out.find("8 isoFLOP budgets recorded"), std::string::npos) << imp.out;
  auto fit = Isoflop({"fit", "--observations", "budgets", "--method", "isoflop", "--no-store",
                      "--keep-outside-range", "--format", "json"});
  ASSERT_EQ(fit.exit_code, 0) << fit.err;
  const auto j = nlohmann::json::parse(fit.out);
  EXPECT_EQ(j["result"]["isoflop"]["grouping"], "budget");
  EXPECT_EQ(j["result"]["isoflop"]["budgets"].size(), 8u);
  EXPECT_EQ(j["result"]["isoflop"]["budgets"][0]["c"].get<double>(), 1e17);
  // N_opt ∝ C^(β/(α+β)) = C^0.4516 for this law.
  EXPECT_NEAR(j["params"]["n_opt_a"].get<double>(), beta / (alpha + beta), 0.03);
  // Exported and imported again, the set keeps its budgets.
  auto exported = Isoflop({"export", "--observations", "budgets", "--format", "csv"});
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  std::ofstream(*dir_ + "/exported.csv") << exported.out;
  auto again = Isoflop({"import", *dir_ + "/exported.csv", "--name", "budgets_again"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("8 isoFLOP budgets recorded"), std::string::npos) << again.out;
  // G and budget cells may be empty row by row; the summary counts what was recorded.
  const std::string partial = *dir_ + "/partial.csv";
  std::ofstream(partial) << "n,d,loss,g,budget\n1e6,1e7,3.1,2,6e13\n2e6,5e6,3.0,,\n"
                            "4e6,2.5e6,3.05,4,\n";
  auto part = Isoflop({"import", partial, "--name", "partial"});
  ASSERT_EQ(part.exit_code, 0) << part.err;
  EXPECT_NE(part.out.find("; granularity G 2 .. 4 (none on 1 of 3 rows); 1 isoFLOP budgets "
                          "recorded (none on 2 of 3 rows)\n"),
            std::string::npos)
      << part.out;

  // The same runs without a budget: 6ND clustered, and the table says so.
  auto plain = Isoflop({"fit", "--csv", without, "--method", "isoflop", "--no-store"});
  EXPECT_NE(plain.out.find("budgets found by clustering C = 6ND in log space"), std::string::npos)
      << plain.out << plain.err;
  // An unknown budget column is an error naming the file and the column.
  auto bad = Isoflop({"import", with, "--name", "bad", "--budget-column", "nominal"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find(with + ":1: no column named 'nominal' for the budget"), std::string::npos)
      << bad.err;
  EXPECT_NE(bad.err.find("--budget-column"), std::string::npos);
}

// Approach 2 against numpy: the same noisy isoFLOP file fitted by `isoflop fit --method isoflop`
// and by numpy.polyfit in /usr/bin/python3 (each budget's parabola in ln N and in ln D, its
// vertex, then ln N_opt and ln D_opt against ln C by least squares), which must agree to 1e-9
// relative. The losses carry 0.5% noise so the parabolas are not the law's exact shape.
TEST_F(FitCliTest, IsoflopProfilesAgreeWithNumpy) {
  const std::string csv = *dir_ + "/noisy_isoflop.csv";
  {
    const double e = 1.69, a = 406.4, b = 410.7, alpha = 0.34, beta = 0.28;
    std::mt19937_64 rng(11);
    std::normal_distribution<double> noise(0, 0.005);
    std::ofstream f(csv);
    f << "n,d,loss,budget\n" << std::setprecision(17);
    for (int k = 0; k < 5; ++k) {
      const double c = std::pow(10.0, 18 + k * 0.5);
      for (int j = 0; j < 7; ++j) {
        const double n = 1e8 * std::pow(10.0, 0.5 * k * 0.45 + (j - 3) * 0.2);
        const double d = c / (6 * n);
        const double loss = (e + a / std::pow(n, alpha) + b / std::pow(d, beta)) * (1 + noise(rng));
        f << n << "," << d << "," << loss << "," << c << "\n";
      }
    }
  }
  auto fit = Isoflop({"fit", "--csv", csv, "--method", "isoflop", "--no-store",
                      "--keep-outside-range", "--format", "json"});
  ASSERT_EQ(fit.exit_code, 0) << fit.err;
  const auto ours = nlohmann::json::parse(fit.out)["result"]["isoflop"];
  ASSERT_EQ(ours["grouping"], "budget");
  const char kNumpy[] = R"PY(
import csv, json, sys
import numpy as np
rows = list(csv.DictReader(open(sys.argv[1])))
budgets = sorted({float(r["budget"]) for r in rows})
out = {"budgets": []}
for c in budgets:
    g = [r for r in rows if float(r["budget"]) == c]
    n = np.array([float(r["n"]) for r in g]); d = np.array([float(r["d"]) for r in g])
    y = np.array([float(r["loss"]) for r in g])
    pn = np.polyfit(np.log(n), y, 2); pd = np.polyfit(np.log(d), y, 2)  # highest power first
    xn, xd = -pn[1] / (2 * pn[0]), -pd[1] / (2 * pd[0])
    out["budgets"].append({"c": c, "parabola_n": pn[::-1].tolist(), "parabola_d": pd[::-1].tolist(),
                           "n_opt": float(np.exp(xn)), "d_opt": float(np.exp(xd)),
                           "loss_at_n_opt": float(np.polyval(pn, xn))})
lc = np.log([b["c"] for b in out["budgets"]])
for key in ("n_opt", "d_opt"):
    a, lk = np.polyfit(lc, np.log([b[key] for b in out["budgets"]]), 1)
    out[key] = {"a": float(a), "k": float(np.exp(lk))}
print(json.dumps(out))
)PY";
  auto py = RunCommand({"/usr/bin/python3", "-c", kNumpy, csv});
  ASSERT_EQ(py.exit_code, 0) << py.err;
  const auto ref = nlohmann::json::parse(py.out);
  const auto rel = [](double x, double y) {
    return std::abs(x - y) / std::max(std::abs(y), 1e-300);
  };
  ASSERT_EQ(ours["budgets"].size(), ref["budgets"].size());
  for (size_t i = 0; i < ref["budgets"].size(); ++i) {
    const auto &o = ours["budgets"][i], &r = ref["budgets"][i];
    SCOPED_TRACE("budget " + std::to_string(i));
    EXPECT_EQ(o["c"].get<double>(), r["c"].get<double>());
    EXPECT_TRUE(o["usable"].get<bool>()) << o["note"];
    for (const char* key : {"n_opt", "d_opt", "loss_at_n_opt"})
      EXPECT_LT(rel(o[key].get<double>(), r[key].get<double>()), 1e-9) << key;
    for (const char* key : {"parabola_n", "parabola_d"})
      for (int p = 0; p < 3; ++p)
        EXPECT_LT(rel(o[key][p].get<double>(), r[key][p].get<double>()), 1e-9) << key << p;
  }
  for (const char* key : {"n_opt", "d_opt"}) {
    EXPECT_LT(rel(ours[key]["a"].get<double>(), ref[key]["a"].get<double>()), 1e-9) << key;
    EXPECT_LT(rel(ours[key]["k"].get<double>(), ref[key]["k"].get<double>()), 1e-9) << key;
  }
}

// Issue 14: the extrapolation check holds out the largest budget with 3 or more runs, and
// --cross-validate scores every budget held out in turn (table and JSON).
TEST_F(FitCliTest, CrossValidateScoresEveryBudgetHeldOut) {
  const std::string csv = *dir_ + "/cv.csv";
  WriteJitteredIsoflopCsv(csv, true);
  auto r = Isoflop({"fit", "--csv", csv, "--cross-validate", "--no-store", "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const auto& cv = j["result"]["cross_validation"];
  ASSERT_EQ(cv.size(), 8u);
  EXPECT_EQ(cv[0]["held_out_c"].get<double>(), 1e17);
  for (const auto& fold : cv) {
    EXPECT_EQ(fold["n_test"], 8);
    EXPECT_EQ(fold["n_train"], 56);
    EXPECT_LT(fold["mean_abs_rel_error"].get<double>(), 0.02) << fold.dump();
  }
  EXPECT_EQ(j["result"]["extrapolation"]["held_out_c"].get<double>(), 1e21);
  EXPECT_EQ(j["result"]["extrapolation"]["n_test"], 8);
  auto table = Isoflop({"fit", "--csv", csv, "--cross-validate", "--no-store"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("leave-one-budget-out"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("n_opt_observed"), std::string::npos) << table.out;
}

// Issue 14: the loss is a choice (--loss mse, --huber-delta) recorded in the fit and listed by
// `isoflop fits`; import takes JSON and --where, and warns when a file mixes experiments.
TEST_F(FitCliTest, LossChoiceIsRecordedAndImportTakesJsonAndWhere) {
  auto mse = Isoflop({"fit", "--observations", "chin", "--exclude-top-loss", "5", "--loss", "mse",
                      "--format", "json"});
  ASSERT_EQ(mse.exit_code, 0) << mse.err;
  const auto j = nlohmann::json::parse(mse.out);
  EXPECT_EQ(j["result"]["parametric"]["loss"], "mse");
  // scipy L-BFGS-B on 1/2 sum r^2 over the same 240 points: 0.005730943496 (parametric_test).
  EXPECT_NEAR(j["objective"].get<double>(), 0.005730943496, 1e-9);
  auto wide = Isoflop({"fit", "--observations", "chin", "--huber-delta", "0.01", "--no-store"});
  ASSERT_EQ(wide.exit_code, 0) << wide.err;
  EXPECT_NE(wide.out.find("summed Huber (delta 0.01) objective"), std::string::npos) << wide.out;
  auto fits = Isoflop({"fits", "--format", "json"});
  ASSERT_EQ(fits.exit_code, 0) << fits.err;
  bool listed = false;
  for (const auto& f : nlohmann::json::parse(fits.out))
    if (f["id"] == j["id"]) listed = f["loss"] == "mse";
  EXPECT_TRUE(listed) << fits.out;

  const std::string json = *dir_ + "/two_experiments.jsonl";
  {
    std::ofstream f(json);
    for (const char* exp : {"dense", "wide"})
      for (int i = 0; i < 6; ++i)
        f << "{\"experiment\": \"" << exp << "\", \"n\": " << 1e7 * (i + 1)
          << ", \"d\": 1e9, \"loss\": " << 3.0 - 0.05 * i << "}\n";
  }
  auto mixed = Isoflop({"import", json, "--name", "mixed"});
  ASSERT_EQ(mixed.exit_code, 0) << mixed.err;
  EXPECT_NE(mixed.out.find("imported 12 observations"), std::string::npos) << mixed.out;
  EXPECT_NE(mixed.err.find("column 'experiment' holds 2 different values (dense, wide): the file "
                           "may mix experiments; take one with --where experiment=dense"),
            std::string::npos)
      << mixed.err;
  auto one = Isoflop({"import", json, "--name", "wide", "--where", "experiment=wide"});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_NE(one.out.find("imported 6 observations"), std::string::npos) << one.out;
  EXPECT_EQ(one.err.find("warning"), std::string::npos) << one.err;
  auto bad = Isoflop({"import", json, "--name", "x", "--where", "exp=wide"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find(json + ":1: --where: no column named 'exp'"), std::string::npos)
      << bad.err;
}

// Issue 14: a predicted loss below a known floor (the data's entropy, or --loss-floor) is
// warned about by `fit` and by `optimal`, which also reads the floor stored with the fit.
TEST_F(FitCliTest, PredictedLossBelowAKnownFloorIsWarnedAbout) {
  // The free Chinchilla fit predicts 2.304 at 1e21 FLOPs (E = 1.817); pretend 2.5 is the floor.
  auto fit = Isoflop({"fit", "--observations", "chin", "--exclude-top-loss", "5", "--loss-floor",
                      "2.5", "--format", "json"});
  ASSERT_EQ(fit.exit_code, 0) << fit.err;
  EXPECT_NE(fit.err.find("warning: loss@1e+21: predicted loss 2.30"), std::string::npos) << fit.err;
  EXPECT_NE(fit.err.find(" is below the given --loss-floor 2.5000: no model can reach it"),
            std::string::npos)
      << fit.err;
  EXPECT_EQ(fit.err.find("loss@1e+19"), std::string::npos) << fit.err;  // 2.926 is above it
  const int64_t id = nlohmann::json::parse(fit.out)["id"].get<int64_t>();
  auto opt = Isoflop(
      {"optimal", "--fit", std::to_string(id), "--compute", "1e19,1e21", "--format", "json"});
  ASSERT_EQ(opt.exit_code, 0) << opt.err;
  EXPECT_EQ(nlohmann::json::parse(opt.out).size(), 2u);  // stdout stays one JSON document
  EXPECT_NE(opt.err.find("compute 1e+21: predicted loss 2.30"), std::string::npos) << opt.err;
  EXPECT_NE(opt.err.find("is below the fit's --loss-floor 2.5000"), std::string::npos) << opt.err;
  EXPECT_EQ(opt.err.find("compute 1e+19"), std::string::npos) << opt.err;
  auto lower =
      Isoflop({"optimal", "--fit", std::to_string(id), "--compute", "1e21", "--loss-floor", "2.0"});
  ASSERT_EQ(lower.exit_code, 0) << lower.err;
  EXPECT_EQ(lower.err.find("warning"), std::string::npos) << lower.err;
}

// A query whose optimum lies far outside the C the law was fitted on (the Chinchilla points span
// 6ND = 1.40e18 .. 1.30e22) answers with a warning that says how far; inside, no warning.
TEST_F(FitCliTest, OptimaFarOutsideTheFittedComputeAreWarnedAbout) {
  auto fit = Isoflop({"fit", "--observations", "chin", "--exclude-top-loss", "5"});
  ASSERT_EQ(fit.exit_code, 0) << fit.err;
  auto near = Isoflop({"optimal", "--observations", "chin", "--compute", "5.88e23"});
  ASSERT_EQ(near.exit_code, 0) << near.err;
  EXPECT_EQ(near.err.find("nothing has checked the law"), std::string::npos) << near.err;
  auto far =
      Isoflop({"optimal", "--observations", "chin", "--compute", "1e26,1e14", "--format", "json"});
  ASSERT_EQ(far.exit_code, 0) << far.err;
  EXPECT_EQ(nlohmann::json::parse(far.out).size(), 2u);
  EXPECT_NE(far.err.find("warning: compute 1e+26: the optimum's C = 1e+26 is 7.72e+03x above the "
                         "largest C of the fit's observations (1.3e+22): that far out, nothing "
                         "has checked the law"),
            std::string::npos)
      << far.err;
  EXPECT_NE(far.err.find("warning: compute 1e+14: the optimum's C = 1e+14 is 1.4e+04x below the "
                         "smallest C of the fit's observations (1.4e+18)"),
            std::string::npos)
      << far.err;
}

// A floor above every observed loss contradicts the data, and an exponent held at or below
// zero is no scaling law: both are refused before fitting. A floor above some losses is warned.
TEST_F(FitCliTest, FloorsAboveEveryLossAndExponentsHeldAtZeroAreRefused) {
  for (const std::vector<std::string>& flag :
       std::vector<std::vector<std::string>>{{"--fix", "E=50"}, {"--loss-floor", "50"}}) {
    std::vector<std::string> args = {"fit", "--observations", "chin"};
    args.insert(args.end(), flag.begin(), flag.end());
    auto r = Isoflop(args);
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_NE(r.err.find(flag[0] + (flag[0] == "--fix" ? " E=50" : " 50") +
                         ": every observed loss is below it (the highest is "),
              std::string::npos)
        << r.err;
    EXPECT_EQ(r.out, "");
  }
  auto some = Isoflop({"fit", "--observations", "chin", "--fix", "E=2.2", "--no-store"});
  ASSERT_EQ(some.exit_code, 0) << some.err;
  EXPECT_NE(some.err.find("warning: --fix E=2.2: "), std::string::npos) << some.err;
  EXPECT_NE(some.err.find(" observed losses are below it; the law cannot reach them"),
            std::string::npos)
      << some.err;
  // Held and tied parameters are stored as one object (the shape `sweep run` stores) and listed.
  auto held = Isoflop({"fit", "--observations", "chin", "--fix", "E=1.8", "--fix", "beta=alpha"});
  ASSERT_EQ(held.exit_code, 0) << held.err;
  auto fits = Isoflop({"fits", "--format", "json"});
  ASSERT_EQ(fits.exit_code, 0) << fits.err;
  EXPECT_EQ(nlohmann::json::parse(fits.out).back()["fixed"], "E=1.8 beta=alpha") << fits.out;
  auto word = Isoflop({"fit", "--observations", "chin", "--fix", "E=abc"});
  EXPECT_EQ(word.exit_code, 1) << word.err;
  EXPECT_EQ(word.err,
            "isoflop: error: --fix 'E=abc': 'abc' is neither a number nor a parameter "
            "of the chinchilla form (E, A, B, alpha, beta)\n");
  auto zero = Isoflop({"fit", "--observations", "chin", "--fix", "alpha=0"});
  EXPECT_EQ(zero.exit_code, 1) << zero.err;
  EXPECT_NE(zero.err.find("fixed value of 'alpha' must be > 0: it is the exponent with which the "
                          "loss falls with N"),
            std::string::npos)
      << zero.err;
}

// Issue 14: with --loss-floor above the free fit's E, the answer leads with the fit whose E
// respects the floor (E held at it), stored last so `optimal` answers with it; the free fit is
// shown beside it with its note. Above the floor, the free fit stands alone.
TEST_F(FitCliTest, LossFloorAboveTheFreeEMakesTheHeldFitLead) {
  // The free Chinchilla fit has E = 1.817; a floor of 2.0 is above it.
  auto fit =
      Isoflop({"fit", "--observations", "chin", "--exclude-top-loss", "5", "--loss-floor", "2.0"});
  ASSERT_EQ(fit.exit_code, 0) << fit.err;
  const size_t lead = fit.out.find("E held at the --loss-floor 2 (the free fit's E = 1.817");
  const size_t beside = fit.out.find("free fit, beside it (its E = 1.817");
  ASSERT_NE(lead, std::string::npos) << fit.out;
  ASSERT_NE(beside, std::string::npos) << fit.out;
  EXPECT_LT(lead, beside);
  EXPECT_EQ(lead, 0u) << fit.out;  // the answer's first line
  // The held fit's table comes first, with E exactly the floor.
  const size_t e_row = fit.out.find("\nE ", lead);
  ASSERT_NE(e_row, std::string::npos);
  EXPECT_LT(e_row, beside);
  EXPECT_NE(fit.out.substr(e_row, 40).find(" 2 "), std::string::npos) << fit.out.substr(e_row, 40);

  auto fits = Isoflop({"fits", "--format", "json"});
  ASSERT_EQ(fits.exit_code, 0) << fits.err;
  const auto listed = nlohmann::json::parse(fits.out);
  ASSERT_GE(listed.size(), 2u);
  EXPECT_NE(listed.back()["fixed"].get<std::string>().find("E=2"), std::string::npos)
      << listed.back().dump();
  auto opt = Isoflop({"optimal", "--compute", "1e21", "--format", "json"});
  ASSERT_EQ(opt.exit_code, 0) << opt.err;
  EXPECT_GT(nlohmann::json::parse(opt.out)[0]["loss"].get<double>(), 2.0);

  // JSON: the record is the free fit's, the held one beside it, and "headline" names the lead.
  auto js = Isoflop({"fit", "--observations", "chin", "--exclude-top-loss", "5", "--loss-floor",
                     "2.0", "--no-store", "--format", "json"});
  ASSERT_EQ(js.exit_code, 0) << js.err;
  const auto j = nlohmann::json::parse(js.out);
  EXPECT_EQ(j["headline"], "loss_floor_fit");
  EXPECT_NEAR(j["params"]["E"].get<double>(), 1.817, 0.01);
  EXPECT_EQ(j["loss_floor_fit"]["params"]["E"].get<double>(), 2.0);

  // A floor below the free E: the free fit leads and says it respects the floor.
  auto low = Isoflop({"fit", "--observations", "chin", "--exclude-top-loss", "5", "--loss-floor",
                      "1.5", "--no-store"});
  ASSERT_EQ(low.exit_code, 0) << low.err;
  EXPECT_EQ(low.out.find("E held at"), std::string::npos) << low.out;
  EXPECT_NE(low.out.find("E = 1.8172 respects the --loss-floor 1.5"), std::string::npos) << low.out;
}

}  // namespace
}  // namespace isoflop::testing
