// Parameter and FLOP accounting for the shapes model.cc builds. Plain arithmetic: the sweep
// planner links this without LibTorch. tests/trainer/model_test.cc checks TotalParams against
// sum(numel()) of real LibTorch models for every variant.
#include "isoflop/trainer/accounting.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>
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

// One MLP of hidden size ff (model.cc MlpImpl): SwiGLU fc, gate, proj; GELU fc, proj.
int64_t MlpParams(const Shape& s, int64_t ff) {
  const int64_t d = s.d_model;
  return s.mlp == Mlp::kSwiGlu ? 2 * LinearParams(d, ff, s.bias) + LinearParams(ff, d, s.bias)
                               : LinearParams(d, ff, s.bias) + LinearParams(ff, d, s.bias);
}

// Norms and attention of one block: everything but its feed-forward layer.
int64_t BlockParamsWithoutMlp(const Shape& s) {
  const int64_t d = s.d_model;
  const int64_t attn = LinearParams(d, 3 * d, s.bias) + LinearParams(d, d, s.bias);
  return 2 * NormParams(s) + attn;
}

// moe.cc MoeImpl: a bias-free router Linear(d, n_experts) (Fedus et al. 2022), the shared
// experts as one MLP of n_shared·expert_d_ff (DeepSeekMoE's implementation fuses them the same
// way), and `routed` routed experts of expert_d_ff each.
int64_t MoeLayerParams(const Shape& s, int64_t routed) {
  const MoeShape& m = *s.moe;
  const int64_t ff_e = EffectiveExpertDff(s);
  const int64_t router = LinearParams(s.d_model, m.n_experts, false);
  const int64_t shared = m.n_shared_experts > 0 ? MlpParams(s, m.n_shared_experts * ff_e) : 0;
  return router + shared + routed * MlpParams(s, ff_e);
}

// Parameters of block i; `active` counts only the k routed experts a token uses.
int64_t BlockParams(const Shape& s, int block, bool active) {
  if (!IsMoeBlock(s, block)) return BlockParamsWithoutMlp(s) + MlpParams(s, EffectiveDff(s));
  const int64_t routed = active ? EffectiveTopK(s) : s.moe->n_experts;
  return BlockParamsWithoutMlp(s) + MoeLayerParams(s, routed);
}

int64_t AllBlockParams(const Shape& s, bool active) {
  int64_t n = 0;
  for (int i = 0; i < s.n_layer; ++i) n += BlockParams(s, i, active);
  return n;
}

int64_t EmbeddingParams(const Shape& s) {
  const int64_t d = s.d_model;
  int64_t n = int64_t{s.vocab_size} * d;                             // token embedding
  if (s.pos == PosEmbedding::kLearned) n += int64_t{s.seq_len} * d;  // position embedding
  if (!s.tie_embeddings) n += int64_t{s.vocab_size} * d;             // untied head (never a bias)
  return n;
}

Status ValidateMoe(const Shape& s) {
  const MoeShape& m = *s.moe;
  auto bad = [](const char* field, const std::string& why) {
    return Status::InvalidArgument(std::string("field 'model.moe.") + field + "': " + why);
  };
  auto num = [](double v) {
    std::ostringstream os;
    os << v;
    return os.str();
  };
  if (m.n_experts < 1) return bad("n_experts", "must be >= 1, got " + std::to_string(m.n_experts));
  if (m.top_k < 1) return bad("top_k", "must be >= 1, got " + std::to_string(m.top_k));
  if (m.granularity < 0) {
    return bad("granularity", "must be >= 0 (0 = unset), got " + std::to_string(m.granularity));
  }
  if (m.expert_d_ff < 0) {
    return bad("expert_d_ff", "must be >= 0 (0 = from d_ff), got " + std::to_string(m.expert_d_ff));
  }
  const int ff = EffectiveDff(s);
  if (m.granularity > 0) {
    if (m.expert_d_ff > 0) {
      return bad("expert_d_ff", "give expert_d_ff or granularity, not both (granularity " +
                                    std::to_string(m.granularity) + " sets it to d_ff / " +
                                    std::to_string(m.granularity) + ")");
    }
    if (ff % m.granularity != 0) {
      return bad("granularity", "must divide d_ff (" + std::to_string(ff) + "), got " +
                                    std::to_string(m.granularity));
    }
  }
  if (EffectiveTopK(s) > m.n_experts) {
    const std::string k = m.granularity > 0
                              ? "top_k x granularity = " + std::to_string(EffectiveTopK(s))
                              : std::to_string(m.top_k);
    return bad("top_k", "must be <= n_experts (" + std::to_string(m.n_experts) + "), got " + k);
  }
  if (m.n_shared_experts < 0) {
    return bad("n_shared_experts", "must be >= 0, got " + std::to_string(m.n_shared_experts));
  }
  if (m.aux_loss_weight < 0)
    return bad("aux_loss_weight", "must be >= 0, got " + num(m.aux_loss_weight));
  if (m.z_loss_weight < 0) return bad("z_loss_weight", "must be >= 0, got " + num(m.z_loss_weight));
  if (m.bias_update_rate < 0) {
    return bad("bias_update_rate", "must be >= 0 (0 = off), got " + num(m.bias_update_rate));
  }
  if (m.capacity_factor < 0) {
    return bad("capacity_factor", "must be >= 0 (0 = dropless), got " + num(m.capacity_factor));
  }
  if (m.moe_every < 1) return bad("moe_every", "must be >= 1, got " + std::to_string(m.moe_every));
  if (m.n_dense_layers < 0 || m.n_dense_layers >= s.n_layer) {
    return bad("n_dense_layers", "must be in 0..n_layer-1 (" + std::to_string(s.n_layer - 1) +
                                     ") so that one block is MoE, got " +
                                     std::to_string(m.n_dense_layers));
  }
  return Status::Ok();
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
  if (moe) return ValidateMoe(*this);
  return Status::Ok();
}

int DefaultDff(int d_model, Mlp mlp) {
  if (mlp == Mlp::kGelu) return 4 * d_model;
  const int raw = (8 * d_model + 2) / 3;  // ceil(8d/3)
  return (raw + 7) / 8 * 8;
}

int EffectiveDff(const Shape& s) { return s.d_ff > 0 ? s.d_ff : DefaultDff(s.d_model, s.mlp); }

bool IsMoeBlock(const Shape& s, int block) {
  if (!s.moe) return false;
  const int after = block - s.moe->n_dense_layers;
  return after >= 0 && after % s.moe->moe_every == 0;
}

int MoeBlockCount(const Shape& s) {
  int n = 0;
  for (int i = 0; i < s.n_layer; ++i) n += IsMoeBlock(s, i) ? 1 : 0;
  return n;
}

int EffectiveExpertDff(const Shape& s) {
  if (!s.moe) return EffectiveDff(s);
  if (s.moe->expert_d_ff > 0) return s.moe->expert_d_ff;
  return EffectiveDff(s) / std::max(s.moe->granularity, 1);
}

int EffectiveTopK(const Shape& s) {
  if (!s.moe) return 0;
  return s.moe->top_k * std::max(s.moe->granularity, 1);
}

int64_t TotalParams(const Shape& s) {
  return EmbeddingParams(s) + AllBlockParams(s, /*active=*/false) + NormParams(s);
}

int64_t NonEmbeddingParams(const Shape& s) { return TotalParams(s) - EmbeddingParams(s); }

int64_t ActiveParams(const Shape& s) {
  return EmbeddingParams(s) + AllBlockParams(s, /*active=*/true) + NormParams(s);
}

int64_t ActiveNonEmbeddingParams(const Shape& s) { return ActiveParams(s) - EmbeddingParams(s); }

double FlopsPerToken6N(const Shape& s) { return 6.0 * static_cast<double>(ActiveParams(s)); }

double FlopsPerToken6NAttention(const Shape& s) {
  return 6.0 * static_cast<double>(ActiveNonEmbeddingParams(s)) +
         6.0 * s.n_layer * static_cast<double>(s.seq_len) * s.d_model;
}

double FlopsPerTokenChinchilla(const Shape& s) {
  // Hoffmann et al. 2022, Appendix F, forward FLOPs of one sequence of S tokens. Key size times
  // heads is d_model here. For SwiGLU the dense block has three d x ff matrices instead of two.
  const double S = s.seq_len, d = s.d_model, V = s.vocab_size, H = s.n_head;
  // An MoE block's dense part counts the work done per token: the router's logits and the
  // matrices of the shared experts and of the k routed experts each token is sent to.
  const double ff = EffectiveDff(s);
  const double matrices = s.mlp == Mlp::kSwiGlu ? 3.0 : 2.0;
  const double embeddings = 2.0 * S * V * d;
  const double kqv = 2.0 * S * 3.0 * d * d;
  const double logits = 2.0 * S * S * d;
  const double softmax = 3.0 * H * S * S;
  const double reduction = 2.0 * S * S * d;
  const double projection = 2.0 * S * d * d;
  const double dense = 2.0 * S * d * ff * matrices;
  double moe_dense = 0;
  if (s.moe) {
    const double ff_e = EffectiveExpertDff(s);
    const double router = 2.0 * S * d * s.moe->n_experts;
    const double experts = EffectiveTopK(s) + s.moe->n_shared_experts;
    moe_dense = router + 2.0 * S * d * ff_e * matrices * experts;
  }
  const double final_logits = 2.0 * S * d * V;
  const int moe_blocks = MoeBlockCount(s);
  const double attention = kqv + logits + softmax + reduction + projection;
  const double forward = embeddings + s.n_layer * attention + (s.n_layer - moe_blocks) * dense +
                         moe_blocks * moe_dense + final_logits;
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
      const double err = std::abs(std::log(static_cast<double>(ActiveParams(s))) - log_target);
      if (err < at_depth_err) {
        at_depth_err = err;
        at_depth = s;
      }
      if (ActiveParams(s) > target_params) break;  // N grows with d: the next one is farther
    }
    if (!at_depth) continue;
    // A width that overshoots by more than one rounding step means the depth is too large.
    if (at_depth_err > std::log(2.0) && ActiveParams(*at_depth) > target_params) continue;
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
Result<Router> ParseRouter(const std::string& s) {
  if (s == "softmax") return Router::kSoftmax;
  if (s == "sigmoid") return Router::kSigmoid;
  return Status::InvalidArgument("expected one of softmax, sigmoid; got '" + s + "'");
}
std::string ToString(Mlp v) { return v == Mlp::kSwiGlu ? "swiglu" : "gelu"; }
std::string ToString(Router v) { return v == Router::kSoftmax ? "softmax" : "sigmoid"; }

}  // namespace isoflop::accounting
