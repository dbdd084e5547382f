// Scaling-law forms. Every form is fitted by the same machinery (parametric.h): it only has
// to say what its parameters are, where to start, and log L̂(N, D, G) with its gradient for a
// batch of points. Adding a form = one small struct deriving from Form + one line in
// GetForm() (src/forms.cc).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "isoflop/common/status.h"

namespace isoflop::fit {

// Column view of the points one evaluation needs (logs precomputed once per fit).
struct LogColumns {
  std::vector<double> log_n, log_d, log_g;  // natural logs; all the same length
  size_t size() const { return log_n.size(); }
};

// One fitted parameter. The solver works in "internal" units; users see "reported" ones:
// reported = exp(internal) when log_scale (so A > 0 without bounds), else the same.
struct ParamSpec {
  std::string name;          // reported name, e.g. "E", "alpha" (also the JSON key)
  bool log_scale;            // true: internal value is log(reported)
  std::vector<double> grid;  // default start values, internal units (grid = product of axes)
  std::string axis;          // an exponent: "N", "D" or "G", the quantity loss falls with
};

// "alpha = -0.0312 <= 0: the loss does not fall with N" for an exponent at or below zero, else
// "" (coefficients: always ""). With such an exponent of N or D no budget has a
// compute-optimal split, and with one of G the granularity does not help.
std::string NotFallingSentence(const ParamSpec& spec, double reported);

// A scaling-law form. Implementations are stateless and thread-safe (const methods only).
class Form {
 public:
  virtual ~Form() = default;
  virtual const std::string& name() const = 0;  // "chinchilla", "kaplan", "moe"
  virtual const std::vector<ParamSpec>& params() const = 0;

  // For each point i: log_pred[i] = log L̂(x; N_i, D_i, G_i). When jac is not null it receives
  // ∂ log_pred[i] / ∂ x_j at jac[i + j·n] (column-major, n = cols.size()). x is internal.
  virtual void LogPredict(const double* x, const LogColumns& cols, double* log_pred,
                          double* jac) const = 0;

  // The loss no model reaches however large (E for chinchilla, c for moe, 0 for kaplan).
  virtual double Irreducible(const std::vector<double>& reported) const = 0;

  // True when this form is E + A/N^α + B/D^β (the Chinchilla closed form applies).
  virtual bool IsChinchilla() const { return false; }

  int NumParams() const { return static_cast<int>(params().size()); }
  // Index of the parameter with this reported name, or -1.
  int IndexOf(const std::string& reported_name) const;
  // Loss L̂ at one point, from reported parameter values.
  double Predict(const std::vector<double>& reported, double n, double d, double g = 1) const;
  // Reported <-> internal units.
  std::vector<double> ToInternal(const std::vector<double>& reported) const;
  std::vector<double> ToReported(const std::vector<double>& internal) const;
};

// Chinchilla (Hoffmann et al. 2022, eq. 2): L = E + A/N^α + B/D^β, fitted as
// log L = LSE(a − α log N, b − β log D, e) (eq. 10, Approach 3). Parameters E, A, B, alpha,
// beta. Grid: Hoffmann's 4,500 starts (α, β ∈ {0,.5,..,2}, e ∈ {-1,-.5,..,1}, a, b ∈ {0,5,..,25}).
// Kaplan et al. 2020 (eq. 1.5): L = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D. Parameters Nc, Dc,
// alpha_N, alpha_D.
// Krajewski et al. 2024 (fine-grained MoE, eq. 5): L = c + (g/G^γ + a)/N^α + b/D^β.
// Parameters c, g, a, b, alpha, beta, gamma.
//
// Returns the form with that name ("chinchilla", "kaplan", "moe"), or InvalidArgument listing
// the known names. The returned pointer is a process-lifetime singleton; never delete it.
Result<const Form*> GetForm(const std::string& name);

// Names accepted by GetForm, in a stable order.
std::vector<std::string> FormNames();

}  // namespace isoflop::fit
