// The step's device-side values: ClipGradNorm is LibTorch's clip_grad_norm_ to the bit without
// its read to the host; StepValues hands back what it was given. The StepValuesCuda cases run
// where LibTorch sees a GPU (scripts/device-check.sh), and there also check that SyncCheck
// catches a synchronising call while the step's own operations pass it.
#include "isoflop/trainer/step_values.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdlib>
#include <cstring>

#include "isoflop/trainer/model.h"
#include "require_cuda.h"

namespace isoflop::trainer {
namespace {

// A small model's gradients after one backward, with one parameter left without a gradient.
std::vector<torch::Tensor> ModelWithGradients(uint64_t seed, torch::Device device) {
  accounting::Shape s;
  s.n_layer = 2, s.d_model = 32, s.n_head = 2, s.vocab_size = 40, s.seq_len = 16;
  torch::manual_seed(seed);
  Transformer m(s);
  m->to(device);
  const auto idx = torch::randint(0, s.vocab_size, {3, s.seq_len + 1}, torch::kInt64).to(device);
  const auto logits = m->forward(idx.narrow(1, 0, s.seq_len));
  torch::nn::functional::cross_entropy(logits.reshape({-1, s.vocab_size}),
                                       idx.narrow(1, 1, s.seq_len).reshape({-1}))
      .backward();
  auto params = m->parameters();
  params.back().mutable_grad() = torch::Tensor();
  return params;
}

std::vector<torch::Tensor> CloneWithGradients(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> out;
  for (const auto& p : params) {
    auto c = p.detach().clone().requires_grad_(true);
    if (p.grad().defined()) c.mutable_grad() = p.grad().clone();
    out.push_back(c);
  }
  return out;
}

TEST(StepValues, ClipGradNormIsLibTorchsClipToTheBit) {
  const auto params = ModelWithGradients(5, torch::kCPU);
  const double unclipped = torch::nn::utils::clip_grad_norm_(CloneWithGradients(params), 1e30);
  ASSERT_GT(unclipped, 0);
  // Clipping hard, clipping just below the norm, not clipping, and measuring only (0).
  for (double max_norm : {1e-3, unclipped * 0.999, unclipped * 10, 0.0}) {
    auto want = CloneWithGradients(params), got = CloneWithGradients(params);
    const double want_norm =
        torch::nn::utils::clip_grad_norm_(want, max_norm > 0 ? max_norm : 1e30);
    const torch::Tensor norm = ClipGradNorm(got, max_norm);
    EXPECT_EQ(norm.item<double>(), want_norm) << max_norm;
    for (size_t i = 0; i < params.size(); ++i) {
      ASSERT_EQ(got[i].grad().defined(), want[i].grad().defined()) << i;
      if (want[i].grad().defined()) {
        EXPECT_TRUE(torch::equal(got[i].grad(), want[i].grad())) << "param " << i << " at "
                                                                  << max_norm;
      }
    }
  }
  // After a hard clip the gradients' norm is the maximum (to float rounding).
  auto clipped = CloneWithGradients(params);
  ClipGradNorm(clipped, 0.5);
  EXPECT_NEAR(ClipGradNorm(clipped, 0).item<double>(), 0.5, 1e-6);
  // No gradient at all: a zero norm, as LibTorch's.
  std::vector<torch::Tensor> none = {torch::ones({3}, torch::requires_grad())};
  EXPECT_EQ(ClipGradNorm(none, 1.0).item<double>(), 0.0);
  EXPECT_EQ(ClipGradNorm({}, 1.0).item<double>(), 0.0);
}

TEST(StepValues, HandsBackACopyOfWhatItWasGiven) {
  torch::Tensor v = torch::tensor({2.5, -1.0, 7.0}, torch::kDouble);
  StepValues values(v);
  v.fill_(0);  // the step's tensors are reused; the copy is not
  EXPECT_TRUE(values.Ready());
  const double* got = values.Get();
  EXPECT_EQ(got[0], 2.5);
  EXPECT_EQ(got[1], -1.0);
  EXPECT_EQ(got[2], 7.0);
  // Float values (a gradient norm) come back as doubles.
  StepValues f(torch::tensor({0.25f}));
  EXPECT_EQ(f.Get()[0], 0.25);
}

TEST(StepValues, SyncCheckReadsItsMode) {
  ::unsetenv("ISOFLOP_SYNC_CHECK");
  EXPECT_EQ(SyncCheck::RequestedMode(), 0);
  ::setenv("ISOFLOP_SYNC_CHECK", "warn", 1);
  EXPECT_EQ(SyncCheck::RequestedMode(), 1);
  ::setenv("ISOFLOP_SYNC_CHECK", "error", 1);
  EXPECT_EQ(SyncCheck::RequestedMode(), 2);
  {
    SyncCheck on_cpu(/*on_cuda=*/false);  // CPU: nothing to check, reads stay allowed
    EXPECT_EQ(torch::ones({1}).item<float>(), 1.0f);
  }
  ::setenv("ISOFLOP_SYNC_CHECK", "bogus", 1);
  EXPECT_EQ(SyncCheck::RequestedMode(), 0);
  ::unsetenv("ISOFLOP_SYNC_CHECK");
}

// On the GPU: the values come back through pinned memory once the device has made them (a
// chain of large matmuls keeps it busy), and the clip matches the CPU's to float rounding.
TEST(StepValuesCuda, ValuesLandAfterTheDeviceWorkBehindWhichTheyWereQueued) {
  ISOFLOP_REQUIRE_CUDA();
  torch::Tensor a = torch::randn({2048, 2048}, torch::kCUDA) / 64;
  for (int i = 0; i < 20; ++i) a = torch::mm(a, a).tanh_();
  const torch::Tensor want = torch::stack({a.sum().to(torch::kDouble), a.abs().max().to(torch::kDouble)});
  StepValues values(want);
  const double* got = values.Get();
  EXPECT_TRUE(values.Ready());
  const auto cpu = want.to(torch::kCPU);
  EXPECT_EQ(got[0], cpu[0].item<double>());
  EXPECT_EQ(got[1], cpu[1].item<double>());

  const auto params_cpu = ModelWithGradients(6, torch::kCPU);
  const auto params_gpu = ModelWithGradients(6, torch::kCUDA);
  const double on_cpu = ClipGradNorm(CloneWithGradients(params_cpu), 0.1).item<double>();
  const double on_gpu = ClipGradNorm(CloneWithGradients(params_gpu), 0.1).item<double>();
  EXPECT_NEAR(on_gpu, on_cpu, 1e-4 * on_cpu);
}

// ISOFLOP_SYNC_CHECK=error makes `.item()` throw inside the guard, while the step's own
// operations (clip, queued copy back) run; outside the guard reads are allowed again.
TEST(StepValuesCuda, SyncCheckCatchesAReadButNotTheStepsOwnOperations) {
  ISOFLOP_REQUIRE_CUDA();
  ::setenv("ISOFLOP_SYNC_CHECK", "error", 1);
  auto params = CloneWithGradients(ModelWithGradients(7, torch::kCUDA));
  {
    SyncCheck guard(/*on_cuda=*/true);
    const torch::Tensor norm = ClipGradNorm(params, 0.1);
    StepValues values(torch::stack({norm.to(torch::kDouble), norm.to(torch::kDouble) * 2}));
    EXPECT_THROW((void)norm.item<double>(), c10::Error);
    EXPECT_GT(values.Get()[1], 0);  // an event poll, not a synchronising call
  }
  EXPECT_GT(ClipGradNorm(params, 0).item<double>(), 0);
  ::unsetenv("ISOFLOP_SYNC_CHECK");
}

}  // namespace
}  // namespace isoflop::trainer
