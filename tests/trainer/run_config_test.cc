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

TEST(RunConfig, MoeGetsDefaultsAndRoundTrips) {
  auto c = ParseRunConfig(
      R"({"model": {"family": "moe", "n_layer": 3, "moe": {"n_experts": 16, "granularity": 2,
          "router": "sigmoid", "bias_update_rate": 1e-3, "n_dense_layers": 1}},
          "data": {"source": "synthetic"}, "train": {"tokens": 100000}})");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_TRUE(c->model.moe.has_value());
  const accounting::MoeShape& m = *c->model.moe;
  EXPECT_EQ(m.n_experts, 16);
  EXPECT_EQ(m.top_k, 2);
  EXPECT_EQ(m.granularity, 2);
  EXPECT_EQ(m.router, accounting::Router::kSigmoid);
  EXPECT_DOUBLE_EQ(m.aux_loss_weight, 0.01);
  EXPECT_DOUBLE_EQ(m.z_loss_weight, 0.001);
  EXPECT_DOUBLE_EQ(m.bias_update_rate, 1e-3);
  EXPECT_DOUBLE_EQ(m.capacity_factor, 0.0);
  EXPECT_EQ(m.moe_every, 1);
  EXPECT_EQ(m.n_dense_layers, 1);
  auto again = ParseRunConfig(RunConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(RunConfigToJson(*again), RunConfigToJson(*c));
  EXPECT_EQ(again->family, "moe");
  // family moe with no moe object: every field at its default.
  auto bare = ParseRunConfig(R"({"model": {"family": "moe"}, "data": {"source": "synthetic"},
                                 "train": {"tokens": 100000}})");
  ASSERT_TRUE(bare.ok()) << bare.status().message();
  EXPECT_EQ(bare->model.moe->n_experts, 8);
}

// Sweep cell keys hash ModelToJson of dense cells (tests/sweep/cell_key_test.cc): its keys for
// a dense model are exactly those it had before MoE existed.
TEST(RunConfig, DenseModelJsonHasNoMoeKeys) {
  const nlohmann::json j = ModelToJson("dense", accounting::Shape{});
  std::vector<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"bias", "d_ff", "d_model", "family", "mlp", "n_head",
                                            "n_layer", "norm", "pos", "seq_len", "tie_embeddings",
                                            "vocab_size"}));
}

// The skills language round-trips with its own fields; the markov language's run.json (and so
// every older sweep's data object) has no `language` key.
TEST(RunConfig, SkillsLanguageRoundTripsAndMarkovJsonIsUnchanged) {
  auto c = ParseRunConfig(
      R"({"model": {"vocab_size": 96}, "data": {"source": "synthetic", "vocab": 96,
          "language": "skills", "skill_zipf": 1.25}, "train": {"tokens": 100000}})");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->data.language, SyntheticKind::kSkills);
  EXPECT_DOUBLE_EQ(c->data.skill_zipf, 1.25);
  auto again = ParseRunConfig(RunConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(again->data.language, SyntheticKind::kSkills);
  EXPECT_EQ(RunConfigToJson(*again), RunConfigToJson(*c));
  EXPECT_EQ(RunConfigToJson(*c).find("\"k1\""), std::string::npos);

  auto markov = ParseRunConfig(kMinimal);
  ASSERT_TRUE(markov.ok());
  EXPECT_EQ(markov->data.language, SyntheticKind::kMarkov);
  const nlohmann::json data = nlohmann::json::parse(RunConfigToJson(*markov))["data"];
  std::vector<std::string> keys;
  for (const auto& [k, v] : data.items()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"build_seed", "k1", "k2", "lambda", "source",
                                            "val_seed", "vocab", "zipf"}));
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
        BadCase{R"({"data": {"source": "synthetic"}, "train": {"tokens": 100000, "lr": 1e39}})",
                "'train.lr': must be at most 3.4e38"},
        BadCase{R"({"data": {"source": "synthetic"}, "train": {"tokens": 100000,
                   "grad_clip": 1e300}})",
                "'train.grad_clip': must be at most 3.4e38"},
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
        BadCase{R"({"data": {"source": "synthetic", "language": "zipfian"},
                   "train": {"tokens": 100000}})",
                "'data.language': expected one of markov, skills; got 'zipfian'"},
        BadCase{R"({"model": {"vocab_size": 96}, "data": {"source": "synthetic", "vocab": 96,
                   "language": "skills", "skill_zipf": 0}, "train": {"tokens": 100000}})",
                "'data.skill_zipf': must be in (0, 10]"},
        BadCase{R"({"model": {"vocab_size": 96}, "data": {"source": "synthetic", "vocab": 96,
                   "language": "skills", "k1": 4}, "train": {"tokens": 100000}})",
                "'data.k1': only with data.language 'markov'"},
        BadCase{R"({"data": {"source": "synthetic", "skill_zipf": 1.5},
                   "train": {"tokens": 100000}})",
                "'data.skill_zipf': only with data.language 'skills'"},
        BadCase{R"({"model": {"vocab_size": 4}, "data": {"source": "synthetic", "vocab": 4,
                   "language": "skills"}, "train": {"tokens": 100000}})",
                "'data.vocab': must be in 6..512 for the skills language"},
        BadCase{R"({"data": {"source": "bin", "train": "a.bin"}, "train": {"tokens": 100000}})",
                "'data.val'"},
        BadCase{R"({"data": {"source": "synthetic"}, "train": {"tokens": 100000,
                   "min_lr": 1.0}})",
                "'train.min_lr'"},
        BadCase{R"({"data": {"source": "synthetic"}, "train": {"tokens": 100000,
                   "device": "tpu"}})",
                "'train.device'"},
        BadCase{R"({"model": {"family": "sparse"}, "data": {"source": "synthetic"},
                   "train": {"tokens": 100000}})",
                "'model.family': expected one of dense, moe"},
        BadCase{R"({"model": {"moe": {"n_experts": 4}}, "data": {"source": "synthetic"},
                   "train": {"tokens": 100000}})",
                "'model.moe': only with model.family 'moe'"},
        BadCase{R"({"model": {"family": "moe", "moe": {"n_experts": 4, "top_k": 5}},
                   "data": {"source": "synthetic"}, "train": {"tokens": 100000}})",
                "'model.moe.top_k': must be <= n_experts (4), got 5"},
        BadCase{R"({"model": {"family": "moe", "moe": {"granularity": 5}},
                   "data": {"source": "synthetic"}, "train": {"tokens": 100000}})",
                "'model.moe.granularity': must divide d_ff (176), got 5"},
        BadCase{R"({"model": {"family": "moe", "moe": {"aux_loss_weight": -0.1}},
                   "data": {"source": "synthetic"}, "train": {"tokens": 100000}})",
                "'model.moe.aux_loss_weight': must be >= 0"},
        BadCase{R"({"model": {"family": "moe", "moe": {"router": "relu"}},
                   "data": {"source": "synthetic"}, "train": {"tokens": 100000}})",
                "'model.moe.router': expected one of softmax, sigmoid"},
        BadCase{R"({"model": {"family": "moe", "moe": {"experts": 4}},
                   "data": {"source": "synthetic"}, "train": {"tokens": 100000}})",
                "'model.moe.experts': unknown key"},
        BadCase{R"({"model": {"family": "moe", "moe": {"top_k": "two"}},
                   "data": {"source": "synthetic"}, "train": {"tokens": 100000}})",
                "'model.moe.top_k': expected an integer"},
        BadCase{R"({"model": {"family": "moe", "moe": 4},
                   "data": {"source": "synthetic"}, "train": {"tokens": 100000}})",
                "'model.moe': expected an object"},
        BadCase{R"({"model": {"family": "moe"}, "data": {"source": "synthetic"},
                   "train": {"tokens": 100000, "activation_checkpointing": true}})",
                "'train.activation_checkpointing': not supported with model.family 'moe'"},
        BadCase{R"({"data": {"source": "synthetic"}, "train": {"tokens": 100000}, "extra": 1})",
                "'extra': unknown key"},
        BadCase{R"({"data": {"source": "synthetic"}, "train": {"tokens": 100000},)",
                "not valid JSON"},
        // nlohmann keeps the last of two equal keys: the second would have won silently.
        BadCase{R"({"data": {"source": "synthetic"}, "train": {"tokens": 100000, "lr": 1e-3,
                   "lr": 3e-3}})",
                "field 'train.lr': given twice; keep one of them"},
        BadCase{R"({"model": {"family": "moe", "moe": {"top_k": 1, "top_k": 2}},
                   "data": {"source": "synthetic"}, "train": {"tokens": 100000}})",
                "field 'model.moe.top_k': given twice"},
        BadCase{R"({"seed": 1, "data": {"source": "synthetic"}, "train": {"tokens": 100000},
                   "seed": 2})",
                "field 'seed': given twice"}));

}  // namespace
}  // namespace isoflop::trainer
