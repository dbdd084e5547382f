// run.json parsing: defaults, round trip, and a table of bad files whose errors must name the
// field (docs/run-protocol.md).
#include "isoflop/trainer/run_config.h"

#include <gtest/gtest.h>

namespace isoflop::trainer {
namespace {

const char* kMinimal = R"({"data": {"source": "synthetic"}, "train": {"tokens": 100000}})";

TEST(RunConfig, MinimalGetsDefaults) {
  auto c = ParseRunConfig(kMinimal);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->model.n_layer, 2);
  EXPECT_EQ(c->model.d_model, 64);
  EXPECT_EQ(c->train.batch_tokens, 1024);
  EXPECT_EQ(c->train.tokens, 100000);
  EXPECT_DOUBLE_EQ(c->train.beta2, 0.95);
  EXPECT_EQ(c->data.vocab, 32);
}

TEST(RunConfig, RoundTripsThroughJson) {
  auto c = ParseRunConfig(
      R"({"seed": 7, "model": {"n_layer": 3, "pos": "alibi", "mlp": "gelu", "norm": "layernorm",
          "bias": true, "tie_embeddings": false},
          "data": {"source": "synthetic", "train_seed": 5, "lambda": 0.5},
          "train": {"tokens": 2e6, "schedule": "wsd", "lr": 1e-3, "min_lr": 1e-4}})");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->train.tokens, 2000000);
  auto again = ParseRunConfig(RunConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(RunConfigToJson(*again), RunConfigToJson(*c));
  EXPECT_EQ(again->model.pos, accounting::PosEmbedding::kAlibi);
  EXPECT_EQ(*again->data.train_seed, 5u);
}

struct BadCase {
  const char* json;
  const char* field;  // must appear in the message
};

class BadRunConfig : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadRunConfig, NamesTheField) {
  auto c = ParseRunConfig(GetParam().json);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(c.status().message().find(GetParam().field), std::string::npos) << c.status().message();
}

INSTANTIATE_TEST_SUITE_P(
    Table, BadRunConfig,
    ::testing::Values(
        BadCase{R"({"data": {"source": "synthetic"}, "train": {}})", "'train.tokens'"},
        BadCase{R"({"data": {"source": "synthetic"}, "train": {"tokens": "lots"}})",
                "'train.tokens': expected an integer"},
        BadCase{R"({"data": {"source": "synthetic"}, "train": {"tokens": 100}})",
                "'train.tokens': budget 100 is smaller than one batch"},
        BadCase{R"({"train": {"tokens": 100000}})", "'data'"},
        BadCase{R"({"data": {"source": "mystery"}, "train": {"tokens": 100000}})", "'data.source'"},
        BadCase{R"({"model": {"d_model": 64, "n_head": 5}, "data": {"source": "synthetic"},
                   "train": {"tokens": 100000}})",
                "'model.d_model'"},
        BadCase{R"({"model": {"nlayer": 2}, "data": {"source": "synthetic"},
                   "train": {"tokens": 100000}})",
                "'model.nlayer': unknown key"},
        BadCase{R"({"model": {"n_layer": 1.5}, "data": {"source": "synthetic"},
                   "train": {"tokens": 100000}})",
                "'model.n_layer'"},
        BadCase{R"({"model": {"pos": "sinusoid"}, "data": {"source": "synthetic"},
                   "train": {"tokens": 100000}})",
                "'model.pos'"},
        BadCase{R"({"model": {"tie_embeddings": "yes"}, "data": {"source": "synthetic"},
                   "train": {"tokens": 100000}})",
                "'model.tie_embeddings'"},
        BadCase{R"({"data": {"source": "synthetic"}, "train": {"tokens": 100000,
                   "batch_tokens": 1000}})",
                "'train.batch_tokens'"},
        BadCase{R"({"data": {"source": "synthetic", "vocab": 48}, "train": {"tokens": 100000}})",
                "'data.vocab'"},
        BadCase{R"({"data": {"source": "bin", "train": "a.bin"}, "train": {"tokens": 100000}})",
                "'data.val'"},
        BadCase{R"({"data": {"source": "synthetic"}, "train": {"tokens": 100000,
                   "min_lr": 1.0}})",
                "'train.min_lr'"},
        BadCase{R"({"data": {"source": "synthetic"}, "train": {"tokens": 100000,
                   "device": "tpu"}})",
                "'train.device'"},
        BadCase{R"({"data": {"source": "synthetic"}, "train": {"tokens": 100000}, "extra": 1})",
                "'extra': unknown key"},
        BadCase{R"({"data": {"source": "synthetic"}, "train": {"tokens": 100000},)",
                "not valid JSON"}));

}  // namespace
}  // namespace isoflop::trainer
