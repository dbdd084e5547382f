// Memory and throughput estimates for `sweep plan` and the scheduler's packing.
#include "isoflop/sweep/memory_estimate.h"

#include <algorithm>
#include <cmath>

namespace isoflop::sweep {

namespace {

// Bytes as int64, saturated: the terms are computed in doubles because shapes and batches a
// sweep file allows (up to 2^20 sequences of 2^20 tokens) overflow int64 in the products below,
// and an overflowed estimate came out negative (so it "fitted" on any device).
int64_t Bytes(double b) {
  constexpr double kMax = 9.2e18;  // just below INT64_MAX (9.22e18), exactly representable
  return b >= kMax ? static_cast<int64_t>(kMax) : static_cast<int64_t>(b);
}

}  // namespace

MemoryEstimate EstimateMemory(const accounting::Shape& s, const MemoryOptions& o) {
  MemoryEstimate m;
  const double n = static_cast<double>(accounting::TotalParams(s));
  const double act_bytes = o.mixed_precision ? 2 : 4;
  // fp32: 4 (weights) + 4 (grads) + 8 (Adam m, v). Mixed: 2 + 2 + 4 (fp32 master) + 8.
  const double weights = o.mixed_precision ? n * (2 + 4) : n * 4;
  const double gradients = o.mixed_precision ? n * 2 : n * 4;
  const double optimizer = n * 8;
  const double micro_batch = o.micro_batch, seq_len = s.seq_len, n_layer = s.n_layer;
  const double tokens = micro_batch * seq_len;  // B·T
  // The MLP activations a token keeps: a dense MLP's, or (MoE) those of the top-k routed and the
  // shared experts it passes through. Weights, gradients and optimizer state above count every
  // expert (TotalParams).
  const double d = s.d_model;
  const double ff = s.moe ? double(accounting::EffectiveTopK(s) + s.moe->n_shared_experts) *
                                accounting::EffectiveExpertDff(s)
                          : static_cast<double>(accounting::EffectiveDff(s));
  // Per token per layer, saved for backward: attention block = norm input, normed input, q, k,
  // v, attention output, projection input (7d); MLP block = norm input, normed input (2d), then
  // SwiGLU keeps gate, up, act(gate) and their product (4 ff), GELU its input and output (2 ff).
  const double per_token_layer = 7 * d + 2 * d + (s.mlp == accounting::Mlp::kSwiGlu ? 4 : 2) * ff;
  // Attention scores and softmax probabilities per layer: 2·B·heads·T·T.
  const double attn_layer =
      o.fused_attention ? 0 : 2 * micro_batch * double(s.n_head) * seq_len * seq_len;
  double activations, attention;
  if (o.activation_checkpointing) {
    // Block inputs of every layer, plus one block's full activations during recomputation.
    activations = act_bytes * tokens * (d * n_layer + per_token_layer);
    attention = act_bytes * attn_layer;
  } else {
    activations = act_bytes * tokens * per_token_layer * n_layer;
    attention = act_bytes * attn_layer * n_layer;
  }
  const double logits = 4 * tokens * double(s.vocab_size) * 2;  // logits and their gradient, fp32
  const double sum = weights + gradients + optimizer + activations + attention + logits;
  const double overhead = std::max(std::floor(sum / 10), double(int64_t{64} << 20));
  m.weights = Bytes(weights);
  m.gradients = Bytes(gradients);
  m.optimizer = Bytes(optimizer);
  m.activations = Bytes(activations);
  m.attention = Bytes(attention);
  m.logits = Bytes(logits);
  m.overhead = Bytes(overhead);
  m.cuda_context = o.gpu ? kCudaContextBytes : 0;
  m.total = Bytes(sum + overhead + double(m.cuda_context));
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
