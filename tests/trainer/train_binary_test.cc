// End-to-end tests through the real isoflop-train binary: exact resume after SIGKILL, SIGTERM
// preemption (exit 143, checkpoint, resumable), divergence (exit 3), bad run.json (exit 2),
// and the standalone --out form. Tiny models so the whole file runs in seconds.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "isoflop/common/process.h"
#include "isoflop/trainer/run_dir.h"
#include "isoflop/trainer/synthetic.h"
#include "isoflop/trainer/train_loop.h"
#include "require_gloo.h"

namespace isoflop::trainer {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kTrain = std::string(ISOFLOP_BINARY_DIR) + "/isoflop-train";

std::string Slurp(const std::string& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Starts `program` with args; stderr (and for other programs than isoflop-train stdout too)
// goes to `log`. Returns the pid.
pid_t StartProgram(const std::string& program, const std::vector<std::string>& args,
                   const std::string& log) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    if (program != kTrain) ::dup2(fd, 1);
    std::vector<char*> argv{const_cast<char*>(program.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(program.c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

// Starts isoflop-train with args; stderr goes to `log`. Returns the pid.
pid_t Start(const std::vector<std::string>& args, const std::string& log) {
  return StartProgram(kTrain, args, log);
}

// Waits for pid; returns the exit code, or 128 + signal when killed by one.
int Wait(pid_t pid) {
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int RunDir(const std::string& dir) {
  return Wait(Start({"--run-dir", dir, "--quiet"}, dir + "/stderr.log"));
}

class BinaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = (fs::temp_directory_path() /
             ("isoflop_train_bin_" + std::to_string(::getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                .string();
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(root_);
  }

  // A tiny run: 1 layer, d 32, ~80 steps of 256 tokens, threads 1 (bitwise determinism).
  static json TinyRun() {
    return json::parse(R"({
      "schema": 1, "seed": 3,
      "model": {"n_layer": 1, "d_model": 32, "n_head": 2, "vocab_size": 32, "seq_len": 32},
      "data": {"source": "synthetic"},
      "train": {"tokens": 20000, "batch_tokens": 256, "micro_batch": 4, "eval_interval_steps": 20,
                "eval_tokens": 2048, "log_interval_steps": 5, "ckpt_interval_steps": 10,
                "threads": 1, "device": "cpu"}})");
  }

  // A tiny MoE run: both blocks MoE, 4 experts top-2, one shared expert, loss-free bias on.
  static json TinyMoeRun(double bias_update_rate = 0.01) {
    json run = TinyRun();
    run["model"]["n_layer"] = 2;
    run["model"]["family"] = "moe";
    run["model"]["moe"] = {{"n_experts", 4},
                           {"top_k", 2},
                           {"n_shared_experts", 1},
                           {"bias_update_rate", bias_update_rate}};
    return run;
  }

  std::string MakeRun(const std::string& name, const json& run) {
    const std::string dir = root_ + "/" + name;
    fs::create_directories(dir);
    std::ofstream(dir + "/run.json") << run.dump(2);
    return dir;
  }

  static json Status(const std::string& dir) { return json::parse(Slurp(dir + "/status.json")); }

  std::string root_;
};

// Waits until dir/ckpt has a complete checkpoint at or beyond `step`.
bool WaitForCheckpoint(const std::string& dir, int64_t step, double timeout_s) {
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < timeout_s) {
    const auto list = ListCheckpoints(dir + "/ckpt");
    if (!list.empty() && list.back().step >= step) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

std::vector<json> MetricsLines(const std::string& dir) {
  std::istringstream lines(Slurp(dir + "/metrics.jsonl"));
  std::string line;
  std::vector<json> out;
  while (std::getline(lines, line)) out.push_back(json::parse(line));
  return out;
}

TEST_F(BinaryTest, FinishesExactBudgetWithPartialLastStep) {
  const std::string dir = MakeRun("run", TinyRun());
  ASSERT_EQ(RunDir(dir), 0) << Slurp(dir + "/stderr.log");
  const json st = Status(dir);
  EXPECT_EQ(st["state"], "finished");
  EXPECT_EQ(st["tokens"], 20000);
  EXPECT_EQ(st["step"], 79);  // 78 full steps of 256 + one of 32
  const json info = json::parse(Slurp(dir + "/info.json"));
  EXPECT_GT(info["data_entropy_nats"].get<double>(), 1.0);
  EXPECT_GT(info["n_total"].get<int64_t>(), 0);
  // Every metrics line parses, steps increase, the last has the final val_loss and min_lr.
  std::istringstream lines(Slurp(dir + "/metrics.jsonl"));
  std::string line;
  json last;
  int64_t prev = 0;
  while (std::getline(lines, line)) {
    last = json::parse(line);
    EXPECT_GT(last["step"].get<int64_t>(), prev);
    prev = last["step"];
  }
  EXPECT_EQ(last["step"], 79);
  EXPECT_EQ(last["tokens"], 20000);
  EXPECT_DOUBLE_EQ(last["val_loss"].get<double>(), st["final_val_loss"].get<double>());
  EXPECT_DOUBLE_EQ(last["lr"].get<double>(), 3e-4);
  EXPECT_DOUBLE_EQ(last["flops"].get<double>(), 20000 * info["flops_per_token_6n"].get<double>());
}

// The skills language through the real binary: info.json carries its closed-form entropy, and
// the model learns towards it without going below it (the floor of the validation loss).
TEST_F(BinaryTest, SkillsLanguageRunReportsItsExactEntropyAndLearnsTowardsIt) {
  json run = TinyRun();
  run["model"]["vocab_size"] = 48;
  run["data"] = {
      {"source", "synthetic"}, {"vocab", 48}, {"language", "skills"}, {"skill_zipf", 1.5}};
  run["train"]["tokens"] = 40000;
  const std::string dir = MakeRun("skills", run);
  ASSERT_EQ(RunDir(dir), 0) << Slurp(dir + "/stderr.log");
  DataConfig c;
  c.vocab = 48;
  c.language = SyntheticKind::kSkills;
  c.skill_zipf = 1.5;
  auto lang = SyntheticLanguage::Build(c);
  ASSERT_TRUE(lang.ok());
  const double h = json::parse(Slurp(dir + "/info.json"))["data_entropy_nats"].get<double>();
  EXPECT_DOUBLE_EQ(h, lang->EntropyRate());
  std::istringstream lines(Slurp(dir + "/metrics.jsonl"));
  std::string line;
  std::vector<double> val;
  while (std::getline(lines, line)) {
    const json m = json::parse(line);
    if (m.contains("val_loss") && m["val_loss"].is_number()) val.push_back(m["val_loss"]);
  }
  ASSERT_GE(val.size(), 2u);
  // Measured: 3.07 at step 20, 1.47 at the end, H = 0.905 (a 1-layer d 32 model on 40k tokens
  // has seen too few chunks to store most of the 256 skills).
  EXPECT_LT(val.back(), val.front() - 1.0);
  EXPECT_GT(val.back(), h - 0.03);  // 2,048 held-out tokens: a few 1e-2 of noise
  EXPECT_LT(val.back(), h + 1.0);
}

TEST_F(BinaryTest, ResumeAfterSigkillIsExact) {
  const std::string ref = MakeRun("ref", TinyRun());
  ASSERT_EQ(RunDir(ref), 0) << Slurp(ref + "/stderr.log");
  const double ref_loss = Status(ref)["final_val_loss"];

  const std::string dir = MakeRun("killed", TinyRun());
  const pid_t pid = Start({"--run-dir", dir, "--quiet"}, dir + "/stderr.log");
  ASSERT_TRUE(WaitForCheckpoint(dir, 20, 60));
  ::kill(pid, SIGKILL);
  ASSERT_EQ(Wait(pid), 128 + SIGKILL);
  ASSERT_FALSE(fs::exists(dir + "/status.json"));  // SIGKILL writes nothing
  ASSERT_EQ(RunDir(dir), 0) << Slurp(dir + "/stderr.log");
  const double loss = Status(dir)["final_val_loss"];
  EXPECT_NEAR(loss, ref_loss, 1e-6 * ref_loss);
  // metrics.jsonl after resume: unique, increasing steps, same final line values.
  std::istringstream lines(Slurp(dir + "/metrics.jsonl"));
  std::string line;
  int64_t prev = 0;
  while (std::getline(lines, line)) {
    const int64_t step = json::parse(line)["step"];
    EXPECT_GT(step, prev) << "duplicate or out-of-order step after resume";
    prev = step;
  }
  EXPECT_LE(ListCheckpoints(dir + "/ckpt").size(), 2u);
}

TEST_F(BinaryTest, SigtermCheckpointsExits143AndResumes) {
  // Long enough (782 steps) that the signal, sent after the step-10 checkpoint, always
  // arrives mid-run, even on a loaded machine.
  json run = TinyRun();
  run["train"]["tokens"] = 200000;
  const std::string ref = MakeRun("ref", run);
  ASSERT_EQ(RunDir(ref), 0);
  const double ref_loss = Status(ref)["final_val_loss"];

  const std::string dir = MakeRun("term", run);
  const pid_t pid = Start({"--run-dir", dir, "--quiet"}, dir + "/stderr.log");
  ASSERT_TRUE(WaitForCheckpoint(dir, 10, 60));
  ::kill(pid, SIGTERM);
  const int rc = Wait(pid);
  ASSERT_EQ(rc, 128 + SIGTERM) << Slurp(dir + "/stderr.log");
  const json st = Status(dir);
  EXPECT_EQ(st["state"], "preempted");
  EXPECT_EQ(st["exit_code"], 143);
  const auto list = ListCheckpoints(dir + "/ckpt");
  ASSERT_FALSE(list.empty());
  EXPECT_EQ(list.back().step, st["step"].get<int64_t>());  // checkpointed where it stopped
  ASSERT_EQ(RunDir(dir), 0) << Slurp(dir + "/stderr.log");
  EXPECT_NEAR(Status(dir)["final_val_loss"].get<double>(), ref_loss, 1e-6 * ref_loss);
}

TEST_F(BinaryTest, HugeLearningRateDiverges) {
  json run = TinyRun();
  run["train"]["lr"] = 1e6;
  run["train"]["min_lr"] = 1e5;
  const std::string dir = MakeRun("div", run);
  ASSERT_EQ(RunDir(dir), 3) << Slurp(dir + "/stderr.log");
  const json st = Status(dir);
  EXPECT_EQ(st["state"], "diverged");
  EXPECT_NE(st["reason"].get<std::string>().find("at step"), std::string::npos);
}

// A step's loss and gradient norm are read on the host one step late unless the step is
// logged (so a GPU never waits). Divergence at an unlogged step is still reported at that
// step, with the progress before it, and nothing of later steps is kept: the same status as
// a run that reads every step at once (log_interval_steps 1).
TEST_F(BinaryTest, DivergenceAtAnUnloggedStepIsReportedAtThatStep) {
  json run = TinyRun();
  run["train"]["lr"] = 1e6;
  run["train"]["min_lr"] = 1e5;
  run["train"]["log_interval_steps"] = 1;
  const std::string every = MakeRun("every", run);
  ASSERT_EQ(RunDir(every), 3) << Slurp(every + "/stderr.log");
  run["train"]["log_interval_steps"] = 50;
  run["train"]["eval_interval_steps"] = 50;
  run["train"]["ckpt_interval_steps"] = 50;
  const std::string late = MakeRun("late", run);
  ASSERT_EQ(RunDir(late), 3) << Slurp(late + "/stderr.log");
  const json a = Status(every), b = Status(late);
  EXPECT_EQ(b["state"], "diverged");
  EXPECT_EQ(b["reason"], a["reason"]);
  EXPECT_EQ(b["step"], a["step"]);
  EXPECT_EQ(b["tokens"], a["tokens"]);
  const int64_t diverged_at = a["step"].get<int64_t>() + 1;
  ASSERT_NE(a["reason"].get<std::string>().find("at step " + std::to_string(diverged_at)),
            std::string::npos)
      << a["reason"];
  ASSERT_LT(diverged_at, 50) << "the divergence should fall on an unlogged step";
  EXPECT_EQ(Slurp(late + "/metrics.jsonl"), "");  // no step before it was logged
  EXPECT_TRUE(ListCheckpoints(late + "/ckpt").empty());
}

TEST_F(BinaryTest, BadRunJsonExits2NamingFileAndField) {
  struct Case {
    std::function<void(json&)> edit;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](json& j) { j["train"].erase("tokens"); }, "field 'train.tokens'"},
      {[](json& j) { j["model"]["n_head"] = 3; }, "field 'model.d_model'"},
      {[](json& j) { j["train"]["tokens"] = 100; }, "field 'train.tokens': budget 100"},
      {[](json& j) { j["model"]["n_layer"] = "two"; }, "field 'model.n_layer'"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    json run = TinyRun();
    cases[i].edit(run);
    const std::string dir = MakeRun("bad" + std::to_string(i), run);
    EXPECT_EQ(RunDir(dir), 2);
    const std::string err = Slurp(dir + "/stderr.log");
    EXPECT_NE(err.find(dir + "/run.json: " + cases[i].field), std::string::npos) << err;
  }
  EXPECT_EQ(RunDir(root_ + "/nonexistent"), 1);
}

TEST_F(BinaryTest, StandaloneOutWritesRunJsonAndRuns) {
  const std::string dir = root_ + "/standalone";
  const pid_t pid =
      Start({"--out",        dir,         "--n-layer",     "1",   "--d-model",       "32",
             "--n-head",     "2",         "--seq-len",     "32",  "--batch-tokens",  "256",
             "--tokens",     "2e3",       "--eval-tokens", "512", "--threads",       "1",
             "--data",       "synthetic", "--schedule",    "wsd", "--warmup-tokens", "5e2",
             "--decay-frac", "0.25",      "--beta1",       "0.8", "--beta2",         "0.99",
             "--eps",        "1e-6"},
            root_ + "/standalone.log");
  ASSERT_EQ(Wait(pid), 0) << Slurp(root_ + "/standalone.log");
  const std::string log = Slurp(root_ + "/standalone.log");
  EXPECT_NE(log.find("tok/s"), std::string::npos);
  EXPECT_NE(log.find("ETA"), std::string::npos);
  const json run = json::parse(Slurp(dir + "/run.json"));
  EXPECT_EQ(run["train"]["tokens"], 2000);
  // Every optimizer and schedule field has its flag.
  EXPECT_EQ(run["train"]["schedule"], "wsd");
  EXPECT_EQ(run["train"]["warmup_tokens"], 500);
  EXPECT_EQ(run["train"]["decay_frac"], 0.25);
  EXPECT_EQ(run["train"]["beta1"], 0.8);
  EXPECT_EQ(run["train"]["beta2"], 0.99);
  EXPECT_EQ(run["train"]["eps"], 1e-6);
  EXPECT_EQ(Status(dir)["state"], "finished");
  EXPECT_FALSE(run["data"].contains("language"));  // markov: the run.json it always had

  // --synthetic-language skills --skill-zipf S reach run.json; a wrong name is refused naming
  // the field.
  const std::string skills = root_ + "/skills";
  ASSERT_EQ(Wait(Start({"--out",
                        skills,
                        "--n-layer",
                        "1",
                        "--d-model",
                        "32",
                        "--n-head",
                        "2",
                        "--seq-len",
                        "32",
                        "--vocab-size",
                        "48",
                        "--batch-tokens",
                        "256",
                        "--tokens",
                        "2e3",
                        "--eval-tokens",
                        "512",
                        "--threads",
                        "1",
                        "--synthetic-language",
                        "skills",
                        "--skill-zipf",
                        "1.25"},
                       root_ + "/skills.log")),
            0)
      << Slurp(root_ + "/skills.log");
  const json sk = json::parse(Slurp(skills + "/run.json"));
  EXPECT_EQ(sk["data"]["language"], "skills");
  EXPECT_EQ(sk["data"]["skill_zipf"], 1.25);
  EXPECT_NE(Slurp(skills + "/info.json").find("data_entropy_nats"), std::string::npos);
  EXPECT_EQ(
      Wait(Start({"--out", root_ + "/bad", "--tokens", "2e3", "--synthetic-language", "zipfian"},
                 root_ + "/bad.log")),
      2);
  EXPECT_NE(Slurp(root_ + "/bad.log").find("data.language"), std::string::npos)
      << Slurp(root_ + "/bad.log");
}

// train.activation_checkpointing changes memory, not numbers: the same run with it finishes
// with the final validation loss of the run without (to 1e-6 relative), and run.json without
// the key means false; a non-boolean value is refused naming the field.
TEST_F(BinaryTest, ActivationCheckpointingKeepsTheLoss) {
  json run = TinyRun();
  run["model"]["n_layer"] = 2;
  const std::string plain = MakeRun("plain", run);
  run["train"]["activation_checkpointing"] = true;
  const std::string ckpt = MakeRun("ckpt", run);
  ASSERT_EQ(RunDir(plain), 0) << Slurp(plain + "/stderr.log");
  ASSERT_EQ(RunDir(ckpt), 0) << Slurp(ckpt + "/stderr.log");
  const double a = Status(plain)["final_val_loss"].get<double>();
  const double b = Status(ckpt)["final_val_loss"].get<double>();
  EXPECT_NEAR(b, a, 1e-6 * a);
  run["train"]["activation_checkpointing"] = "yes";
  const std::string bad = MakeRun("bad", run);
  EXPECT_EQ(RunDir(bad), 2);
  EXPECT_NE(Slurp(bad + "/stderr.log").find("field 'train.activation_checkpointing'"),
            std::string::npos)
      << Slurp(bad + "/stderr.log");
}

// info.json's memory estimate (trainer/memory.h, the figure the sweep scheduler packs runs by)
// against the peak resident set status.json measures, on CPU, over the parts the estimate
// models: RoPE/ALiBi/learned positions, RMSNorm/LayerNorm, SwiGLU/GELU, activation
// checkpointing, a large vocabulary (whose logits glibc maps rather than heaps), MoE layers and
// a data-parallel rank; and its tensor terms alone against the bytes counted in tensors at
// LibTorch's CPU allocator (status.json peak_tensor_bytes), free of glibc's heap holes. The
// runtime baseline is Debian's LibTorch 1.13's; elsewhere (a pip LibTorch 2.x, fused attention)
// the ratios are printed, not checked.
TEST_F(BinaryTest, MemoryEstimateBoundsTheMeasuredPeakResidentSet) {
  {
    std::ofstream train(root_ + "/train.bin", std::ios::binary),
        val(root_ + "/val.bin", std::ios::binary);
    std::vector<uint16_t> ids(1 << 20);
    for (size_t i = 0; i < ids.size(); ++i)
      ids[i] = static_cast<uint16_t>((i * 2654435761u) % 8192);
    train.write(reinterpret_cast<const char*>(ids.data()), ids.size() * 2);
    val.write(reinterpret_cast<const char*>(ids.data()), (1 << 16) * 2);
  }
  struct Case {
    const char* name;
    int n_layer, d_model, n_head, seq_len, micro_batch;
    json extra;  // merged into "model" (and "train" for activation_checkpointing)
    int ranks = 1;
    int passes = 1;  // forward passes per step: above 1 the gradients accumulate
    int ckpt_every = 1000;  // steps between checkpoints (1000: none in the 8 steps)
  };
  const std::vector<Case> cases = {
      {"rope-rmsnorm-swiglu", 2, 256, 4, 256, 16, json::object()},
      {"alibi-layernorm-gelu",
       2,
       128,
       4,
       128,
       16,
       {{"pos", "alibi"}, {"norm", "layernorm"}, {"mlp", "gelu"}}},
      {"learned-positions", 2, 128, 2, 128, 16, {{"pos", "learned"}}},
      {"activation-checkpointing", 4, 256, 4, 256, 16, {{"activation_checkpointing", true}}},
      {"vocab-8192", 2, 128, 2, 128, 64, {{"vocab_size", 8192}}},
      {"moe-8x-top2-shared",
       2,
       128,
       4,
       128,
       16,
       {{"family", "moe"}, {"moe", {{"n_experts", 8}, {"top_k", 2}, {"n_shared_experts", 1}}}}},
      {"two-ranks", 4, 256, 4, 256, 16, json::object(), 2},
      {"accumulating-4-passes", 2, 512, 8, 128, 4, json::object(), 1, 4},
      // 57M parameters, few activations: the training state dominates, and every other step
      // saves a checkpoint, which must add no copy of it.
      {"checkpointing-57m-parameters", 8, 768, 12, 32, 2, json::object(), 1, 1, 2},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
#ifdef ISOFLOP_NO_GLOO
    if (c.ranks > 1) continue;
#endif
    json run = TinyRun();
    const int64_t batch = int64_t{c.passes} * c.micro_batch * c.seq_len;
    run["model"] = {{"n_layer", c.n_layer},
                    {"d_model", c.d_model},
                    {"n_head", c.n_head},
                    {"vocab_size", 512},
                    {"seq_len", c.seq_len}};
    run["data"] = {{"source", "synthetic"}, {"language", "skills"}, {"vocab", 512}};
    // 8 steps: glibc's heap holes grow over the first steps and level off by about the 10th.
    run["train"].update({{"tokens", 8 * batch},
                         {"batch_tokens", batch},
                         {"micro_batch", c.micro_batch},
                         {"eval_tokens", batch},
                         {"threads", 2},
                         {"eval_interval_steps", 1000},
                         {"ckpt_interval_steps", c.ckpt_every}});
    for (const auto& [key, value] : c.extra.items())
      (key == "activation_checkpointing" ? run["train"] : run["model"])[key] = value;
    if (run["model"]["vocab_size"] != 512) {
      run["data"] = {
          {"source", "bin"}, {"train", root_ + "/train.bin"}, {"val", root_ + "/val.bin"}};
    }
    const std::string dir = MakeRun(c.name, run);
    std::vector<std::string> args = {"--run-dir", dir, "--quiet"};
    if (c.ranks > 1) args.insert(args.end(), {"--nproc", std::to_string(c.ranks)});
    ASSERT_EQ(Wait(Start(args, dir + "/stderr.log")), 0) << Slurp(dir + "/stderr.log");
    const json info = json::parse(Slurp(dir + "/info.json")), status = Status(dir);
    ASSERT_TRUE(info.contains("memory_estimate_bytes")) << info.dump();
    ASSERT_EQ(status["peak_memory_of"], "host_rss") << status.dump();
    const double estimate = info["memory_estimate_bytes"].get<double>();
    const double peak = status["peak_memory_bytes"].get<double>();
    if (c.ranks > 1) {
      // The largest of every rank's peak (LibTorch's own resident set alone is over 100 MiB).
      const json& by_rank = status["peak_memory_by_rank"];
      ASSERT_TRUE(by_rank.is_array() && by_rank.size() == size_t(c.ranks)) << status.dump();
      double largest = 0;
      for (const json& v : by_rank) {
        EXPECT_GT(v.get<double>(), 100.0 * (1 << 20)) << status.dump();
        largest = std::max(largest, v.get<double>());
      }
      EXPECT_EQ(peak, largest) << status.dump();
    } else {
      EXPECT_FALSE(status.contains("peak_memory_by_rank")) << status.dump();
    }
    // On CPU the host's peak is the run's peak (the largest rank's under data parallel).
    EXPECT_EQ(status["peak_host_memory_bytes"], status["peak_memory_bytes"]) << status.dump();
    // The estimate's tensor terms against the bytes counted in tensors at their peak.
    ASSERT_TRUE(info.contains("memory_estimate_tensor_bytes")) << info.dump();
    ASSERT_TRUE(status.contains("peak_tensor_bytes")) << status.dump();
    const double tensors = info["memory_estimate_tensor_bytes"].get<double>();
    const double counted = status["peak_tensor_bytes"].get<double>();
    std::printf(
        "  %-28s estimate %6.0f MiB, peak RSS %6.0f MiB: %.2fx; tensors %6.1f MiB, "
        "counted %6.1f MiB: %.2fx\n",
        c.name, estimate / (1 << 20), peak / (1 << 20), estimate / peak, tensors / (1 << 20),
        counted / (1 << 20), tensors / counted);
    if (info["torch_version"].get<std::string>().rfind("1.13", 0) != 0) continue;
    EXPECT_GE(estimate, 0.95 * peak);
    EXPECT_LE(estimate, 1.25 * peak);
    EXPECT_GE(tensors, 0.95 * counted);
    EXPECT_LE(tensors, 1.10 * counted);
  }
}

// `device: cuda`. Where LibTorch sees a GPU, the run trains in bf16 autocast to its exact budget,
// with no host synchronisation in an unlogged step, and its validation loss falls; elsewhere it must fail with exit 1 and say why in status.json.
// ISOFLOP_EXPECT_CUDA=1 (scripts/device-check.sh) turns the second outcome into a failure.
TEST_F(BinaryTest, CudaDeviceTrainsInBf16OrRefusesClearly) {
  json run = TinyRun();
  run["train"]["device"] = "cuda";
  run["train"]["tokens"] = 60000;
  const std::string dir = MakeRun("cuda", run);
  // On the GPU no step between logged ones may read the device (c10's sync debug mode).
  ::setenv("ISOFLOP_SYNC_CHECK", "error", 1);
  const int rc = RunDir(dir);
  ::unsetenv("ISOFLOP_SYNC_CHECK");
  const std::string err = Slurp(dir + "/stderr.log");
  const json st = Status(dir);
  if (rc != 0) {
    EXPECT_EQ(rc, 1) << err;
    EXPECT_EQ(st["state"], "failed");
    EXPECT_EQ(st["reason"], "train.device is 'cuda' but no CUDA device is available") << err;
    const char* expect = std::getenv("ISOFLOP_EXPECT_CUDA");
    if (expect && std::string(expect) == "1") FAIL() << "ISOFLOP_EXPECT_CUDA=1: " << err;
    GTEST_SKIP() << "no CUDA device: checked the refusal only";
  }
  EXPECT_EQ(st["state"], "finished");
  EXPECT_EQ(st["tokens"], 60000);
  const json info = json::parse(Slurp(dir + "/info.json"));
  EXPECT_EQ(info["device"], "cuda");
  EXPECT_EQ(info["precision"], "bf16-autocast");
  // The GPU's peak, and apart from it the host's (LibTorch's CUDA libraries alone are hundreds
  // of MiB resident).
  EXPECT_EQ(st["peak_memory_of"], "cuda_reserved");
  EXPECT_GT(st["peak_memory_bytes"].get<int64_t>(), 0);
  EXPECT_GT(st["peak_host_memory_bytes"].get<int64_t>(), int64_t{100} << 20);
  std::istringstream lines(Slurp(dir + "/metrics.jsonl"));
  std::string line;
  std::vector<double> val;
  while (std::getline(lines, line)) {
    const json m = json::parse(line);
    if (!m["val_loss"].is_null()) val.push_back(m["val_loss"].get<double>());
  }
  ASSERT_GE(val.size(), 2u);
  // On CPU this run ends at 2.92 from 3.05 at step 20; a uniform guess scores ln 32 = 3.47.
  EXPECT_LT(val.back(), val.front()) << "first " << val.front() << " last " << val.back();
  EXPECT_LT(val.back(), std::log(32.0) - 0.35);
  EXPECT_GT(val.back(), info["data_entropy_nats"].get<double>() - 0.1);
}

// An MoE run on the GPU under the same check: with a capacity (the padded dispatch) no step
// between logged ones reads the device, routing stats and selection bias included; dropless,
// each MoE layer's read of its expert sizes is the only one it makes (moe.h, Dispatch).
TEST_F(BinaryTest, CudaMoeStepsReadTheDeviceOnlyForDroplessExpertSizes) {
  for (const double capacity_factor : {1.25, 0.0}) {
    json run = TinyMoeRun();
    run["model"]["moe"]["capacity_factor"] = capacity_factor;
    run["train"]["device"] = "cuda";
    const std::string dir = MakeRun(capacity_factor > 0 ? "capacity" : "dropless", run);
    ::setenv("ISOFLOP_SYNC_CHECK", "error", 1);
    const int rc = RunDir(dir);
    ::unsetenv("ISOFLOP_SYNC_CHECK");
    const std::string err = Slurp(dir + "/stderr.log");
    if (rc != 0 &&
        Status(dir)["reason"] == "train.device is 'cuda' but no CUDA device is available") {
      const char* expect = std::getenv("ISOFLOP_EXPECT_CUDA");
      if (expect && std::string(expect) == "1") FAIL() << "ISOFLOP_EXPECT_CUDA=1: " << err;
      GTEST_SKIP() << "no CUDA device";
    }
    ASSERT_EQ(rc, 0) << "capacity_factor " << capacity_factor << ": " << err;
    EXPECT_EQ(Status(dir)["state"], "finished");
    const std::vector<json> lines = MetricsLines(dir);
    ASSERT_FALSE(lines.empty());
    EXPECT_TRUE(lines.back()["extra"].contains("load_0")) << lines.back().dump();
  }
}

// Exactly one live worker owns a run directory. A second worker started on the folder of a
// live one (held mid-run with SIGSTOP) exits 4 and changes no file of it; the owner, let go,
// checkpoints on SIGTERM, and a later worker resumes and finishes.
TEST_F(BinaryTest, SecondWorkerOnALiveRunDirectoryRefusesAndTouchesNothing) {
  json run = TinyRun();
  run["train"]["tokens"] = 200000;
  const std::string dir = MakeRun("owned", run);
  const pid_t owner = Start({"--run-dir", dir, "--quiet"}, dir + "/stderr.log");
  ASSERT_TRUE(WaitForCheckpoint(dir, 10, 60));
  ::kill(owner, SIGSTOP);
  const std::string metrics = Slurp(dir + "/metrics.jsonl");
  const auto checkpoints = ListCheckpoints(dir + "/ckpt");
  const int rc = Wait(Start({"--run-dir", dir, "--quiet"}, root_ + "/second.log"));
  const std::string err = Slurp(root_ + "/second.log");
  EXPECT_EQ(rc, kExitBusy) << err;
  EXPECT_NE(err.find("another worker owns this run directory"), std::string::npos) << err;
  EXPECT_NE(err.find("held by pid " + std::to_string(owner)), std::string::npos) << err;
  EXPECT_EQ(Slurp(dir + "/metrics.jsonl"), metrics);
  EXPECT_EQ(ListCheckpoints(dir + "/ckpt").size(), checkpoints.size());
  EXPECT_FALSE(fs::exists(dir + "/status.json"));
  ::kill(owner, SIGTERM);
  ::kill(owner, SIGCONT);
  ASSERT_EQ(Wait(owner), 128 + SIGTERM) << Slurp(dir + "/stderr.log");
  EXPECT_EQ(Status(dir)["state"], "preempted");
  ASSERT_EQ(RunDir(dir), 0) << Slurp(dir + "/stderr.log");
  EXPECT_EQ(Status(dir)["tokens"], 200000);
}

// A worker told to stop before it started (the orphan of a killed manager: the parent-death
// SIGTERM arrives while LibTorch loads, and is held because the manager starts workers with
// stop signals blocked) exits 128+15 without creating, truncating or writing any file.
TEST_F(BinaryTest, StopSignalPendingAtStartTouchesNothing) {
  const std::string dir = MakeRun("pending", TinyRun());
  // What an earlier attempt left: two metrics lines and no checkpoint (a resume would
  // truncate them to step 0).
  const std::string old_lines =
      "{\"step\": 2, \"tokens\": 512, \"flops\": 1.0, \"train_loss\": 3.4}\n"
      "{\"step\": 4, \"tokens\": 1024, \"flops\": 2.0, \"train_loss\": 3.3}\n";
  std::ofstream(dir + "/metrics.jsonl") << old_lines;
  const std::string log = root_ + "/pending.log";
  const pid_t pid = ::fork();
  if (pid == 0) {
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    sigprocmask(SIG_BLOCK, &term, nullptr);
    ::raise(SIGTERM);  // pending across exec, as the kernel's parent-death signal would be
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    ::execl(kTrain.c_str(), kTrain.c_str(), "--run-dir", dir.c_str(), "--quiet", nullptr);
    ::_exit(127);
  }
  EXPECT_EQ(Wait(pid), 128 + SIGTERM) << Slurp(log);
  EXPECT_EQ(Slurp(dir + "/metrics.jsonl"), old_lines);
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) files.push_back(e.path().filename());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files, (std::vector<std::string>{"metrics.jsonl", "run.json"}));
}

// A full disk while checkpointing (a 48 KiB tmpfs: run.json and the metrics fit, the first
// checkpoint does not) ends the run as failed with the system's reason in status.json, exit 1,
// and no partial checkpoint left behind; never an abort from LibTorch's writer.
TEST_F(BinaryTest, FullDiskWhileCheckpointingFailsCleanly) {
  const std::string dir = root_ + "/full";
  fs::create_directories(dir);
  if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=48k") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno)
                 << "); CI runs as root and can";
  }
  std::ofstream(dir + "/run.json") << TinyRun().dump();
  const int rc = Wait(Start({"--run-dir", dir, "--quiet"}, root_ + "/full.log"));
  const std::string err = Slurp(root_ + "/full.log");
  const json st = json::parse(Slurp(dir + "/status.json"), nullptr, false);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir + "/ckpt")) left.push_back(e.path().filename());
  ::umount2(dir.c_str(), MNT_DETACH);
  EXPECT_EQ(rc, kExitFailed) << err;
  ASSERT_TRUE(st.is_object()) << err;
  EXPECT_EQ(st["state"], "failed");
  EXPECT_NE(st["reason"].get<std::string>().find("No space left on device"), std::string::npos)
      << st["reason"];
  EXPECT_NE(st["reason"].get<std::string>().find("checkpoint of step 10"), std::string::npos)
      << st["reason"];
  EXPECT_TRUE(left.empty()) << left.front();
}

// An allocation that fails (here under an address-space limit; on a full host the same) ends
// the run as out of memory, exit 5, which the sweep does not retry, with its status written:
// the progress so far and the peaks measured.
TEST_F(BinaryTest, FailedAllocationIsOutOfMemoryExit5) {
  json run = TinyRun();
  run["train"]["micro_batch"] = 65536;     // one micro-batch of 2M tokens: logits alone 256 MiB,
  run["train"]["batch_tokens"] = 2097152;  // the whole step's activations many GiB
  run["train"]["tokens"] = 2 * 2097152;
  const std::string dir = MakeRun("oom", run);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open((root_ + "/oom.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 2);
    const rlimit limit{3ull << 30, 3ull << 30};  // LibTorch itself needs well under 1 GiB
    ::setrlimit(RLIMIT_AS, &limit);
    ::execl(kTrain.c_str(), kTrain.c_str(), "--run-dir", dir.c_str(), "--quiet", nullptr);
    ::_exit(127);
  }
  const int rc = Wait(pid);
  const std::string err = Slurp(root_ + "/oom.log");
  EXPECT_EQ(rc, kExitOutOfMemory) << err;
  const json st = json::parse(Slurp(dir + "/status.json"), nullptr, false);
  ASSERT_TRUE(st.is_object()) << err;
  EXPECT_EQ(st["state"], "failed");
  EXPECT_EQ(st["exit_code"], kExitOutOfMemory);
  const std::string reason = st["reason"];
  EXPECT_EQ(reason.rfind("out of memory: DefaultCPUAllocator: ", 0), 0u) << reason;
  EXPECT_EQ(st["step"], 0);
  EXPECT_EQ(st["tokens"], 0);
  EXPECT_GT(st["peak_tensor_bytes"].get<int64_t>(), 0);
  EXPECT_GT(st["peak_memory_bytes"].get<int64_t>(), 0);
  EXPECT_NE(err.find("out of memory"), std::string::npos) << err;
}

// A line's train_loss is the token-weighted mean of every step's loss since the line before
// (the same run logging each step says what those were), and a checkpoint keeps the open
// interval: the run rewound to its last checkpoint, two steps past its last full line, logs
// the same final line again. (Each step's own loss on the lines fails the first check; an
// interval lost at the checkpoint, the second: the rewound line would average 2 steps, not 4.)
TEST_F(BinaryTest, TrainLossIsTheIntervalMeanAndACheckpointKeepsTheOpenInterval) {
  json every = TinyRun();
  every["train"]["log_interval_steps"] = 1;
  const std::string ref = MakeRun("every", every);
  ASSERT_EQ(RunDir(ref), 0) << Slurp(ref + "/stderr.log");
  json sparse = TinyRun();
  sparse["train"]["ckpt_interval_steps"] = 7;  // 70, 77 kept; lines at 75 and 79
  const std::string dir = MakeRun("sparse", sparse);
  ASSERT_EQ(RunDir(dir), 0) << Slurp(dir + "/stderr.log");

  std::map<int64_t, std::pair<double, int64_t>> step_loss;  // step -> (loss, tokens)
  int64_t prev_tokens = 0;
  for (const json& m : MetricsLines(ref)) {
    const int64_t tokens = m["tokens"];
    step_loss[m["step"]] = {m["train_loss"].get<double>(), tokens - prev_tokens};
    prev_tokens = tokens;
  }
  ASSERT_EQ(step_loss.size(), 79u);
  const std::vector<json> lines = MetricsLines(dir);
  ASSERT_GE(lines.size(), 16u);
  int64_t from = 1;
  double spread = 0;  // how far a line's own step is from its interval's mean, at most
  for (const json& m : lines) {
    const int64_t step = m["step"];
    double sum = 0, tokens = 0;
    for (int64_t s = from; s <= step; ++s) {
      sum += step_loss[s].first * step_loss[s].second;
      tokens += step_loss[s].second;
    }
    const double mean = sum / tokens, got = m["train_loss"];
    EXPECT_NEAR(got, mean, 1e-12 * mean)
        << "line of step " << step << " (steps " << from << "-" << step << ")";
    spread = std::max(spread, std::abs(step_loss[step].first - mean));
    from = step + 1;
  }
  EXPECT_GT(spread, 1e-4);  // the means are not the steps' own losses

  // Rewind to step 77: the status goes, the trainer resumes from that checkpoint, truncates the
  // lines after it and logs step 79 again.
  const auto checkpoints = ListCheckpoints(dir + "/ckpt");
  ASSERT_FALSE(checkpoints.empty());
  ASSERT_EQ(checkpoints.back().step, 77);
  const json last = lines.back();
  ASSERT_EQ(last["step"], 79);
  fs::remove(dir + "/status.json");
  ASSERT_EQ(RunDir(dir), 0) << Slurp(dir + "/stderr.log");
  const std::vector<json> again = MetricsLines(dir);
  ASSERT_EQ(again.size(), lines.size());
  EXPECT_EQ(again.back()["step"], 79);
  EXPECT_DOUBLE_EQ(again.back()["train_loss"].get<double>(), last["train_loss"].get<double>());
  EXPECT_DOUBLE_EQ(again.back()["val_loss"].get<double>(), last["val_loss"].get<double>());
}

// A damaged newest checkpoint (weights cut short, or a state.json that is not its folder's) is
// passed over for the one before it, with one line saying so, and the run ends exactly as the
// undamaged one. A folder none of whose checkpoints loads (here: another model's) fails in one
// line naming each, with no C++ backtrace, and trains nothing.
TEST_F(BinaryTest, ADamagedCheckpointResumesFromTheOneBefore) {
  const std::string ref = MakeRun("ref", TinyRun());
  ASSERT_EQ(RunDir(ref), 0) << Slurp(ref + "/stderr.log");
  const std::vector<json> ref_lines = MetricsLines(ref);
  const auto ref_ckpt = ListCheckpoints(ref + "/ckpt");
  ASSERT_GE(ref_ckpt.size(), 2u);
  for (const std::string damage : {"weights", "state"}) {
    const std::string dir = MakeRun(damage, TinyRun());
    ASSERT_EQ(RunDir(dir), 0) << Slurp(dir + "/stderr.log");
    const auto ckpt = ListCheckpoints(dir + "/ckpt");
    ASSERT_EQ(ckpt.size(), ref_ckpt.size());
    const std::string newest = ckpt.back().path;
    std::string expect;
    if (damage == "weights") {
      std::ofstream(newest + "/model.pt", std::ios::trunc) << "cut";
      expect = newest + ": cannot load the checkpoint: ";
    } else {
      json state = json::parse(Slurp(newest + "/state.json"));
      state["step"] = 99999;
      std::ofstream(newest + "/state.json", std::ios::trunc) << state.dump();
      expect = newest + "/state.json: step 99999 and tokens ";
    }
    fs::remove(dir + "/status.json");
    ASSERT_EQ(RunDir(dir), 0) << Slurp(dir + "/stderr.log");
    const std::string log = Slurp(dir + "/stderr.log");
    EXPECT_NE(log.find("isoflop-train: " + expect), std::string::npos) << log;
    EXPECT_NE(log.find("; trying the one before it\n"), std::string::npos) << log;
    EXPECT_EQ(log.find("frame #"), std::string::npos) << log;
    const std::vector<json> lines = MetricsLines(dir);
    ASSERT_EQ(lines.size(), ref_lines.size()) << damage;
    for (size_t i = 0; i < lines.size(); ++i) {
      EXPECT_EQ(lines[i]["step"], ref_lines[i]["step"]) << damage;
      EXPECT_EQ(lines[i]["train_loss"], ref_lines[i]["train_loss"]) << damage << " line " << i;
      EXPECT_EQ(lines[i]["val_loss"], ref_lines[i]["val_loss"]) << damage << " line " << i;
    }
    EXPECT_EQ(Status(dir)["final_val_loss"], Status(ref)["final_val_loss"]) << damage;
    // Training past the damaged step wrote that checkpoint again, whole.
    EXPECT_EQ(Slurp(newest + "/model.pt"), Slurp(ref_ckpt.back().path + "/model.pt")) << damage;
  }
  json other = TinyRun();
  other["model"]["d_model"] = 16;
  const std::string dir = MakeRun("other_model", other);
  fs::copy(ref + "/ckpt", dir + "/ckpt", fs::copy_options::recursive);
  EXPECT_EQ(RunDir(dir), 1);
  const std::string reason = Status(dir)["reason"];
  EXPECT_EQ(reason.rfind("no checkpoint of " + dir + " loads (", 0), 0u) << reason;
  EXPECT_NE(reason.find("/model.pt: parameter "), std::string::npos) << reason;
  EXPECT_NE(reason.find(": a checkpoint of another model"), std::string::npos) << reason;
  EXPECT_EQ(reason.find("frame #"), std::string::npos) << reason;
  EXPECT_EQ(Slurp(dir + "/metrics.jsonl"), "");
}

// A metrics.jsonl damaged after the lines were written: on resume a line that is not a
// metrics object is dropped, named, and the good lines after it are kept (they used to go with
// it, up to the checkpoint); a file that lost the lines before the checkpoint is said to have a
// gap. Neither stops the run.
TEST_F(BinaryTest, ResumeDropsADamagedMetricsLineAndNamesLostOnes) {
  const std::string ref = MakeRun("ref", TinyRun());
  ASSERT_EQ(RunDir(ref), 0) << Slurp(ref + "/stderr.log");
  const std::vector<json> ref_lines = MetricsLines(ref);
  ASSERT_GE(ref_lines.size(), 3u);

  const std::string dir = MakeRun("garbage", TinyRun());
  ASSERT_EQ(RunDir(dir), 0) << Slurp(dir + "/stderr.log");
  std::string text = Slurp(dir + "/metrics.jsonl");
  const size_t first_end = text.find('\n') + 1;
  text.insert(first_end, "{\"step\": \"x\"}\n");
  std::ofstream(dir + "/metrics.jsonl", std::ios::trunc) << text;
  fs::remove(dir + "/status.json");
  ASSERT_EQ(RunDir(dir), 0) << Slurp(dir + "/stderr.log");
  std::string log = Slurp(dir + "/stderr.log");
  EXPECT_NE(log.find(dir + "/metrics.jsonl: line 2 (byte " + std::to_string(first_end) +
                     "): expected a JSON object with an integer \"step\"; line dropped\n"),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("the lines it lacks are lost"), std::string::npos) << log;
  const std::vector<json> lines = MetricsLines(dir);
  ASSERT_EQ(lines.size(), ref_lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(lines[i]["step"], ref_lines[i]["step"]) << "line " << i;
    EXPECT_EQ(lines[i]["train_loss"], ref_lines[i]["train_loss"]) << "line " << i;
  }

  fs::remove(dir + "/metrics.jsonl");
  fs::remove(dir + "/status.json");
  ASSERT_EQ(RunDir(dir), 0) << Slurp(dir + "/stderr.log");
  log = Slurp(dir + "/stderr.log");
  const int64_t ckpt = ListCheckpoints(dir + "/ckpt").back().step;
  EXPECT_NE(log.find(dir + "/metrics.jsonl has no line, but the run had logged up to step "),
            std::string::npos)
      << log;
  EXPECT_NE(log.find(" when it wrote its checkpoint at step " + std::to_string(ckpt) +
                     ": the lines it lacks are lost"),
            std::string::npos)
      << log;
  EXPECT_LT(MetricsLines(dir).size(), ref_lines.size());
  EXPECT_EQ(Status(dir)["state"], "finished");
}

// SIGKILL mid-run, then resume: the final validation loss is the uninterrupted run's (1e-6
// relative). The selection bias is part of that state: the same run without it ends elsewhere,
// so a resume that lost the bias could not match. Every metrics line carries the router
// metrics; the FLOPs count active parameters.
TEST_F(BinaryTest, MoeResumeAfterSigkillIsExactBiasIncluded) {
  const std::string ref = MakeRun("ref", TinyMoeRun());
  ASSERT_EQ(RunDir(ref), 0) << Slurp(ref + "/stderr.log");
  const double ref_loss = Status(ref)["final_val_loss"];
  const std::string no_bias = MakeRun("no_bias", TinyMoeRun(0.0));
  ASSERT_EQ(RunDir(no_bias), 0) << Slurp(no_bias + "/stderr.log");
  EXPECT_GT(std::abs(Status(no_bias)["final_val_loss"].get<double>() - ref_loss), 1e-4 * ref_loss);

  const std::string dir = MakeRun("killed", TinyMoeRun());
  const pid_t pid = Start({"--run-dir", dir, "--quiet"}, dir + "/stderr.log");
  ASSERT_TRUE(WaitForCheckpoint(dir, 20, 60));
  ::kill(pid, SIGKILL);
  ASSERT_EQ(Wait(pid), 128 + SIGKILL);
  ASSERT_EQ(RunDir(dir), 0) << Slurp(dir + "/stderr.log");
  EXPECT_NEAR(Status(dir)["final_val_loss"].get<double>(), ref_loss, 1e-6 * ref_loss);

  const json info = json::parse(Slurp(dir + "/info.json"));
  const int64_t n_active = info["n_active"], n_total = info["n_total"];
  EXPECT_LT(n_active, n_total);
  EXPECT_DOUBLE_EQ(info["flops_per_token_6n"].get<double>(), 6.0 * n_active);
  const std::vector<json> lines = MetricsLines(dir);
  ASSERT_FALSE(lines.empty());
  for (const json& m : lines) {
    const json& x = m["extra"];
    double load = 0;
    for (int e = 0; e < 4; ++e) load += x["load_" + std::to_string(e)].get<double>();
    EXPECT_NEAR(load, 1.0, 1e-9) << m.dump();
    EXPECT_GE(x["load_max_over_mean"].get<double>(), 1.0);
    EXPECT_EQ(x["dropped_fraction"].get<double>(), 0.0);
    EXPECT_GT(x["aux_loss"].get<double>(), 0.0);
    EXPECT_GT(x["z_loss"].get<double>(), 0.0);
    EXPECT_GT(x["router_entropy"].get<double>(), 0.0);
  }
  EXPECT_EQ(lines.back()["step"], 79);
}

// Bad MoE settings in run.json or in flags: exit 2 naming the field, before any file is made.
TEST_F(BinaryTest, BadMoeConfigExits2NamingTheField) {
  const std::vector<std::pair<std::function<void(json&)>, std::string>> cases = {
      {[](json& j) { j["model"]["moe"]["top_k"] = 5; },
       "field 'model.moe.top_k': must be <= n_experts (4), got 5"},
      {[](json& j) { j["model"]["moe"]["granularity"] = 3; }, "field 'model.moe.granularity'"},
      {[](json& j) { j["model"]["moe"]["z_loss_weight"] = -1; }, "field 'model.moe.z_loss_weight'"},
      {[](json& j) { j["model"]["family"] = "dense"; }, "field 'model.moe': only with"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    json run = TinyMoeRun();
    cases[i].first(run);
    const std::string dir = MakeRun("bad" + std::to_string(i), run);
    EXPECT_EQ(RunDir(dir), kExitBadConfig);
    const std::string err = Slurp(dir + "/stderr.log");
    EXPECT_NE(err.find(dir + "/run.json: " + cases[i].second), std::string::npos) << err;
    EXPECT_FALSE(fs::exists(dir + "/status.json"));
  }
  const std::vector<std::pair<std::vector<std::string>, std::string>> flags = {
      {{"--n-experts", "4", "--top-k", "5"}, "field 'model.moe.top_k'"},
      {{"--n-experts", "-2"}, "field 'model.moe.n_experts'"},
      {{"--n-experts", "4", "--router", "relu"}, "field 'model.moe.router'"},
      {{"--top-k", "2"}, "--top-k needs --n-experts"},
      // Data flags the source does not read were ignored: a run trained on synthetic data.
      {{"--data-path", "corpus.txt"}, "--data-path: --data synthetic reads no files"},
      {{"--data", "text", "--data-path", "a.txt", "--val-path", "b.txt"},
       "--val-path: only --data bin and llmc read a validation file"},
      {{"--data", "bin", "--data-path", "a.bin", "--data-path", "b.bin", "--val-path", "v.bin"},
       "--data-path: --data bin reads one train.bin and one val.bin"},
      {{"--data", "bin", "--data-path", "a.bin"}, "--val-path: --data bin needs its val.bin"},
      {{"--data", "llmc", "--val-path", "v.bin"},
       "--data-path: --data llmc needs its train shards"},
  };
  for (size_t i = 0; i < flags.size(); ++i) {
    const std::string out = root_ + "/flags" + std::to_string(i);
    std::vector<std::string> args = {"--out", out, "--tokens", "2e3", "--batch-tokens", "256"};
    args.insert(args.end(), flags[i].first.begin(), flags[i].first.end());
    const std::string log = root_ + "/flags" + std::to_string(i) + ".log";
    EXPECT_EQ(Wait(Start(args, log)), kExitBadConfig) << Slurp(log);
    EXPECT_NE(Slurp(log).find(flags[i].second), std::string::npos) << Slurp(log);
    EXPECT_FALSE(fs::exists(out));
  }
}

// A non-finite number is refused, not turned into the default: JSON writes NaN and inf as null,
// which run.json used to read as "not given" (--lr nan trained at the default 0.003). A pool of
// more threads than any machine has (100,000 took gigabytes and minutes, deaf to SIGTERM) is
// refused too.
TEST_F(BinaryTest, NonFiniteNumbersAndThreadPoolsBeyondAnyMachineExit2) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> flags = {
      {{"--lr", "nan"},
       "field 'train.lr': expected a finite number, got null (what JSON makes of NaN or inf)"},
      {{"--weight-decay", "inf"}, "field 'train.weight_decay': expected a finite number"},
      {{"--tokens", "nan"}, "field 'train.tokens': expected an integer, got null"},
      {{"--threads", "100000"}, "field 'train.threads': must be 0 (all cores) to 1024"},
  };
  for (size_t i = 0; i < flags.size(); ++i) {
    const std::string out = root_ + "/flags" + std::to_string(i);
    std::vector<std::string> args = {"--out", out, "--batch-tokens", "256"};
    if (flags[i].first[0] != "--tokens") args.insert(args.end(), {"--tokens", "2e3"});
    args.insert(args.end(), flags[i].first.begin(), flags[i].first.end());
    const std::string log = out + ".log";
    EXPECT_EQ(Wait(Start(args, log)), kExitBadConfig) << Slurp(log);
    EXPECT_NE(Slurp(log).find(flags[i].second), std::string::npos) << Slurp(log);
    EXPECT_FALSE(fs::exists(out));
  }
  json run = TinyRun();
  run["train"]["lr"] = nullptr;  // a run.json written from a NaN
  const std::string dir = MakeRun("null_lr", run);
  EXPECT_EQ(RunDir(dir), kExitBadConfig);
  EXPECT_NE(Slurp(dir + "/stderr.log").find("field 'train.lr': expected a finite number"),
            std::string::npos)
      << Slurp(dir + "/stderr.log");
}

// The standalone MoE flags land in run.json's model.moe and the run finishes.
TEST_F(BinaryTest, StandaloneMoeFlagsWriteModelMoe) {
  const std::string dir = root_ + "/moe";
  const std::string log = root_ + "/moe.log";
  const pid_t pid = Start({"--out",
                           dir,
                           "--n-layer",
                           "3",
                           "--d-model",
                           "32",
                           "--n-head",
                           "2",
                           "--seq-len",
                           "32",
                           "--batch-tokens",
                           "256",
                           "--tokens",
                           "2e3",
                           "--eval-tokens",
                           "512",
                           "--threads",
                           "1",
                           "--n-experts",
                           "8",
                           "--top-k",
                           "1",
                           "--granularity",
                           "2",
                           "--n-shared-experts",
                           "1",
                           "--router",
                           "sigmoid",
                           "--aux-loss-weight",
                           "0.02",
                           "--z-loss-weight",
                           "0",
                           "--bias-update-rate",
                           "0.001",
                           "--capacity-factor",
                           "1.25",
                           "--moe-every",
                           "2",
                           "--n-dense-layers",
                           "1",
                           "--quiet"},
                          log);
  ASSERT_EQ(Wait(pid), 0) << Slurp(log);
  const json run = json::parse(Slurp(dir + "/run.json"));
  EXPECT_EQ(run["model"]["family"], "moe");
  EXPECT_EQ(run["model"]["moe"],
            json::parse(R"({"n_experts": 8, "top_k": 1, "granularity": 2, "expert_d_ff": 0,
                            "n_shared_experts": 1, "router": "sigmoid", "aux_loss_weight": 0.02,
                            "z_loss_weight": 0.0, "bias_update_rate": 0.001,
                            "capacity_factor": 1.25, "moe_every": 2, "n_dense_layers": 1})"));
  EXPECT_EQ(Status(dir)["state"], "finished");
  const json last = MetricsLines(dir).back();
  EXPECT_TRUE(last["extra"].contains("load_7")) << last.dump();
  EXPECT_DOUBLE_EQ(last["extra"]["z_loss"].get<double>(), 0.0);
}

// "tokens": 1e400 is no double: a clean bad-config exit naming the file, not an abort.
TEST_F(BinaryTest, NumberOutOfRangeInRunJsonIsABadConfig) {
  const std::string dir = root_ + "/huge";
  fs::create_directories(dir);
  std::string text = TinyRun().dump();
  const std::string from = "\"tokens\":20000";
  ASSERT_NE(text.find(from), std::string::npos) << text;
  text.replace(text.find(from), from.size(), "\"tokens\":1e400");
  std::ofstream(dir + "/run.json") << text;
  EXPECT_EQ(RunDir(dir), kExitBadConfig);
  const std::string err = Slurp(dir + "/stderr.log");
  EXPECT_NE(err.find(dir + "/run.json: not valid JSON"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir + "/status.json"));
}

// ---- data parallel (--nproc, Gloo on CPU) ---------------------------------------------------

namespace dp {

// step -> (train_loss, val_loss or NaN) of a run's metrics.jsonl.
std::map<int64_t, std::pair<double, double>> Curve(const std::string& dir) {
  std::map<int64_t, std::pair<double, double>> out;
  std::istringstream lines(Slurp(dir + "/metrics.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    const json j = json::parse(line);
    EXPECT_EQ(out.count(j["step"].get<int64_t>()), 0u) << "duplicate step " << j["step"];
    out[j["step"]] = {j["train_loss"].get<double>(),
                      j["val_loss"].is_number() ? j["val_loss"].get<double>() : NAN};
  }
  return out;
}

// The two runs logged the same steps with losses within 1e-5 relative.
void ExpectSameCurve(const std::string& a, const std::string& b) {
  const auto ca = Curve(a), cb = Curve(b);
  ASSERT_EQ(ca.size(), cb.size());
  for (const auto& [step, v] : ca) {
    ASSERT_TRUE(cb.count(step)) << "step " << step;
    EXPECT_NEAR(cb.at(step).first, v.first, 1e-5 * v.first) << "train loss, step " << step;
    if (std::isfinite(v.second)) {
      EXPECT_NEAR(cb.at(step).second, v.second, 1e-5 * v.second) << "val loss, step " << step;
    }
  }
}

// The pid of the child of `parent` whose environment has RANK=`rank`, or 0.
pid_t RankPid(pid_t parent, int rank) {
  std::error_code ec;
  for (const auto& p : fs::directory_iterator("/proc", ec)) {
    const std::string name = p.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = Slurp(p.path() / "stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid != parent) continue;
    std::string env = Slurp(p.path() / "environ");
    std::replace(env.begin(), env.end(), '\0', '\n');
    if (env.find("\nRANK=" + std::to_string(rank) + "\n") != std::string::npos ||
        env.rfind("RANK=" + std::to_string(rank) + "\n", 0) == 0)
      return std::stoi(name);
  }
  return 0;
}

}  // namespace dp

TEST_F(BinaryTest, TwoRankGlooRunReproducesTheOneRankRun) {
  ISOFLOP_REQUIRE_GLOO();
  const std::string one = MakeRun("one", TinyRun());
  ASSERT_EQ(RunDir(one), 0) << Slurp(one + "/stderr.log");
  const std::string two = MakeRun("two", TinyRun());
  ASSERT_EQ(Wait(Start({"--run-dir", two, "--quiet", "--nproc", "2"}, two + "/stderr.log")), 0)
      << Slurp(two + "/stderr.log");
  dp::ExpectSameCurve(one, two);
  const json a = Status(one), b = Status(two);
  EXPECT_EQ(b["state"], "finished");
  EXPECT_EQ(b["tokens"], a["tokens"]);
  EXPECT_EQ(b["step"], a["step"]);
  EXPECT_NEAR(b["final_val_loss"].get<double>(), a["final_val_loss"].get<double>(),
              1e-5 * a["final_val_loss"].get<double>());
  const auto ckpts = ListCheckpoints(two + "/ckpt");
  ASSERT_FALSE(ckpts.empty());
  EXPECT_EQ(json::parse(Slurp(ckpts.back().path + "/state.json"))["world_size"], 2);
}

// An MoE run over two ranks: every rank routes its own tokens, yet the selection bias (updated
// from the whole step's loads, summed over the ranks) and the logged loads are the one-rank
// run's, so the losses agree at every logged step. Each rank's slice is one of the one-rank
// run's micro-batches, so the router losses are the same too.
TEST_F(BinaryTest, TwoRankMoeRunWithLossFreeBiasReproducesTheOneRankRun) {
  ISOFLOP_REQUIRE_GLOO();
  json run = TinyMoeRun(0.01);
  run["train"]["tokens"] = 8192;
  const std::string one = MakeRun("one", run);
  ASSERT_EQ(RunDir(one), 0) << Slurp(one + "/stderr.log");
  const std::string two = MakeRun("two", run);
  ASSERT_EQ(Wait(Start({"--run-dir", two, "--quiet", "--nproc", "2"}, two + "/stderr.log")), 0)
      << Slurp(two + "/stderr.log");
  dp::ExpectSameCurve(one, two);
  // The loads in the metrics are the whole step's, not rank 0's share.
  const auto last_line = [](const std::string& dir) {
    std::istringstream lines(Slurp(dir + "/metrics.jsonl"));
    std::string line, last;
    while (std::getline(lines, line)) last = line;
    return json::parse(last);
  };
  const json a = last_line(one), b = last_line(two);
  for (const char* key : {"load_0", "load_1", "load_2", "load_3", "aux_loss", "router_entropy"}) {
    ASSERT_TRUE(a["extra"].contains(key)) << key;
    EXPECT_NEAR(b["extra"][key].get<double>(), a["extra"][key].get<double>(), 1e-6) << key;
  }
}

// torchrun (Debian's python3-torch) as the launcher: its agent serves the rendezvous store
// (TORCHELASTIC_USE_AGENT_STORE), the ranks join it as clients, and the run is the --nproc
// run's, step for step; a one-rank run of the same cell agrees to 1e-5.
TEST_F(BinaryTest, TorchrunLaunchReproducesTheNprocRun) {
  ISOFLOP_REQUIRE_GLOO();
  const std::string torchrun = "/usr/bin/torchrun";
  ASSERT_TRUE(fs::exists(torchrun)) << "python3-torch provides " << torchrun
                                    << " (scripts/install-deps.sh installs it)";
  const std::string one = MakeRun("one", TinyRun());
  ASSERT_EQ(RunDir(one), 0) << Slurp(one + "/stderr.log");
  const std::string nproc = MakeRun("nproc", TinyRun());
  ASSERT_EQ(Wait(Start({"--run-dir", nproc, "--quiet", "--nproc", "2"}, nproc + "/stderr.log")), 0)
      << Slurp(nproc + "/stderr.log");
  const std::string tr = MakeRun("torchrun", TinyRun());
  // --redirects/--tee 1: Debian's torchrun 1.13 on Python 3.11 cannot parse the default 0.
  const int rc = Wait(StartProgram(torchrun,
                                   {"--no_python", "--standalone", "--nproc_per_node", "2",
                                    "--redirects", "1", "--tee", "1", kTrain, "--run-dir", tr,
                                    "--quiet"},
                                   tr + "/torchrun.log"));
  ASSERT_EQ(rc, 0) << Slurp(tr + "/torchrun.log");
  const json st = Status(tr);
  EXPECT_EQ(st["state"], "finished");
  EXPECT_EQ(st["tokens"], Status(nproc)["tokens"]);
  dp::ExpectSameCurve(nproc, tr);
  dp::ExpectSameCurve(one, tr);
  const auto ckpts = ListCheckpoints(tr + "/ckpt");
  ASSERT_FALSE(ckpts.empty());
  EXPECT_EQ(json::parse(Slurp(ckpts.back().path + "/state.json"))["world_size"], 2);
}

TEST_F(BinaryTest, KilledRankTakesTheRunDownAndItResumesExactlyWithTwoRanks) {
  ISOFLOP_REQUIRE_GLOO();
  json run = TinyRun();
  run["train"]["tokens"] = 200000;  // 782 steps: the kill always lands mid-run
  const std::string ref = MakeRun("ref", run);
  ASSERT_EQ(RunDir(ref), 0);
  const std::string dir = MakeRun("dp", run);
  const pid_t launcher = Start({"--run-dir", dir, "--quiet", "--nproc", "2"}, dir + "/stderr.log");
  ASSERT_TRUE(WaitForCheckpoint(dir, 10, 120)) << Slurp(dir + "/stderr.log");
  const pid_t rank1 = dp::RankPid(launcher, 1);
  ASSERT_GT(rank1, 0);
  ::kill(rank1, SIGKILL);
  EXPECT_EQ(Wait(launcher), kExitFailed) << Slurp(dir + "/stderr.log");
  const json st = Status(dir);
  EXPECT_EQ(st["state"], "failed");
  EXPECT_NE(st["reason"].get<std::string>().find("rank 1 of 2 was killed by signal 9"),
            std::string::npos)
      << st.dump();
  ASSERT_EQ(Wait(Start({"--run-dir", dir, "--quiet", "--nproc", "2"}, dir + "/stderr2.log")), 0)
      << Slurp(dir + "/stderr2.log");
  dp::ExpectSameCurve(ref, dir);
}

// A rank that dies at exit, after rank 0 wrote the run's "finished" (a process group's teardown
// crashing, as NCCL's and Gloo's destructors can): every step and the verdict are in, so the
// launcher keeps the verdict and exits 0 rather than failing a finished run, whose retry would
// retrain its tail. Deterministic: the hook kills rank 1 only once status.json exists.
TEST_F(BinaryTest, RankKilledAtExitAfterTheRunFinishedLeavesItFinished) {
  ISOFLOP_REQUIRE_GLOO();
  const std::string dir = MakeRun("dp", TinyRun());
  ::setenv("ISOFLOP_TEST_KILL_AT_EXIT", "1", 1);
  const int rc = Wait(Start({"--run-dir", dir, "--quiet", "--nproc", "2"}, dir + "/stderr.log"));
  ::unsetenv("ISOFLOP_TEST_KILL_AT_EXIT");
  const std::string err = Slurp(dir + "/stderr.log");
  EXPECT_EQ(rc, 0) << err;
  EXPECT_EQ(Status(dir)["state"], "finished") << err;
  EXPECT_NE(err.find("rank 1 of 2 was killed by signal 9 (Killed) after the run finished"),
            std::string::npos)
      << err;
}

TEST_F(BinaryTest, SigtermOfTheLauncherStopsEveryRankAtOneCheckpointAndResumesExactly) {
  ISOFLOP_REQUIRE_GLOO();
  json run = TinyRun();
  run["train"]["tokens"] = 200000;
  const std::string ref = MakeRun("ref", run);
  ASSERT_EQ(RunDir(ref), 0);
  const std::string dir = MakeRun("dp", run);
  const pid_t launcher = Start({"--run-dir", dir, "--quiet", "--nproc", "2"}, dir + "/stderr.log");
  ASSERT_TRUE(WaitForCheckpoint(dir, 10, 120));
  ::kill(launcher, SIGTERM);
  ASSERT_EQ(Wait(launcher), 128 + SIGTERM) << Slurp(dir + "/stderr.log");
  const json st = Status(dir);
  EXPECT_EQ(st["state"], "preempted");
  const auto list = ListCheckpoints(dir + "/ckpt");
  ASSERT_FALSE(list.empty());
  EXPECT_EQ(list.back().step, st["step"].get<int64_t>());
  ASSERT_EQ(Wait(Start({"--run-dir", dir, "--quiet", "--nproc", "2"}, dir + "/stderr2.log")), 0)
      << Slurp(dir + "/stderr2.log");
  dp::ExpectSameCurve(ref, dir);
  EXPECT_NEAR(Status(dir)["final_val_loss"].get<double>(),
              Status(ref)["final_val_loss"].get<double>(),
              1e-5 * Status(ref)["final_val_loss"].get<double>());
}

// Ranks that resume from different checkpoints (a shared filesystem showing one rank a stale
// folder) would train different weights under one run: the run stops before its first step,
// naming both steps, and changes neither folder's checkpoints. Deterministic: rank 1 is given
// a copy of the folder taken at an earlier checkpoint.
TEST_F(BinaryTest, RanksResumedFromDifferentCheckpointsStopNamingBoth) {
  ISOFLOP_REQUIRE_GLOO();
  json run = TinyRun();
  run["train"]["tokens"] = 200000;
  const std::string a = MakeRun("a", run);
  const auto stop_at = [&](int64_t step, const std::string& log) {
    const pid_t launcher = Start({"--run-dir", a, "--quiet", "--nproc", "2"}, log);
    ASSERT_TRUE(WaitForCheckpoint(a, step, 120)) << Slurp(log);
    ::kill(launcher, SIGTERM);
    ASSERT_EQ(Wait(launcher), 128 + SIGTERM) << Slurp(log);
  };
  ASSERT_NO_FATAL_FAILURE(stop_at(10, a + "/stderr1.log"));
  const int64_t early = ListCheckpoints(a + "/ckpt").back().step;
  const std::string b = root_ + "/b";
  fs::copy(a, b, fs::copy_options::recursive);
  ASSERT_NO_FATAL_FAILURE(stop_at(early + 10, a + "/stderr2.log"));
  const int64_t late = ListCheckpoints(a + "/ckpt").back().step;
  ASSERT_GT(late, early);
  ::setenv("WORLD_SIZE", "2", 1);
  ::setenv("MASTER_ADDR", "127.0.0.1", 1);
  ::setenv("MASTER_PORT", std::to_string(FreeLoopbackPort()).c_str(), 1);
  ::setenv("RANK", "0", 1);
  const pid_t rank0 = Start({"--run-dir", a, "--quiet"}, a + "/rank0.log");
  ::setenv("RANK", "1", 1);
  const pid_t rank1 = Start({"--run-dir", b, "--quiet"}, b + "/rank1.log");
  for (const char* k : {"WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "RANK"}) ::unsetenv(k);
  EXPECT_EQ(Wait(rank0), kExitFailed) << Slurp(a + "/rank0.log");
  EXPECT_EQ(Wait(rank1), kExitFailed) << Slurp(b + "/rank1.log");
  const json st = Status(a);
  EXPECT_EQ(st["state"], "failed");
  EXPECT_NE(st["reason"].get<std::string>().find(
                "the ranks resumed from different checkpoints: rank 0 from step " +
                std::to_string(late) + ", rank 1 from step " + std::to_string(early)),
            std::string::npos)
      << st.dump();
  EXPECT_EQ(ListCheckpoints(a + "/ckpt").back().step, late);
  EXPECT_EQ(ListCheckpoints(b + "/ckpt").back().step, early);
}

}  // namespace
}  // namespace isoflop::trainer
