// LibTorch model tests: parameter count equals the accounting exactly for every variant,
// fused attention equals explicit attention, a single batch can be overfit, and loss falls on
// the synthetic language. One binary (WHOLE) so LibTorch starts once.
// The ModelCuda cases run where LibTorch sees a GPU (scripts/device-check.sh) and skip
// elsewhere; with ISOFLOP_EXPECT_CUDA=1 a missing GPU is a failure instead of a skip.
#include "isoflop/trainer/model.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <set>

#include "isoflop/trainer/data.h"
#include "isoflop/trainer/distributed.h"
#include "isoflop/trainer/synthetic.h"
#include "require_cuda.h"

namespace isoflop::trainer {
namespace {

using accounting::Mlp;
using accounting::Norm;
using accounting::PosEmbedding;
using accounting::Shape;

int64_t CountParams(Transformer& m) {
  int64_t n = 0;
  for (const auto& p : m->parameters()) n += p.numel();
  return n;
}

TEST(Model, ParameterCountMatchesAccountingForEveryVariant) {
  int checked = 0;
  for (Norm norm : {Norm::kRmsNorm, Norm::kLayerNorm}) {
    for (PosEmbedding pos : {PosEmbedding::kRope, PosEmbedding::kAlibi, PosEmbedding::kLearned}) {
      for (Mlp mlp : {Mlp::kSwiGlu, Mlp::kGelu}) {
        for (bool tie : {true, false}) {
          for (bool bias : {false, true}) {
            for (auto [L, d, H, ff, V, T] : std::vector<std::array<int, 6>>{
                     {1, 16, 1, 0, 32, 8}, {2, 48, 3, 0, 50, 17}, {3, 64, 4, 100, 257, 32}}) {
              Shape s;
              s.n_layer = L, s.d_model = d, s.n_head = H, s.d_ff = ff, s.vocab_size = V,
              s.seq_len = T, s.norm = norm, s.pos = pos, s.mlp = mlp, s.tie_embeddings = tie,
              s.bias = bias;
              ASSERT_TRUE(s.Validate().ok()) << s.Validate().message();
              Transformer m(s);
              EXPECT_EQ(CountParams(m), accounting::TotalParams(s))
                  << ToString(norm) << " " << ToString(pos) << " " << ToString(mlp)
                  << " tie=" << tie << " bias=" << bias << " L=" << L << " d=" << d;
              ++checked;
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(checked, 2 * 3 * 2 * 2 * 2 * 3);
}

// N_total (every expert) equals numel of the real MoE model, and N_active is what a token
// uses, for expert counts, top-k, granularity, shared experts, explicit expert sizes, both
// routers and MLP kinds, biases, and DeepSeek's dense-then-every-k-th layout.
TEST(Model, MoeParameterCountMatchesAccounting) {
  struct MoeCase {
    int n_experts, top_k, granularity, expert_d_ff, shared, moe_every, dense_layers;
  };
  const std::vector<MoeCase> cases = {
      {1, 1, 0, 0, 0, 1, 0},  {4, 2, 0, 0, 0, 1, 0},  {8, 2, 0, 0, 1, 1, 0}, {8, 1, 2, 0, 0, 1, 0},
      {16, 2, 4, 0, 2, 2, 1}, {6, 3, 0, 24, 0, 1, 1}, {5, 5, 0, 8, 3, 2, 0}, {4, 2, 0, 0, 1, 3, 2},
  };
  int checked = 0;
  for (const MoeCase& c : cases) {
    for (Mlp mlp : {Mlp::kSwiGlu, Mlp::kGelu}) {
      for (bool bias : {false, true}) {
        for (auto [L, d, H, ff] : std::vector<std::array<int, 4>>{{3, 16, 2, 0}, {4, 32, 4, 64}}) {
          Shape s;
          s.n_layer = L, s.d_model = d, s.n_head = H, s.d_ff = ff, s.mlp = mlp, s.bias = bias,
          s.norm = bias ? Norm::kLayerNorm : Norm::kRmsNorm, s.tie_embeddings = !bias;
          s.moe.emplace();
          s.moe->n_experts = c.n_experts, s.moe->top_k = c.top_k,
          s.moe->granularity = c.granularity, s.moe->expert_d_ff = c.expert_d_ff,
          s.moe->n_shared_experts = c.shared, s.moe->moe_every = c.moe_every,
          s.moe->n_dense_layers = c.dense_layers;
          s.moe->router = checked % 2 ? accounting::Router::kSigmoid : accounting::Router::kSoftmax;
          if (!s.Validate().ok()) continue;  // e.g. granularity 4 of a d_ff that 4 does not divide
          Transformer m(s);
          const std::string what = "E=" + std::to_string(c.n_experts) +
                                   " k=" + std::to_string(c.top_k) +
                                   " G=" + std::to_string(c.granularity) + " " + ToString(mlp) +
                                   " bias=" + std::to_string(bias) + " L=" + std::to_string(L) +
                                   " d=" + std::to_string(d);
          EXPECT_EQ(CountParams(m), accounting::TotalParams(s)) << what;
          EXPECT_EQ(static_cast<int>(m->moe_layers().size()), accounting::MoeBlockCount(s)) << what;
          // Active: numel of everything but the routed experts, plus k of them per MoE layer.
          int64_t active = 0;
          for (const auto& p : m->named_parameters()) {
            const bool routed = p.key().find(".experts.") != std::string::npos;
            if (!routed) {
              active += p.value().numel();
            } else if (p.key().find(".experts.0.") != std::string::npos) {
              active += accounting::EffectiveTopK(s) * p.value().numel();
            }
          }
          EXPECT_EQ(active, accounting::ActiveParams(s)) << what;
          ++checked;
        }
      }
    }
  }
  EXPECT_GE(checked, 56);
}

TEST(Model, FusedAttentionMatchesExplicit) {
  for (PosEmbedding pos : {PosEmbedding::kRope, PosEmbedding::kAlibi, PosEmbedding::kLearned}) {
    Shape s;
    s.pos = pos;
    torch::manual_seed(0);
    Transformer a(s, AttentionImpl::kExplicit);
    Transformer b(s, AttentionImpl::kFused);
    {
      torch::NoGradGuard ng;
      auto pa = a->parameters(), pb = b->parameters();
      for (size_t i = 0; i < pa.size(); ++i) pb[i].copy_(pa[i]);
    }
    const auto idx = torch::randint(0, s.vocab_size, {3, s.seq_len}, torch::kInt64);
    const auto ya = a->forward(idx), yb = b->forward(idx);
    EXPECT_TRUE(torch::allclose(ya, yb, 1e-5, 1e-5))
        << ToString(pos) << " max diff " << (ya - yb).abs().max().item<float>();
    // Causality: changing the last token does not change earlier logits.
    auto idx2 = idx.clone();
    idx2.index_put_({torch::indexing::Slice(), s.seq_len - 1},
                    (idx.select(1, s.seq_len - 1) + 1) % s.vocab_size);
    const auto y2 = b->forward(idx2);
    EXPECT_TRUE(torch::allclose(y2.narrow(1, 0, s.seq_len - 1), yb.narrow(1, 0, s.seq_len - 1),
                                1e-5, 1e-5));
  }
}

double TrainSteps(Transformer& m, const std::function<torch::Tensor()>& batch, int steps, double lr,
                  double* first_loss, bool autocast = false) {
  torch::optim::AdamW opt(m->parameters(),
                          torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).weight_decay(0.0));
  double loss_v = 0;
  for (int i = 0; i < steps; ++i) {
    const auto tokens = batch();  // (B, T+1)
    const int64_t T = tokens.size(1) - 1;
    torch::Tensor logits;
    {
      CudaAutocast guard(autocast);
      logits = m->forward(tokens.narrow(1, 0, T));
    }
    const auto loss = torch::nn::functional::cross_entropy(
        logits.reshape({-1, logits.size(-1)}).to(torch::kFloat),
        tokens.narrow(1, 1, T).reshape({-1}));
    opt.zero_grad();
    loss.backward();
    opt.step();
    loss_v = loss.item<double>();
    if (i == 0 && first_loss) *first_loss = loss_v;
  }
  return loss_v;
}

TEST(Model, OverfitsASingleBatch) {
  torch::set_num_threads(2);
  torch::manual_seed(1);
  Shape s;
  s.seq_len = 32;
  Transformer m(s);
  const auto tokens = torch::randint(0, s.vocab_size, {4, s.seq_len + 1}, torch::kInt64);
  double first = 0;
  const double last = TrainSteps(
      m, [&] { return tokens; }, 150, 3e-3, &first);
  EXPECT_GT(first, 3.0);  // ~log 32
  EXPECT_LT(last, 0.05);
}

TEST(Model, LossFallsOnSyntheticData) {
  torch::set_num_threads(2);
  torch::manual_seed(2);
  DataConfig c;
  auto lang = SyntheticLanguage::Build(c);
  ASSERT_TRUE(lang.ok());
  Shape s;
  s.seq_len = 64;
  Transformer m(s);
  Rng rng(5);
  auto batch = [&] {
    std::vector<int64_t> buf(16 * 65);
    for (int b = 0; b < 16; ++b) lang->Sample(rng, 65, &buf[b * 65]);
    return torch::from_blob(buf.data(), {16, 65}, torch::kInt64).clone();
  };
  double first = 0;
  const double last = TrainSteps(m, batch, 150, 3e-3, &first);
  EXPECT_LT(last, first - 0.8) << "first " << first << " last " << last;
  EXPECT_GT(last, lang->EntropyRate() - 0.1);  // cannot beat the entropy rate (noise margin)
}

// Parameter gradients of one mean-token loss on `idx` (B, T+1), in parameter order.
std::vector<torch::Tensor> Gradients(Transformer& m, const torch::Tensor& idx, bool autocast) {
  m->zero_grad();
  const int64_t T = idx.size(1) - 1;
  torch::Tensor logits;
  {
    CudaAutocast guard(autocast);
    logits = m->forward(idx.narrow(1, 0, T));
  }
  torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}).to(torch::kFloat),
                                       idx.narrow(1, 1, T).reshape({-1}))
      .backward();
  std::vector<torch::Tensor> grads;
  for (const auto& p : m->parameters()) grads.push_back(p.grad().clone());
  return grads;
}

// Autograd nodes reachable from `t` whose name contains `needle`.
int CountGraphNodes(const torch::Tensor& t, const std::string& needle) {
  std::set<torch::autograd::Node*> seen;
  std::vector<torch::autograd::Node*> stack = {t.grad_fn().get()};
  int count = 0;
  while (!stack.empty()) {
    torch::autograd::Node* n = stack.back();
    stack.pop_back();
    if (!n || !seen.insert(n).second) continue;
    if (n->name().find(needle) != std::string::npos) ++count;
    for (const auto& e : n->next_edges()) stack.push_back(e.function.get());
  }
  return count;
}

// Recomputing each block in the backward pass gives the gradients of the plain backward, for
// every position scheme and both MLPs; evaluation (no gradients) never checkpoints.
TEST(Model, ActivationCheckpointingGivesTheSameGradients) {
  torch::set_num_threads(2);
  for (PosEmbedding pos : {PosEmbedding::kRope, PosEmbedding::kAlibi, PosEmbedding::kLearned}) {
    for (Mlp mlp : {Mlp::kSwiGlu, Mlp::kGelu}) {
      Shape s;
      s.pos = pos, s.mlp = mlp, s.n_layer = 3, s.d_model = 32, s.n_head = 4, s.seq_len = 24;
      torch::manual_seed(7);
      Transformer plain(s);
      Transformer ckpt(s);
      {
        torch::NoGradGuard ng;
        auto a = plain->parameters(), b = ckpt->parameters();
        for (size_t i = 0; i < a.size(); ++i) b[i].copy_(a[i]);
      }
      ckpt->set_activation_checkpointing(true);
      const auto idx = torch::randint(0, s.vocab_size, {4, s.seq_len + 1}, torch::kInt64);
      const auto ga = Gradients(plain, idx, false), gb = Gradients(ckpt, idx, false);
      ASSERT_EQ(ga.size(), gb.size());
      for (size_t i = 0; i < ga.size(); ++i) {
        ASSERT_TRUE(gb[i].defined());
        EXPECT_GT(ga[i].abs().sum().item<double>(), 0) << i;
        EXPECT_TRUE(torch::allclose(ga[i], gb[i], 1e-5, 1e-7))
            << ToString(pos) << " " << ToString(mlp) << " parameter " << i << " max diff "
            << (ga[i] - gb[i]).abs().max().item<float>();
      }
      // The checkpointed graph holds one recomputing node per block, the plain one none.
      const auto x = idx.narrow(1, 0, s.seq_len);
      EXPECT_EQ(CountGraphNodes(ckpt->forward(x), "BlockCheckpoint"), s.n_layer);
      EXPECT_EQ(CountGraphNodes(plain->forward(x), "BlockCheckpoint"), 0);
      torch::NoGradGuard ng;
      EXPECT_TRUE(torch::equal(plain->forward(x), ckpt->forward(x)));
    }
  }
}

// A copy of `m` (same parameters) on `device`.
Transformer CopyTo(Transformer& m, const Shape& s, AttentionImpl impl, torch::Device device) {
  Transformer c(s, impl);
  {
    torch::NoGradGuard ng;
    auto pm = m->parameters(), pc = c->parameters();
    for (size_t i = 0; i < pm.size(); ++i) pc[i].copy_(pm[i]);
  }
  c->to(device);
  return c;
}

// fp32 on the GPU gives the CPU's logits, for both attention paths and every position scheme.
TEST(ModelCuda, Fp32ForwardMatchesCpu) {
  ISOFLOP_REQUIRE_CUDA();
  for (PosEmbedding pos : {PosEmbedding::kRope, PosEmbedding::kAlibi, PosEmbedding::kLearned}) {
    Shape s;
    s.pos = pos, s.n_layer = 2, s.d_model = 64, s.n_head = 4, s.seq_len = 48;
    torch::manual_seed(3);
    Transformer cpu(s, AttentionImpl::kExplicit);
    const auto idx = torch::randint(0, s.vocab_size, {4, s.seq_len}, torch::kInt64);
    const auto want = cpu->forward(idx);
    for (AttentionImpl impl : {AttentionImpl::kExplicit, AttentionImpl::kFused}) {
      Transformer gpu = CopyTo(cpu, s, impl, torch::kCUDA);
      const auto got = gpu->forward(idx.to(torch::kCUDA)).to(torch::kCPU);
      EXPECT_TRUE(torch::allclose(got, want, 1e-4, 1e-4))
          << ToString(pos) << " fused=" << (impl == AttentionImpl::kFused) << " max diff "
          << (got - want).abs().max().item<float>();
    }
  }
}

// Under bf16 autocast the logits come out in bf16 and stay close to fp32; fused and explicit
// attention agree in fp32 on the GPU too.
TEST(ModelCuda, Bf16AutocastForwardIsCloseToFp32) {
  ISOFLOP_REQUIRE_CUDA();
  for (PosEmbedding pos : {PosEmbedding::kRope, PosEmbedding::kAlibi}) {
    Shape s;
    s.pos = pos, s.n_layer = 2, s.d_model = 64, s.n_head = 4, s.seq_len = 48;
    torch::manual_seed(4);
    Transformer cpu(s, AttentionImpl::kExplicit);
    Transformer fused = CopyTo(cpu, s, AttentionImpl::kFused, torch::kCUDA);
    Transformer expl = CopyTo(cpu, s, AttentionImpl::kExplicit, torch::kCUDA);
    const auto idx =
        torch::randint(0, s.vocab_size, {4, s.seq_len}, torch::kInt64).to(torch::kCUDA);
    const auto fp32 = expl->forward(idx);
    EXPECT_TRUE(torch::allclose(fused->forward(idx), fp32, 1e-4, 1e-4)) << ToString(pos);
    torch::Tensor bf16;
    {
      CudaAutocast guard(true);
      bf16 = fused->forward(idx);
    }
    EXPECT_EQ(bf16.scalar_type(), torch::kBFloat16) << ToString(pos);
    const float diff = (bf16.to(torch::kFloat) - fp32).abs().max().item<float>();
    EXPECT_LT(diff, 5e-2) << ToString(pos);
    // The guard restored the state: the next forward is fp32 again.
    EXPECT_EQ(fused->forward(idx).scalar_type(), torch::kFloat);
  }
}

// Checkpointing on the GPU under bf16 autocast: the recomputation restores autocast, so the
// gradients match the plain backward's to bf16 precision.
// The data-parallel reducer on the GPU: its hooks run on autograd's CUDA thread, buckets live
// on the device, and a group of one hands every gradient back unchanged (bf16 autocast).
TEST(ModelCuda, GradientReducerStartsEveryBucketDuringTheCudaBackward) {
  ISOFLOP_REQUIRE_CUDA();
  Shape s;
  s.n_layer = 2, s.d_model = 64, s.n_head = 4, s.seq_len = 48;
  torch::manual_seed(9);
  Transformer cpu(s, AttentionImpl::kExplicit);
  Transformer gpu = CopyTo(cpu, s, AttentionImpl::kFused, torch::kCUDA);
  const auto idx = torch::randint(0, s.vocab_size, {4, s.seq_len + 1}, torch::kInt64)
                       .to(torch::kCUDA);
  const auto x = idx.narrow(1, 0, s.seq_len), y = idx.narrow(1, 1, s.seq_len);  // (B, T)
  const auto loss_of = [&] {
    CudaAutocast guard(true);
    return torch::nn::functional::cross_entropy(
        gpu->forward(x).reshape({-1, s.vocab_size}).to(torch::kFloat), y.reshape({-1}));
  };
  loss_of().backward();
  std::vector<torch::Tensor> want;
  for (const auto& p : gpu->parameters()) want.push_back(p.grad().clone());
  gpu->zero_grad(/*set_to_none=*/true);
  auto group = SingleProcessGroup();
  GradientReducer reducer(*group, gpu->parameters(), 64 << 10, 64 << 10);
  ASSERT_GT(reducer.buckets(), 2);
  const torch::Tensor loss = loss_of();
  reducer.Arm(loss);
  loss.backward();
  EXPECT_EQ(reducer.started_early(), reducer.buckets());
  reducer.Finish();
  const auto params = gpu->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    ASSERT_TRUE(params[i].grad().defined()) << i;
    EXPECT_EQ(params[i].grad().device().type(), torch::kCUDA);
    EXPECT_TRUE(torch::allclose(params[i].grad(), want[i], 1e-5, 1e-6)) << i;
  }
}

TEST(ModelCuda, ActivationCheckpointingUnderAutocastGivesTheSameGradients) {
  ISOFLOP_REQUIRE_CUDA();
  Shape s;
  s.n_layer = 3, s.d_model = 64, s.n_head = 4, s.seq_len = 48;
  torch::manual_seed(8);
  Transformer cpu(s);
  Transformer plain = CopyTo(cpu, s, AttentionImpl::kAuto, torch::kCUDA);
  Transformer ckpt = CopyTo(cpu, s, AttentionImpl::kAuto, torch::kCUDA);
  ckpt->set_activation_checkpointing(true);
  const auto idx =
      torch::randint(0, s.vocab_size, {4, s.seq_len + 1}, torch::kInt64).to(torch::kCUDA);
  const auto ga = Gradients(plain, idx, true), gb = Gradients(ckpt, idx, true);
  for (size_t i = 0; i < ga.size(); ++i) {
    const double scale = ga[i].abs().max().item<double>();
    EXPECT_LT((ga[i] - gb[i]).abs().max().item<double>(), 1e-2 * scale + 1e-6) << i;
  }
}

// An MoE model (top-2 of 4, one shared expert, a dense first block) on the GPU: fp32 logits
// equal the CPU's, and under bf16 autocast the cross-entropy plus router losses backpropagate
// finite gradients that reach the router.
TEST(ModelCuda, MoeMatchesCpuAndTrainsUnderAutocast) {
  ISOFLOP_REQUIRE_CUDA();
  Shape s;
  s.n_layer = 3, s.d_model = 64, s.n_head = 4, s.seq_len = 48;
  s.moe.emplace();
  s.moe->n_experts = 4, s.moe->top_k = 2, s.moe->n_shared_experts = 1, s.moe->n_dense_layers = 1;
  torch::manual_seed(9);
  Transformer cpu(s, AttentionImpl::kExplicit);
  Transformer gpu = CopyTo(cpu, s, AttentionImpl::kExplicit, torch::kCUDA);
  const auto idx = torch::randint(0, s.vocab_size, {4, s.seq_len + 1}, torch::kInt64);
  const auto x = idx.narrow(1, 0, s.seq_len);
  const auto want = cpu->forward(x);
  const auto got = gpu->forward(x.to(torch::kCUDA)).to(torch::kCPU);
  EXPECT_TRUE(torch::allclose(got, want, 1e-4, 1e-4))
      << "max diff " << (got - want).abs().max().item<float>();
  const auto g = Gradients(gpu, idx.to(torch::kCUDA), /*autocast=*/true);
  for (const auto& t : g) EXPECT_TRUE(torch::isfinite(t).all().item<bool>());
  gpu->zero_grad();
  torch::Tensor logits;
  {
    CudaAutocast guard(true);
    logits = gpu->forward(x.to(torch::kCUDA));
  }
  gpu->MoeAuxLoss().backward();
  const auto* router = gpu->moe_layers()[0]->router.get();
  EXPECT_GT(router->weight.grad().abs().sum().item<double>(), 0);
}

TEST(ModelCuda, LossFallsUnderBf16Autocast) {
  ISOFLOP_REQUIRE_CUDA();
  torch::manual_seed(5);
  auto lang = SyntheticLanguage::Build(DataConfig{});
  ASSERT_TRUE(lang.ok());
  Shape s;
  s.seq_len = 64;
  Transformer m(s);
  m->to(torch::kCUDA);
  Rng rng(6);
  auto batch = [&] {
    std::vector<int64_t> buf(16 * 65);
    for (int b = 0; b < 16; ++b) lang->Sample(rng, 65, &buf[b * 65]);
    return torch::from_blob(buf.data(), {16, 65}, torch::kInt64).to(torch::kCUDA);
  };
  double first = 0;
  const double last = TrainSteps(m, batch, 150, 3e-3, &first, /*autocast=*/true);
  EXPECT_LT(last, first - 0.8) << "first " << first << " last " << last;
  EXPECT_GT(last, lang->EntropyRate() - 0.1);
}

}  // namespace
}  // namespace isoflop::trainer
