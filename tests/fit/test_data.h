// Shared fixtures of the fit tests: synthetic observations from a known law with seeded
// noise, and the real Chinchilla points (Besiroglu et al. 2024 extraction).
#pragma once

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "isoflop/fit/observation.h"
#include "isoflop/fit/run_fit.h"
#include "isoflop/store/observations_csv.h"

namespace isoflop::fit::testing {

// Chinchilla-form losses on an 8×8 grid of N ∈ [1e7, 1e10] and D ∈ [1e8, 1e11] (log-spaced),
// each multiplied by exp(σ·z), z ~ N(0,1) from mt19937_64(seed).
inline std::vector<Observation> Synthetic(double e, double a, double b, double alpha, double beta,
                                          double sigma, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> z(0, 1);
  std::vector<Observation> obs;
  for (int i = 0; i < 8; ++i) {
    for (int j = 0; j < 8; ++j) {
      Observation o;
      o.n = std::pow(10.0, 7 + 3.0 * i / 7);
      o.d = std::pow(10.0, 8 + 3.0 * j / 7);
      o.loss = (e + a / std::pow(o.n, alpha) + b / std::pow(o.d, beta)) * std::exp(sigma * z(rng));
      obs.push_back(o);
    }
  }
  return obs;
}

// An isoFLOP design from the same law (E=1.69, A=406.4, B=410.7, α=0.34, β=0.28): 8 budgets
// C = 1e17..1e21 (log-spaced) × 8 sizes N = N_opt(C)·10^[-0.9, 0.9] (log-spaced), D = C/(6N),
// losses multiplied by exp(σ·z), z ~ N(0,1) from mt19937_64(seed). Every observation carries C.
inline std::vector<Observation> IsoflopGrid(double sigma, uint64_t seed) {
  const double e = 1.69, a = 406.4, b = 410.7, alpha = 0.34, beta = 0.28;
  // Hoffmann et al. 2022, eq. 4: N_opt = G·(C/6)^(β/(α+β)), G = (αA/(βB))^(1/(α+β)).
  const double g = std::pow(alpha * a / (beta * b), 1 / (alpha + beta));
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> z(0, 1);
  std::vector<Observation> obs;
  for (int k = 0; k < 8; ++k) {
    const double c = std::pow(10.0, 17 + 4.0 * k / 7);
    const double n_opt = g * std::pow(c / 6, beta / (alpha + beta));
    for (int j = 0; j < 8; ++j) {
      Observation o;
      o.n = n_opt * std::pow(10.0, -0.9 + 1.8 * j / 7);
      o.c = c;
      o.d = c / (6 * o.n);
      o.loss = (e + a / std::pow(o.n, alpha) + b / std::pow(o.d, beta)) * std::exp(sigma * z(rng));
      obs.push_back(o);
    }
  }
  return obs;
}

// The 245 Chinchilla runs (N, C, loss; D = C/(6N)), in file order, read by the store's
// CSV reader (the same one `isoflop import` uses).
inline std::vector<Observation> ChinchillaAll() {
  auto points =
      store::ReadObservationsCsv(ISOFLOP_DATA_DIR "/chinchilla/svg_extracted_data.csv");
  std::vector<Observation> obs;
  if (!points.ok()) return obs;  // tests then fail on the point count
  for (const auto& p : *points) {
    Observation o;
    o.n = p.n;
    o.d = p.d;
    o.c = p.c;
    o.loss = p.loss;
    obs.push_back(o);
  }
  return obs;
}

// The replication's 240 points: the five highest losses dropped.
inline std::vector<Observation> Chinchilla240() { return ExcludeTopLoss(ChinchillaAll(), 5); }

}  // namespace isoflop::fit::testing
