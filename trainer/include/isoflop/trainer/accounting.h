// Parameter and FLOP accounting for isoflop's transformer shapes, in plain arithmetic (no
// LibTorch), so the sweep planner can size models without loading torch. One function per
// fact: N is counted here and nowhere else; every FLOP convention lives in this file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "isoflop/common/status.h"

namespace isoflop::accounting {

enum class Norm { kRmsNorm, kLayerNorm };
enum class PosEmbedding { kRope, kAlibi, kLearned };
enum class Mlp { kSwiGlu, kGelu };
enum class Router { kSoftmax, kSigmoid };

// The Mixture-of-Experts feed-forward layer of a `family: moe` model: run.json's `model.moe`
// object (docs/run-protocol.md), field by field. The shape fields decide N and FLOPs; the
// balancing fields only the training. Plain value; thread-compatible.
struct MoeShape {
  int n_experts = 8;  // routed experts per MoE layer
  // Routed experts each token uses (with granularity G: top_k·G, see EffectiveTopK).
  int top_k = 2;
  // 0 = unset. G > 0 splits each expert: expert_d_ff = d_ff / G and top_k·G experts per token,
  // so active parameters stay those of top_k whole experts (Krajewski et al. 2024). n_experts
  // counts the experts after the split.
  int granularity = 0;
  int expert_d_ff = 0;       // hidden size of one expert; 0 = d_ff (or d_ff / G)
  int n_shared_experts = 0;  // always-on experts of expert_d_ff each (Dai et al. 2024)
  // softmax: softmax over experts in fp32, top-k, renormalised over the k (Mixtral, Jiang et
  // al. 2024); sigmoid: per-expert sigmoid scores, top-k, renormalised (DeepSeek-V3 2024).
  Router router = Router::kSoftmax;
  double aux_loss_weight = 0.01;  // Switch load-balancing loss weight (OLMoE's 0.01)
  double z_loss_weight = 0.001;   // ST-MoE router z-loss weight (OLMoE's 0.001)
  // DeepSeek-V3 auxiliary-loss-free balancing: per-expert selection bias moved by this much
  // after each optimizer step against the step's load. 0 = off.
  double bias_update_rate = 0.0;
  // 0 = dropless. F > 0: an expert takes at most ceil(F·tokens·k / n_experts) assignments per
  // forward pass; the rest are dropped (the token keeps its residual) and counted.
  double capacity_factor = 0.0;
  int moe_every = 1;       // every moe_every-th block after the dense ones is MoE
  int n_dense_layers = 0;  // the first blocks keep the dense MLP (DeepSeekMoE's layout)
};

// A model shape, exactly as the trainer builds it. Plain value; thread-compatible.
struct Shape {
  int n_layer = 2;
  int d_model = 64;
  int n_head = 4;
  int d_ff = 0;  // 0 = DefaultDff(d_model, mlp)
  int vocab_size = 32;
  int seq_len = 64;
  Norm norm = Norm::kRmsNorm;
  PosEmbedding pos = PosEmbedding::kRope;
  Mlp mlp = Mlp::kSwiGlu;
  bool tie_embeddings = true;
  bool bias = false;
  std::optional<MoeShape> moe;  // set for a Mixture-of-Experts model (family "moe")

  // Returns InvalidArgument naming the field when the shape cannot be built
  // (non-positive sizes, d_model not divisible by n_head, odd head size with rope, top_k >
  // n_experts, a granularity that does not divide d_ff, negative loss weights, ...).
  Status Validate() const;
};

// d_ff used when Shape::d_ff == 0: SwiGLU 8/3·d_model rounded up to a multiple of 8
// (keeps the MLP's parameter count close to GELU's 4·d_model), GELU 4·d_model.
int DefaultDff(int d_model, Mlp mlp);
// Shape::d_ff with the default applied.
int EffectiveDff(const Shape& s);

// MoE layout and sizes (the Shape must have `moe`). Block i (0-based) is an MoE block when
// i >= n_dense_layers and (i - n_dense_layers) % moe_every == 0.
bool IsMoeBlock(const Shape& s, int block);
int MoeBlockCount(const Shape& s);  // 0 for a dense shape
// Hidden size of one routed (or shared) expert: expert_d_ff, else EffectiveDff / granularity.
int EffectiveExpertDff(const Shape& s);
// Routed experts per token: top_k · granularity (granularity unset counts as 1).
int EffectiveTopK(const Shape& s);

// Every trainable parameter (what sum(p.numel()) over the LibTorch model returns): for MoE,
// every expert of every MoE layer (N_total).
int64_t TotalParams(const Shape& s);
// TotalParams minus token embeddings, learned position embeddings, and the output head when
// it is untied (Kaplan et al. 2020, section 2.1, "non-embedding parameters").
int64_t NonEmbeddingParams(const Shape& s);
// Parameters one token passes through (N_active): per MoE layer the router, the shared experts
// and EffectiveTopK routed experts instead of all of them. Equals TotalParams for dense.
int64_t ActiveParams(const Shape& s);
// ActiveParams minus the embedding parameters NonEmbeddingParams leaves out.
int64_t ActiveNonEmbeddingParams(const Shape& s);

// Training FLOPs per token, C = 6N (Kaplan et al. 2020 eq. 2.1 / Hoffmann et al. 2022),
// with N = ActiveParams: TotalParams for dense (the Chinchilla convention; isoflop's
// default), the parameters a token actually uses for MoE (router and k experts; Clark et al.
// 2022 and Krajewski et al. 2024 count MoE compute the same way).
double FlopsPerToken6N(const Shape& s);
// Kaplan et al. 2020, Table 1: 6·N_non_embedding + 6·n_layer·seq_len·d_model (the attention
// score/value FLOPs, forward+backward); N_non_embedding active for MoE.
double FlopsPerToken6NAttention(const Shape& s);
// Hoffmann et al. 2022, Appendix F: embeddings, attention (QKV, logits, softmax, reduction,
// projection), dense block, final logits, counted per sequence / seq_len, times 3 for
// forward+backward. An MoE block's dense part is its router, its shared experts and k routed
// experts.
double FlopsPerTokenChinchilla(const Shape& s);

// How the shape solver turns one number (target parameters) into a shape.
struct AspectRule {
  double d_model_per_layer = 32.0;  // target d_model / n_layer (Kaplan: ~100 at scale)
  int head_dim = 16;                // d_model = n_head * head_dim
  int d_model_multiple = 16;        // d_model is rounded to a multiple of this
  int min_layers = 1;
  int max_layers = 64;
};

// Returns the valid shape (n_layer, d_model, n_head; other fields copied from `base`) whose
// ActiveParams is nearest to `target_params` in log space under `rule` (for a dense base that
// is TotalParams; an MoE ladder is sized by what a token uses, as its FLOPs are, and its
// experts come on top). InvalidArgument when no shape can satisfy the rule (e.g. target
// smaller than the embedding alone).
Result<Shape> SolveShape(double target_params, const AspectRule& rule, const Shape& base);

// Parsing helpers for configs ("rmsnorm", "layernorm", "rope", "alibi", "learned",
// "swiglu", "gelu"); InvalidArgument lists the accepted values.
Result<Norm> ParseNorm(const std::string& s);
Result<PosEmbedding> ParsePosEmbedding(const std::string& s);
Result<Mlp> ParseMlp(const std::string& s);
Result<Router> ParseRouter(const std::string& s);  // "softmax", "sigmoid"
std::string ToString(Norm v);
std::string ToString(PosEmbedding v);
std::string ToString(Mlp v);
std::string ToString(Router v);

}  // namespace isoflop::accounting
