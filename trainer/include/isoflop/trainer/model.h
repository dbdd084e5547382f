// The decoder-only transformer isoflop trains: token embedding, pre-norm blocks of causal
// multi-head attention (RoPE, ALiBi or learned positions) and an MLP (SwiGLU or GELU) or, in
// the MoE blocks of a `family: moe` shape, a Mixture-of-Experts layer (moe.h), a final norm and
// an output head tied to the embedding by default. Its parameter count is exactly
// accounting::TotalParams(shape) (tested). Modules are not thread-safe.
//
// Shape legend: B batch, T sequence length, C d_model, H heads, D head size (C / H),
// F d_ff, V vocabulary.
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "isoflop/trainer/accounting.h"
#include "isoflop/trainer/moe.h"

namespace isoflop::trainer {

// How attention is computed. kAuto: scaled_dot_product_attention on LibTorch >= 2, explicit
// softmax(QKᵀ/√D)V on 1.13. kFused on 1.13 uses the private at::_scaled_dot_product_attention.
enum class AttentionImpl { kAuto, kExplicit, kFused };

// bf16 autocast on CUDA for the enclosed forward pass (a no-op when `on` is false). LibTorch
// 1.13 has no C++ guard, so this sets the thread-local state directly and restores it on scope
// exit; LibTorch >= 2.4 replaced the CUDA-only setters with per-device ones.
class CudaAutocast {
 public:
  explicit CudaAutocast(bool on) : on_(on) {
    if (!on_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
#endif
  }
  ~CudaAutocast() {
    if (!on_) return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(at::kCUDA, false);
#else
    at::autocast::set_enabled(false);
#endif
    at::autocast::clear_cache();
  }
  CudaAutocast(const CudaAutocast&) = delete;
  CudaAutocast& operator=(const CudaAutocast&) = delete;

  // Whether CUDA autocast is on in this thread (what a recomputation must restore).
  static bool Enabled() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    return at::autocast::is_autocast_enabled(at::kCUDA);
#else
    return at::autocast::is_enabled();
#endif
  }

 private:
  bool on_;
};

// RMSNorm (Zhang & Sennrich 2019): x / sqrt(mean(x²) + eps) · weight. LibTorch 1.13 has none.
class RmsNormImpl : public torch::nn::Module {
 public:
  explicit RmsNormImpl(int64_t dim, double eps = 1e-5);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::Tensor weight_;
  double eps_;
};
TORCH_MODULE(RmsNorm);

// LayerNorm with an optional bias (torch::nn::LayerNorm always has one).
class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t dim, bool bias, double eps = 1e-5);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::Tensor weight_, bias_;
  int64_t dim_;
  double eps_;
};
TORCH_MODULE(LayerNorm);

// Either norm, chosen by the shape.
class NormImpl : public torch::nn::Module {
 public:
  explicit NormImpl(const accounting::Shape& s);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  RmsNorm rms_{nullptr};
  LayerNorm ln_{nullptr};
};
TORCH_MODULE(Norm);

class CausalSelfAttentionImpl : public torch::nn::Module {
 public:
  CausalSelfAttentionImpl(const accounting::Shape& s, AttentionImpl impl);
  // x (B, T, C); rope_cos/sin (T_max, D/2) or undefined; alibi (H, T_max, T_max) additive bias
  // (causal mask included) or undefined.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& rope_cos,
                        const torch::Tensor& rope_sin, const torch::Tensor& alibi);

  torch::nn::Linear qkv{nullptr}, proj{nullptr};

 private:
  int64_t n_head_, head_dim_;
  AttentionImpl impl_;
};
TORCH_MODULE(CausalSelfAttention);

class MlpImpl : public torch::nn::Module {
 public:
  explicit MlpImpl(const accounting::Shape& s);  // hidden size EffectiveDff(s)
  // An MLP of hidden size d_ff with the shape's kind and bias setting (an MoE expert).
  MlpImpl(const accounting::Shape& s, int64_t d_ff);
  torch::Tensor forward(const torch::Tensor& x);  // (B, T, C) -> (B, T, C)

  // SwiGLU (Shazeer 2020): proj(silu(fc(x)) * gate(x)); GELU: proj(gelu(fc(x))).
  torch::nn::Linear fc{nullptr}, gate{nullptr}, proj{nullptr};
};
TORCH_MODULE(Mlp);

class BlockImpl : public torch::nn::Module {
 public:
  // `moe`: the feed-forward layer is a Moe (s.moe must be set) instead of the dense Mlp.
  BlockImpl(const accounting::Shape& s, AttentionImpl impl, bool moe = false);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& rope_cos,
                        const torch::Tensor& rope_sin, const torch::Tensor& alibi);

  Norm norm1{nullptr}, norm2{nullptr};
  CausalSelfAttention attn{nullptr};
  Mlp mlp{nullptr};  // dense blocks
  Moe moe{nullptr};  // MoE blocks
};
TORCH_MODULE(Block);

class TransformerImpl : public torch::nn::Module {
 public:
  explicit TransformerImpl(const accounting::Shape& s, AttentionImpl impl = AttentionImpl::kAuto);
  // idx (B, T) int64 token ids, T <= seq_len -> logits (B, T, V).
  torch::Tensor forward(const torch::Tensor& idx);
  // GPT-2 initialisation (Radford et al. 2019; nanoGPT): N(0, 0.02) for every matrix and
  // embedding, residual output projections N(0, 0.02/√(2·n_layer)), zero biases, unit norms.
  void ResetParameters();
  const accounting::Shape& shape() const { return shape_; }
  // Activation checkpointing (Chen et al. 2016): while training with gradients on, each block
  // keeps only its input and recomputes its activations during the backward pass (under the
  // autocast state of the forward). Activation memory per block drops to one (B, T, C) tensor
  // for about one more forward pass of compute; gradients are unchanged (tested).
  // Not available for MoE shapes (forward refuses): the replay would lose the router losses.
  void set_activation_checkpointing(bool on) { checkpointing_ = on; }
  bool activation_checkpointing() const { return checkpointing_; }

  // The MoE layers, in block order (empty for a dense shape). Owned by the model.
  const std::vector<MoeImpl*>& moe_layers() const { return moe_layers_; }
  // The router losses of the last forward (aux_loss + z_loss of each MoE layer, averaged over
  // the layers), a scalar with its graph, to add to the cross-entropy; undefined for dense.
  torch::Tensor MoeAuxLoss() const;

 private:
  accounting::Shape shape_;
  bool checkpointing_ = false;
  torch::nn::Embedding tok_emb_{nullptr}, pos_emb_{nullptr};
  torch::nn::ModuleList blocks_;
  Norm final_norm_{nullptr};
  torch::nn::Linear head_{nullptr};  // only when untied
  torch::Tensor rope_cos_, rope_sin_, alibi_;
  std::vector<MoeImpl*> moe_layers_;
};
TORCH_MODULE(Transformer);

}  // namespace isoflop::trainer
