// The memory estimate of one training run (memory.h).
#include "isoflop/trainer/memory.h"

#include <algorithm>
#include <cmath>

namespace isoflop::accounting {

namespace {

// Bytes as int64, saturated: the terms are computed in doubles because shapes and batches a
// sweep file allows (up to 2^20 sequences of 2^20 tokens) overflow int64 in the products below,
// and an overflowed estimate came out negative (so it "fitted" on any device).
int64_t Bytes(double b) {
  constexpr double kMax = 9.2e18;  // just below INT64_MAX (9.22e18), exactly representable
  return b >= kMax ? static_cast<int64_t>(kMax) : static_cast<int64_t>(b);
}

}  // namespace

MemoryEstimate EstimateMemory(const Shape& s, const MemoryOptions& o) {
  MemoryEstimate m;
  const double n = static_cast<double>(TotalParams(s));
  const bool mixed = o.mixed_precision;
  // Bytes per element: `a` of a matmul's output (bf16 under autocast), `f` of what stays fp32
  // under autocast too: the residual stream (the embedding is fp32 and a bf16 sum with it
  // promotes), RMSNorm (computed in fp32 by model.cc), softmax and the loss.
  const double a = mixed ? 2 : 4, f = 4;
  // Autocast keeps fp32 parameters (and their fp32 gradients) and casts a bf16 copy of each
  // weight for its matmuls.
  const double weights = n * (mixed ? 4 + 2 : 4), gradients = n * 4, optimizer = n * 8;

  const double B = o.micro_batch, T = s.seq_len, d = s.d_model, H = s.n_head;
  const double V = s.vocab_size, L = s.n_layer, tokens = B * T;
  const bool rope = s.pos == PosEmbedding::kRope, swiglu = s.mlp == Mlp::kSwiGlu;
  // What a forward pass keeps, tallied per token with the size of the tensors it is kept in:
  // on CPU, glibc's heap holes come from the step's temporaries that fit under its largest
  // mmap threshold (larger blocks are mapped and unmapped whole), so the slack is counted only
  // on the bytes held in such tensors.
  struct Kept {
    double bytes = 0, in_heap = 0;  // per token
    void Add(double per_token, double tensor_bytes) {
      bytes += per_token;
      if (tensor_bytes <= kGlibcMmapThresholdMax) in_heap += per_token;
    }
    void Add(const Kept& other, double times) {
      bytes += other.bytes * times;
      in_heap += other.in_heap * times;
    }
  };
  // A norm: its input and output, RMSNorm's normalised input too, and under autocast the bf16
  // copy of the output that the next matmul reads.
  auto add_norm = [&](Kept& k) {
    k.Add(d * f * (s.norm == Norm::kRmsNorm ? 3 : 2), tokens * d * f);
    if (mixed) k.Add(d * a, tokens * d * a);
  };
  // Attention after its norm: q, k, v (one tensor), then explicit attention's matmuls keep
  // contiguous copies of q (or rotated q), rotated k and its transpose, and v; the fused kernel
  // keeps rotated q and k and its output. Both keep the head-merged output the projection reads.
  Kept attention_block;
  add_norm(attention_block);
  attention_block.Add(3 * d * a, tokens * 3 * d * a);
  const double copies = (o.fused_attention ? (rope ? 2 : 0) + 1 : (rope ? 2 : 1) + 2) + 1;
  attention_block.Add(copies * d * a, tokens * d * a);
  add_norm(attention_block);  // the MLP's
  // An MLP's saved inside: SwiGLU its two inputs, the activation and the product; GELU its
  // input and output.
  const double mlp_units = swiglu ? 4 : 2;
  Kept dense_block = attention_block;
  const double dense_ff = EffectiveDff(s);
  dense_block.Add(dense_ff * a * mlp_units, tokens * dense_ff * a);
  Kept moe_block;
  const int moe_blocks = MoeBlockCount(s);
  if (s.moe) {
    const double k = EffectiveTopK(s), ff = EffectiveExpertDff(s), e = s.moe->n_experts;
    // Router: fp32 logits, scores, log-probabilities and the z-loss terms (about 6 per
    // expert); each of the k assignments keeps its gathered input and its output before
    // weighting (tensors of every assignment), and the inside of its expert (a tensor of that
    // expert's tokens, about k / e of them); shared experts see every token.
    moe_block = attention_block;
    moe_block.Add(e * f * 6, tokens * e * f);
    moe_block.Add(k * 2 * d * a, tokens * k * d * a);
    moe_block.Add(k * ff * a * mlp_units, tokens * k / e * ff * a);
    const double shared = s.moe->n_shared_experts;
    if (shared > 0) moe_block.Add(shared * ff * a * mlp_units, tokens * ff * a);
  }
  const double dense_blocks = L - moe_blocks;
  Kept kept;
  if (o.activation_checkpointing) {
    // Each block's input, plus one block's saved tensors while it is recomputed and the
    // gradients flowing through it (of its output and input, each branch and each norm).
    kept.Add(L * d * f, tokens * d * f);
    kept.Add(moe_blocks > 0 && moe_block.bytes > dense_block.bytes ? moe_block : dense_block, 1);
    kept.Add(6 * d * f, tokens * d * f);
  } else {
    kept.Add(dense_block, dense_blocks);
    kept.Add(moe_block, moe_blocks);
  }
  add_norm(kept);  // the final norm
  const double activations = tokens * kept.bytes;
  // Explicit attention keeps each layer's fp32 probabilities (B, H, T, T); backward through a
  // layer holds two more (their gradient and the softmax's).
  double attention = 0;
  const double probs = B * H * T * T * f;
  if (!o.fused_attention) attention = probs * ((o.activation_checkpointing ? 1 : L) + 2);
  // At backward's first steps: the logits (kept by the loss loop; bf16 under autocast), the
  // fp32 log-softmax the loss saved, its gradient and the logits' fp32 gradient (and under
  // autocast that gradient's bf16 copy; the fp32 copy of the logits the loss read is gone).
  const double logits = tokens * V * (mixed ? 2 + 4 + 4 + 4 + 2 : 4 + 4 + 4 + 4);

  const double tensors = weights + gradients + optimizer + activations + attention + logits;
  double overhead;
  if (o.gpu) {
    overhead = std::max(std::floor(tensors * 0.10), double(int64_t{64} << 20));
  } else {
    const double in_heap = tokens * kept.in_heap +
                           (probs <= kGlibcMmapThresholdMax ? attention : 0) +
                           (tokens * V * f <= kGlibcMmapThresholdMax ? logits : 0);
    overhead = std::floor(in_heap * kCpuAllocatorSlack);
  }
  m.weights = Bytes(weights);
  m.gradients = Bytes(gradients);
  m.optimizer = Bytes(optimizer);
  m.activations = Bytes(activations);
  m.attention = Bytes(attention);
  m.logits = Bytes(logits);
  m.overhead = Bytes(overhead);
  m.runtime = o.gpu ? kCudaContextBytes : kHostRuntimeBytes;
  m.total = Bytes(tensors + overhead + double(m.runtime));
  return m;
}

int ForwardBatch(int micro_batch, int64_t batch_tokens, int seq_len, int ranks) {
  const int64_t sequences = (batch_tokens + seq_len - 1) / std::max(seq_len, 1);
  const int64_t per_rank = (sequences + ranks - 1) / std::max(ranks, 1);
  return static_cast<int>(std::clamp<int64_t>(per_rank, 1, std::max(micro_batch, 1)));
}

}  // namespace isoflop::accounting
