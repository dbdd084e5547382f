// Parameter and FLOP accounting for isoflop's transformer shapes, in plain arithmetic (no
// LibTorch), so the sweep planner can size models without loading torch. One function per
// fact: N is counted here and nowhere else; every FLOP convention lives in this file.
#pragma once

#include <cstdint>
#include <string>

#include "isoflop/common/status.h"

namespace isoflop::accounting {

enum class Norm { kRmsNorm, kLayerNorm };
enum class PosEmbedding { kRope, kAlibi, kLearned };
enum class Mlp { kSwiGlu, kGelu };

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

  // Returns InvalidArgument naming the field when the shape cannot be built
  // (non-positive sizes, d_model not divisible by n_head, odd head size with rope, ...).
  Status Validate() const;
};

// d_ff used when Shape::d_ff == 0: SwiGLU 8/3·d_model rounded up to a multiple of 8
// (keeps the MLP's parameter count close to GELU's 4·d_model), GELU 4·d_model.
int DefaultDff(int d_model, Mlp mlp);
// Shape::d_ff with the default applied.
int EffectiveDff(const Shape& s);

// Every trainable parameter (what sum(p.numel()) over the LibTorch model returns).
int64_t TotalParams(const Shape& s);
// TotalParams minus token embeddings, learned position embeddings, and the output head when
// it is untied (Kaplan et al. 2020, section 2.1, "non-embedding parameters").
int64_t NonEmbeddingParams(const Shape& s);

// Training FLOPs per token, C = 6N (Kaplan et al. 2020 eq. 2.1 / Hoffmann et al. 2022),
// with N = TotalParams (the Chinchilla convention; isoflop's default).
double FlopsPerToken6N(const Shape& s);
// Kaplan et al. 2020, Table 1: 6·N_non_embedding + 6·n_layer·seq_len·d_model (the attention
// score/value FLOPs, forward+backward).
double FlopsPerToken6NAttention(const Shape& s);
// Hoffmann et al. 2022, Appendix F: embeddings, attention (QKV, logits, softmax, reduction,
// projection), dense block, final logits, counted per sequence / seq_len, times 3 for
// forward+backward.
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
// TotalParams is nearest to `target_params` in log space under `rule`. InvalidArgument when
// no shape can satisfy the rule (e.g. target smaller than the embedding alone).
Result<Shape> SolveShape(double target_params, const AspectRule& rule, const Shape& base);

// Parsing helpers for configs ("rmsnorm", "layernorm", "rope", "alibi", "learned",
// "swiglu", "gelu"); InvalidArgument lists the accepted values.
Result<Norm> ParseNorm(const std::string& s);
Result<PosEmbedding> ParsePosEmbedding(const std::string& s);
Result<Mlp> ParseMlp(const std::string& s);
std::string ToString(Norm v);
std::string ToString(PosEmbedding v);
std::string ToString(Mlp v);

}  // namespace isoflop::accounting
