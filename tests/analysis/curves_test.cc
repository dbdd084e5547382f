// The curves every figure draws come from the fit library: checked here against the closed
// forms written out by hand (Hoffmann et al. 2022, Appendix D.2), the bootstrap intervals the
// fit itself reports, and, for the one law the notebook still evaluates itself (the moe form,
// for the granularity figure), against the notebook's Python on the same points.
#include "isoflop/analysis/curves.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "isoflop/fit/query.h"
#include "isoflop/fit/run_fit.h"

namespace isoflop::analysis {
namespace {

// 64 points of E + A/N^α + B/D^β with 1% log-normal noise from a written-down seed.
Dataset Generated() {
  Dataset data;
  std::mt19937_64 rng(20261201);
  std::normal_distribution<double> z(0, 1);
  for (int i = 0; i < 8; ++i) {
    for (int j = 0; j < 8; ++j) {
      fit::Observation o;
      o.n = std::pow(10.0, 7 + 3.0 * i / 7);
      o.d = std::pow(10.0, 8 + 3.0 * j / 7);
      o.loss =
          (1.8 + 400 / std::pow(o.n, 0.34) + 2000 / std::pow(o.d, 0.37)) * std::exp(0.01 * z(rng));
      o.c = 6 * o.n * o.d;
      data.obs.push_back(o);
      data.points.push_back({o.n, o.d, o.c, o.loss, std::nullopt, o.c});
    }
  }
  return data;
}

StoredFit FitOf(const Dataset& data, int bootstrap) {
  fit::FitConfig cfg;
  cfg.bootstrap.resamples = bootstrap;
  cfg.bootstrap.derived_at_compute = {1e21};
  Result<fit::FitRecord> rec = fit::RunFit(data.obs, {}, cfg);
  EXPECT_TRUE(rec.ok()) << rec.status().message();
  StoredFit f;
  f.id = 7;
  f.record = *rec;
  return f;
}

std::vector<double> Numbers(const nlohmann::json& a) {
  std::vector<double> v;
  for (const auto& x : a) v.push_back(x.is_number() ? x.get<double>() : NAN);
  return v;
}

TEST(CurvesTest, FrontierSurfaceAndResidualsMatchTheClosedForm) {
  const Dataset data = Generated();
  const StoredFit f = FitOf(data, 0);
  Result<nlohmann::json> curves = FitCurves(f, data);
  ASSERT_TRUE(curves.ok()) << curves.status().message();
  const nlohmann::json& p = (*curves)["parametric"];
  const auto& q = f.record.params;
  const double e = q.at("E"), a = q.at("A"), b = q.at("B"), al = q.at("alpha"), be = q.at("beta");
  // Hoffmann et al. 2022, Appendix D.2: G = (αA/(βB))^(1/(α+β)), N_opt = G (C/6)^(β/(α+β)).
  const double g = std::pow(al * a / (be * b), 1 / (al + be));
  const std::vector<double> c = Numbers(p["frontier"]["c"]), n = Numbers(p["frontier"]["n_opt"]),
                            d = Numbers(p["frontier"]["d_opt"]);
  ASSERT_EQ(c.size(), 200u);
  EXPECT_NEAR(c.front(), 6 * 1e7 * 1e8 / 3, 1e-6 * c.front());   // smallest C / 3
  EXPECT_NEAR(c.back(), 6 * 1e10 * 1e11 * 30, 1e-6 * c.back());  // largest C x 30
  for (size_t i = 0; i < c.size(); i += 17) {
    const double n_hand = g * std::pow(c[i] / 6, be / (al + be));
    EXPECT_NEAR(n[i], n_hand, 1e-9 * n_hand) << c[i];
    EXPECT_NEAR(d[i], c[i] / (6 * n_hand), 1e-9 * d[i]) << c[i];
  }
  EXPECT_TRUE(p["band"].is_null());  // no bootstrap, no band
  // The surface: loss[i][j] = L(n_i, c_j / (6 n_i)).
  const std::vector<double> sn = Numbers(p["surface"]["n"]), sc = Numbers(p["surface"]["c"]);
  for (size_t i = 0; i < sn.size(); i += 29) {
    for (size_t j = 0; j < sc.size(); j += 31) {
      const double dd = sc[j] / (6 * sn[i]);
      const double hand = e + a / std::pow(sn[i], al) + b / std::pow(dd, be);
      EXPECT_NEAR(p["surface"]["loss"][i][j].get<double>(), hand, 1e-12 * hand);
    }
  }
  // Residuals: log L - log L_hat at every observation.
  ASSERT_EQ(p["points"].size(), data.obs.size());
  for (size_t i = 0; i < data.obs.size(); ++i) {
    const auto& o = data.obs[i];
    const double hand =
        std::log(o.loss) - std::log(e + a / std::pow(o.n, al) + b / std::pow(o.d, be));
    EXPECT_NEAR(p["points"][i]["log_residual"].get<double>(), hand, 1e-12);
  }
}

// The band is the bootstrap's own intervals: at C = 1e21 it brackets the frontier and equals
// the N_opt@1e+21 interval the fit reports (same draws, same percentile rule), to the grid's
// nearest C.
TEST(CurvesTest, BandIsTheBootstrapIntervalOfTheFrontier) {
  const Dataset data = Generated();
  const StoredFit f = FitOf(data, 200);
  CurveOptions o;
  o.frontier_points = 3;  // C = smallest / 3, the geometric middle, largest x 30
  // Choose the range so that the middle point is exactly 1e21.
  const double lo = 6 * 1e7 * 1e8, hi = 6 * 1e10 * 1e11;
  o.c_below = 1;
  o.c_above = 1e21 * 1e21 / (lo * hi);
  Result<nlohmann::json> curves = FitCurves(f, data, o);
  ASSERT_TRUE(curves.ok()) << curves.status().message();
  const nlohmann::json& p = (*curves)["parametric"];
  ASSERT_FALSE(p["band"].is_null());
  const double c_mid = p["frontier"]["c"][1].get<double>();
  ASSERT_NEAR(c_mid, 1e21, 1e9);
  const double n_mid = p["frontier"]["n_opt"][1].get<double>();
  const double band_lo = p["band"]["n_lo"][1].get<double>(),
               band_hi = p["band"]["n_hi"][1].get<double>();
  EXPECT_LT(band_lo, n_mid);
  EXPECT_GT(band_hi, n_mid);
  // The fit stores every draw: the band uses all of them.
  Result<fit::RecordLaw> law = fit::LawFromRecord(f.record);
  ASSERT_TRUE(law.ok());
  EXPECT_EQ(p["band"]["draws_used"].get<size_t>(), law->draws.size());
  const auto ci = f.record.ci.find("N_opt@1e+21");
  ASSERT_NE(ci, f.record.ci.end());
  EXPECT_NEAR(band_lo, ci->second.lo, 0.02 * ci->second.lo);
  EXPECT_NEAR(band_hi, ci->second.hi, 0.02 * ci->second.hi);
}

// The notebook's granularity figure evaluates the moe law (Krajewski et al. 2024, eq. 5) in
// Python: it must agree with the C++ law to the last digits on the same points.
TEST(CurvesTest, NotebookMoeLawEqualsTheCppLaw) {
  const std::map<std::string, double> named = {{"c", 1.7},    {"g", 2.5},     {"a", 35.0},
                                               {"b", 900.0},  {"alpha", 0.3}, {"beta", 0.33},
                                               {"gamma", 0.6}};
  Result<const fit::Form*> form = fit::GetForm("moe");
  ASSERT_TRUE(form.ok());
  std::vector<double> params;
  for (const auto& spec : (*form)->params()) params.push_back(named.at(spec.name));
  const std::vector<std::array<double, 3>> points = {
      {1e6, 1e8, 1}, {3e7, 2e9, 4}, {1e9, 5e10, 16}, {2e5, 1e7, 64}};
  std::ostringstream py;
  py << "import sys; sys.path.insert(0, '" << ISOFLOP_SOURCE_DIR << "/notebooks')\n"
     << "import isoflop_report as ir\n"
     << "law = ir.Law(form='moe', params=dict(c=1.7, g=2.5, a=35.0, b=900.0, alpha=0.3, "
        "beta=0.33, gamma=0.6))\n";
  for (const auto& p : points)
    py << "print(repr(float(law.loss(" << p[0] << ", " << p[1] << ", " << p[2] << "))))\n";
  const std::string script =
      (std::filesystem::temp_directory_path() / "isoflop_moe_law.py").string();
  std::ofstream(script) << py.str();
  FILE* pipe = ::popen(("/usr/bin/python3 " + script + " 2>&1").c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[256];
  while (std::fgets(buf, sizeof buf, pipe)) out += buf;
  ASSERT_EQ(::pclose(pipe), 0) << out;
  std::istringstream lines(out);
  for (const auto& p : points) {
    double python = NAN;
    lines >> python;
    fit::ScalingLaw law;
    law.form = "moe";
    law.params = params;
    law.g = p[2];
    const double cpp = law.Loss(p[0], p[1]);
    EXPECT_NEAR(python, cpp, 1e-12 * cpp) << p[0] << " " << p[1] << " " << p[2] << "\n" << out;
  }
}

}  // namespace
}  // namespace isoflop::analysis
