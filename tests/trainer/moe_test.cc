// The Mixture-of-Experts layer (moe.h) on real LibTorch modules: one expert is the dense MLP,
// the balancing losses have their published values, gradients reach the router, the loss-free
// bias balances load without touching the combine weights, capacity drops exactly the
// over-capacity assignments, and the bias is saved with the module. Part of the WHOLE binary
// trainer_model_test. Shape legend: B batch, T time, C d_model, E experts.
#include "isoflop/trainer/moe.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <sstream>

#include "isoflop/trainer/model.h"

namespace isoflop::trainer {
namespace {

using accounting::Mlp;
using accounting::MoeShape;
using accounting::Router;
using accounting::Shape;

Shape MoeShapeOf(int n_experts, int top_k, int d_model = 16) {
  Shape s;
  s.n_layer = 1, s.d_model = d_model, s.n_head = 2, s.seq_len = 8;
  s.moe.emplace();
  s.moe->n_experts = n_experts;
  s.moe->top_k = top_k;
  return s;
}

// Copies every parameter of `from` into the parameter of `to` named by `rename(name)`.
void CopyByName(torch::nn::Module& from, torch::nn::Module& to,
                const std::function<std::string(const std::string&)>& rename) {
  torch::NoGradGuard ng;
  auto dst = to.named_parameters();
  for (const auto& p : from.named_parameters()) {
    torch::Tensor* t = dst.find(rename(p.key()));
    ASSERT_NE(t, nullptr) << rename(p.key());
    t->copy_(p.value());
  }
}

// Tokens that are one-hot directions: token n points at expert `expert_of[n]`, and a router
// whose weight is 4·identity sends it there (softmax probabilities e^4 / (e^4 + E - 1)).
torch::Tensor OneHotTokens(const std::vector<int>& expert_of, int64_t C) {
  auto x = torch::zeros({1, static_cast<int64_t>(expert_of.size()), C});  // (1, N, C)
  for (size_t n = 0; n < expert_of.size(); ++n) x[0][n][expert_of[n]] = 1.0;
  return x;
}

void SetIdentityRouter(MoeImpl& moe, int E, double scale = 4.0) {
  torch::NoGradGuard ng;
  moe.router->weight.zero_();
  for (int e = 0; e < E; ++e) moe.router->weight[e][e] = scale;
}

// A one-expert top-1 MoE whose expert has the dense MLP's weights computes exactly the dense
// MLP, for both MLP kinds with and without biases; and a whole one-expert MoE transformer
// gives the dense transformer's logits bit for bit.
TEST(Moe, OneExpertTop1IsTheDenseMlpExactly) {
  for (Mlp mlp : {Mlp::kSwiGlu, Mlp::kGelu}) {
    for (bool bias : {false, true}) {
      Shape s = MoeShapeOf(1, 1);
      s.mlp = mlp, s.bias = bias;
      torch::manual_seed(11);
      trainer::Mlp dense(s);
      trainer::Moe moe(s);
      CopyByName(*dense, *moe, [](const std::string& n) { return "experts.0." + n; });
      const auto x = torch::randn({3, 5, s.d_model});  // (B, T, C)
      EXPECT_TRUE(torch::equal(moe->forward(x), dense->forward(x)))
          << ToString(mlp) << " bias=" << bias;
    }
  }
  Shape dense_shape;
  dense_shape.n_layer = 3;
  Shape moe_shape = dense_shape;
  moe_shape.moe.emplace();
  moe_shape.moe->n_experts = 1, moe_shape.moe->top_k = 1;
  torch::manual_seed(12);
  Transformer dense(dense_shape);
  Transformer moe(moe_shape);
  CopyByName(*dense, *moe, [](std::string n) {
    const auto at = n.find(".mlp.");
    return at == std::string::npos ? n : n.replace(at, 5, ".moe.experts.0.");
  });
  const auto idx = torch::randint(0, 32, {2, dense_shape.seq_len}, torch::kInt64);
  EXPECT_TRUE(torch::equal(moe->forward(idx), dense->forward(idx)));
  EXPECT_EQ(moe->moe_layers().size(), 3u);
}

// Switch's loss is aux_loss_weight exactly when tokens are spread evenly over the experts, and
// grows as more of them go to one expert.
TEST(Moe, LoadBalancingLossIsItsWeightWhenUniformAndGrowsWithSkew) {
  const int E = 4;
  Shape s = MoeShapeOf(E, 1);
  s.moe->aux_loss_weight = 0.01;
  Moe moe(s);
  SetIdentityRouter(*moe, E);
  std::vector<double> losses;
  // Of 8 tokens, `hot` go to expert 0 and the rest round-robin to experts 1..3: hot = 2 is
  // uniform (2 tokens each, so f_i = P_i = 1/4).
  for (int hot = 2; hot <= 8; hot += 2) {
    std::vector<int> to;
    for (int n = 0; n < 8; ++n) to.push_back(n < hot ? 0 : 1 + (n - hot) % (E - 1));
    moe->forward(OneHotTokens(to, s.d_model));
    losses.push_back(moe->aux_loss().item<double>());
  }
  EXPECT_NEAR(losses[0], 0.01, 1e-8);
  for (size_t i = 1; i < losses.size(); ++i) EXPECT_GT(losses[i], losses[i - 1] + 1e-4) << i;
  // All 8 on expert 0: E · f_0 · P_0 with f_0 = 1, P_0 = e^4 / (e^4 + 3).
  EXPECT_NEAR(losses.back(), 0.01 * E * std::exp(4.0) / (std::exp(4.0) + 3), 1e-7);
}

// z-loss = z_loss_weight · mean_n (log Σ_e exp(logit_ne))², computed here in double by hand.
TEST(Moe, ZLossMatchesAHandComputation) {
  for (Router router : {Router::kSoftmax, Router::kSigmoid}) {
    Shape s = MoeShapeOf(5, 2);
    s.moe->router = router;
    s.moe->z_loss_weight = 0.003;
    torch::manual_seed(13);
    Moe moe(s);
    const auto x = torch::randn({2, 7, s.d_model});
    moe->forward(x);
    const auto logits = torch::matmul(x.reshape({14, s.d_model}).to(torch::kDouble),
                                      moe->router->weight.to(torch::kDouble).t());  // (N, E)
    double sum = 0;
    for (int n = 0; n < 14; ++n) {
      double z = 0;
      for (int e = 0; e < 5; ++e) z += std::exp(logits[n][e].item<double>());
      sum += std::log(z) * std::log(z);
    }
    EXPECT_NEAR(moe->z_loss().item<double>(), 0.003 * sum / 14, 1e-8) << ToString(router);
  }
}

// With top-2 the renormalised combine weights carry the task loss to the router; the balance
// and z losses reach it on their own too.
TEST(Moe, GradientsReachTheRouter) {
  for (Router router : {Router::kSoftmax, Router::kSigmoid}) {
    Shape s = MoeShapeOf(4, 2);
    s.moe->router = router;
    s.moe->aux_loss_weight = 0, s.moe->z_loss_weight = 0;
    torch::manual_seed(14);
    Moe moe(s);
    const auto x = torch::randn({2, 6, s.d_model});
    moe->forward(x).pow(2).sum().backward();
    EXPECT_GT(moe->router->weight.grad().abs().sum().item<double>(), 0) << ToString(router);
    moe->zero_grad();
    Shape s1 = MoeShapeOf(4, 1);
    s1.moe->router = router;
    Moe top1(s1);
    top1->forward(x);
    (top1->aux_loss() + top1->z_loss()).backward();
    EXPECT_GT(top1->router->weight.grad().abs().sum().item<double>(), 0) << ToString(router);
  }
}

// DeepSeek-V3's bias: on a router that sends most tokens to expert 0, repeated updates move the
// load toward balance (with no gradient step at all), and the bias never enters the combine
// weights: with top_k = n_experts every expert is chosen whatever the bias, so the output must
// not change when the bias does.
TEST(Moe, LossFreeBiasBalancesLoadAndNeverChangesCombineWeights) {
  for (Router router : {Router::kSoftmax, Router::kSigmoid}) {
    const int E = 4;
    Shape s = MoeShapeOf(E, 1);
    s.moe->router = router;
    s.moe->bias_update_rate = 0.002;
    torch::manual_seed(15);
    Moe moe(s);
    {
      torch::NoGradGuard ng;
      moe->router->weight.normal_(0.0, 0.3);
      moe->router->weight[0].add_(0.3);  // expert 0 scores higher for most tokens
    }
    auto x = torch::randn({4, 16, s.d_model}) + 1.0;
    auto imbalance = [&] {
      moe->ResetStepStats();
      moe->forward(x);
      const auto m = MoeStepMetrics({moe.get()});
      for (const auto& [k, v] : m)
        if (k == "load_max_over_mean") return v;
      return -1.0;
    };
    const double before = imbalance();
    ASSERT_GT(before, 2.0) << ToString(router) << ": the router should start skewed";
    // Sign updates on a fixed batch settle into a small cycle: judge its mean.
    double after = 0;
    for (int i = 0; i < 400; ++i) {
      const double v = imbalance();
      if (i >= 300) after += v / 100;
      moe->UpdateSelectionBias();
    }
    EXPECT_LT(after, 1.5) << ToString(router) << " from " << before;
    EXPECT_GT(moe->selection_bias().abs().sum().item<double>(), 0);

    Shape all = MoeShapeOf(E, E);
    all.moe->router = router;
    all.moe->bias_update_rate = 0.02;
    Moe full(all);
    const auto y0 = full->forward(x);
    {
      torch::NoGradGuard ng;
      full->selection_bias().copy_(torch::tensor({3.0, -2.0, 0.5, 1.0}));
    }
    EXPECT_TRUE(torch::allclose(full->forward(x), y0, 1e-6, 1e-7)) << ToString(router);
  }
}

// Per-expert loads are fractions of the routed assignments: they sum to 1, pooled over every
// MoE layer of a model; without a capacity nothing is dropped; evaluation (no grad) adds nothing.
TEST(Moe, LoadsSumToOneAndOnlyTrainingForwardsCount) {
  Shape s;
  s.n_layer = 3;
  s.moe.emplace();
  s.moe->n_experts = 6, s.moe->top_k = 2, s.moe->n_shared_experts = 1;
  torch::manual_seed(16);
  Transformer m(s);
  const auto idx = torch::randint(0, 32, {4, s.seq_len}, torch::kInt64);
  m->forward(idx);
  m->forward(idx);
  std::map<std::string, double> metrics;
  for (const auto& [k, v] : MoeStepMetrics(m->moe_layers())) metrics[k] = v;
  double sum = 0;
  for (int e = 0; e < 6; ++e) sum += metrics.at("load_" + std::to_string(e));
  EXPECT_NEAR(sum, 1.0, 1e-12);
  EXPECT_EQ(metrics.at("dropped_fraction"), 0.0);
  EXPECT_GE(metrics.at("load_max_over_mean"), 1.0);
  EXPECT_GT(metrics.at("router_entropy"), 0.0);
  EXPECT_LE(metrics.at("router_entropy"), std::log(6.0) + 1e-9);
  EXPECT_GT(metrics.at("aux_loss"), 0.0);
  EXPECT_GT(metrics.at("z_loss"), 0.0);
  EXPECT_EQ(m->moe_layers()[0]->step_stats().tokens, 2 * 4 * s.seq_len);
  EXPECT_EQ(m->moe_layers()[0]->step_stats().assignments, 2 * 2 * 4 * s.seq_len);
  {
    torch::NoGradGuard ng;
    m->forward(idx);
  }
  EXPECT_EQ(m->moe_layers()[0]->step_stats().tokens, 2 * 4 * s.seq_len);
  // The backpropagated auxiliary loss is the layers' mean of aux + z.
  double mean = 0;
  for (MoeImpl* layer : m->moe_layers())
    mean += (layer->aux_loss() + layer->z_loss()).item<double>() / 3;
  EXPECT_NEAR(m->MoeAuxLoss().item<double>(), mean, 1e-9);
}

// Capacity ceil(1.0 · 8 · 1 / 2) = 4 per expert: of the 6 tokens routed to expert 0, the first
// 4 are served and the last 2 get nothing (their residual carries them); expert 1's 2 tokens
// are served. Exactly 2 of 8 assignments are counted as dropped. Both dispatches.
TEST(Moe, CapacityDropsExactlyTheOverCapacityTokens) {
  for (MoeImpl::Dispatch dispatch : {MoeImpl::Dispatch::kGrouped, MoeImpl::Dispatch::kPadded}) {
    SCOPED_TRACE(dispatch == MoeImpl::Dispatch::kPadded ? "padded" : "grouped");
    const int E = 2;
    Shape s = MoeShapeOf(E, 1);
    s.moe->capacity_factor = 1.0;
    torch::manual_seed(17);
    Moe moe(s);
    moe->set_dispatch(dispatch);
    SetIdentityRouter(*moe, E);
    const std::vector<int> to = {0, 1, 0, 0, 1, 0, 0, 0};
    const auto x = OneHotTokens(to, s.d_model);  // (1, 8, C)
    const auto y = moe->forward(x)[0];           // (8, C)
    auto expert = [&](int e, int n) {
      auto* mlp = moe->named_modules()["experts." + std::to_string(e)]->as<MlpImpl>();
      return mlp->forward(x[0][n].unsqueeze(0))[0];
    };
    int served0 = 0;
    for (int n = 0; n < 8; ++n) {
      const bool served = to[n] == 1 || served0++ < 4;
      if (served) {
        EXPECT_TRUE(torch::allclose(y[n], expert(to[n], n), 1e-6, 1e-7)) << "token " << n;
      } else {
        EXPECT_TRUE(torch::equal(y[n], torch::zeros_like(y[n]))) << "token " << n;
      }
    }
    const auto st = moe->step_stats();
    EXPECT_EQ(st.dropped, 2);
    EXPECT_EQ(st.assignments, 8);
    EXPECT_EQ(st.load, (std::vector<double>{6, 2}));
    std::map<std::string, double> metrics;
    for (const auto& [k, v] : MoeStepMetrics({moe.get()})) metrics[k] = v;
    EXPECT_DOUBLE_EQ(metrics.at("dropped_fraction"), 0.25);
    // A larger capacity drops nothing.
    Shape roomy = s;
    roomy.moe->capacity_factor = 1.5;  // ceil(6) = 6
    Moe big(roomy);
    big->set_dispatch(dispatch);
    SetIdentityRouter(*big, E);
    big->forward(x);
    EXPECT_EQ(big->step_stats().dropped, 0);
  }
}

// The padded dispatch (CUDA's, which reads nothing back) and the grouped one compute the same
// layer: on a skewed router with a binding capacity (a fifth of the assignments dropped or
// more), top-2 over 4 experts plus a shared one, the outputs, the gradients of the input and
// of every parameter, and the step's stats agree (to float rounding: the experts' matmuls see
// different row counts).
TEST(Moe, PaddedAndGroupedDispatchComputeTheSameLayer) {
  for (double capacity_factor : {0.75, 1.25}) {
    SCOPED_TRACE("capacity_factor " + std::to_string(capacity_factor));
    Shape s = MoeShapeOf(4, 2);
    s.moe->n_shared_experts = 1;
    s.moe->capacity_factor = capacity_factor;
    s.bias = true;  // an empty slot's expert output is then not 0: it must land nowhere
    torch::manual_seed(18);
    Moe grouped(s), padded(s);
    CopyByName(*grouped, *padded, [](const std::string& n) { return n; });
    {
      torch::NoGradGuard ng;
      grouped->router->weight[0].add_(0.5);  // expert 0 scores higher for most tokens
      padded->router->weight.copy_(grouped->router->weight);
    }
    grouped->set_dispatch(MoeImpl::Dispatch::kGrouped);
    padded->set_dispatch(MoeImpl::Dispatch::kPadded);
    const auto x0 = torch::randn({3, 16, s.d_model}) + 0.5;
    const auto up = torch::randn({3, 16, s.d_model});  // the upstream gradient
    auto run = [&](Moe& m) {
      auto x = x0.clone().requires_grad_(true);
      const auto y = m->forward(x);
      ((y * up).sum() + m->aux_loss() + m->z_loss()).backward();
      return std::make_pair(y.detach(), x.grad());
    };
    const auto [yg, gxg] = run(grouped);
    const auto [yp, gxp] = run(padded);
    EXPECT_TRUE(torch::allclose(yp, yg, 1e-5, 1e-6)) << (yp - yg).abs().max().item<double>();
    EXPECT_TRUE(torch::allclose(gxp, gxg, 1e-5, 1e-6)) << (gxp - gxg).abs().max().item<double>();
    auto pg = grouped->named_parameters();
    for (const auto& p : padded->named_parameters()) {
      const torch::Tensor& want = pg[p.key()].grad();
      ASSERT_TRUE(want.defined() && p.value().grad().defined()) << p.key();
      EXPECT_TRUE(torch::allclose(p.value().grad(), want, 1e-5, 1e-6))
          << p.key() << ": " << (p.value().grad() - want).abs().max().item<double>();
    }
    const auto sg = grouped->step_stats(), sp = padded->step_stats();
    EXPECT_EQ(sp.load, sg.load);
    EXPECT_EQ(sp.dropped, sg.dropped);
    EXPECT_GE(sg.dropped, sg.assignments / (capacity_factor < 1 ? 4 : 20)) << sg.dropped;
    EXPECT_DOUBLE_EQ(sp.entropy_sum, sg.entropy_sum);
    EXPECT_DOUBLE_EQ(sp.aux_sum, sg.aux_sum);
  }
}

// The selection bias is a buffer: torch::save of the module carries it, so a checkpoint does.
TEST(Moe, SelectionBiasIsSavedWithTheModule) {
  Shape s = MoeShapeOf(3, 1);
  s.moe->bias_update_rate = 0.1;
  Moe a(s), b(s);
  a->forward(torch::randn({1, 9, s.d_model}));
  a->UpdateSelectionBias();
  ASSERT_GT(a->selection_bias().abs().sum().item<double>(), 0);
  std::stringstream bytes;
  torch::save(a, bytes);
  torch::load(b, bytes);
  EXPECT_TRUE(torch::equal(a->selection_bias(), b->selection_bias()));
}

}  // namespace
}  // namespace isoflop::trainer
