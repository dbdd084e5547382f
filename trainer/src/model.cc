// The transformer (model.h); the MoE layer is in moe.cc. Shape legend: B batch, T time, C d_model,
// H heads, D head size, F d_ff, V vocabulary.
#include "isoflop/trainer/model.h"

#include <cmath>

namespace isoflop::trainer {

namespace F = torch::nn::functional;
using accounting::Shape;

RmsNormImpl::RmsNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight_ = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RmsNormImpl::forward(const torch::Tensor& x) {
  const auto xf = x.to(torch::kFloat);
  const auto norm = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return (norm * weight_).to(x.scalar_type());
}

LayerNormImpl::LayerNormImpl(int64_t dim, bool bias, double eps) : dim_(dim), eps_(eps) {
  weight_ = register_parameter("weight", torch::ones({dim}));
  if (bias) bias_ = register_parameter("bias", torch::zeros({dim}));
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor& x) {
  return torch::layer_norm(x, {dim_}, weight_, bias_, eps_);
}

NormImpl::NormImpl(const Shape& s) {
  if (s.norm == accounting::Norm::kRmsNorm) {
    rms_ = register_module("rms", RmsNorm(s.d_model));
  } else {
    ln_ = register_module("ln", LayerNorm(s.d_model, s.bias));
  }
}

torch::Tensor NormImpl::forward(const torch::Tensor& x) {
  return rms_ ? rms_->forward(x) : ln_->forward(x);
}

namespace {

torch::nn::Linear MakeLinear(int64_t in, int64_t out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}

// Rotary embedding, GPT-NeoX "rotate half" form (Su et al. 2021). x (B, H, T, D);
// cos/sin (T_max, D/2).
torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& cos_t,
                        const torch::Tensor& sin_t) {
  const int64_t T = x.size(2), half = x.size(3) / 2;
  const auto cos = cos_t.narrow(0, 0, T).to(x.scalar_type());  // (T, D/2)
  const auto sin = sin_t.narrow(0, 0, T).to(x.scalar_type());
  const auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  return torch::cat({x1 * cos - x2 * sin, x1 * sin + x2 * cos}, -1);
}

}  // namespace

CausalSelfAttentionImpl::CausalSelfAttentionImpl(const Shape& s, AttentionImpl impl)
    : n_head_(s.n_head), head_dim_(s.d_model / s.n_head), impl_(impl) {
  qkv = register_module("qkv", MakeLinear(s.d_model, 3 * s.d_model, s.bias));
  proj = register_module("proj", MakeLinear(s.d_model, s.d_model, s.bias));
}

torch::Tensor CausalSelfAttentionImpl::forward(const torch::Tensor& x,
                                               const torch::Tensor& rope_cos,
                                               const torch::Tensor& rope_sin,
                                               const torch::Tensor& alibi) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  auto parts = qkv->forward(x).view({B, T, 3, n_head_, head_dim_}).permute({2, 0, 3, 1, 4});
  auto q = parts[0], k = parts[1], v = parts[2];  // (B, H, T, D)
  if (rope_cos.defined()) {
    q = ApplyRope(q, rope_cos, rope_sin);
    k = ApplyRope(k, rope_cos, rope_sin);
  }
  torch::Tensor bias;  // (H, T, T) additive, causal mask included; undefined = plain causal
  if (alibi.defined()) bias = alibi.narrow(1, 0, T).narrow(2, 0, T).to(q.scalar_type());

  torch::Tensor y;  // (B, H, T, D)
  bool fused = impl_ == AttentionImpl::kFused;
#if TORCH_VERSION_MAJOR >= 2
  fused = fused || impl_ == AttentionImpl::kAuto;
#endif
  if (fused) {
#if TORCH_VERSION_MAJOR >= 2
    y = bias.defined() ? at::scaled_dot_product_attention(q, k, v, bias.unsqueeze(0), 0.0, false)
                       : at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/true);
#else
    y = bias.defined()
            ? std::get<0>(at::_scaled_dot_product_attention(q, k, v, bias.unsqueeze(0), 0.0,
                                                            /*need_attn_weights=*/false, false))
            : std::get<0>(at::_scaled_dot_product_attention(q, k, v, {}, 0.0, false,
                                                            /*is_causal=*/true));
#endif
  } else {
    auto att = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(head_dim_)));
    if (bias.defined()) {
      att = att + bias;  // (B, H, T, T)
    } else {
      const auto mask = torch::ones({T, T}, torch::dtype(torch::kBool).device(x.device())).triu(1);
      att = att.masked_fill(mask, -std::numeric_limits<float>::infinity());
    }
    y = torch::matmul(torch::softmax(att, -1), v);
  }
  return proj->forward(y.transpose(1, 2).reshape({B, T, C}));
}

MlpImpl::MlpImpl(const Shape& s) : MlpImpl(s, accounting::EffectiveDff(s)) {}

MlpImpl::MlpImpl(const Shape& s, int64_t ff) {
  fc = register_module("fc", MakeLinear(s.d_model, ff, s.bias));
  if (s.mlp == accounting::Mlp::kSwiGlu)
    gate = register_module("gate", MakeLinear(s.d_model, ff, s.bias));
  proj = register_module("proj", MakeLinear(ff, s.d_model, s.bias));
}

torch::Tensor MlpImpl::forward(const torch::Tensor& x) {
  if (gate) return proj->forward(torch::silu(fc->forward(x)) * gate->forward(x));
  return proj->forward(torch::gelu(fc->forward(x)));
}

BlockImpl::BlockImpl(const Shape& s, AttentionImpl impl, bool moe_block) {
  norm1 = register_module("norm1", Norm(s));
  attn = register_module("attn", CausalSelfAttention(s, impl));
  norm2 = register_module("norm2", Norm(s));
  if (moe_block) {
    moe = register_module("moe", Moe(s));
  } else {
    mlp = register_module("mlp", Mlp(s));
  }
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& rope_cos,
                                 const torch::Tensor& rope_sin, const torch::Tensor& alibi) {
  auto h = x + attn->forward(norm1->forward(x), rope_cos, rope_sin, alibi);
  const auto n = norm2->forward(h);
  return h + (mlp ? mlp->forward(n) : moe->forward(n));
}

TransformerImpl::TransformerImpl(const Shape& s, AttentionImpl impl) : shape_(s) {
  tok_emb_ = register_module("tok_emb", torch::nn::Embedding(s.vocab_size, s.d_model));
  if (s.pos == accounting::PosEmbedding::kLearned) {
    pos_emb_ = register_module("pos_emb", torch::nn::Embedding(s.seq_len, s.d_model));
  }
  blocks_ = register_module("blocks", torch::nn::ModuleList());
  for (int i = 0; i < s.n_layer; ++i) {
    Block block(s, impl, accounting::IsMoeBlock(s, i));
    if (block->moe) moe_layers_.push_back(block->moe.get());
    blocks_->push_back(block);
  }
  final_norm_ = register_module("final_norm", Norm(s));
  if (!s.tie_embeddings)
    head_ = register_module("head", MakeLinear(s.d_model, s.vocab_size, false));

  const int64_t D = s.d_model / s.n_head;
  if (s.pos == accounting::PosEmbedding::kRope) {
    // θ_i = 10000^(-2i/D) (Su et al. 2021); buffers, not parameters.
    const auto inv_freq =
        torch::pow(10000.0, -torch::arange(0, D, 2, torch::kDouble) / double(D));  // (D/2)
    const auto t = torch::arange(s.seq_len, torch::kDouble);
    const auto freqs = torch::outer(t, inv_freq);  // (T_max, D/2)
    rope_cos_ = register_buffer("rope_cos", freqs.cos().to(torch::kFloat));
    rope_sin_ = register_buffer("rope_sin", freqs.sin().to(torch::kFloat));
  } else if (s.pos == accounting::PosEmbedding::kAlibi) {
    // ALiBi (Press et al. 2022) with slopes 1, 1/2, 1/4, ... per head: the recency biases that
    // gave clean isoFLOP curves on tiny models (shared/notes/synthetic-quickstart.md); the
    // paper's 2^(-8h/H) is too flat for 2-4 heads.
    const auto slopes = torch::pow(0.5, torch::arange(s.n_head, torch::kFloat));  // (H)
    const auto pos = torch::arange(s.seq_len, torch::kFloat);
    const auto dist = (pos.unsqueeze(1) - pos.unsqueeze(0));   // (T, T): i - j
    auto bias = -slopes.view({-1, 1, 1}) * dist.unsqueeze(0);  // (H, T, T)
    bias = bias.masked_fill(dist.unsqueeze(0) < 0, -std::numeric_limits<float>::infinity());
    alibi_ = register_buffer("alibi", bias.contiguous());
  }
  ResetParameters();
}

void TransformerImpl::ResetParameters() {
  torch::NoGradGuard no_grad;
  const double residual_std = 0.02 / std::sqrt(2.0 * shape_.n_layer);
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* lin = m->as<torch::nn::Linear>()) {
      lin->weight.normal_(0.0, 0.02);
      if (lin->bias.defined()) lin->bias.zero_();
    } else if (auto* emb = m->as<torch::nn::Embedding>()) {
      emb->weight.normal_(0.0, 0.02);
    }
  }
  for (auto& b : *blocks_) {
    auto* block = b->as<BlockImpl>();
    block->attn->proj->weight.normal_(0.0, residual_std);
    if (block->mlp) block->mlp->proj->weight.normal_(0.0, residual_std);
    if (block->moe) {
      for (auto& proj : block->moe->OutputProjections()) proj->weight.normal_(0.0, residual_std);
    }
  }
}

torch::Tensor TransformerImpl::MoeAuxLoss() const {
  torch::Tensor sum;
  for (const MoeImpl* m : moe_layers_) {
    const torch::Tensor layer = m->aux_loss() + m->z_loss();
    sum = sum.defined() ? sum + layer : layer;
  }
  return sum.defined() ? sum / static_cast<double>(moe_layers_.size()) : sum;
}

namespace {

// One block whose activations are recomputed in the backward pass. The forward runs without
// recording a graph and saves only the block input; the backward reruns the block with
// gradients on and backpropagates through it (a reentrant backward, as PyTorch's
// checkpoint(use_reentrant=True)), which also accumulates the block's parameter gradients.
struct BlockCheckpoint : public torch::autograd::Function<BlockCheckpoint> {
  // Only x is a tensor argument: LibTorch 1.13 refuses undefined tensor inputs, and the position
  // buffers (undefined for the schemes that do not use them) need no gradient. The block and the
  // buffers belong to the model, which outlives the backward pass.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               BlockImpl* block, const torch::Tensor* rope_cos,
                               const torch::Tensor* rope_sin, const torch::Tensor* alibi) {
    ctx->save_for_backward({x});
    ctx->saved_data["block"] = reinterpret_cast<int64_t>(block);
    ctx->saved_data["rope_cos"] = reinterpret_cast<int64_t>(rope_cos);
    ctx->saved_data["rope_sin"] = reinterpret_cast<int64_t>(rope_sin);
    ctx->saved_data["alibi"] = reinterpret_cast<int64_t>(alibi);
    ctx->saved_data["autocast"] = CudaAutocast::Enabled();
    return block->forward(x, *rope_cos, *rope_sin, *alibi);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto saved = [&](const char* key) { return ctx->saved_data[key].toInt(); };
    auto* block = reinterpret_cast<BlockImpl*>(saved("block"));
    const torch::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    torch::Tensor y;
    {
      torch::AutoGradMode grad_on(true);
      CudaAutocast autocast(ctx->saved_data["autocast"].toBool());
      y = block->forward(x, *reinterpret_cast<const torch::Tensor*>(saved("rope_cos")),
                         *reinterpret_cast<const torch::Tensor*>(saved("rope_sin")),
                         *reinterpret_cast<const torch::Tensor*>(saved("alibi")));
    }
    torch::autograd::backward({y}, {grad_out[0]});
    // One gradient per forward argument: x's, then none for the block and the buffers.
    return {x.grad(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor TransformerImpl::forward(const torch::Tensor& idx) {
  const int64_t T = idx.size(1);
  auto x = tok_emb_->forward(idx);  // (B, T, C)
  if (pos_emb_) x = x + pos_emb_->forward(torch::arange(T, idx.options()));
  const bool checkpoint = checkpointing_ && is_training() && torch::GradMode::is_enabled();
  TORCH_CHECK(!checkpoint || moe_layers_.empty(),
              "activation checkpointing is not supported with MoE layers");
  for (auto& b : *blocks_) {
    auto* block = b->as<BlockImpl>();
    x = checkpoint ? BlockCheckpoint::apply(x, block, &rope_cos_, &rope_sin_, &alibi_)
                   : block->forward(x, rope_cos_, rope_sin_, alibi_);
  }
  x = final_norm_->forward(x);
  return head_ ? head_->forward(x)
               : torch::nn::functional::linear(x, tok_emb_->weight);  // (B, T, V)
}

}  // namespace isoflop::trainer
