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
// The skills language (data.language: skills) is the quantization model of Michaud et al.
// (2023) as an associative memory with Zipf inputs (Cabannes, Dohmatob & Bietti 2023):
//
//   Three alphabets: A = ids [0, m), B = [m, 2m), answers [2m, V), m = ⌊V/3⌋. Each of the
//   K = m² pairs (a, b) is a skill with a fixed answer ans(a, b), drawn uniformly from the
//   answers. A random permutation ranks the skills; skill of rank r has frequency
//   p_r ∝ r^-skill_zipf. Text is a stream of independent chunks "a b ans(a, b)" with (a, b)
//   drawn from p. A model that has stored the first n skills pays nothing on their answers
//   and about log(V − 2m) on the rest, whose mass falls as n^(1 − skill_zipf): how many skills
//   N parameters can hold, and how many D tokens show often enough, sets the loss.
//
// It is an order-2 chain too: after an answer, a ~ P(a) = Σ_b p(a, b); after a, b ~ p(a, b) /
// P(a); after (a, b), the answer. Entropy rate in closed form: each chunk carries the entropy
// of the skill choice, H = −Σ p log p / 3 nats/token. Every sequence starts at a uniformly
// drawn phase of the chunk stream, which is its stationary distribution, so again every target
// with two tokens of context has expected −log P exactly H.
//
// Tables depend only on the options and build_seed. Immutable after Build: thread-safe for
// concurrent const use; Sample mutates only the caller's Rng.
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
  static Result<SyntheticLanguage> BuildSkills(const DataConfig& c);
  double SkillsProb(int x, int y, int c) const;  // P(c | x, y)
  void SampleSkills(Rng& rng, int len, int64_t* out) const;

  SyntheticKind kind_ = SyntheticKind::kMarkov;
  int vocab_ = 0;
  // skills language: m = |A| = |B|; skill (a, b) has index a·m + (b − m)
  int m_ = 0;
  std::vector<double> skill_p_;    // (m²) frequency of each skill
  std::vector<double> skill_cdf_;  // (m²) cumulative skill_p_
  std::vector<double> a_p_;        // (m) P(a) = Σ_b p(a, b)
  std::vector<int> answer_;        // (m²) ans(a, b), an id in [2m, V)
  int row_len_ = 0;                // entries per pair row (k1 + k2, zero-padded)
  std::vector<Next> next_;         // (V·V, row_len): merged P(· | a, b), prob 0 for padding
  std::vector<double> pi_cdf_;     // cumulative π over pairs a·V + b
  double entropy_ = 0;
};

}  // namespace isoflop::trainer
