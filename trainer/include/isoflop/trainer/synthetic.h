// A built-in synthetic language with a known entropy rate, so the irreducible loss E of a
// scaling-law fit is ground truth. The process (docs/synthetic-data.md has the long form):
//
//   Vocabulary V. Token popularity u_i ∝ (rank_i)^-zipf over a random permutation of the ids.
//   Order-1 table: for each previous token b, draw k1 distinct tokens without replacement with
//   probability ∝ u; the r-th drawn token gets weight ∝ 1/r (normalised): P1(c | b).
//   Order-2 table: for each pair (a, b), the same with k2 tokens: P2(c | a, b).
//   Next token: P(c | a, b) = λ·P2(c | a, b) + (1 − λ)·P1(c | b), an order-2 Markov chain on
//   pair states (a, b) -> (b, c).
//
// Entropy rate: the stationary distribution π over pairs by power iteration (lazy form
// π ← ½π + ½πP, which has the same fixed point and cannot oscillate) from uniform, to an L1
// change below 1e-15; then H = Σ_(a,b) π(a, b) · H(P(· | a, b)) in nats/token (Cover & Thomas,
// Elements of Information Theory, Theorem 4.2.4). Every sequence starts from a pair drawn
// from π, so every position is stationary; a target with at least two tokens of context has
// expected -log P exactly H, which is therefore the floor of the validation loss.
//
// Tables depend only on (V, k1, k2, λ, zipf, build_seed). Immutable after Build: thread-safe
// for concurrent const use; Sample mutates only the caller's Rng.
#pragma once

#include <cstdint>
#include <vector>

#include "isoflop/common/status.h"
#include "isoflop/trainer/rng.h"
#include "isoflop/trainer/run_config.h"

namespace isoflop::trainer {

class SyntheticLanguage {
 public:
  // InvalidArgument when the options are out of range (see DataConfig).
  static Result<SyntheticLanguage> Build(const DataConfig& c);

  int vocab() const { return vocab_; }
  // Exact entropy rate in nats/token.
  double EntropyRate() const { return entropy_; }
  // P(c | a, b).
  double Prob(int a, int b, int c) const;
  // Writes `len` tokens of a fresh sequence starting from a pair drawn from π.
  void Sample(Rng& rng, int len, int64_t* out) const;

 private:
  struct Next {
    int token;
    double prob;
  };
  const Next* Row(int a, int b) const { return &next_[(size_t(a) * vocab_ + b) * row_len_]; }
  int NextToken(Rng& rng, int a, int b) const;

  int vocab_ = 0;
  int row_len_ = 0;             // entries per pair row (k1 + k2, zero-padded)
  std::vector<Next> next_;      // (V·V, row_len): merged P(· | a, b), prob 0 for padding
  std::vector<double> pi_cdf_;  // cumulative π over pairs a·V + b
  double entropy_ = 0;
};

}  // namespace isoflop::trainer
