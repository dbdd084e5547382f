// Accounting arithmetic that needs no LibTorch: defaults, hand-counted shapes, FLOP
// conventions and the shape solver. (model_test.cc checks TotalParams against real modules.)
#include "isoflop/trainer/accounting.h"

#include <gtest/gtest.h>

#include <cmath>

namespace isoflop::accounting {
namespace {

TEST(Accounting, DefaultDff) {
  EXPECT_EQ(DefaultDff(64, Mlp::kGelu), 256);
  EXPECT_EQ(DefaultDff(64, Mlp::kSwiGlu), 176);  // ceil(512/3) = 171 -> 176
  EXPECT_EQ(DefaultDff(48, Mlp::kSwiGlu), 128);  // 128 exactly
}

TEST(Accounting, HandCountedDefaultShape) {
  Shape s;  // 2 layers, d 64, swiglu ff 176, V 32, rmsnorm, rope, tied, no bias
  const int64_t block = 2 * 64 + 64 * 192 + 64 * 64 + 3 * 64 * 176;
  EXPECT_EQ(TotalParams(s), 32 * 64 + 2 * block + 64);
  EXPECT_EQ(NonEmbeddingParams(s), 2 * block + 64);
  s.tie_embeddings = false;
  s.pos = PosEmbedding::kLearned;
  EXPECT_EQ(TotalParams(s), 2 * 32 * 64 + 64 * 64 + 2 * block + 64);
  EXPECT_EQ(NonEmbeddingParams(s), 2 * block + 64);
}

TEST(Accounting, FlopConventions) {
  Shape s;
  EXPECT_DOUBLE_EQ(FlopsPerToken6N(s), 6.0 * TotalParams(s));
  EXPECT_DOUBLE_EQ(FlopsPerToken6NAttention(s), 6.0 * NonEmbeddingParams(s) + 6.0 * 2 * 64 * 64);
  // Chinchilla Appendix F by hand for S=64, d=64, V=32, H=4, ff=176 (SwiGLU: 3 matrices).
  const double S = 64, d = 64, V = 32, H = 4, ff = 176;
  const double layer = 2 * S * 3 * d * d + 2 * S * S * d + 3 * H * S * S + 2 * S * S * d +
                       2 * S * d * d + 2 * S * d * ff * 3;
  const double fwd = 2 * S * V * d + 2 * layer + 2 * S * d * V;
  EXPECT_DOUBLE_EQ(FlopsPerTokenChinchilla(s), 3 * fwd / S);
}

TEST(Accounting, ValidateNamesTheField) {
  Shape s;
  s.n_head = 3;
  EXPECT_NE(s.Validate().message().find("model.d_model"), std::string::npos);
  s = Shape{};
  s.d_model = 72;
  s.n_head = 8;  // head size 9: odd, rope impossible
  EXPECT_NE(s.Validate().message().find("rope"), std::string::npos);
  s.pos = PosEmbedding::kAlibi;
  EXPECT_TRUE(s.Validate().ok());
}

struct SolveCase {
  double target;
  int min_layers, max_layers;
};

class SolveShapeTest : public ::testing::TestWithParam<SolveCase> {};

TEST_P(SolveShapeTest, NearTargetAndValid) {
  const SolveCase c = GetParam();
  AspectRule rule;
  rule.min_layers = c.min_layers;
  rule.max_layers = c.max_layers;
  auto r = SolveShape(c.target, rule, Shape{});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->Validate().ok());
  EXPECT_EQ(r->d_model % 16, 0);
  EXPECT_EQ(r->d_model / r->n_head, 16);
  EXPECT_GE(r->n_layer, c.min_layers);
  EXPECT_LE(r->n_layer, c.max_layers);
  // Within one width step of the target: a generous but bug-catching bound.
  EXPECT_LT(std::abs(std::log(TotalParams(*r) / c.target)), 0.5) << TotalParams(*r);
}

INSTANTIATE_TEST_SUITE_P(Targets, SolveShapeTest,
                         ::testing::Values(SolveCase{2e4, 1, 1}, SolveCase{1e5, 1, 8},
                                           SolveCase{1e6, 1, 64}, SolveCase{1e7, 2, 2},
                                           SolveCase{1e8, 1, 64}));

TEST(Accounting, SolveShapeFollowsAspect) {
  AspectRule rule;  // d/L ~ 32
  auto r = SolveShape(1e8, rule, Shape{});
  ASSERT_TRUE(r.ok());
  const double aspect = static_cast<double>(r->d_model) / r->n_layer;
  EXPECT_GT(aspect, 16);
  EXPECT_LT(aspect, 64);
}

TEST(Accounting, SolveShapeTooSmall) {
  Shape base;
  base.vocab_size = 50000;
  AspectRule rule;
  EXPECT_FALSE(SolveShape(1000, rule, base).ok());
}

TEST(Accounting, ParseRoundTrip) {
  for (auto v : {Norm::kRmsNorm, Norm::kLayerNorm}) EXPECT_EQ(*ParseNorm(ToString(v)), v);
  for (auto v : {PosEmbedding::kRope, PosEmbedding::kAlibi, PosEmbedding::kLearned}) {
    EXPECT_EQ(*ParsePosEmbedding(ToString(v)), v);
  }
  for (auto v : {Mlp::kSwiGlu, Mlp::kGelu}) EXPECT_EQ(*ParseMlp(ToString(v)), v);
  EXPECT_NE(ParseNorm("batchnorm").status().message().find("rmsnorm"), std::string::npos);
}

}  // namespace
}  // namespace isoflop::accounting
