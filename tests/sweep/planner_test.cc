// Planning: determinism of cells and keys, size selection, per-size rules, warnings, memory
// estimates, and the committed GPU ladder.
#include "isoflop/sweep/planner.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "isoflop/sweep/config.h"
#include "isoflop/sweep/memory_estimate.h"

namespace isoflop::sweep {
namespace {

const char* kSweep = R"(name: p
data: {source: synthetic}
model:
  vocab_size: 32
  seq_len: 32
  pos: alibi
  ladder:
    - {n_layer: 1, d_model: 16, n_head: 2}
    - {n_layer: 1, d_model: 24, n_head: 3}
    - {n_layer: 1, d_model: 32, n_head: 4}
    - {n_layer: 1, d_model: 48, n_head: 6}
budgets: [1e9, 4e9]
train:
  batch_tokens: 256
  rules:
    - {field: lr, per: d_model, exponent: -1, reference: 32}
seeds: [0, 1]
)";

Plan MustPlan(const std::string& text, const std::string& cwd = "/a") {
  Result<SweepConfig> c = ParseSweepConfig(text, "p.yaml", {}, cwd);
  EXPECT_TRUE(c.ok()) << c.status().message();
  Result<Plan> p = PlanSweep(*c, PlanEnvironment{});
  EXPECT_TRUE(p.ok()) << p.status().message();
  return *p;
}

TEST(PlannerTest, SameFileSameCellsAndKeysAnywhere) {
  Plan a = MustPlan(kSweep, "/a"), b = MustPlan(kSweep, "/somewhere/else");
  ASSERT_EQ(a.cells.size(), 2u * 4u * 2u);  // budgets x sizes x seeds
  ASSERT_EQ(a.cells.size(), b.cells.size());
  std::set<std::string> keys;
  for (size_t i = 0; i < a.cells.size(); ++i) {
    EXPECT_EQ(a.cells[i].key, b.cells[i].key);
    EXPECT_EQ(a.cells[i].key.size(), 16u);
    keys.insert(a.cells[i].key);
  }
  EXPECT_EQ(keys.size(), a.cells.size());  // all distinct
  // A change to one hyperparameter changes every key; an unrelated comment changes none.
  Plan c = MustPlan(std::string(kSweep) + "# a comment\n");
  EXPECT_EQ(c.cells[0].key, a.cells[0].key);
  std::string changed = kSweep;
  changed.replace(changed.find("batch_tokens: 256"), 17, "batch_tokens: 512");
  Plan d = MustPlan(changed);
  EXPECT_NE(d.cells[0].key, a.cells[0].key);
}

TEST(PlannerTest, TokensFollowTheBudgetAndRulesScaleLr) {
  Plan p = MustPlan(kSweep);
  for (const Cell& c : p.cells) {
    EXPECT_NEAR(c.flops_per_token_6n * double(c.tokens) / c.budget_flops, 1.0, 1e-3);
    EXPECT_DOUBLE_EQ(c.flops_per_token_6n, 6.0 * double(c.n_total));
    const double lr = c.config["train"]["lr"].get<double>();
    EXPECT_NEAR(lr, 3e-3 * 32.0 / c.shape.d_model, 1e-12);
    EXPECT_NEAR(c.config["train"]["min_lr"].get<double>() / lr, 0.1, 1e-12);
    EXPECT_EQ(c.config["train"]["tokens"].get<int64_t>(), c.tokens);
  }
}

TEST(PlannerTest, WindowAndPointsSelectSizes) {
  // Window: only sizes with 50 <= D/N <= 500 at each budget.
  Plan w = MustPlan(std::string(kSweep) + "sizes: {tokens_per_param: [50, 500]}\n");
  for (const Cell& c : w.cells) {
    EXPECT_GE(c.tokens_per_param(), 50);
    EXPECT_LE(c.tokens_per_param(), 500);
  }
  // Points: 3 consecutive sizes per budget.
  std::string one_seed = kSweep;
  one_seed.replace(one_seed.find("seeds: [0, 1]"), 13, "seeds: 0");
  Plan p = MustPlan(one_seed + "sizes: {points_per_budget: 3, guess_tokens_per_param: 100}\n");
  ASSERT_EQ(p.cells.size(), 6u);
  // Too few sizes to bracket a minimum is a warning.
  Plan few = MustPlan(std::string(kSweep) + "sizes: {points_per_budget: 2}\n");
  bool warned = false;
  for (const auto& wr : few.warnings) warned |= wr.find("cannot bracket") != std::string::npos;
  EXPECT_TRUE(warned);
  // A window that runs off the ladder, or asks for more sizes than it has, is said, per budget.
  auto said = [](const Plan& plan, const std::string& part) {
    std::string all;
    for (const auto& wr : plan.warnings) all += wr + "\n";
    return all.find(part) != std::string::npos ? std::string() : all;
  };
  Plan many = MustPlan(one_seed + "sizes: {points_per_budget: 9}\n");
  EXPECT_EQ(many.cells.size(), 8u);  // every size at both budgets
  EXPECT_EQ(said(many,
                 "budget 1e+09: sizes.points_per_budget 9 is more than the ladder's 4 "
                 "sizes: every size trains"),
            "");
  // N* = sqrt(1e9 / 120) = 2887 is below the smallest size; at 4e9 (5774) it is inside.
  Plan edge = MustPlan(one_seed + "sizes: {points_per_budget: 2}\n");
  EXPECT_EQ(said(edge,
                 "budget 1e+09: N* = sqrt(C / 6g) = 2.89e+03 is below the ladder's "
                 "smallest size ("),
            "");
  EXPECT_EQ(said(edge,
                 "): no size below it trains, so the isoFLOP minimum may lie beyond the "
                 "ladder: extend model.ladder"),
            "");
  EXPECT_NE(said(edge, "budget 4e+09: N*"), "");
}

TEST(PlannerTest, WarnsAboutShortRunsAndMemory) {
  std::string text = kSweep;
  text.replace(text.find("budgets: [1e9, 4e9]"), 19, "budgets: [2e7]");
  Result<SweepConfig> c = ParseSweepConfig(text, "p.yaml", {}, "/a");
  ASSERT_TRUE(c.ok()) << c.status().message();
  PlanEnvironment env;
  env.device_memory_bytes = 1024;  // nothing fits in a kilobyte
  Result<Plan> p = PlanSweep(*c, env);
  ASSERT_TRUE(p.ok()) << p.status().message();
  bool short_run = false, memory = false;
  for (const auto& w : p->warnings) {
    short_run |=
        w.find("optimizer steps; the loss will be far from converged") != std::string::npos ||
        w.find("shorter than one batch") != std::string::npos;
    memory |= w.find("it will be refused") != std::string::npos;
  }
  EXPECT_TRUE(short_run);
  EXPECT_TRUE(memory);
}

// The trainer's own validation (trainer/run_config.h) runs on every cell at plan time: a cell
// it would refuse with "bad config" (exit 2, never retried) is an error at the sweep file's
// line instead. Each of these was accepted by `sweep plan` and then failed every run.
// A grid past kMaxCells is refused before it is built, naming what multiplies; one at the
// limit plans (here: 2 budgets x 4 sizes x 2 seeds x 5 x 5 x 5 = 2,000 cells at most, 1,000 of
// them selected).
TEST(PlannerTest, AGridOfMoreThanTheMostCellsIsRefusedBeforeItIsBuilt) {
  const std::string axes =
      "parameters:\n"
      "  train.weight_decay: {min: 0, max: 0.1, count: 1000}\n"
      "  train.beta1: {min: 0.8, max: 0.9, count: 1000}\n";
  Result<SweepConfig> c = ParseSweepConfig(std::string(kSweep) + axes, "p.yaml", {}, "/a");
  ASSERT_TRUE(c.ok()) << c.status().message();
  Result<Plan> p = PlanSweep(*c, PlanEnvironment{});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().message(),
            "p.yaml: the sweep is up to 1.6e+07 cells (2 budgets x 4 sizes x 2 seeds x 1000 "
            "(train.weight_decay) x 1000 (train.beta1)), more than 100000: fewer values per "
            "parameter axis, or several sweeps");
  const std::string small =
      "parameters:\n"
      "  train.weight_decay: {min: 0, max: 0.1, count: 5}\n"
      "  train.beta1: {min: 0.8, max: 0.9, count: 5}\n"
      "  train.grad_clip: {min: 0.5, max: 1.5, count: 5}\n";
  EXPECT_EQ(MustPlan(std::string(kSweep) + small).cells.size(), 2u * 4 * 2 * 125);
}

TEST(PlannerTest, CellsTheTrainerWouldRefuseAreErrorsAtTheirLine) {
  struct Case {
    std::string edit_from, edit_to, expect;
  };
  const std::vector<Case> cases = {
      // A warmup longer than the smallest run of the sweep.
      {"  batch_tokens: 256\n", "  batch_tokens: 256\n  warmup_tokens: 100000000\n",
       "p.yaml:15:18: train.warmup_tokens: must be in [0, train.tokens)"},
      // The synthetic language has at most 512 tokens.
      {"data: {source: synthetic}\nmodel:\n  vocab_size: 32",
       "data: {source: synthetic, vocab: 1024}\nmodel:\n  vocab_size: 1024",
       "p.yaml:2:34: data.vocab: must be in 2..512"},
  };
  for (const auto& k : cases) {
    std::string text = kSweep;
    ASSERT_NE(text.find(k.edit_from), std::string::npos) << k.edit_from;
    text.replace(text.find(k.edit_from), k.edit_from.size(), k.edit_to);
    Result<SweepConfig> c = ParseSweepConfig(text, "p.yaml", {}, "/a");
    ASSERT_TRUE(c.ok()) << c.status().message();
    Result<Plan> p = PlanSweep(*c, PlanEnvironment{});
    ASSERT_FALSE(p.ok()) << k.expect;
    EXPECT_EQ(p.status().message().substr(0, k.expect.size()), k.expect) << p.status().message();
    EXPECT_NE(p.status().message().find("(the trainer would refuse cell "), std::string::npos)
        << p.status().message();
  }
  // Text data without a validation part.
  const std::string text_sweep = R"(name: t
data: {source: text, paths: [a.txt], val_fraction: 0}
model:
  vocab_size: 256
  seq_len: 32
  ladder:
    - {n_layer: 1, d_model: 16, n_head: 2}
budgets: [1e9]
train: {batch_tokens: 256}
)";
  Result<SweepConfig> c = ParseSweepConfig(text_sweep, "t.yaml", {}, "/a");
  ASSERT_TRUE(c.ok()) << c.status().message();
  Result<Plan> p = PlanSweep(*c, PlanEnvironment{});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().message().substr(0, 55),
            "t.yaml:2:52: data.val_fraction: must be in (0, 1) (the ")
      << p.status().message();
}

// A size whose run would be shorter than one batch is not planned (the trainer would refuse
// it), with a warning naming where the budget was written; a budget that loses every size is an
// error there.
TEST(PlannerTest, BudgetsTooSmallForOneStepAreDroppedOrRefused) {
  std::string text = kSweep;
  text.replace(text.find("budgets: [1e9, 4e9]"), 19, "budgets: [1e9, 2e7]");
  text.replace(text.find("seeds: [0, 1]"), 13, "seeds: [0]");
  Plan p = MustPlan(text);
  for (const Cell& cell : p.cells) EXPECT_GE(cell.tokens, 256) << cell.ShapeString();
  std::string warning;
  for (const auto& w : p.warnings)
    if (w.find("not planned") != std::string::npos) warning = w;
  // 2e7 FLOPs buy the 1x48h6 model (6N = 175,968 FLOPs/token) 114 tokens < 256.
  EXPECT_NE(warning.find("p.yaml:12:16: budgets[1]: budget 2e+07: "), std::string::npos) << warning;
  EXPECT_NE(warning.find("1x48h6 (114 tokens)"), std::string::npos) << warning;

  text.replace(text.find("budgets: [1e9, 2e7]"), 19, "budgets: [1e9, 3e6]");
  Result<SweepConfig> c = ParseSweepConfig(text, "p.yaml", {}, "/a");
  ASSERT_TRUE(c.ok()) << c.status().message();
  Result<Plan> none = PlanSweep(*c, PlanEnvironment{});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(none.status().message().find("p.yaml:12:16: budgets[1]: 3e+06 FLOPs is less than one "
                                         "optimizer step of every size chosen for it"),
            std::string::npos)
      << none.status().message();
  // Through --set, the override is named instead of a line.
  Result<SweepConfig> set = ParseSweepConfig(kSweep, "p.yaml", {"budgets=[5e6]"}, "/a");
  ASSERT_TRUE(set.ok()) << set.status().message();
  Result<Plan> set_plan = PlanSweep(*set, PlanEnvironment{});
  ASSERT_FALSE(set_plan.ok());
  EXPECT_EQ(set_plan.status().message().rfind("--set budgets=[5e6]: budgets[0]: 5e+06 FLOPs", 0),
            0u)
      << set_plan.status().message();
}

// D = C / 6N above 2^53 is refused where the planner computes it, naming the budget's line
// and the size; 1e30 FLOPs used to overflow llround and be refused as "less than one optimizer
// step". Here the largest size stays below 2^53 (so the file parses) and a smaller one does not.
TEST(PlannerTest, TokenCountsAbove2To53AreRefusedNamingTheBudget) {
  std::string text = kSweep;
  text.replace(text.find("    - {n_layer: 1, d_model: 48, n_head: 6}\n"), 43,
               "    - {n_layer: 8, d_model: 1024, n_head: 8}\n");
  text.replace(text.find("budgets: [1e9, 4e9]"), 19, "budgets: [1e9, 1e24]");
  Result<SweepConfig> c = ParseSweepConfig(text, "p.yaml", {}, "/a");
  ASSERT_TRUE(c.ok()) << c.status().message();
  Result<Plan> p = PlanSweep(*c, PlanEnvironment{});
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(p.status().message(),
            "p.yaml:12:16: budgets[1]: 1e+24 FLOPs gives size 1x16h2 4.29e+19 tokens (D = C / "
            "6N); the count exceeds 2^53 (9.007e15): lower the budget or choose larger sizes for "
            "it");
  // Just below the bound the cell is planned with its exact count.
  text.replace(text.find("budgets: [1e9, 1e24]"), 20, "budgets: [1e9, 4e9]");
  Plan ok = MustPlan(text);
  for (const Cell& cell : ok.cells) EXPECT_GT(cell.tokens, 0) << cell.ShapeString();
}

// A data file that exists but is not a regular file (a FIFO would block every run) is refused;
// one that does not exist yet is a warning, as before.
TEST(PlannerTest, DataFilesMustBeRegularFiles) {
  std::string text = kSweep;
  text.replace(text.find("data: {source: synthetic}"), 25,
               "data: {source: bin, train: here, val: missing.bin}");
  const std::string dir = ::testing::TempDir() + "planner_data_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  Result<SweepConfig> c = ParseSweepConfig(text, "p.yaml", {}, dir);
  ASSERT_TRUE(c.ok()) << c.status().message();
  std::filesystem::create_directories(dir + "/here");  // exists, but a folder
  Result<Plan> p = PlanSweep(*c, PlanEnvironment{});
  ASSERT_FALSE(p.ok());
  const std::string here = (std::filesystem::path(dir) / "here").lexically_normal().string();
  // Named where the sweep file gives it: "data: {source: bin, train: here, ..." is line 2.
  const std::string tail =
      ": data.train: " + here + ": not a regular file (data files are mapped whole)";
  const std::string msg = p.status().message();
  EXPECT_EQ(msg.rfind("p.yaml:2:", 0), 0u) << msg;
  ASSERT_GE(msg.size(), tail.size()) << msg;
  EXPECT_EQ(msg.substr(msg.size() - tail.size()), tail) << msg;
  std::filesystem::remove_all(dir + "/here");
  std::ofstream(dir + "/here") << "tokens";
  Plan ok = MustPlan(text, dir);
  bool warned = false;
  for (const auto& w : ok.warnings) warned |= w.find("missing.bin") != std::string::npos;
  EXPECT_TRUE(warned);
  std::filesystem::remove_all(dir);
}

// The largest micro_batch a sweep file allows, on the largest shapes, must not overflow the
// estimate into a negative number (which "fits" on every device).
TEST(MemoryEstimateTest, HugeBatchesSaturateInsteadOfGoingNegative) {
  accounting::Shape s;
  s.n_layer = 4096;
  s.d_model = 1 << 16;
  s.n_head = 1 << 10;
  s.vocab_size = 1 << 22;
  s.seq_len = 1 << 20;
  MemoryOptions o;
  o.micro_batch = static_cast<int>(kMaxMicroBatch);
  o.micro_batches = 2;  // accumulating: the gradients are live at the peak too
  o.gpu = true;  // (on CPU tensors this large are mapped, not heaped: no slack to saturate)
  const MemoryEstimate m = EstimateMemory(s, o);
  for (int64_t part : {m.weights, m.gradients, m.optimizer, m.activations, m.attention, m.logits,
                       m.overhead, m.total}) {
    EXPECT_GT(part, 0);
  }
  EXPECT_GE(m.total, m.activations);
  EXPECT_GT(m.total, int64_t{1} << 62);  // saturated near INT64_MAX, not wrapped
}

// executor.activation_checkpointing reaches every run's train config (the trainer recomputes,
// so the smaller memory estimate is true); without it run.json and the keys stay as they were.
TEST(PlannerTest, ActivationCheckpointingReachesTheRuns) {
  Plan plain = MustPlan(kSweep);
  Plan ckpt = MustPlan(std::string(kSweep) + "executor: {activation_checkpointing: true}\n");
  ASSERT_EQ(plain.cells.size(), ckpt.cells.size());
  for (size_t i = 0; i < plain.cells.size(); ++i) {
    EXPECT_FALSE(plain.cells[i].config["train"].contains("activation_checkpointing"));
    EXPECT_EQ(ckpt.cells[i].config["train"]["activation_checkpointing"], true);
    EXPECT_NE(plain.cells[i].key, ckpt.cells[i].key);
    // One-layer models: the kept block input is all checkpointing adds (MemoryEstimateTest
    // covers deeper ones, where it saves).
    EXPECT_NE(ckpt.cells[i].memory.activations, plain.cells[i].memory.activations);
  }
  Plan again = MustPlan(std::string(kSweep) + "executor: {activation_checkpointing: false}\n");
  EXPECT_EQ(again.cells[0].key, plain.cells[0].key);
}

TEST(MemoryEstimateTest, PartsAddUpAndRespondToOptions) {
  accounting::Shape s;
  s.n_layer = 12;
  s.d_model = 768;
  s.n_head = 12;
  s.vocab_size = 50304;
  s.seq_len = 1024;
  MemoryOptions o;
  o.micro_batch = 8;
  const MemoryEstimate m = EstimateMemory(s, o);
  const int64_t n = accounting::TotalParams(s);
  // fp32 weights and AdamW's moments (4 + 8 bytes); one forward pass per step: the gradients
  // come as the activations go, and are not live at the peak.
  EXPECT_EQ(m.weights + m.optimizer, 12 * n);
  EXPECT_EQ(m.gradients, 0);
  MemoryOptions accumulating = o;
  accumulating.micro_batches = 4;
  EXPECT_EQ(EstimateMemory(s, accumulating).gradients, 4 * n);
  MemoryOptions ranks = o;
  ranks.ranks = 2;  // the reducer's flat buckets
  EXPECT_EQ(EstimateMemory(s, ranks).gradients, 4 * n);
  // Attention probabilities, not fused: B x heads x T x T x 4 bytes, for each of the 12 layers
  // (the two more while backward works through one are fewer bytes than the logits' chain,
  // gone by then).
  EXPECT_EQ(m.attention, int64_t{8} * 12 * 1024 * 1024 * 4 * 12);
  accounting::Shape long_context = s;  // at 8k tokens and a small vocabulary they are not
  long_context.seq_len = 8192;
  long_context.vocab_size = 512;
  const int64_t probs = int64_t{8} * 12 * 8192 * 8192 * 4;
  const int64_t logits_freed = int64_t{8} * 8192 * 512 * 12;
  EXPECT_EQ(EstimateMemory(long_context, o).attention, probs * 12 + 2 * probs - logits_freed);
  // Logits, log-softmax and their two gradients, fp32.
  EXPECT_EQ(m.logits, int64_t{8} * 1024 * 50304 * 16);
  EXPECT_EQ(m.runtime, kHostRuntimeBytes);
  EXPECT_EQ(m.total, m.weights + m.gradients + m.optimizer + m.activations + m.attention +
                         m.logits + m.overhead + m.runtime);
  // GPT-2 small at batch 8 x 1024 in fp32 lands in the known 10-25 GiB range.
  EXPECT_GT(m.total, int64_t{10} << 30);
  EXPECT_LT(m.total, int64_t{25} << 30);

  MemoryOptions fused = o;
  fused.fused_attention = true;
  EXPECT_EQ(EstimateMemory(s, fused).attention, 0);
  // The fused kernel saves q, k and v as views of the whole qkv output, and rotated q and k,
  // where explicit attention saves contiguous copies of the three: more activations, but no
  // (T, T) matrices.
  EXPECT_GT(EstimateMemory(s, fused).activations, m.activations);
  EXPECT_LT(EstimateMemory(s, fused).total, m.total);
  MemoryOptions ckpt = o;
  ckpt.activation_checkpointing = true;
  EXPECT_LT(EstimateMemory(s, ckpt).activations * 4, m.activations);
  MemoryOptions mixed = o;
  mixed.mixed_precision = true;
  const MemoryEstimate mm = EstimateMemory(s, mixed);
  // Autocast: fp32 weights, AdamW's moments, and a bf16 copy of each weight.
  EXPECT_EQ(mm.weights + mm.gradients + mm.optimizer, 14 * n);
  EXPECT_LT(mm.activations, m.activations);
  EXPECT_GT(mm.activations * 2, m.activations);  // the residual stream and norms stay fp32
  MemoryOptions twice = o;
  twice.micro_batch = 16;
  EXPECT_EQ(EstimateMemory(s, twice).activations, 2 * m.activations);
}

// A forward pass holds micro_batch sequences, fewer when a step (or a rank's share) has fewer.
TEST(MemoryEstimateTest, ForwardBatchIsTheRanksShareOfTheStepAtMost) {
  EXPECT_EQ(accounting::ForwardBatch(16, 1024, 64, 1), 16);
  EXPECT_EQ(accounting::ForwardBatch(32, 1024, 64, 1), 16);  // a step of 16 sequences
  EXPECT_EQ(accounting::ForwardBatch(16, 1024, 64, 2), 8);   // each of 2 ranks takes 8
  EXPECT_EQ(accounting::ForwardBatch(16, 1000, 64, 3), 6);   // 16 sequences (one short) / 3
  EXPECT_EQ(accounting::ForwardBatch(4, 1 << 20, 1024, 8), 4);
  EXPECT_EQ(accounting::ForwardBatch(16, 64, 64, 4), 1);  // a rank with no whole sequence
}

// Unset, the precision and attention assumptions follow the plan's device (the trainer uses
// bf16 autocast and fused attention on CUDA, fp32 and explicit attention on CPU); set, they win.
TEST(PlannerTest, MemoryAssumptionsFollowTheDevice) {
  Result<SweepConfig> c = ParseSweepConfig(kSweep, "p.yaml", {}, "/a");
  ASSERT_TRUE(c.ok()) << c.status().message();
  const Cell any = MustPlan(kSweep).cells.front();  // a copy: the plan is a temporary
  MemoryOptions o;
  o.micro_batch =
      accounting::ForwardBatch(c->train["micro_batch"].get<int>(),
                               c->train["batch_tokens"].get<int64_t>(), any.shape.seq_len, 1);
  auto total_on = [&](bool gpu, const SweepConfig& config) {
    PlanEnvironment env;
    env.gpu = gpu;
    Result<Plan> p = PlanSweep(config, env);
    EXPECT_TRUE(p.ok()) << p.status().message();
    return p->cells.front().memory.total;
  };
  EXPECT_EQ(total_on(false, *c), EstimateMemory(any.shape, o).total);
  MemoryOptions gpu = o;
  gpu.mixed_precision = gpu.fused_attention = gpu.gpu = true;
  const MemoryEstimate on_gpu = EstimateMemory(any.shape, gpu);
  EXPECT_EQ(on_gpu.runtime, kCudaContextBytes);  // every GPU process pays its context
  EXPECT_EQ(total_on(true, *c), on_gpu.total);
  SweepConfig fp32 = *c;
  fp32.executor.mixed_precision = false;
  fp32.executor.fused_attention = false;
  MemoryOptions fp32_gpu = o;
  fp32_gpu.gpu = true;
  EXPECT_EQ(total_on(true, fp32), EstimateMemory(any.shape, fp32_gpu).total);
  EXPECT_EQ(EstimateMemory(any.shape, o).runtime, kHostRuntimeBytes);
}

TEST(PlannerTest, CommittedGpuLadderPlans) {
  Result<SweepConfig> c =
      LoadSweepConfig(std::string(ISOFLOP_SOURCE_DIR) + "/sweeps/dense_gpu_ladder.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(c->budgets.front(), 1e17);
  EXPECT_EQ(c->budgets.back(), 1e19);
  PlanEnvironment env;
  env.gpu = true;
  env.device_memory_bytes = 80.0 * (1LL << 30);
  Result<Plan> p = PlanSweep(*c, env);
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->cells.size(), c->budgets.size() * 5);
  for (const Cell& cell : p->cells) {
    EXPECT_LT(cell.memory.total, env.device_memory_bytes) << cell.ShapeString();
    EXPECT_GT(cell.steps, 100);
  }
  for (const auto& w : p->warnings) {
    EXPECT_EQ(w.find("cannot bracket"), std::string::npos) << w;
    EXPECT_EQ(w.find("refused"), std::string::npos) << w;
  }
  Result<SweepConfig> q =
      LoadSweepConfig(std::string(ISOFLOP_SOURCE_DIR) + "/sweeps/quickstart.yaml");
  ASSERT_TRUE(q.ok()) << q.status().message();
  Result<Plan> qp = PlanSweep(*q, PlanEnvironment{});
  ASSERT_TRUE(qp.ok());
  EXPECT_EQ(qp->cells.size(), 20u);
  EXPECT_EQ(qp->cells[0].config["data"]["language"], "skills");  // the power-law language
}

// data.language picks the synthetic language; the default (markov) cells keep their keys, and
// a wrong value or a field of the other language is an error naming the field.
TEST(PlannerTest, SyntheticLanguageIsADataFieldThatLeavesMarkovKeysAlone) {
  const std::string sweep = kSweep;
  const std::string data = "data: {source: synthetic}";
  auto with = [&](const std::string& d) {
    return std::string(sweep).replace(sweep.find(data), data.size(), d);
  };
  const Plan markov = MustPlan(sweep);
  const Plan same = MustPlan(with("data: {source: synthetic, language: markov}"));
  ASSERT_EQ(markov.cells.size(), same.cells.size());
  // An explicit markov changes the file's text, not what the runs train on.
  for (size_t i = 0; i < markov.cells.size(); ++i) {
    EXPECT_EQ(markov.cells[i].config["data"].contains("language"), false);
  }
  const Plan skills =
      MustPlan(with("data: {source: synthetic, language: skills, skill_zipf: 1.3}"));
  ASSERT_EQ(skills.cells.size(), markov.cells.size());
  EXPECT_EQ(skills.cells[0].config["data"]["skill_zipf"], 1.3);
  EXPECT_NE(skills.cells[0].key, markov.cells[0].key);
  for (const auto& [d, what] : std::vector<std::pair<std::string, std::string>>{
           {"data: {source: synthetic, language: zipfian}",
            "p.yaml:2:37: data.language: expected one of markov, skills; got 'zipfian'"},
           {"data: {source: synthetic, language: skills, k2: 3}",
            "p.yaml:2:49: data.k2: only with data.language 'markov'"}}) {
    Result<SweepConfig> c = ParseSweepConfig(with(d), "p.yaml", {}, "/a");
    ASSERT_TRUE(c.ok()) << c.status().message();
    Result<Plan> p = PlanSweep(*c, PlanEnvironment{});
    ASSERT_FALSE(p.ok()) << d;
    EXPECT_NE(p.status().message().find(what), std::string::npos) << p.status().message();
  }
}

// The committed MoE ladder: sized by active parameters, dense / 8 / 16 experts at every budget,
// every cell within an 80 GB GPU although the experts multiply the stored parameters.
TEST(PlannerTest, CommittedMoeGpuLadderPlansByActiveParameters) {
  Result<SweepConfig> c =
      LoadSweepConfig(std::string(ISOFLOP_SOURCE_DIR) + "/sweeps/moe_gpu_ladder.yaml");
  ASSERT_TRUE(c.ok()) << c.status().message();
  const std::vector<double> targets = {2e7, 3e7, 4.5e7, 7e7, 1e8, 1.5e8, 2.2e8, 3.3e8};
  ASSERT_EQ(c->ladder.size(), targets.size());
  for (size_t i = 0; i < targets.size(); ++i) {
    const double active = static_cast<double>(accounting::ActiveParams(c->ladder[i]));
    EXPECT_LT(std::abs(std::log(active / targets[i])), 0.25) << i << ": " << active;
    EXPECT_GT(accounting::TotalParams(c->ladder[i]), 2 * accounting::ActiveParams(c->ladder[i]));
  }
  PlanEnvironment env;
  env.gpu = true;
  env.device_memory_bytes = 80.0 * (1LL << 30);
  Result<Plan> p = PlanSweep(*c, env);
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->cells.size(), c->budgets.size() * 4 * 3);
  std::map<std::string, int64_t> dense_active;  // shape -> the dense cell's N
  for (const Cell& cell : p->cells)
    if (!cell.shape.moe) dense_active[cell.ShapeString()] = cell.n_active;
  for (const Cell& cell : p->cells) {
    EXPECT_LT(cell.memory.total, env.device_memory_bytes) << cell.ShapeString();
    EXPECT_GT(cell.steps, 100);
    EXPECT_NEAR(cell.tokens_per_param(), double(cell.tokens) / cell.n_active, 1e-9);
    if (!cell.shape.moe) continue;
    // Top-1 experts of the dense MLP's size: a token uses the dense model plus the router.
    EXPECT_GT(cell.n_total, 2 * cell.n_active);
    const int64_t router = int64_t(cell.shape.n_layer) * cell.shape.d_model * cell.shape.moe->n_experts;
    EXPECT_EQ(cell.n_active, dense_active.at(cell.ShapeString()) + router) << cell.ShapeString();
  }
  for (const auto& w : p->warnings) {
    EXPECT_EQ(w.find("cannot bracket"), std::string::npos) << w;
    EXPECT_EQ(w.find("refused"), std::string::npos) << w;
  }
}

TEST(PlannerTest, ExpertAxesChangeTheModelAndZeroExpertsIsTheDenseCell) {
  const std::string moe =
      std::string(kSweep).replace(std::string(kSweep).find("model:\n"), 7,
                                  "model:\n  family: moe\n  moe: {n_experts: 4, top_k: 1}\n");
  const Plan dense = MustPlan(kSweep);
  const Plan plan = MustPlan(moe + "parameters:\n  model.moe.n_experts: {values: [0, 4, 8]}\n");
  ASSERT_EQ(plan.cells.size(), 3 * dense.cells.size());
  std::set<std::string> dense_keys;
  for (const Cell& c : dense.cells) dense_keys.insert(c.key);
  std::map<int, int> by_experts;
  for (const Cell& c : plan.cells) {
    const int e = c.shape.moe ? c.shape.moe->n_experts : 0;
    ++by_experts[e];
    if (e == 0) {
      // The dense model of the same shape: the dense sweep's own cell.
      EXPECT_TRUE(dense_keys.count(c.key)) << c.key;
      EXPECT_EQ(c.config["model"]["family"], "dense");
      EXPECT_EQ(c.n_active, c.n_total);
    } else {
      EXPECT_EQ(c.config["model"]["family"], "moe");
      EXPECT_EQ(c.config["model"]["moe"]["n_experts"], e);
      EXPECT_GT(c.n_total, c.n_active);  // top-1 of e experts
      // Sized by active parameters: D = C / FLOPs per token of the parameters a token uses.
      EXPECT_NEAR(double(c.tokens), c.budget_flops / c.flops_per_token_6n, 1.0);
    }
  }
  EXPECT_EQ(by_experts[0], by_experts[4]);
  EXPECT_EQ(by_experts[4], by_experts[8]);
  // Expert axes on a dense sweep, and values that are no expert count, are errors at the line.
  Result<SweepConfig> bad =
      ParseSweepConfig(std::string(kSweep) + "parameters:\n  model.moe.n_experts: {values: [4]}\n",
                       "p.yaml", {}, "/a");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "p.yaml:19:3: parameters.model.moe.n_experts: expert axes need model.family: moe (and "
            "a moe: block)");
  Result<SweepConfig> frac = ParseSweepConfig(
      moe + "parameters:\n  model.moe.top_k: {values: [1.5]}\n", "p.yaml", {}, "/a");
  ASSERT_FALSE(frac.ok());
  EXPECT_NE(frac.status().message().find("parameters.model.moe.top_k[0]: expected a whole number "
                                         "in [1, 4096], got 1.5"),
            std::string::npos)
      << frac.status().message();
  // top_k above the expert count meets the trainer's own check, at the axis's line.
  Result<SweepConfig> k =
      ParseSweepConfig(moe + "parameters:\n  model.moe.top_k: {values: [8]}\n", "p.yaml", {}, "/a");
  ASSERT_TRUE(k.ok()) << k.status().message();
  Result<Plan> kp = PlanSweep(*k, PlanEnvironment{});
  ASSERT_FALSE(kp.ok());
  EXPECT_NE(kp.status().message().find("top_k"), std::string::npos) << kp.status().message();
}

}  // namespace
}  // namespace isoflop::sweep
