// Accounting arithmetic that needs no LibTorch: defaults, hand-counted shapes, FLOP
// conventions and the shape solver. (model_test.cc checks TotalParams against real modules.)
#include "isoflop/trainer/accounting.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

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

// An MoE ladder is sized by active parameters: the solved shape's ActiveParams is near the
// target while its experts put TotalParams well above it.
TEST(Accounting, SolveShapeSizesMoeByActiveParams) {
  Shape base;
  base.moe.emplace();
  base.moe->n_experts = 8;
  base.moe->top_k = 1;
  AspectRule rule;
  for (double target : {1e5, 1e6, 1e7}) {
    auto r = SolveShape(target, rule, base);
    ASSERT_TRUE(r.ok()) << r.status().message();
    ASSERT_TRUE(r->moe.has_value());
    EXPECT_EQ(r->moe->n_experts, 8);
    EXPECT_LT(std::abs(std::log(ActiveParams(*r) / target)), 0.5) << ActiveParams(*r);
    EXPECT_GT(static_cast<double>(TotalParams(*r)), 2.0 * target) << TotalParams(*r);
  }
}

TEST(Accounting, ParseRoundTrip) {
  for (auto v : {Norm::kRmsNorm, Norm::kLayerNorm}) EXPECT_EQ(*ParseNorm(ToString(v)), v);
  for (auto v : {PosEmbedding::kRope, PosEmbedding::kAlibi, PosEmbedding::kLearned}) {
    EXPECT_EQ(*ParsePosEmbedding(ToString(v)), v);
  }
  for (auto v : {Mlp::kSwiGlu, Mlp::kGelu}) EXPECT_EQ(*ParseMlp(ToString(v)), v);
  for (auto v : {Router::kSoftmax, Router::kSigmoid}) EXPECT_EQ(*ParseRouter(ToString(v)), v);
  EXPECT_NE(ParseNorm("batchnorm").status().message().find("rmsnorm"), std::string::npos);
  EXPECT_NE(ParseRouter("relu").status().message().find("sigmoid"), std::string::npos);
}

// The default shape with 4 experts of the dense MLP's size, top-2, one shared expert.
Shape MoeDefault() {
  Shape s;
  s.moe.emplace();
  s.moe->n_experts = 4;
  s.moe->top_k = 2;
  s.moe->n_shared_experts = 1;
  return s;
}

TEST(AccountingMoe, HandCountedTotalAndActive) {
  const Shape s = MoeDefault();  // 2 layers, d 64, swiglu ff 176, V 32, tied, no bias
  const int64_t attn_norms = 2 * 64 + 64 * 192 + 64 * 64;
  const int64_t expert = 3 * 64 * 176;
  const int64_t router = 64 * 4;
  const int64_t total_block = attn_norms + router + 1 * expert + 4 * expert;
  const int64_t active_block = attn_norms + router + 1 * expert + 2 * expert;
  EXPECT_EQ(TotalParams(s), 32 * 64 + 2 * total_block + 64);
  EXPECT_EQ(NonEmbeddingParams(s), 2 * total_block + 64);
  EXPECT_EQ(ActiveParams(s), 32 * 64 + 2 * active_block + 64);
  EXPECT_EQ(ActiveNonEmbeddingParams(s), 2 * active_block + 64);
  EXPECT_EQ(EffectiveExpertDff(s), 176);
  EXPECT_EQ(EffectiveTopK(s), 2);
  // Dense: active is total, and no block is MoE.
  const Shape dense;
  EXPECT_EQ(ActiveParams(dense), TotalParams(dense));
  EXPECT_EQ(MoeBlockCount(dense), 0);
}

TEST(AccountingMoe, LayoutDenseLayersThenEveryKth) {
  Shape s = MoeDefault();
  s.n_layer = 7;
  s.moe->n_dense_layers = 2;
  s.moe->moe_every = 2;
  std::vector<int> moe_blocks;
  for (int i = 0; i < s.n_layer; ++i)
    if (IsMoeBlock(s, i)) moe_blocks.push_back(i);
  EXPECT_EQ(moe_blocks, (std::vector<int>{2, 4, 6}));
  EXPECT_EQ(MoeBlockCount(s), 3);
  // Each dense block costs a dense block, each MoE block an MoE block.
  Shape dense = s;
  dense.moe.reset();
  Shape all_moe = s;
  all_moe.moe->n_dense_layers = 0;
  all_moe.moe->moe_every = 1;
  const int64_t emb_and_norm = 32 * 64 + 64;
  const int64_t dense_block = (TotalParams(dense) - emb_and_norm) / 7;
  const int64_t moe_block = (TotalParams(all_moe) - emb_and_norm) / 7;
  EXPECT_EQ(TotalParams(s), emb_and_norm + 4 * dense_block + 3 * moe_block);
}

// Granularity G splits each expert in G: expert_d_ff = d_ff / G and top_k·G experts per token,
// so the experts' active parameters stay those of top_k whole experts (Krajewski et al. 2024);
// only the router grows with the expert count.
TEST(AccountingMoe, GranularityKeepsActiveExpertParameters) {
  Shape coarse = MoeDefault();
  coarse.moe->n_shared_experts = 0;
  coarse.moe->n_experts = 4;
  Shape fine = coarse;
  fine.moe->granularity = 4;
  fine.moe->n_experts = 16;
  EXPECT_EQ(EffectiveExpertDff(fine), 44);
  EXPECT_EQ(EffectiveTopK(fine), 8);
  const int64_t router_growth = 2 * 64 * (16 - 4);  // two MoE layers
  EXPECT_EQ(ActiveParams(fine), ActiveParams(coarse) + router_growth);
  EXPECT_EQ(TotalParams(fine), TotalParams(coarse) + router_growth);
}

TEST(AccountingMoe, FlopConventionsCountActiveWork) {
  const Shape s = MoeDefault();
  EXPECT_DOUBLE_EQ(FlopsPerToken6N(s), 6.0 * ActiveParams(s));
  EXPECT_DOUBLE_EQ(FlopsPerToken6NAttention(s),
                   6.0 * ActiveNonEmbeddingParams(s) + 6.0 * 2 * 64 * 64);
  // Chinchilla Appendix F by hand: the dense block becomes the router plus 1 shared and 2
  // routed experts of ff 176 (SwiGLU: 3 matrices each).
  const double S = 64, d = 64, V = 32, H = 4, ff = 176, E = 4;
  const double layer = 2 * S * 3 * d * d + 2 * S * S * d + 3 * H * S * S + 2 * S * S * d +
                       2 * S * d * d + 2 * S * d * E + 3 * (2 * S * d * ff * 3);
  const double fwd = 2 * S * V * d + 2 * layer + 2 * S * d * V;
  EXPECT_DOUBLE_EQ(FlopsPerTokenChinchilla(s), 3 * fwd / S);
  // One expert, top-1, no shared: the dense model's FLOPs plus the router's.
  Shape one = s;
  one.moe->n_experts = 1, one.moe->top_k = 1, one.moe->n_shared_experts = 0;
  Shape dense = s;
  dense.moe.reset();
  EXPECT_DOUBLE_EQ(FlopsPerTokenChinchilla(one),
                   FlopsPerTokenChinchilla(dense) + 3 * 2 * (2 * S * d * 1) / S);
}

struct BadMoe {
  std::function<void(MoeShape&)> edit;
  const char* message;  // must appear in the error
};

TEST(AccountingMoe, ValidateNamesTheField) {
  const std::vector<BadMoe> cases = {
      {[](MoeShape& m) { m.n_experts = 0; }, "field 'model.moe.n_experts': must be >= 1"},
      {[](MoeShape& m) { m.top_k = 5; },
       "field 'model.moe.top_k': must be <= n_experts (4), got 5"},
      {[](MoeShape& m) { m.top_k = 0; }, "field 'model.moe.top_k': must be >= 1"},
      {[](MoeShape& m) { m.granularity = 3; },
       "field 'model.moe.granularity': must divide d_ff (176), got 3"},
      {[](MoeShape& m) { m.granularity = 4; },
       "field 'model.moe.top_k': must be <= n_experts (4), got top_k x granularity = 8"},
      {[](MoeShape& m) { m.granularity = 2, m.expert_d_ff = 88; },
       "field 'model.moe.expert_d_ff': give expert_d_ff or granularity, not both"},
      {[](MoeShape& m) { m.expert_d_ff = -1; }, "field 'model.moe.expert_d_ff'"},
      {[](MoeShape& m) { m.n_shared_experts = -1; }, "field 'model.moe.n_shared_experts'"},
      {[](MoeShape& m) { m.aux_loss_weight = -0.5; },
       "field 'model.moe.aux_loss_weight': must be >= 0, got -0.5"},
      {[](MoeShape& m) { m.z_loss_weight = -1; }, "field 'model.moe.z_loss_weight'"},
      {[](MoeShape& m) { m.bias_update_rate = -1e-3; }, "field 'model.moe.bias_update_rate'"},
      {[](MoeShape& m) { m.capacity_factor = -1; }, "field 'model.moe.capacity_factor'"},
      {[](MoeShape& m) { m.moe_every = 0; }, "field 'model.moe.moe_every'"},
      {[](MoeShape& m) { m.n_dense_layers = 2; },
       "field 'model.moe.n_dense_layers': must be in 0..n_layer-1 (1)"},
  };
  for (const BadMoe& c : cases) {
    Shape s = MoeDefault();
    c.edit(*s.moe);
    const Status st = s.Validate();
    EXPECT_EQ(st.code(), Status::Code::kInvalidArgument) << c.message;
    EXPECT_NE(st.message().find(c.message), std::string::npos) << st.message();
  }
  Shape ok = MoeDefault();
  ok.moe->granularity = 2;  // 176 / 2, top-4 of 4
  EXPECT_TRUE(ok.Validate().ok()) << ok.Validate().message();
}

}  // namespace
}  // namespace isoflop::accounting
