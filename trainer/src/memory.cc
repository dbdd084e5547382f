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

// The fp32 gradient bytes of the parameters small enough (at most glibc's largest mmap
// threshold) for their gradients to live in the heap: each matrix and vector as model.cc
// registers it, the embeddings and every expert its own.
double GradientBytesInHeap(const Shape& s) {
  double heap = 0;
  auto tensor = [&](double elements, double times = 1) {
    if (elements * 4 <= kGlibcMmapThresholdMax) heap += elements * 4 * times;
  };
  const double d = s.d_model, V = s.vocab_size;
  tensor(V * d);
  if (!s.tie_embeddings) tensor(V * d);
  if (s.pos == PosEmbedding::kLearned) tensor(double(s.seq_len) * d);
  const double matrices = s.mlp == Mlp::kSwiGlu ? 3 : 2;
  // Norm weights and biases: vectors of d (or of d_ff), always in the heap; counted as the
  // rest of the parameters below.
  double counted = V * d * (s.tie_embeddings ? 1 : 2) +
                   (s.pos == PosEmbedding::kLearned ? double(s.seq_len) * d : 0);
  auto block_matrix = [&](double elements, double times) {
    tensor(elements, times);
    counted += elements * times;
  };
  const int moe_blocks = MoeBlockCount(s);
  const double dense_blocks = s.n_layer - moe_blocks;
  block_matrix(3 * d * d, s.n_layer);  // qkv
  block_matrix(d * d, s.n_layer);      // attention's projection
  block_matrix(EffectiveDff(s) * d, matrices * dense_blocks);
  if (s.moe) {
    const double ff_e = EffectiveExpertDff(s);
    block_matrix(s.moe->n_experts * d, moe_blocks);  // the router
    block_matrix(ff_e * d, matrices * s.moe->n_experts * moe_blocks);
    if (s.moe->n_shared_experts > 0)
      block_matrix(s.moe->n_shared_experts * ff_e * d, matrices * moe_blocks);
  }
  heap += std::max(0.0, static_cast<double>(TotalParams(s)) - counted) * 4;
  return heap;
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
  // A norm: what it saves besides its output, and its output (which the next matmul saves):
  // LayerNorm its input (and per-token statistics), RMSNorm (model.cc's, in fp32) its input and
  // two intermediate (B, T, C) terms, as counted at LibTorch's allocator (tensor_bytes.h). Under
  // autocast the next matmul saves a bf16 copy of the output.
  auto add_norm = [&](Kept& k) {
    k.Add(d * f * (s.norm == Norm::kRmsNorm ? 4 : 2), tokens * d * f);
    if (mixed) k.Add(d * a, tokens * d * a);
  };
  // Attention after its norm. Explicit attention: its matmuls reshape q, k^T and v into
  // contiguous copies and save those (rotated or not; q, k and v themselves, views of the qkv
  // output, are then free). The fused kernel saves q, k and v as they come: views that keep
  // the whole qkv output, rotated q and k, and its output. Both keep the head-merged output the
  // projection reads.
  Kept attention_block;
  add_norm(attention_block);
  if (o.fused_attention) {
    attention_block.Add(3 * d * a, tokens * 3 * d * a);
    attention_block.Add(((rope ? 2 : 0) + 1 + 1) * d * a, tokens * d * a);
  } else {
    attention_block.Add((3 + 1) * d * a, tokens * d * a);
  }
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
  // Explicit attention keeps each layer's fp32 probabilities (B, H, T, T); backward through a
  // layer makes two more (their gradient and the softmax's).
  const double probs = B * H * T * T * f;
  const double kept_probs = o.fused_attention ? 0 : probs;
  const double backward_probs = o.fused_attention ? 0 : 2 * probs;
  // The logits (bf16 under autocast, then the fp32 copy the loss reads) and the fp32
  // log-softmax the loss saves; at backward's start, the log-softmax's gradient and the
  // logits' (fp32, and under autocast its bf16 copy). The logits stay referenced until the
  // step's backward is done.
  const double logits_chain = tokens * V * (mixed ? 2 + 4 + 4 + 4 + 2 : 4 + 4 + 4 + 4);
  const double logits_held = tokens * V * (mixed ? 2 : 4);

  // What the whole forward pass keeps without checkpointing.
  Kept plain;
  plain.Add(dense_block, dense_blocks);
  plain.Add(moe_block, moe_blocks);
  add_norm(plain);  // the final norm
  // The peak of a forward-backward pass is at backward's start (everything saved, the logits'
  // chain complete) or, when attention's matrices outweigh the logits, at the last layer's
  // attention backward (the logits' chain down to the logits themselves).
  Kept kept = plain;
  double activations, attention, logits = logits_chain;
  if (o.activation_checkpointing) {
    // Each block's input is kept; backward recomputes one block at a time, holding its saved
    // tensors, the gradients flowing through it (of its output and its input) and the
    // attention backward's matrices, once the logits' chain is done.
    const Kept& block =
        moe_blocks > 0 && moe_block.bytes > dense_block.bytes ? moe_block : dense_block;
    Kept start, replay;
    start.Add(L * d * f, tokens * d * f);
    add_norm(start);  // the final norm
    replay.Add(L * d * f, tokens * d * f);
    replay.Add(block, 1);
    replay.Add(2 * d * f, tokens * d * f);
    const double at_start = tokens * start.bytes + logits_chain;
    const double at_replay = tokens * replay.bytes + kept_probs + backward_probs + logits_held;
    const bool replay_peaks = at_replay > at_start;
    kept = replay_peaks ? replay : start;
    activations = tokens * kept.bytes;
    attention = replay_peaks ? kept_probs + backward_probs : 0;
    if (replay_peaks) logits = logits_held;
  } else {
    activations = tokens * kept.bytes;
    attention = kept_probs * L + std::max(0.0, backward_probs - (logits_chain - logits_held));
  }

  // Gradients are live at that peak when a step accumulates several forward passes (the
  // earlier ones' gradients); else they come as the activations go, and only a step whose
  // gradients outweigh its activations peaks at backward's end (every gradient, the logits
  // still held). Data parallel: the reducer's flat buckets hold a copy of every gradient.
  const double at_peak = activations + attention + logits;
  double grads = o.micro_batches > 1 ? gradients : std::max(0.0, gradients + logits_held - at_peak);
  if (o.ranks > 1) grads += gradients;

  const double tensors = weights + grads + optimizer + activations + attention + logits;
  double overhead;
  if (o.gpu) {
    overhead = std::max(std::floor(tensors * 0.10), double(int64_t{64} << 20));
  } else {
    // The holes follow the step's passing allocations, which under checkpointing are the
    // plain run's (every block's inside is made again, in forward and in its replay): measured,
    // a checkpointed run's slack is the fraction of the plain run's heap-held bytes that a plain
    // run's is.
    // Each step's gradients are made and freed as its activations are (set_to_none), among
    // them: measured on runs whose training state dominates (13M to 76M parameters), their
    // holes are the same fraction of the gradients held in the heap.
    const double in_heap =
        tokens * plain.in_heap + (probs <= kGlibcMmapThresholdMax ? attention : 0) +
        (tokens * V * f <= kGlibcMmapThresholdMax ? logits : 0) + GradientBytesInHeap(s);
    overhead = std::floor(in_heap * kCpuAllocatorSlack);
  }
  m.weights = Bytes(weights);
  m.gradients = Bytes(grads);
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

int ForwardPasses(int micro_batch, int64_t batch_tokens, int seq_len, int ranks) {
  const int64_t sequences = (batch_tokens + seq_len - 1) / std::max(seq_len, 1);
  const int64_t per_rank = (sequences + ranks - 1) / std::max(ranks, 1);
  const int64_t batch = ForwardBatch(micro_batch, batch_tokens, seq_len, ranks);
  return static_cast<int>(std::max<int64_t>(1, (per_rank + batch - 1) / batch));
}

}  // namespace isoflop::accounting
