// End-to-end tests of `isoflop plot` through the real binary and Debian's Python: stores built
// with `isoflop import` (the Chinchilla data) and `isoflop fit`, and a synthetic sweep; every
// expected figure must exist, be a valid PNG/SVG, not be blank, and be linked from report.html.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
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
const std::string kPython = "/usr/bin/python3";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Checks figures with matplotlib: a PNG must decode and have pixel variance and enough
// non-background pixels; an SVG must parse as XML with an <svg> root and drawn paths. Prints
// one "ok <file>" or "bad <file>: why" line per file.
const char kCheckFigures[] = R"PY(
import sys, xml.etree.ElementTree as ET
import numpy as np
import matplotlib.image as mpimg
for path in sys.argv[1:]:
    try:
        if path.endswith(".png"):
            with open(path, "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n", "no PNG signature"
            img = mpimg.imread(path)[..., :3]
            assert img.shape[0] > 200 and img.shape[1] > 200, f"tiny image {img.shape}"
            var = float(img.var())
            inked = float((img.min(axis=2) < 0.9).mean())
            assert var > 1e-3, f"blank: pixel variance {var:.2e}"
            assert inked > 0.01, f"blank: only {inked:.2%} non-white pixels"
        elif path.endswith(".svg"):
            root = ET.parse(path).getroot()
            assert root.tag.endswith("svg"), f"root element is {root.tag}"
            paths = [e for e in root.iter() if e.tag.endswith("path") or e.tag.endswith("use")]
            assert len(paths) > 20, f"only {len(paths)} drawn elements"
        print("ok", path)
    except Exception as e:
        print("bad", path + ":", e)
)PY";

class PlotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("plot");
    db_ = dir_ + "/store.db";
    out_ = dir_ + "/plots";
  }
  void TearDown() override {
    if (!HasFailure() && !std::getenv("ISOFLOP_TEST_KEEP"))
      fs::remove_all(dir_);
    else
      std::cerr << "kept test files in " << dir_ << "\n";
  }
  CommandResult Isoflop(std::vector<std::string> args, std::vector<std::string> env = {}) {
    args.insert(args.begin(), {Binary("isoflop"), "--db", db_});
    return RunCommand(args, env);
  }

  // Asserts every <stem>.<format> exists and passes the figure check, and report.html links
  // each of them.
  void ExpectFigures(const std::vector<std::string>& stems,
                     const std::vector<std::string>& formats) {
    std::vector<std::string> argv = {kPython, "-c", kCheckFigures};
    std::string report = ReadFile(out_ + "/report.html");
    ASSERT_FALSE(report.empty()) << "no report.html in " << out_;
    for (const auto& stem : stems) {
      for (const auto& fmt : formats) {
        std::string file = out_ + "/" + stem + "." + fmt;
        ASSERT_TRUE(fs::is_regular_file(file)) << "missing " << file;
        argv.push_back(file);
        EXPECT_NE(report.find("\"" + stem + "." + fmt + "\""), std::string::npos)
            << "report.html does not reference " << stem << "." << fmt;
      }
      std::string png = out_ + "/" + stem + ".png";
      if (fs::exists(png)) {
        EXPECT_EQ(ReadFile(png).substr(0, 8), "\x89PNG\r\n\x1a\n") << png;
      }
    }
    auto check = RunCommand(argv);
    ASSERT_EQ(check.exit_code, 0) << check.err;
    std::istringstream lines(check.out);
    int ok = 0;
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("ok ", 0) == 0)
        ++ok;
      else
        ADD_FAILURE() << line;
    }
    EXPECT_EQ(ok, static_cast<int>(stems.size() * formats.size())) << check.out;
  }

  std::string dir_, db_, out_;
};

// Fits every method with the real binary, as a user would.
void FitAll(const std::function<CommandResult(std::vector<std::string>)>& isoflop,
            std::vector<std::string> source) {
  std::vector<std::string> args = {"fit", "--method", "all", "--bootstrap", "60", "--seed", "7"};
  args.insert(args.end(), source.begin(), source.end());
  auto r = isoflop(args);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST_F(PlotTest, ChinchillaObservationsDrawEveryApplicableFigure) {
  auto imp = Isoflop({"import", kChinchilla, "--name", "chinchilla"});
  ASSERT_EQ(imp.exit_code, 0) << imp.err;
  // The replication drops the five highest losses (README of the data).
  FitAll([&](std::vector<std::string> a) { return Isoflop(a); },
         {"--observations", "chinchilla", "--exclude-top-loss", "5"});
  if (HasFailure()) return;

  auto r = Isoflop({"plot", "--observations", "chinchilla", "--out", out_, "--format", "png,svg"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ExpectFigures({"isoflop_curves", "optimal_n_d", "loss_contours", "residuals", "extrapolation"},
                {"png", "svg"});
  // Figures that need training curves or MoE runs are skipped, and said so.
  EXPECT_NE(r.out.find("skipped training_curves"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("skipped moe"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("skipped granularity: this observation set has no MoE granularity G"),
            std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(out_ + "/training_curves.png"));
  std::string report = ReadFile(out_ + "/report.html");
  EXPECT_NE(report.find("Figures not drawn"), std::string::npos);
  EXPECT_NE(r.out.find("report " + out_ + "/report.html"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("wrote " + out_ + "/optimal_n_d.svg"), std::string::npos) << r.out;
}

TEST_F(PlotTest, WithoutAFitDrawsTheDataAndNamesTheMissingFit) {
  ASSERT_EQ(Isoflop({"import", kChinchilla, "--name", "chinchilla"}).exit_code, 0);
  // The only source in the store is chosen without --observations.
  auto r = Isoflop({"plot", "--out", out_});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ExpectFigures({"isoflop_curves"}, {"png"});
  EXPECT_NE(r.out.find("isoflop fit --observations chinchilla --method parametric"),
            std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(out_ + "/loss_contours.png"));
}

// A sweep-like store written through the store API (NOT a real `isoflop sweep run`: the
// losses follow a known law L = E + A/N^α + B/D^β with 0.5% noise, seed 11), with dense and
// MoE runs and per-step training curves. `isoflop fit` then fits it like a real sweep.
void BuildSyntheticSweep(const std::string& db_path, const std::string& sweep) {
  auto db_or = store::Store::Open(db_path);
  ASSERT_TRUE(db_or.ok()) << db_or.status().message();
  auto& db = **db_or;
  store::SweepRecord s;
  s.name = sweep;
  s.status = "finished";
  s.config_text = "synthetic sweep written by plot_e2e_test";
  auto sweep_id = db.UpsertSweep(s);
  ASSERT_TRUE(sweep_id.ok()) << sweep_id.status().message();
  // A small-model law; its compute-optimal N (Hoffmann et al. 2022, App. D.2) centres each
  // budget's sizes.
  const double E = 1.7, A = 60, B = 300, alpha = 0.34, beta = 0.29;
  auto law = [&](double n, double d) { return E + A / std::pow(n, alpha) + B / std::pow(d, beta); };
  const double G = std::pow(alpha * A / (beta * B), 1 / (alpha + beta));
  std::mt19937_64 rng(11);
  std::normal_distribution<double> noise(0.0, 0.005);
  const std::vector<double> budgets = {1e15, 3e15, 1e16, 3e16};
  int cell = 0;
  for (size_t b = 0; b < budgets.size(); ++b) {
    const double c = budgets[b];
    const double n_mid = G * std::pow(c / 6, beta / (alpha + beta));
    for (int experts : {0, 4, 8}) {
      const int sizes = experts == 0 ? 6 : 3;
      for (int i = 0; i < sizes; ++i) {
        const double n = n_mid * std::pow(2.0, i - (sizes - 1) / 2.0) * (experts ? 0.7 : 1.0);
        const double d = c / (6 * n);
        store::RunRecord run;
        run.sweep_id = *sweep_id;
        run.cell_key = "cell" + std::to_string(cell++);
        run.status = "finished";
        run.family = experts ? "moe" : "dense";
        run.n_experts = experts;
        run.top_k = experts ? 2 : 0;
        run.n_active = static_cast<int64_t>(n);
        run.n_total = static_cast<int64_t>(experts ? n * experts / 2.0 : n);
        run.n_non_embedding = static_cast<int64_t>(0.8 * n);
        run.flops_per_token_6n = 6 * n;
        run.flops_per_token_6n_attn = 6.3 * n;
        run.flops_per_token_chinchilla = 6.2 * n;
        run.budget_flops = c;
        run.target_tokens = static_cast<int64_t>(d);
        run.target_flops = c;
        // MoE: a little better per active parameter (what the figure should show).
        const double gain = experts ? 0.97 - 0.005 * experts : 1.0;
        const double final_loss = law(n, d) * gain * (1 + noise(rng));
        run.final_val_loss = final_loss;
        run.final_train_loss = final_loss - 0.01;
        run.tokens_done = run.target_tokens;
        auto run_id = db.UpsertRun(run);
        ASSERT_TRUE(run_id.ok()) << run_id.status().message();
        std::vector<store::MetricRow> rows;
        for (int step = 1; step <= 40; ++step) {
          store::MetricRow m;
          m.step = step * 10;
          m.tokens = static_cast<int64_t>(d * step / 40.0);
          m.flops = 6 * n * m.tokens;
          m.val_loss = law(n, m.tokens) * gain * (1 + noise(rng));
          m.train_loss = *m.val_loss + 0.02;
          if (experts) {
            // Expert 0 runs hot early and cools down (what expert_load.png shows).
            m.extra = {{"router_aux_loss", 0.01}};
            const double hot = 0.6 - 0.4 * step / 40.0;
            for (int e = 0; e < experts; ++e) {
              m.extra.emplace_back("load_" + std::to_string(e),
                                   e == 0 ? hot : (1 - hot) / (experts - 1));
            }
          }
          rows.push_back(m);
        }
        ASSERT_TRUE(db.UpsertMetrics(*run_id, rows).ok());
      }
    }
  }
}

TEST_F(PlotTest, SyntheticSweepWithMoeDrawsEveryMoeFigure) {
  BuildSyntheticSweep(db_, "synthetic");
  if (HasFailure()) return;
  // One law per expert count, as `sweep run` stores them (the loss-against-compute figure
  // draws each); stored first, so the fits over all runs below stay the sweep's own.
  for (const char* k : {"0", "4", "8"}) {
    auto per = Isoflop({"fit", "--sweep", "synthetic", "--convention", "active", "--n-experts", k,
                        "--bootstrap", "20"});
    ASSERT_EQ(per.exit_code, 0) << k << ": " << per.out << per.err;
  }
  // MoE runs enter the fit by active parameters, as the dense law would count them.
  FitAll([&](std::vector<std::string> a) { return Isoflop(a); },
         {"--sweep", "synthetic", "--convention", "active"});
  if (HasFailure()) return;
  auto r = Isoflop({"plot", "--sweep", "synthetic", "--out", out_});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ExpectFigures({"isoflop_curves", "optimal_n_d", "loss_contours", "training_curves", "residuals",
                 "extrapolation", "moe", "moe_compute", "expert_load"},
                {"png"});
  // Each count's law is in the analysis file the notebook drew from, over that count's runs.
  const auto analysis = nlohmann::json::parse(Slurp(out_ + "/analysis.json"));
  ASSERT_EQ(analysis["by_expert_count"].size(), 3u) << analysis["by_expert_count"].dump();
  for (const auto& e : analysis["by_expert_count"]) {
    const auto& pts = e["curves"]["parametric"]["points"];
    EXPECT_EQ(pts.size(), e["n_experts"] == 0 ? 24u : 12u) << e.dump().substr(0, 300);
    EXPECT_FALSE(e["curves"]["parametric"]["frontier"]["loss"].empty());
  }
  // The sweep's own law is the fit over all 48 runs, not the newest per-count one.
  EXPECT_EQ(analysis["parametric"]["parametric"]["points"].size(), 48u);
  EXPECT_EQ(r.out.find("no per-expert-count laws"), std::string::npos) << r.out;
  // Only the granularity law is skipped: every MoE run has G = 1.
  EXPECT_NE(r.out.find("skipped granularity: every MoE run of the sweep has granularity G = 1"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.out.find("skipped", r.out.find("skipped granularity") + 1), std::string::npos)
      << r.out;
}

// An observation set with MoE granularity G (losses from the fine-grained MoE law of Krajewski
// et al. 2024, c=1.5, g=30, a=20, b=300, α=0.25, β=0.3, γ=0.6, on a 4x4 (N, D) grid at
// G = 1, 2, 4, 8, 16, times 1 + 0.3% Gaussian noise from std::mt19937_64 seed 5), fitted with
// `--form moe` only: the granularity figure draws the fitted law.
TEST_F(PlotTest, MoeObservationsWithGranularityDrawTheGranularityLaw) {
  const std::string csv = dir_ + "/moe.csv";
  {
    std::mt19937_64 rng(5);
    std::normal_distribution<double> noise(0.0, 0.003);
    std::ofstream f(csv);
    f << "n,d,loss,granularity\n" << std::setprecision(17);
    for (double g : {1.0, 2.0, 4.0, 8.0, 16.0})
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
          const double n = std::pow(10.0, 7 + 0.6 * i), d = std::pow(10.0, 8 + 0.6 * j);
          const double loss =
              1.5 + (30 / std::pow(g, 0.6) + 20) / std::pow(n, 0.25) + 300 / std::pow(d, 0.3);
          f << n << "," << d << "," << loss * (1 + noise(rng)) << "," << g << "\n";
        }
  }
  ASSERT_EQ(Isoflop({"import", csv, "--name", "moe"}).exit_code, 0);
  auto fit = Isoflop({"fit", "--observations", "moe", "--form", "moe"});
  ASSERT_EQ(fit.exit_code, 0) << fit.out << fit.err;
  auto r = Isoflop({"plot", "--observations", "moe", "--out", out_});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ExpectFigures({"granularity", "residuals"}, {"png"});
  EXPECT_NE(r.out.find("wrote " + out_ + "/granularity.png"), std::string::npos) << r.out;
  // The law was drawn (no "fitted law missing" note), and the figure has its section.
  EXPECT_EQ(r.out.find("fitted law missing"), std::string::npos) << r.out;
  std::string report = ReadFile(out_ + "/report.html");
  EXPECT_NE(report.find("id=\"granularity\""), std::string::npos);
  EXPECT_NE(report.find("Granularity law"), std::string::npos);
}

TEST_F(PlotTest, MissingPythonPackagesNameTheAptPackages) {
  ASSERT_EQ(Isoflop({"import", kChinchilla, "--name", "chinchilla"}).exit_code, 0);
  // A matplotlib that fails to import, first on the path: what a missing package looks like.
  // isoflop starts Python isolated (-I: no PYTHONPATH), so an interpreter wrapper puts the shim
  // on the path and runs the check isoflop gave it (`python -I -B -c CODE MODULES...`).
  fs::create_directories(dir_ + "/shim/matplotlib");
  std::ofstream(dir_ + "/shim/matplotlib/__init__.py") << "raise ImportError('shim')\n";
  const std::string wrapper = dir_ + "/python-with-shim";
  std::ofstream(wrapper) << "#!" << kPython << " -I\n"
                         << "import sys\n"
                         << "sys.path.insert(0, '" << dir_ << "/shim')\n"
                         << "args = sys.argv[1:]\n"
                         << "while args[0] in ('-I', '-B'):\n"
                         << "    args.pop(0)\n"
                         << "assert args[0] == '-c', args\n"
                         << "sys.argv = ['-c'] + args[2:]\n"
                         << "exec(compile(args[1], '<string>', 'exec'))\n";
  fs::permissions(wrapper, fs::perms::owner_all);
  auto r = Isoflop({"plot", "--out", out_}, {"ISOFLOP_PYTHON=" + wrapper});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("apt-get install python3-matplotlib"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out_ + "/report.html"));

  auto none = Isoflop({"plot", "--out", out_}, {"ISOFLOP_PYTHON=" + dir_ + "/no-such-python"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("apt-get install python3 "), std::string::npos) << none.err;
}

// Python starts isolated: a numpy.py in the folder `isoflop plot` runs in is not imported (it
// was, by the dependency check's `python -c`, and ran whatever it held), and the plot is drawn
// with the real numpy.
TEST_F(PlotTest, PythonFilesInTheCurrentFolderAreNotImported) {
  ASSERT_EQ(Isoflop({"import", kChinchilla, "--name", "chinchilla"}).exit_code, 0);
  FitAll([&](std::vector<std::string> a) { return Isoflop(a); },
         {"--observations", "chinchilla", "--exclude-top-loss", "5"});
  if (HasFailure()) return;
  const std::string work = dir_ + "/work";
  fs::create_directories(work);
  const std::string marker = work + "/planted-module-ran";
  for (const char* module : {"numpy", "pandas", "matplotlib", "nbconvert", "traitlets"}) {
    std::ofstream(work + "/" + module + ".py")
        << "open(" << std::quoted(marker) << ", 'a').write('" << module << "\\n')\n"
        << "raise ImportError('planted " << module << "')\n";
  }
  std::vector<std::string> argv = {Binary("isoflop"), "--db",       db_,     "plot",
                                   "--observations",  "chinchilla", "--out", out_};
  auto r = RunCommand(argv, {}, work);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_FALSE(fs::exists(marker)) << "ran: " << ReadFile(marker);
  ExpectFigures({"optimal_n_d", "loss_contours"}, {"png"});
}

// A fit stored by an earlier version with a non-finite bootstrap draw (written as null: JSON has
// no infinity) made the notebook fail with a TypeError. The draw is left out of the band and
// the figure says so.
TEST_F(PlotTest, NonFiniteBootstrapDrawsAreLeftOutOfTheBand) {
  ASSERT_EQ(Isoflop({"import", kChinchilla, "--name", "chinchilla"}).exit_code, 0);
  auto fit = Isoflop({"fit", "--observations", "chinchilla", "--exclude-top-loss", "5",
                      "--bootstrap", "30", "--seed", "3"});
  ASSERT_EQ(fit.exit_code, 0) << fit.err;
  {
    auto db = store::Store::Open(db_);
    ASSERT_TRUE(db.ok()) << db.status().message();
    auto fits = (*db)->ListFits();
    ASSERT_TRUE(fits.ok()) << fits.status().message();
    ASSERT_EQ(fits->size(), 1u);
    store::FitRecord row = fits->front();
    nlohmann::json result = nlohmann::json::parse(row.result_json);
    ASSERT_GE(result["bootstrap"]["draws"].size(), 20u);
    result["bootstrap"]["draws"][0][1] = nullptr;  // an A that overflowed
    result["bootstrap"]["draws"][1][4] = nullptr;
    result["bootstrap"].erase("non_finite");
    row.result_json = result.dump();
    ASSERT_TRUE((*db)->InsertFit(row).ok());  // the latest fit: the one plotted
  }
  auto r = Isoflop({"plot", "--observations", "chinchilla", "--out", out_});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("2 bootstrap draw(s) with a non-finite parameter left out of the band"),
            std::string::npos)
      << r.out;
  ExpectFigures({"optimal_n_d"}, {"png"});
}

TEST_F(PlotTest, BadArgumentsGiveOneLineErrors) {
  ASSERT_EQ(Isoflop({"import", kChinchilla, "--name", "chinchilla"}).exit_code, 0);
  auto unknown = Isoflop({"plot", "--sweep", "nope", "--out", out_});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("no sweep named 'nope'"), std::string::npos) << unknown.err;
  EXPECT_NE(unknown.err.find("chinchilla"), std::string::npos) << unknown.err;  // lists sets

  auto format = Isoflop({"plot", "--format", "gif", "--out", out_});
  EXPECT_EQ(format.exit_code, 2);
  EXPECT_NE(format.err.find("'gif'"), std::string::npos) << format.err;

  auto both = Isoflop({"plot", "--sweep", "a", "--observations", "b"});
  EXPECT_EQ(both.exit_code, 2) << both.err;

  auto no_db = RunCommand({Binary("isoflop"), "--db", dir_ + "/absent.db", "plot"});
  EXPECT_EQ(no_db.exit_code, 1);
  EXPECT_NE(no_db.err.find("absent.db"), std::string::npos) << no_db.err;
}

}  // namespace
}  // namespace isoflop::testing
