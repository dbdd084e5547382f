// Sweep-file parsing: a table of malformed files and the exact messages they produce, plus
// overrides, defaults and hashing.
#include "isoflop/sweep/config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "e2e_util.h"

namespace isoflop::sweep {
namespace {

// A valid file; cases below edit it.
const char* kBase = R"(name: t
data:
  source: synthetic
model:
  vocab_size: 32
  seq_len: 32
  pos: alibi
  ladder:
    - {n_layer: 1, d_model: 16, n_head: 2}
    - {n_layer: 1, d_model: 32, n_head: 4}
budgets: [1e9, 4e9]
train:
  batch_tokens: 256
)";

Result<SweepConfig> Parse(const std::string& text, const std::vector<std::string>& sets = {}) {
  return ParseSweepConfig(text, "s.yaml", sets, "/work");
}

TEST(SweepConfigTest, ParsesTheBaseFile) {
  Result<SweepConfig> c = Parse(kBase);
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->name, "t");
  EXPECT_EQ(c->ladder.size(), 2u);
  EXPECT_EQ(c->budgets, (std::vector<double>{1e9, 4e9}));
  EXPECT_EQ(c->train["batch_tokens"], 256);
  EXPECT_EQ(c->train["lr"], 3e-3);  // protocol default filled in
  EXPECT_EQ(c->data["vocab"], 32);  // synthetic vocab follows the model
  EXPECT_EQ(c->output_dir, "/work/runs/t");
  EXPECT_EQ(c->report_budgets, (std::vector<double>{1.6e10}));  // next budget up
  EXPECT_TRUE(c->fit.fixed_entropy);
}

struct ErrorCase {
  std::string label, text, message;
};

TEST(SweepConfigTest, ErrorsNameFileLineColumnAndKey) {
  const std::string base = kBase;
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = base;
    s.replace(s.find(from), from.size(), to);
    return s;
  };
  const std::vector<ErrorCase> cases = {
      {"unknown top-level key", base + "budget: [1]\n",
       "s.yaml:14:1: budget: unknown key (expected one of: name, description, data, model, "
       "budgets, sizes, train, seeds, parameters, executor, fit, report, output)"},
      {"unknown train key", base + "  learning_rate: 1e-3\n",
       "s.yaml:14:3: train.learning_rate: unknown key (expected one of: batch_tokens, "
       "beta1, beta2, ckpt_interval_steps, decay_frac, eps, eval_interval_steps, eval_tokens, "
       "grad_clip, log_interval_steps, lr, micro_batch, min_lr, schedule, warmup_frac, "
       "warmup_tokens, weight_decay, rules)"},
      {"wrong type", base + "  lr: fast\n", "s.yaml:14:7: train.lr: expected a number, got 'fast'"},
      {"a list for a number", base + "  lr: [1, 2]\n",
       "s.yaml:14:7: train.lr: expected a number, got a list"},
      {"null for an integer", base + "  micro_batch: ~\n",
       "s.yaml:14:16: train.micro_batch: expected a number, got nothing (null)"},
      {"a mapping for a budget", replace("[1e9, 4e9]", "[1e9, {c: 4e9}]"),
       "s.yaml:11:16: budgets[1]: expected a number, got a mapping"},
      {"lr beyond a float", base + "  lr: 1e39\n",
       "s.yaml:14:7: train.lr: must be at most 3.4e38 (LibTorch uses it as a 32-bit float), got "
       "1e+39"},
      {"negative budget", replace("[1e9, 4e9]", "[1e9, -4e9]"),
       "s.yaml:11:16: budgets[1]: must be > 0, got -4e9"},
      {"budget not a number", replace("[1e9, 4e9]", "[1e9, lots]"),
       "s.yaml:11:16: budgets[1]: expected a number, got 'lots'"},
      {"missing data", replace("data:\n  source: synthetic\n", ""),
       "s.yaml: data: required section is missing (e.g. data: {source: synthetic})"},
      {"unknown source", replace("source: synthetic", "source: web"),
       "s.yaml:3:11: data.source: unknown source 'web' (expected synthetic, text, bin or llmc)"},
      {"shape not divisible", replace("d_model: 32, n_head: 4", "d_model: 30, n_head: 4"),
       "s.yaml:10:7: model.ladder[1]: invalid shape: d_model 30 is not divisible by n_head 4"},
      {"ladder missing a field",
       replace("{n_layer: 1, d_model: 32, n_head: 4}", "{n_layer: 1, d_model: 32}"),
       "s.yaml:10:7: model.ladder[1].n_head: required key is missing"},
      {"batch not a multiple of seq_len", replace("batch_tokens: 256", "batch_tokens: 250"),
       "s.yaml:13:17: train.batch_tokens: must be a multiple of model.seq_len (32), got 250"},
      {"tokens are planned", base + "  tokens: 1000\n",
       "s.yaml:14:11: train.tokens: set by the planner from each budget (C = 6 N D); remove it"},
      {"output escapes", base + "output: ../elsewhere\n",
       "s.yaml:14:9: output: expected a relative folder without '..' (run folders stay under "
       "the current directory), got '../elsewhere'"},
      {"absolute output", base + "output: /tmp/x\n",
       "s.yaml:14:9: output: expected a relative folder without '..' (run folders stay under "
       "the current directory), got '/tmp/x'"},
      {"bad name", replace("name: t", "name: a/b"),
       "s.yaml:1:7: name: expected letters, digits, '.', '_' or '-' (it names the run folder), "
       "got 'a/b'"},
      {"unknown family", replace("  vocab_size: 32", "  family: sparse\n  vocab_size: 32"),
       "s.yaml:5:11: model.family: expected 'dense' or 'moe', got 'sparse'"},
      {"window and points", base + "sizes: {tokens_per_param: [1, 2], points_per_budget: 3}\n",
       "s.yaml:14:54: sizes.points_per_budget: give either tokens_per_param (a window) or "
       "points_per_budget, not both"},
      {"yaml syntax", base + "  lr: [1, 2\n", "s.yaml:15:1: end of sequence flow not found"},
      {"unknown executor kind", base + "executor: {kind: k8s}\n",
       "s.yaml:14:18: executor.kind: expected local or slurm, got 'k8s'"},
      {"cpus_per_run neither auto nor a number", base + "executor: {cpus_per_run: many}\n",
       "s.yaml:14:26: executor.cpus_per_run: expected auto or a number of threads (0 = all "
       "cores), got 'many'"},
      {"negative cpus_per_run", base + "executor: {cpus_per_run: -1}\n",
       "s.yaml:14:26: executor.cpus_per_run: must be in [0, 4096], got -1"},
      {"log uniform needs positive min",
       base + "parameters:\n  train.lr: {min: 0, max: 1, distribution: log_uniform_values}\n",
       "s.yaml:15:19: parameters.train.lr.min: must be > 0 for log_uniform_values"},
      {"unknown axis", base + "parameters:\n  model.d_model: {values: [1]}\n",
       "s.yaml:15:3: parameters.model.d_model: unknown axis: expected train.<field>, "
       "data.<field> of this source (e.g. train.lr), or with family moe model.moe.n_experts, "
       "model.moe.top_k, model.moe.granularity or model.moe.n_shared_experts"},
      {"min_lr above lr", base + "  lr: 1e-3\n  min_lr: 1e-2\n",
       "s.yaml:15:11: train.min_lr: must be <= train.lr"},
      {"lr below min_lr's default", base + "  lr: 1e-4\n",
       "s.yaml:14:7: train.lr: is below train.min_lr, whose default is 0.0003: set train.min_lr "
       "too (at most train.lr)"},
      {"budget given twice", replace("[1e9, 4e9]", "[1e9, 4e9, 1e9]"),
       "s.yaml:11:21: budgets[2]: budget 1e+09 is given twice (also budgets[0])"},
      {"one budget between different ends", replace("[1e9, 4e9]", "{min: 1e9, max: 4e9, count: 1}"),
       "s.yaml:11:38: budgets.count: 1 budget between a min and a different max: give count >= 2, "
       "or max = min"},
      {"sizes shift without points_per_budget", base + "sizes: {shift: 1}\n",
       "s.yaml:14:16: sizes.shift: only applies with points_per_budget"},
      {"fixed_entropy without an entropy",
       replace("source: synthetic", "source: text\n  paths: [a.txt]") +
           "fit: {fixed_entropy: true}\n",
       "s.yaml:15:22: fit.fixed_entropy: only for synthetic data, whose entropy is known; text "
       "data has none to hold E at"},
      {"slurm mem not a size", base + "executor: {kind: slurm, mem: 64GB}\n",
       "s.yaml:14:30: executor.mem: expected a whole number with an optional unit K, M, G or T, "
       "as sbatch --mem takes (e.g. 64G), or auto, got '64GB'"},
      {"vocab mismatch", replace("source: synthetic", "source: synthetic\n  vocab: 48"),
       "s.yaml:4:10: data.vocab: must equal model.vocab_size (32)"},
      // A name is a folder name; std::regex recursed once per character and overflowed the
      // stack on 25k of them.
      {"name too long", replace("name: t", "name: " + std::string(25000, 'a')),
       "s.yaml:1:7: name: expected at most 255 bytes (it names the run folder), got 25000"},
      {"name starts with a dot", replace("name: t", "name: .t"),
       "s.yaml:1:7: name: expected letters, digits, '.', '_' or '-' (it names the run folder), "
       "got '.t'"},
      // yaml-cpp keeps the first of two equal keys; the second is named, at any depth.
      {"duplicate train key", base + "  batch_tokens: 512\n",
       "s.yaml:14:3: train.batch_tokens: duplicate key (first given at line 13); keep one of them"},
      {"duplicate top-level key", base + "name: u\n",
       "s.yaml:14:1: name: duplicate key (first given at line 1); keep one of them"},
      {"duplicate key in a flow mapping",
       replace("{n_layer: 1, d_model: 16, n_head: 2}", "{n_layer: 1, d_model: 16, n_layer: 2}"),
       "s.yaml:9:33: model.ladder[0].n_layer: duplicate key (first given at line 9); keep one "
       "of them"},
      // yaml-cpp's Load reads the first document only: a second one was silently ignored.
      {"second document", base + "---\nname: u\n",
       "s.yaml:15: a second YAML document (after ---): a sweep file holds one sweep"},
      // Token counts above 2^53 are not exact, and overflowed int64 after the planner.
      {"budget beyond 2^53 tokens", replace("[1e9, 4e9]", "[1e9, 1e30]"),
       "s.yaml:11:16: budgets[1]: 1e+30 FLOPs gives every ladder size more than 2^53 tokens (D "
       "= C / 6N = 1.22e+25 for the largest); the count exceeds 2^53: lower the budget or add "
       "larger sizes to model.ladder"},
      {"batch_tokens beyond 2^53", replace("batch_tokens: 256", "batch_tokens: 1e30"),
       "s.yaml:13:17: train.batch_tokens: the count exceeds 2^53 (9007199254740992), above "
       "which it is not exact, got 1e+30"},
      {"warmup_tokens beyond 2^53", base + "  warmup_tokens: 1e16\n",
       "s.yaml:14:18: train.warmup_tokens: the count exceeds 2^53 (9007199254740992), above "
       "which it is not exact, got 1e+16"},
      {"micro_batch too large", base + "  micro_batch: 1e12\n",
       "s.yaml:14:16: train.micro_batch: must be at most 1048576 sequences per forward pass "
       "(lower it; the trainer accumulates gradients over micro-batches), got 1000000000000.0"},
      {"eval_tokens too large", base + "  eval_tokens: 1e18\n",
       "s.yaml:14:16: train.eval_tokens: must be at most 2^28 = 268435456 tokens (the trainer "
       "keeps the held-out set in memory and evaluates all of it every eval_interval_steps), "
       "got 1e+18"},
      {"negative grad_clip", base + "  grad_clip: -1\n",
       "s.yaml:14:14: train.grad_clip: must be >= 0 (0 turns clipping off), got -1"},
      {"negative grad_clip on an axis",
       base + "parameters:\n  train.grad_clip: {values: [1, -1]}\n",
       "s.yaml:15:20: parameters.train.grad_clip: must be >= 0 (0 turns clipping off), got -1"},
  };
  for (const auto& c : cases) {
    Result<SweepConfig> r = Parse(c.text);
    ASSERT_FALSE(r.ok()) << c.label;
    EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument) << c.label;
    EXPECT_EQ(r.status().message(), c.message) << c.label;
  }
}

TEST(SweepConfigTest, BoundsAcceptTheirLimits) {
  const std::string base = kBase;
  auto with = [&](const std::string& from, const std::string& to) {
    std::string s = base;
    s.replace(s.find(from), from.size(), to);
    return Parse(s);
  };
  const std::string longest(kMaxSweepNameBytes, 'n');
  Result<SweepConfig> named = with("name: t", "name: " + longest);
  ASSERT_TRUE(named.ok()) << named.status().message();
  EXPECT_EQ(named->name, longest);
  EXPECT_FALSE(with("name: t", "name: " + longest + "n").ok());
  Result<SweepConfig> limits =
      Parse(base + "  eval_tokens: 268435456\n  micro_batch: 1048576\n" + "  grad_clip: 0\n");
  ASSERT_TRUE(limits.ok()) << limits.status().message();
  EXPECT_EQ(limits->train["eval_tokens"], 268435456);
  EXPECT_EQ(limits->train["grad_clip"], 0.0);
  // The same key in two different mappings is not a duplicate.
  EXPECT_TRUE(Parse(base + "executor: {max_retries: 2}\nfit: {bootstrap: 2}\n").ok());
  // YAML 1.1's booleans in any case, as PyYAML writes and reads them.
  for (const char* yes : {"True", "TRUE", "Yes", "ON", "false", "No", "Off"}) {
    Result<SweepConfig> b =
        with("  pos: alibi", std::string("  pos: alibi\n  tie_embeddings: ") + yes);
    EXPECT_TRUE(b.ok()) << yes << ": " << b.status().message();
  }
  Result<SweepConfig> maybe = with("  pos: alibi", "  pos: alibi\n  tie_embeddings: maybe");
  ASSERT_FALSE(maybe.ok());
  EXPECT_NE(maybe.status().message().find("model.tie_embeddings: expected true or false, got"),
            std::string::npos)
      << maybe.status().message();
}

TEST(SweepConfigTest, DuplicateKeysInASetValueAreNamed) {
  Result<SweepConfig> r = Parse(kBase, {"train={lr: 1e-3, lr: 2e-3}"});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "--set train={lr: 1e-3, lr: 2e-3}: train.lr: duplicate key; keep one of them");
}

TEST(SweepConfigTest, ASweepFileMustBeARegularFile) {
  const std::string dir = ::testing::TempDir() + "/config_fifo_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const std::string fifo = dir + "/sweep.yaml";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // Opening a FIFO for reading blocks until a writer comes: the check must come first.
  Result<SweepConfig> r = [&] {
    testing::FifoWriter writer(fifo);
    return LoadSweepConfig(fifo);
  }();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(r.status().message(), fifo + ": not a regular file (give the sweep file itself)");
  Result<SweepConfig> folder = LoadSweepConfig(dir);
  ASSERT_FALSE(folder.ok());
  EXPECT_EQ(folder.status().message(), dir + ": not a regular file (give the sweep file itself)");
  std::filesystem::remove_all(dir);
}

TEST(SweepConfigTest, CpusPerRunAcceptsAutoAndNumbers) {
  EXPECT_EQ(Parse(kBase)->executor.cpus_per_run, 0);  // all cores, one run at a time
  EXPECT_EQ(Parse(kBase, {"executor.cpus_per_run=auto"})->executor.cpus_per_run,
            ExecutorConfig::kAutoCpusPerRun);
  EXPECT_EQ(Parse(kBase, {"executor.cpus_per_run=2"})->executor.cpus_per_run, 2);
}

TEST(SweepConfigTest, SetOverridesApplyAndNameThemselvesInErrors) {
  Result<SweepConfig> c =
      Parse(kBase, {"train.lr=1e-3", "budgets=[2e9]", "executor.max_retries=3"});
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->train["lr"], 1e-3);
  EXPECT_EQ(c->budgets, (std::vector<double>{2e9}));
  EXPECT_EQ(c->executor.max_retries, 3);
  EXPECT_NE(c->hash, Parse(kBase)->hash);  // overrides change the sweep's identity

  Result<SweepConfig> bad = Parse(kBase, {"train.lr=-1"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "--set train.lr=-1: train.lr: must be > 0, got -1");
  Result<SweepConfig> typo = Parse(kBase, {"train.lrr=1"});
  ASSERT_FALSE(typo.ok());
  EXPECT_EQ(typo.status().message().rfind("--set train.lrr=1: train.lrr: unknown key", 0), 0u)
      << typo.status().message();
  EXPECT_FALSE(Parse(kBase, {"novalue"}).ok());
  // A misspelt section the override itself created is the override's error, not the file's.
  Result<SweepConfig> section = Parse(kBase, {"trian.lr=1"});
  ASSERT_FALSE(section.ok());
  EXPECT_EQ(section.status().message().rfind("--set trian.lr=1: trian: unknown key", 0), 0u)
      << section.status().message();
  // So is a budget of a range given on the command line (not a line of the file).
  Result<SweepConfig> range = Parse(kBase, {"budgets={min: 1e9, max: 1e30, count: 2}"});
  ASSERT_FALSE(range.ok());
  EXPECT_EQ(range.status().message().rfind("--set budgets={min: 1e9, max: 1e30, count: 2}: "
                                           "budgets (budget 2 of 2): 1e+30 FLOPs gives every",
                                           0),
            0u)
      << range.status().message();
}

TEST(SweepConfigTest, ParameterAxesExpandLikeWandb) {
  Result<SweepConfig> c =
      Parse(std::string(kBase) +
            "parameters:\n"
            "  train.lr: {min: 1e-4, max: 1e-2, distribution: log_uniform_values, count: 3}\n"
            "  train.micro_batch: {values: [4, 8]}\n"
            "  train.weight_decay: {min: 0, max: 0.2, count: 3, q: 0.1}\n");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->parameters.size(), 3u);
  ASSERT_EQ(c->parameters[0].values.size(), 3u);
  EXPECT_NEAR(c->parameters[0].values[1].get<double>(), 1e-3, 1e-12);
  EXPECT_EQ(c->parameters[1].values, (std::vector<nlohmann::json>{4, 8}));
  ASSERT_EQ(c->parameters[2].values.size(), 3u);
  EXPECT_NEAR(c->parameters[2].values[2].get<double>(), 0.2, 1e-12);
}

// A stray quote makes YAML read the rest of the file as one key (a blank line in it is a line
// break): the unknown-key error names it on one line, escaped and cut short (found by the
// mutation test in input_errors_e2e_test).
TEST(SweepConfigTest, AKeySpanningLinesIsNamedOnOneLine) {
  Result<SweepConfig> c =
      Parse(std::string(kBase) + "'\nfit:\n  method: parametric\n\nreport:\n  budgets: [1e20]\n");
  ASSERT_FALSE(c.ok());
  const std::string& m = c.status().message();
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  EXPECT_NE(m.find(": unknown key (expected one of: name,"), std::string::npos) << m;
  EXPECT_NE(m.find("\\n"), std::string::npos) << m;  // the line breaks, escaped
}

TEST(SweepConfigTest, SetAddressesAParameterAxisByItsDottedName) {
  const std::string axes = std::string(kBase) +
                           "parameters:\n"
                           "  train.lr: {values: [1e-3, 3e-3]}\n"
                           "  train.micro_batch: {values: [4, 8]}\n";
  // An existing axis: its one field replaced, the other axis untouched.
  Result<SweepConfig> one = Parse(axes, {"parameters.train.lr.values=[2e-3]"});
  ASSERT_TRUE(one.ok()) << one.status().message();
  ASSERT_EQ(one->parameters.size(), 2u);
  EXPECT_EQ(one->parameters[0].path, "train.lr");
  EXPECT_EQ(one->parameters[0].values, (std::vector<nlohmann::json>{2e-3}));
  EXPECT_EQ(one->parameters[1].values, (std::vector<nlohmann::json>{4, 8}));
  // A whole axis by its name.
  Result<SweepConfig> whole = Parse(axes, {"parameters.train.lr={value: 5e-4}"});
  ASSERT_TRUE(whole.ok()) << whole.status().message();
  EXPECT_EQ(whole->parameters[0].values, (std::vector<nlohmann::json>{5e-4}));
  // A new axis, in a file without `parameters`: the trailing field is the axis's, the rest its
  // name.
  Result<SweepConfig> added = Parse(kBase, {"parameters.train.weight_decay.values=[0, 0.1]"});
  ASSERT_TRUE(added.ok()) << added.status().message();
  ASSERT_EQ(added->parameters.size(), 1u);
  EXPECT_EQ(added->parameters[0].path, "train.weight_decay");
  EXPECT_EQ(added->parameters[0].values, (std::vector<nlohmann::json>{0, 0.1}));
  // A misspelt field of an existing axis is the axis's unknown key, named by the override.
  Result<SweepConfig> typo = Parse(axes, {"parameters.train.lr.valuse=[1]"});
  ASSERT_FALSE(typo.ok());
  EXPECT_NE(typo.status().message().find("parameters.train.lr.valuse: unknown key"),
            std::string::npos)
      << typo.status().message();
  // Descending into a scalar names it.
  Result<SweepConfig> scalar = Parse(kBase, {"name.first=x"});
  ASSERT_FALSE(scalar.ok());
  EXPECT_EQ(scalar.status().message(), "--set name.first=x: 'name' is not a mapping");
}

TEST(SweepConfigTest, LadderFromTargetParamsUsesTheAspectRule) {
  std::string text = kBase;
  const std::string from =
      "  ladder:\n    - {n_layer: 1, d_model: 16, n_head: 2}\n    - {n_layer: 1, d_model: 32, "
      "n_head: 4}\n";
  text.replace(text.find(from), from.size(),
               "  ladder:\n    params: [2e4, 1e5, 5e5]\n    aspect: {d_model_per_layer: 32, "
               "head_dim: 16}\n");
  Result<SweepConfig> c = Parse(text);
  ASSERT_TRUE(c.ok()) << c.status().message();
  ASSERT_EQ(c->ladder.size(), 3u);
  for (size_t i = 1; i < c->ladder.size(); ++i) {
    EXPECT_LT(accounting::TotalParams(c->ladder[i - 1]), accounting::TotalParams(c->ladder[i]));
  }
  EXPECT_EQ(c->ladder[0].pos, accounting::PosEmbedding::kAlibi);  // fixed fields carried over
}

TEST(SweepConfigTest, Sha256MatchesTheStandardVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(std::string(1000, 'a')).substr(0, 16), "41edece42d63e8d9");
}

}  // namespace
}  // namespace isoflop::sweep
