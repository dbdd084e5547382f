// Learning-rate schedules: warmup, min_lr exactly at the last token, wsd and constant shapes.
#include "isoflop/trainer/schedule.h"

#include <gtest/gtest.h>

namespace isoflop::trainer {
namespace {

TrainConfig Config(Schedule s, int64_t tokens) {
  TrainConfig t;
  t.schedule = s;
  t.tokens = tokens;
  t.lr = 1e-2;
  t.min_lr = 1e-3;
  return t;
}

TEST(Schedule, CosineHitsMinLrAtLastTokenForPartialLastStep) {
  TrainConfig t = Config(Schedule::kCosine, 100'000);  // 1024-token batches: last step is partial
  EXPECT_DOUBLE_EQ(LearningRate(t, t.tokens), t.min_lr);
  EXPECT_GT(LearningRate(t, t.tokens - 1024), t.min_lr);
  EXPECT_DOUBLE_EQ(LearningRate(t, WarmupTokens(t)), t.lr);  // peak right after warmup
  EXPECT_NEAR(LearningRate(t, 1024), t.lr * 1024 / 10'000.0, 1e-15);
}

TEST(Schedule, CosineIsMonotoneAfterWarmup) {
  TrainConfig t = Config(Schedule::kCosine, 50'000);
  double prev = LearningRate(t, WarmupTokens(t));
  for (int64_t k = WarmupTokens(t) + 1000; k <= t.tokens; k += 1000) {
    const double lr = LearningRate(t, k);
    EXPECT_LE(lr, prev);
    prev = lr;
  }
}

TEST(Schedule, WarmupTokensOverridesFraction) {
  TrainConfig t = Config(Schedule::kCosine, 50'000);
  t.warmup_tokens = 5000;
  EXPECT_EQ(WarmupTokens(t), 5000);
  EXPECT_DOUBLE_EQ(LearningRate(t, 2500), t.lr / 2);
}

TEST(Schedule, WsdIsFlatThenLinear) {
  TrainConfig t = Config(Schedule::kWsd, 100'000);
  t.decay_frac = 0.2;
  EXPECT_DOUBLE_EQ(LearningRate(t, 50'000), t.lr);
  EXPECT_DOUBLE_EQ(LearningRate(t, 80'000), t.lr);
  EXPECT_NEAR(LearningRate(t, 90'000), (t.lr + t.min_lr) / 2, 1e-15);
  EXPECT_DOUBLE_EQ(LearningRate(t, t.tokens), t.min_lr);
}

TEST(Schedule, ConstantAfterWarmup) {
  TrainConfig t = Config(Schedule::kConstant, 100'000);
  EXPECT_DOUBLE_EQ(LearningRate(t, t.tokens), t.lr);
}

}  // namespace
}  // namespace isoflop::trainer
