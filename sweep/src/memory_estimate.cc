// Memory and throughput estimates for `sweep plan` and the scheduler's packing.
#include "isoflop/sweep/memory_estimate.h"

#include <algorithm>
#include <cmath>

namespace isoflop::sweep {

MemoryEstimate EstimateMemory(const accounting::Shape& s, const MemoryOptions& o) {
  MemoryEstimate m;
  const int64_t n = accounting::TotalParams(s);
  const int64_t act_bytes = o.mixed_precision ? 2 : 4;
  // fp32: 4 (weights) + 4 (grads) + 8 (Adam m, v). Mixed: 2 + 2 + 4 (fp32 master) + 8.
  m.weights = o.mixed_precision ? n * (2 + 4) : n * 4;
  m.gradients = o.mixed_precision ? n * 2 : n * 4;
  m.optimizer = n * 8;
  const int64_t tokens = int64_t{o.micro_batch} * s.seq_len;  // B·T
  const int64_t d = s.d_model, ff = accounting::EffectiveDff(s);
  // Per token per layer, saved for backward: attention block = norm input, normed input, q, k,
  // v, attention output, projection input (7d); MLP block = norm input, normed input (2d), then
  // SwiGLU keeps gate, up, act(gate) and their product (4 ff), GELU its input and output (2 ff).
  const int64_t per_token_layer = 7 * d + 2 * d + (s.mlp == accounting::Mlp::kSwiGlu ? 4 : 2) * ff;
  // Attention scores and softmax probabilities per layer: 2·B·heads·T·T.
  const int64_t attn_layer =
      o.fused_attention ? 0 : 2 * int64_t{o.micro_batch} * s.n_head * s.seq_len * s.seq_len;
  if (o.activation_checkpointing) {
    // Block inputs of every layer, plus one block's full activations during recomputation.
    m.activations = act_bytes * tokens * (d * s.n_layer + per_token_layer);
    m.attention = act_bytes * attn_layer;
  } else {
    m.activations = act_bytes * tokens * per_token_layer * s.n_layer;
    m.attention = act_bytes * attn_layer * s.n_layer;
  }
  m.logits = 4 * tokens * s.vocab_size * 2;  // logits and their gradient, fp32 for the loss
  const int64_t sum =
      m.weights + m.gradients + m.optimizer + m.activations + m.attention + m.logits;
  m.overhead = std::max<int64_t>(sum / 10, int64_t{64} << 20);
  m.cuda_context = o.gpu ? kCudaContextBytes : 0;
  m.total = sum + m.overhead + m.cuda_context;
  return m;
}

double EstimateFlopsPerSecond(int64_t n_total, bool gpu, int threads, double override_gflops) {
  if (override_gflops > 0) return override_gflops * 1e9;
  const double n = std::max<double>(n_total, 1.0);
  if (gpu) {
    // Small models cannot fill a GPU: ramp from 1% at 1M parameters to 35% at 1B.
    const double t = std::clamp((std::log10(n) - 6.0) / 3.0, 0.0, 1.0);
    return 400e12 * std::pow(10.0, std::log10(0.01) + t * (std::log10(0.35) - std::log10(0.01)));
  }
  // Log-log interpolation between (12e3, 8 GFLOP/s) and (800e3, 45 GFLOP/s) at 2 threads.
  const double t =
      std::clamp((std::log(n) - std::log(12e3)) / (std::log(800e3) - std::log(12e3)), -0.5, 1.5);
  const double gflops = std::exp(std::log(8.0) + t * (std::log(45.0) - std::log(8.0)));
  return gflops * 1e9 * std::max(1, threads) / 2.0;
}

}  // namespace isoflop::sweep
