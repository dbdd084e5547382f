// Parameter and FLOP accounting for the shapes model.cc builds. Plain arithmetic: the sweep
// planner links this without LibTorch. tests/trainer/model_test.cc checks TotalParams against
// sum(numel()) of real LibTorch models for every variant.
#include "isoflop/trainer/accounting.h"

#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

namespace isoflop::accounting {

namespace {

// Parameters of one normalisation layer over d features (model.cc: RmsNormImpl has a weight
// only; LayerNormImpl has a weight and, with bias, a bias).
int64_t NormParams(const Shape& s) {
  const int64_t d = s.d_model;
  if (s.norm == Norm::kLayerNorm && s.bias) return 2 * d;
  return d;
}

// Parameters of a Linear(in, out) with the shape's bias setting.
int64_t LinearParams(int64_t in, int64_t out, bool bias) { return in * out + (bias ? out : 0); }

int64_t BlockParams(const Shape& s) {
  const int64_t d = s.d_model;
  const int64_t ff = EffectiveDff(s);
  const int64_t attn = LinearParams(d, 3 * d, s.bias) + LinearParams(d, d, s.bias);
  const int64_t mlp = s.mlp == Mlp::kSwiGlu
                          ? 2 * LinearParams(d, ff, s.bias) + LinearParams(ff, d, s.bias)
                          : LinearParams(d, ff, s.bias) + LinearParams(ff, d, s.bias);
  return 2 * NormParams(s) + attn + mlp;
}

int64_t EmbeddingParams(const Shape& s) {
  const int64_t d = s.d_model;
  int64_t n = int64_t{s.vocab_size} * d;                             // token embedding
  if (s.pos == PosEmbedding::kLearned) n += int64_t{s.seq_len} * d;  // position embedding
  if (!s.tie_embeddings) n += int64_t{s.vocab_size} * d;             // untied head (never a bias)
  return n;
}

}  // namespace

Status Shape::Validate() const {
  auto bad = [](const char* field, const std::string& why) {
    return Status::InvalidArgument(std::string("field 'model.") + field + "': " + why);
  };
  if (n_layer < 1) return bad("n_layer", "must be >= 1, got " + std::to_string(n_layer));
  if (d_model < 1) return bad("d_model", "must be >= 1, got " + std::to_string(d_model));
  if (n_head < 1) return bad("n_head", "must be >= 1, got " + std::to_string(n_head));
  if (d_model % n_head != 0) {
    return bad("d_model", "d_model " + std::to_string(d_model) + " is not divisible by n_head " +
                              std::to_string(n_head));
  }
  if (pos == PosEmbedding::kRope && (d_model / n_head) % 2 != 0) {
    return bad("n_head", "rope needs an even head size, got d_model/n_head = " +
                             std::to_string(d_model / n_head));
  }
  if (d_ff < 0) return bad("d_ff", "must be >= 0 (0 = default), got " + std::to_string(d_ff));
  if (vocab_size < 2) return bad("vocab_size", "must be >= 2, got " + std::to_string(vocab_size));
  if (seq_len < 1) return bad("seq_len", "must be >= 1, got " + std::to_string(seq_len));
  return Status::Ok();
}

int DefaultDff(int d_model, Mlp mlp) {
  if (mlp == Mlp::kGelu) return 4 * d_model;
  const int raw = (8 * d_model + 2) / 3;  // ceil(8d/3)
  return (raw + 7) / 8 * 8;
}

int EffectiveDff(const Shape& s) { return s.d_ff > 0 ? s.d_ff : DefaultDff(s.d_model, s.mlp); }

int64_t TotalParams(const Shape& s) {
  return EmbeddingParams(s) + int64_t{s.n_layer} * BlockParams(s) + NormParams(s);
}

int64_t NonEmbeddingParams(const Shape& s) { return TotalParams(s) - EmbeddingParams(s); }

double FlopsPerToken6N(const Shape& s) { return 6.0 * static_cast<double>(TotalParams(s)); }

double FlopsPerToken6NAttention(const Shape& s) {
  return 6.0 * static_cast<double>(NonEmbeddingParams(s)) +
         6.0 * s.n_layer * static_cast<double>(s.seq_len) * s.d_model;
}

double FlopsPerTokenChinchilla(const Shape& s) {
  // Hoffmann et al. 2022, Appendix F, forward FLOPs of one sequence of S tokens. Key size times
  // heads is d_model here. For SwiGLU the dense block has three d x ff matrices instead of two.
  const double S = s.seq_len, d = s.d_model, V = s.vocab_size, H = s.n_head;
  const double ff = EffectiveDff(s);
  const double embeddings = 2.0 * S * V * d;
  const double kqv = 2.0 * S * 3.0 * d * d;
  const double logits = 2.0 * S * S * d;
  const double softmax = 3.0 * H * S * S;
  const double reduction = 2.0 * S * S * d;
  const double projection = 2.0 * S * d * d;
  const double dense = 2.0 * S * d * ff * (s.mlp == Mlp::kSwiGlu ? 3.0 : 2.0);
  const double final_logits = 2.0 * S * d * V;
  const double forward = embeddings +
                         s.n_layer * (kqv + logits + softmax + reduction + projection + dense) +
                         final_logits;
  return 3.0 * forward / S;  // backward = 2 x forward (Appendix F)
}

Result<Shape> SolveShape(double target_params, const AspectRule& rule, const Shape& base) {
  if (!(target_params > 0)) return Status::InvalidArgument("target parameters must be > 0");
  if (rule.head_dim < 1 || rule.d_model_multiple < 1 || rule.min_layers < 1 ||
      rule.max_layers < rule.min_layers || !(rule.d_model_per_layer > 0)) {
    return Status::InvalidArgument(
        "aspect rule: need head_dim >= 1, d_model_multiple >= 1, 1 <= min_layers <= max_layers, "
        "d_model_per_layer > 0");
  }
  // d_model must be a multiple of both the rounding multiple and the head size.
  const int step = std::lcm(rule.head_dim, rule.d_model_multiple);
  const double log_target = std::log(target_params);
  std::optional<Shape> best;
  double best_aspect_err = std::numeric_limits<double>::infinity();
  // For each depth, the width whose N is nearest the target in log space; then the depth whose
  // width/depth ratio is nearest the rule's (in log space). N stays near the target at every
  // depth, so the aspect rule only decides the depth.
  for (int layers = rule.min_layers; layers <= rule.max_layers; ++layers) {
    std::optional<Shape> at_depth;
    double at_depth_err = std::numeric_limits<double>::infinity();
    for (int d = step; d <= (1 << 16); d += step) {
      Shape s = base;
      s.n_layer = layers;
      s.d_model = d;
      s.n_head = d / rule.head_dim;
      if (!s.Validate().ok()) continue;
      const double err = std::abs(std::log(static_cast<double>(TotalParams(s))) - log_target);
      if (err < at_depth_err) {
        at_depth_err = err;
        at_depth = s;
      }
      if (TotalParams(s) > target_params) break;  // N grows with d: the next one is farther
    }
    if (!at_depth) continue;
    // A width that overshoots by more than one rounding step means the depth is too large.
    if (at_depth_err > std::log(2.0) && TotalParams(*at_depth) > target_params) continue;
    const double aspect_err = std::abs(std::log(static_cast<double>(at_depth->d_model) / layers) -
                                       std::log(rule.d_model_per_layer));
    if (aspect_err < best_aspect_err) {
      best_aspect_err = aspect_err;
      best = at_depth;
    }
  }
  if (!best) {
    return Status::InvalidArgument("no shape with " + std::to_string(rule.min_layers) + ".." +
                                   std::to_string(rule.max_layers) + " layers has about " +
                                   std::to_string(target_params) +
                                   " parameters (is the target smaller than the embedding?)");
  }
  return *best;
}

Result<Norm> ParseNorm(const std::string& s) {
  if (s == "rmsnorm") return Norm::kRmsNorm;
  if (s == "layernorm") return Norm::kLayerNorm;
  return Status::InvalidArgument("expected one of rmsnorm, layernorm; got '" + s + "'");
}
Result<PosEmbedding> ParsePosEmbedding(const std::string& s) {
  if (s == "rope") return PosEmbedding::kRope;
  if (s == "alibi") return PosEmbedding::kAlibi;
  if (s == "learned") return PosEmbedding::kLearned;
  return Status::InvalidArgument("expected one of rope, alibi, learned; got '" + s + "'");
}
Result<Mlp> ParseMlp(const std::string& s) {
  if (s == "swiglu") return Mlp::kSwiGlu;
  if (s == "gelu") return Mlp::kGelu;
  return Status::InvalidArgument("expected one of swiglu, gelu; got '" + s + "'");
}
std::string ToString(Norm v) { return v == Norm::kRmsNorm ? "rmsnorm" : "layernorm"; }
std::string ToString(PosEmbedding v) {
  switch (v) {
    case PosEmbedding::kRope:
      return "rope";
    case PosEmbedding::kAlibi:
      return "alibi";
    case PosEmbedding::kLearned:
      return "learned";
  }
  return "?";
}
std::string ToString(Mlp v) { return v == Mlp::kSwiGlu ? "swiglu" : "gelu"; }

}  // namespace isoflop::accounting
