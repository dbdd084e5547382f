// The scaling-law forms: Chinchilla (Hoffmann 2022), Kaplan 2020 and fine-grained MoE
// (Krajewski 2024). Each evaluates log L̂ and its gradient for a whole batch with Eigen arrays
// (vectorised exp/log); the fit calls this ~10^5 times, so it is the hot loop.
#include <Eigen/Dense>
#include <cmath>
#include <cstdio>
#include <limits>

#include "isoflop/fit/form.h"

namespace isoflop::fit {
namespace {

using Eigen::ArrayXd;
using CMap = Eigen::Map<const ArrayXd>;
using Map = Eigen::Map<ArrayXd>;

std::vector<double> Range(double lo, double hi, double step) {
  std::vector<double> v;
  for (double x = lo; x <= hi + 1e-9; x += step) v.push_back(x);
  return v;
}

// Chinchilla: log L = LSE(a − α log N, b − β log D, e) (Hoffmann et al. 2022, eq. 10).
// Internal x = (e, a, b, alpha, beta); reported E = e^e, A = e^a, B = e^b.
struct ChinchillaForm final : Form {
  const std::string& name() const override { return name_; }
  const std::vector<ParamSpec>& params() const override { return specs_; }
  bool IsChinchilla() const override { return true; }
  double Irreducible(const std::vector<double>& r) const override { return r[0]; }

  void LogPredict(const double* x, const LogColumns& cols, double* log_pred,
                  double* jac) const override {
    const Eigen::Index n = static_cast<Eigen::Index>(cols.size());
    const CMap log_n(cols.log_n.data(), n), log_d(cols.log_d.data(), n);
    const double e = x[0], a = x[1], b = x[2], alpha = x[3], beta = x[4];
    const ArrayXd u1 = a - alpha * log_n;
    const ArrayXd u2 = b - beta * log_d;
    // Safe log-sum-exp: subtract the largest term (e may be -inf when E is fixed at 0).
    const ArrayXd m = u1.max(u2).max(e);
    const ArrayXd w1 = (u1 - m).exp(), w2 = (u2 - m).exp(), w3 = (e - m).exp();
    const ArrayXd s = w1 + w2 + w3;
    Map(log_pred, n) = m + s.log();
    if (jac == nullptr) return;
    const ArrayXd inv = s.inverse();
    Map(jac + 0 * n, n) = w3 * inv;
    Map(jac + 1 * n, n) = w1 * inv;
    Map(jac + 2 * n, n) = w2 * inv;
    Map(jac + 3 * n, n) = -w1 * inv * log_n;
    Map(jac + 4 * n, n) = -w2 * inv * log_d;
  }

  std::string name_ = "chinchilla";
  std::vector<ParamSpec> specs_ = {
      {"E", true, Range(-1, 1, 0.5)},         {"A", true, Range(0, 25, 5)},
      {"B", true, Range(0, 25, 5)},           {"alpha", false, Range(0, 2, 0.5), "N"},
      {"beta", false, Range(0, 2, 0.5), "D"},
  };
};

// Kaplan et al. 2020, eq. 1.5: L = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D, so
// log L = α_D · LSE(p, q), p = (α_N/α_D)(log N_c − log N), q = log D_c − log D.
// Internal x = (log Nc, log Dc, alpha_N, alpha_D).
struct KaplanForm final : Form {
  const std::string& name() const override { return name_; }
  const std::vector<ParamSpec>& params() const override { return specs_; }
  double Irreducible(const std::vector<double>&) const override { return 0; }

  void LogPredict(const double* x, const LogColumns& cols, double* log_pred,
                  double* jac) const override {
    const Eigen::Index n = static_cast<Eigen::Index>(cols.size());
    const CMap log_n(cols.log_n.data(), n), log_d(cols.log_d.data(), n);
    const double lnc = x[0], ldc = x[1], an = x[2], ad = x[3];
    const double ratio = an / ad;
    const ArrayXd gap_n = lnc - log_n;
    const ArrayXd p = ratio * gap_n;
    const ArrayXd q = ldc - log_d;
    const ArrayXd m = p.max(q);
    const ArrayXd w1 = (p - m).exp(), w2 = (q - m).exp();
    const ArrayXd s = w1 + w2;
    const ArrayXd lse = m + s.log();
    Map(log_pred, n) = ad * lse;
    if (jac == nullptr) return;
    const ArrayXd sp = w1 / s, sq = w2 / s;          // softmax weights of p and q
    Map(jac + 0 * n, n) = ad * sp * ratio;           // ∂/∂ log Nc
    Map(jac + 1 * n, n) = ad * sq;                   // ∂/∂ log Dc
    Map(jac + 2 * n, n) = sp * gap_n;                // ∂/∂ alpha_N
    Map(jac + 3 * n, n) = lse - sp * ratio * gap_n;  // ∂/∂ alpha_D
  }

  std::string name_ = "kaplan";
  std::vector<ParamSpec> specs_ = {
      {"Nc", true, {25, 30, 35}},
      {"Dc", true, {20, 25, 30}},
      {"alpha_N", false, {0.05, 0.1, 0.3, 0.6}, "N"},
      {"alpha_D", false, {0.05, 0.1, 0.3, 0.6}, "D"},
  };
};

// Krajewski et al. 2024, eq. 5: L = c + (g/G^γ + a)/N^α + b/D^β, so
// log L = LSE(lc, lg − γ log G − α log N, la − α log N, lb − β log D).
// Internal x = (log c, log g, log a, log b, alpha, beta, gamma).
struct MoeForm final : Form {
  const std::string& name() const override { return name_; }
  const std::vector<ParamSpec>& params() const override { return specs_; }
  double Irreducible(const std::vector<double>& r) const override { return r[0]; }

  void LogPredict(const double* x, const LogColumns& cols, double* log_pred,
                  double* jac) const override {
    const Eigen::Index n = static_cast<Eigen::Index>(cols.size());
    const CMap log_n(cols.log_n.data(), n), log_d(cols.log_d.data(), n),
        log_g(cols.log_g.data(), n);
    const double lc = x[0], lg = x[1], la = x[2], lb = x[3], alpha = x[4], beta = x[5],
                 gamma = x[6];
    const ArrayXd u2 = lg - gamma * log_g - alpha * log_n;
    const ArrayXd u3 = la - alpha * log_n;
    const ArrayXd u4 = lb - beta * log_d;
    const ArrayXd m = u2.max(u3).max(u4).max(lc);
    const ArrayXd w1 = (lc - m).exp(), w2 = (u2 - m).exp(), w3 = (u3 - m).exp(),
                  w4 = (u4 - m).exp();
    const ArrayXd s = w1 + w2 + w3 + w4;
    Map(log_pred, n) = m + s.log();
    if (jac == nullptr) return;
    const ArrayXd inv = s.inverse();
    Map(jac + 0 * n, n) = w1 * inv;
    Map(jac + 1 * n, n) = w2 * inv;
    Map(jac + 2 * n, n) = w3 * inv;
    Map(jac + 3 * n, n) = w4 * inv;
    Map(jac + 4 * n, n) = -(w2 + w3) * inv * log_n;
    Map(jac + 5 * n, n) = -w4 * inv * log_d;
    Map(jac + 6 * n, n) = -w2 * inv * log_g;
  }

  std::string name_ = "moe";
  std::vector<ParamSpec> specs_ = {
      {"c", true, {-0.5, 0.5}},
      {"g", true, {0, 10}},
      {"a", true, {0, 10}},
      {"b", true, {0, 10, 20}},
      {"alpha", false, {0.25, 0.75}, "N"},
      {"beta", false, {0.25, 0.75}, "D"},
      {"gamma", false, {0.25, 1.0}, "G"},
  };
};

const ChinchillaForm kChinchilla;
const KaplanForm kKaplan;
const MoeForm kMoe;

}  // namespace

std::string NotFallingSentence(const ParamSpec& spec, double reported) {
  if (spec.log_scale || reported > 0) return "";
  char text[200];
  std::snprintf(text, sizeof text, "%s = %.4g <= 0: the loss does not fall with %s",
                spec.name.c_str(), reported, spec.axis.c_str());
  return text;
}

int Form::IndexOf(const std::string& reported_name) const {
  for (int i = 0; i < NumParams(); ++i)
    if (params()[i].name == reported_name) return i;
  return -1;
}

std::vector<double> Form::ToInternal(const std::vector<double>& reported) const {
  std::vector<double> x(reported.size());
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = params()[i].log_scale ? std::log(reported[i]) : reported[i];
  return x;
}

std::vector<double> Form::ToReported(const std::vector<double>& internal) const {
  std::vector<double> r(internal.size());
  for (size_t i = 0; i < r.size(); ++i)
    r[i] = params()[i].log_scale ? std::exp(internal[i]) : internal[i];
  return r;
}

double Form::Predict(const std::vector<double>& reported, double n, double d, double g) const {
  LogColumns cols;
  cols.log_n = {std::log(n)};
  cols.log_d = {std::log(d)};
  cols.log_g = {std::log(g)};
  const std::vector<double> x = ToInternal(reported);
  double log_pred = 0;
  LogPredict(x.data(), cols, &log_pred, nullptr);
  return std::exp(log_pred);
}

Result<const Form*> GetForm(const std::string& name) {
  if (name == "chinchilla") return static_cast<const Form*>(&kChinchilla);
  if (name == "kaplan") return static_cast<const Form*>(&kKaplan);
  if (name == "moe") return static_cast<const Form*>(&kMoe);
  return Status::InvalidArgument("unknown scaling-law form '" + name +
                                 "': expected chinchilla, kaplan or moe");
}

std::vector<std::string> FormNames() { return {"chinchilla", "kaplan", "moe"}; }

}  // namespace isoflop::fit
