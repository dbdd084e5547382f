// The counting CPU allocator: a tensor's bytes are counted while it lives and the peak keeps
// the most held at once; LibTorch's raw interface and empty tensors still work through it, and
// so does training (the other cases of this binary run after it is installed). Part of the
// WHOLE binary trainer_model_test.
#include "isoflop/trainer/tensor_bytes.h"

#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>
#include <vector>

namespace isoflop::trainer {
namespace {

TEST(TensorBytesTest, CountsEveryCpuTensorWhileItLives) {
  CountCpuTensorBytes();
  CountCpuTensorBytes();  // idempotent
  const int64_t before = CpuTensorBytesNow();
  {
    const torch::Tensor a = torch::empty({1 << 20}, torch::kFloat);  // 4 MiB
    EXPECT_EQ(CpuTensorBytesNow() - before, int64_t{4} << 20);
    {
      const torch::Tensor b = torch::ones({256, 1024}, torch::kDouble);  // 2 MiB
      EXPECT_EQ(CpuTensorBytesNow() - before, int64_t{6} << 20);
      EXPECT_GE(CpuTensorBytesPeak() - before, int64_t{6} << 20);
      EXPECT_EQ(b.sum().item<double>(), 256.0 * 1024);
    }
    EXPECT_EQ(CpuTensorBytesNow() - before, int64_t{4} << 20);
    // Data stays aligned for the vectorised kernels (the header is 64 bytes).
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data_ptr()) % 64, 0u);
    const torch::Tensor empty = torch::empty({0}, torch::kFloat);
    EXPECT_EQ(empty.numel(), 0);
    EXPECT_EQ(CpuTensorBytesNow() - before, int64_t{4} << 20);
  }
  EXPECT_EQ(CpuTensorBytesNow(), before);

  // The raw interface some kernels use.
  c10::Allocator* alloc = c10::GetCPUAllocator();
  void* raw = alloc->raw_allocate(1000);
  ASSERT_NE(raw, nullptr);
  EXPECT_EQ(CpuTensorBytesNow() - before, 1000);
  alloc->raw_deallocate(raw);
  EXPECT_EQ(CpuTensorBytesNow(), before);

  // Allocations from many threads at once add up (relaxed atomics, no lost updates).
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([] {
      for (int i = 0; i < 200; ++i) {
        const torch::Tensor x = torch::empty({1000 + i}, torch::kFloat);
        (void)x;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(CpuTensorBytesNow(), before);
  // A model trains with it in place: one step of AdamW on a small linear layer.
  torch::nn::Linear lin(64, 64);
  torch::optim::AdamW opt(lin->parameters(), torch::optim::AdamWOptions(1e-3));
  const auto loss = lin->forward(torch::randn({8, 64})).pow(2).mean();
  loss.backward();
  opt.step();
  EXPECT_TRUE(std::isfinite(loss.item<double>()));
  EXPECT_GT(CpuTensorBytesNow(), before);  // weights, gradients, AdamW moments
}

}  // namespace
}  // namespace isoflop::trainer
