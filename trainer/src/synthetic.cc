// Construction, entropy rate and sampling of the synthetic language (process in synthetic.h).
#include "isoflop/trainer/synthetic.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

namespace isoflop::trainer {

namespace {

// Draws k distinct tokens without replacement with probability ∝ popularity; the r-th drawn
// token gets weight ∝ 1/r. Returns (token, normalised weight) pairs.
std::vector<std::pair<int, double>> DrawSuccessors(Rng& rng, const std::vector<double>& popularity,
                                                   int k) {
  std::vector<double> mass = popularity;
  std::vector<std::pair<int, double>> out;
  double norm = 0;
  for (int r = 1; r <= k; ++r) {
    const double total = std::accumulate(mass.begin(), mass.end(), 0.0);
    double x = rng.Uniform() * total;
    int pick = -1;
    for (size_t i = 0; i < mass.size(); ++i) {
      if (mass[i] <= 0) continue;
      pick = static_cast<int>(i);
      if (x < mass[i]) break;
      x -= mass[i];
    }
    mass[pick] = 0;
    out.emplace_back(pick, 1.0 / r);
    norm += 1.0 / r;
  }
  for (auto& [t, w] : out) w /= norm;
  return out;
}

}  // namespace

Result<SyntheticLanguage> SyntheticLanguage::Build(const DataConfig& c) {
  if (c.language == SyntheticKind::kSkills) return BuildSkills(c);
  const int V = c.vocab;
  if (V < 2 || V > 512) return Status::InvalidArgument("synthetic vocab must be in 2..512");
  if (c.k1 < 1 || c.k1 > V || c.k2 < 1 || c.k2 > V) {
    return Status::InvalidArgument("synthetic k1 and k2 must be in 1..vocab");
  }
  if (c.lambda < 0 || c.lambda > 1) return Status::InvalidArgument("synthetic lambda not in [0,1]");
  SyntheticLanguage L;
  L.vocab_ = V;
  L.row_len_ = c.k1 + c.k2;
  Rng rng(c.build_seed);

  // Popularity: u ∝ rank^-zipf over a random permutation (Fisher-Yates).
  std::vector<int> perm(V);
  std::iota(perm.begin(), perm.end(), 0);
  for (int i = V - 1; i > 0; --i) std::swap(perm[i], perm[rng.Below(i + 1)]);
  std::vector<double> popularity(V);
  for (int rank = 0; rank < V; ++rank) popularity[perm[rank]] = std::pow(rank + 1.0, -c.zipf);

  std::vector<std::vector<std::pair<int, double>>> p1(V);
  for (int b = 0; b < V; ++b) p1[b] = DrawSuccessors(rng, popularity, c.k1);
  L.next_.assign(size_t(V) * V * L.row_len_, Next{0, 0.0});
  for (int a = 0; a < V; ++a) {
    for (int b = 0; b < V; ++b) {
      const auto p2 = DrawSuccessors(rng, popularity, c.k2);
      std::map<int, double> merged;  // ordered: sampling order is deterministic
      for (const auto& [t, w] : p2) merged[t] += c.lambda * w;
      for (const auto& [t, w] : p1[b]) merged[t] += (1.0 - c.lambda) * w;
      Next* row = &L.next_[(size_t(a) * V + b) * L.row_len_];
      int i = 0;
      for (const auto& [t, w] : merged) row[i++] = Next{t, w};
    }
  }

  // Stationary distribution over pairs by lazy power iteration.
  const size_t P = size_t(V) * V;
  std::vector<double> pi(P, 1.0 / P), next(P);
  for (int iter = 0; iter < 200000; ++iter) {
    std::fill(next.begin(), next.end(), 0.0);
    for (size_t ab = 0; ab < P; ++ab) {
      const size_t b = ab % V;
      const Next* row = &L.next_[ab * L.row_len_];
      for (int i = 0; i < L.row_len_; ++i) next[b * V + row[i].token] += pi[ab] * row[i].prob;
    }
    double diff = 0;
    for (size_t s = 0; s < P; ++s) {
      const double v = 0.5 * (pi[s] + next[s]);
      diff += std::abs(v - pi[s]);
      pi[s] = v;
    }
    if (diff < 1e-15) break;
  }
  const double total = std::accumulate(pi.begin(), pi.end(), 0.0);
  double h = 0;
  L.pi_cdf_.resize(P);
  double cum = 0;
  for (size_t ab = 0; ab < P; ++ab) {
    pi[ab] /= total;
    const Next* row = &L.next_[ab * L.row_len_];
    double row_h = 0;
    for (int i = 0; i < L.row_len_; ++i) {
      if (row[i].prob > 0) row_h -= row[i].prob * std::log(row[i].prob);
    }
    h += pi[ab] * row_h;
    cum += pi[ab];
    L.pi_cdf_[ab] = cum;
  }
  L.pi_cdf_.back() = 1.0;
  L.entropy_ = h;
  return L;
}

Result<SyntheticLanguage> SyntheticLanguage::BuildSkills(const DataConfig& c) {
  const int V = c.vocab;
  if (V < 6 || V > 512) return Status::InvalidArgument("skills vocab must be in 6..512");
  if (!(c.skill_zipf > 0 && c.skill_zipf <= 10)) {
    return Status::InvalidArgument("skill_zipf must be in (0, 10]");
  }
  SyntheticLanguage L;
  L.kind_ = SyntheticKind::kSkills;
  L.vocab_ = V;
  L.m_ = V / 3;
  const int m = L.m_, n_answers = V - 2 * m;
  const size_t K = size_t(m) * m;
  Rng rng(c.build_seed);

  // Rank the skills by a random permutation (Fisher-Yates), then p_r ∝ r^-s.
  std::vector<size_t> by_rank(K);
  std::iota(by_rank.begin(), by_rank.end(), size_t{0});
  for (size_t i = K - 1; i > 0; --i) std::swap(by_rank[i], by_rank[rng.Below(i + 1)]);
  L.skill_p_.assign(K, 0.0);
  double norm = 0;
  for (size_t r = 0; r < K; ++r) {
    L.skill_p_[by_rank[r]] = std::pow(r + 1.0, -c.skill_zipf);
    norm += L.skill_p_[by_rank[r]];
  }
  L.answer_.resize(K);
  for (size_t k = 0; k < K; ++k) L.answer_[k] = 2 * m + static_cast<int>(rng.Below(n_answers));

  L.skill_cdf_.resize(K);
  L.a_p_.assign(m, 0.0);
  double cum = 0, h = 0;
  for (size_t k = 0; k < K; ++k) {
    const double p = L.skill_p_[k] /= norm;
    cum += p;
    L.skill_cdf_[k] = cum;
    L.a_p_[k / m] += p;
    h -= p * std::log(p);
  }
  L.skill_cdf_.back() = 1.0;
  // One chunk of three tokens carries the skill choice; the answer is determined.
  L.entropy_ = h / 3.0;
  return L;
}

double SyntheticLanguage::SkillsProb(int x, int y, int c) const {
  const int m = m_;
  auto in_a = [m](int t) { return t >= 0 && t < m; };
  auto in_b = [m](int t) { return t >= m && t < 2 * m; };
  if (y >= 2 * m && y < vocab_) return in_a(c) ? a_p_[c] : 0.0;  // after an answer: a
  if (in_a(y)) return in_b(c) ? skill_p_[size_t(y) * m + (c - m)] / a_p_[y] : 0.0;
  if (in_b(y) && in_a(x)) return answer_[size_t(x) * m + (y - m)] == c ? 1.0 : 0.0;
  return 0.0;  // a context the language never produces
}

void SyntheticLanguage::SampleSkills(Rng& rng, int len, int64_t* out) const {
  // A uniform phase of the chunk stream: the stream's stationary distribution.
  int t = -static_cast<int>(rng.Below(3));
  while (t < len) {
    const double u = rng.Uniform();
    const size_t k = std::min<size_t>(
        std::upper_bound(skill_cdf_.begin(), skill_cdf_.end(), u) - skill_cdf_.begin(),
        skill_cdf_.size() - 1);
    const int chunk[3] = {static_cast<int>(k / m_), m_ + static_cast<int>(k % m_), answer_[k]};
    for (int i = 0; i < 3; ++i, ++t) {
      if (t >= 0 && t < len) out[t] = chunk[i];
    }
  }
}

double SyntheticLanguage::Prob(int a, int b, int c) const {
  if (kind_ == SyntheticKind::kSkills) return SkillsProb(a, b, c);
  const Next* row = Row(a, b);
  for (int i = 0; i < row_len_; ++i) {
    if (row[i].token == c && row[i].prob > 0) return row[i].prob;
  }
  return 0.0;
}

int SyntheticLanguage::NextToken(Rng& rng, int a, int b) const {
  const Next* row = Row(a, b);
  double x = rng.Uniform();
  int last = row[0].token;
  for (int i = 0; i < row_len_; ++i) {
    if (row[i].prob <= 0) continue;
    last = row[i].token;
    if (x < row[i].prob) return last;
    x -= row[i].prob;
  }
  return last;  // rounding: the remaining mass belongs to the last entry
}

void SyntheticLanguage::Sample(Rng& rng, int len, int64_t* out) const {
  if (kind_ == SyntheticKind::kSkills) return SampleSkills(rng, len, out);
  const double u = rng.Uniform();
  const size_t ab = std::upper_bound(pi_cdf_.begin(), pi_cdf_.end(), u) - pi_cdf_.begin();
  int a = static_cast<int>(std::min(ab, pi_cdf_.size() - 1) / vocab_);
  int b = static_cast<int>(std::min(ab, pi_cdf_.size() - 1) % vocab_);
  if (len > 0) out[0] = a;
  if (len > 1) out[1] = b;
  for (int t = 2; t < len; ++t) {
    const int c = NextToken(rng, a, b);
    out[t] = c;
    a = b;
    b = c;
  }
}

}  // namespace isoflop::trainer
