// The SLURM executor's pieces that need no cluster: shell and sbatch quoting (checked by a real
// bash), sacct/squeue output parsing with array ranges, the batch script, memory sizes, and the
// sweep file's executor.kind: slurm section with its errors. The executor against real daemons
// is tests/sweep/slurm_e2e_test.cc.
#include "isoflop/sweep/slurm_executor.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "isoflop/common/subprocess.h"
#include "isoflop/sweep/config.h"

namespace isoflop::sweep {
namespace {

// What bash makes of `word` as one argument: printf %s of it.
std::string BashEcho(const std::string& word) {
  Result<ChildResult> r = RunChild({"/bin/bash", "-c", "printf %s " + word});
  EXPECT_TRUE(r.ok());
  return r.ok() ? r->output : "";
}

TEST(SlurmQuotingTest, ShellQuoteSurvivesBashLiterally) {
  const std::string marker = testing::TempDir() + "/shellquote-ran";
  std::filesystem::remove(marker);
  for (const std::string& s :
       {std::string("plain"), std::string("/a/b-c_d.e"), std::string("a b"), std::string("it's"),
        std::string("\"dq\""), std::string("$(touch ") + marker + ")",
        std::string("`touch ") + marker + "`", std::string("$HOME ${x} \\ ; & | > <"),
        std::string("'"), std::string("''"), std::string(""), std::string("*?[a]~")}) {
    EXPECT_EQ(BashEcho(ShellQuote(s)), s) << ShellQuote(s);
  }
  EXPECT_FALSE(std::filesystem::exists(marker));
  EXPECT_EQ(ShellQuote("/abs/path"), "/abs/path");
  EXPECT_EQ(ShellQuote("it's"), "'it'\\''s'");
}

TEST(SlurmQuotingTest, SbatchQuoteEscapesQuotesAndBackslashes) {
  EXPECT_EQ(SbatchQuote("gpu"), "\"gpu\"");
  EXPECT_EQ(SbatchQuote("a \"b\" \\c"), "\"a \\\"b\\\" \\\\c\"");
}

TEST(SlurmParseTest, ExpandsArrayRanges) {
  EXPECT_EQ(ExpandArrayId("12_3"), std::vector<std::string>({"12_3"}));
  EXPECT_EQ(ExpandArrayId("12"), std::vector<std::string>({"12"}));
  EXPECT_EQ(ExpandArrayId("12_[4-6%2]"), std::vector<std::string>({"12_4", "12_5", "12_6"}));
  EXPECT_EQ(ExpandArrayId("12_[1,3-4]"), std::vector<std::string>({"12_1", "12_3", "12_4"}));
}

TEST(SlurmParseTest, SacctSkipsStepsAndReadsExitCodes) {
  const std::string out =
      "40_0|COMPLETED|0:0|node1\n"
      "40_0.batch|COMPLETED|0:0|node1\n"
      "40_0.0|COMPLETED|0:0|node1\n"
      "40_1|FAILED|140:0|node2\n"
      "40_2|CANCELLED by 1000|0:15|node2\n"
      "40_[3-4%2]|PENDING|0:0|None assigned\n";
  const auto states = ParseSacct(out);
  ASSERT_EQ(states.size(), 5u);
  EXPECT_EQ(states[0].id, "40_0");
  EXPECT_EQ(states[0].state, "COMPLETED");
  EXPECT_EQ(states[1].exit_code, 140);
  EXPECT_EQ(states[1].node, "node2");
  EXPECT_EQ(states[2].state, "CANCELLED by 1000");
  EXPECT_EQ(states[2].signal, 15);
  EXPECT_EQ(states[3].id, "40_3");
  EXPECT_EQ(states[4].id, "40_4");
  EXPECT_EQ(states[4].state, "PENDING");
  EXPECT_EQ(states[4].node, "");
}

TEST(SlurmParseTest, SqueueReadsWaitStatuses) {
  // As `squeue -O JobArrayID:|,State:|,Reason:|,NodeList:|,exit_code:|` prints them.
  const std::string out =
      "1_0|COMPLETED|None|vm|0|\n"
      "1_1|FAILED|NonZeroExitCode|vm|35840|\n"
      "1_2|CANCELLED|None|vm|15|\n"
      "4_[1-2%1]|PENDING|JobArrayTaskLimit||0|\n";
  const auto s = ParseSqueue(out);
  ASSERT_EQ(s.size(), 5u);
  EXPECT_EQ(s[0].exit_code, 0);
  EXPECT_EQ(s[1].exit_code, 140);  // 35840 = 140 << 8
  EXPECT_EQ(s[2].signal, 15);
  EXPECT_EQ(s[3].id, "4_1");
  EXPECT_EQ(s[3].reason, "JobArrayTaskLimit");
  EXPECT_EQ(s[3].exit_code, -1);  // not final: no exit code yet
  EXPECT_EQ(s[4].id, "4_2");
  EXPECT_TRUE(SlurmStateIsFinal("CANCELLED by 0"));
  EXPECT_TRUE(SlurmStateIsFinal("OUT_OF_MEMORY"));
  EXPECT_FALSE(SlurmStateIsFinal("REQUEUED"));
  EXPECT_FALSE(SlurmStateIsFinal("PENDING"));
}

TEST(SlurmParseTest, MemorySizes) {
  EXPECT_EQ(SlurmMemoryBytes("16G"), int64_t(16) << 30);
  EXPECT_EQ(SlurmMemoryBytes("500M"), int64_t(500) << 20);
  EXPECT_EQ(SlurmMemoryBytes("4096"), int64_t(4096) << 20);
  EXPECT_EQ(SlurmMemoryBytes("2T"), int64_t(2) << 40);
  EXPECT_FALSE(SlurmMemoryBytes("lots").has_value());
  EXPECT_FALSE(SlurmMemoryBytes("").has_value());
  EXPECT_FALSE(SlurmMemoryBytes("auto").has_value());
}

// mem: auto asks 1.25x the estimate per rank, rounded up to 256 MiB (at least 256), per CPU.
TEST(SlurmParseTest, AutoMemoryIsAQuarterAboveTheEstimatePerCpu) {
  EXPECT_EQ(AutoMemoryPerCpuMiB(180LL << 20, 1), 256);  // 225 MiB -> 256
  EXPECT_EQ(AutoMemoryPerCpuMiB(0, 1), 256);
  EXPECT_EQ(AutoMemoryPerCpuMiB(1LL << 30, 1), 1280);        // exactly 1.25 GiB
  EXPECT_EQ(AutoMemoryPerCpuMiB((1LL << 30) + 1, 1), 1536);  // just over: the next 256
  EXPECT_EQ(AutoMemoryPerCpuMiB(1LL << 30, 4), 320);         // 1280 over 4 CPUs
  EXPECT_EQ(AutoMemoryPerCpuMiB(1LL << 30, 3), 427);         // 1280 / 3, rounded up
  EXPECT_EQ(AutoMemoryPerCpuMiB(40LL << 30, 8), 6400);
}

const char* kSweep = R"(name: t
data:
  source: synthetic
model:
  vocab_size: 32
  seq_len: 32
  pos: alibi
  ladder:
    - {n_layer: 1, d_model: 16, n_head: 2}
budgets: [1e9]
train:
  batch_tokens: 256
executor:
  kind: slurm
)";

Result<SweepConfig> Parse(const std::string& executor_lines) {
  return ParseSweepConfig(std::string(kSweep) + executor_lines, "s.yaml", {}, "/work");
}

TEST(SlurmConfigTest, ReadsEveryKey) {
  Result<SweepConfig> c = Parse(
      "  partition: gpu\n  account: lab\n  qos: high\n  time: \"2:00:00\"\n"
      "  constraint: h100\n  gpus_per_run: 2\n  cpus_per_run: 16\n  mem: 64G\n"
      "  max_parallel: 8\n  max_array_size: 500\n  sbatch_args: [--exclusive]\n"
      "  setup: [\"module load cuda\", [source, /opt/venv/bin/activate]]\n"
      "  poll_seconds: 30\n  signal_grace: 300\n  run_root: /shared/runs\n");
  ASSERT_TRUE(c.ok()) << c.status().message();
  const ExecutorConfig& e = c->executor;
  EXPECT_EQ(e.kind, "slurm");
  EXPECT_EQ(e.device, "cuda");
  EXPECT_EQ(e.slurm.partition, "gpu");
  EXPECT_EQ(e.slurm.time, "2:00:00");
  EXPECT_EQ(e.slurm.gpus_per_run, 2);
  EXPECT_EQ(e.ranks_per_run, 2);  // one rank per GPU
  EXPECT_EQ(e.cpus_per_run, 16);
  ArraySpec spec;
  spec.name = "isoflop-t";
  spec.script_dir = "/shared/t/slurm";
  spec.tag = "x";
  spec.run_dirs = {"/shared/t/a"};
  spec.threads = 16;
  spec.gpu = true;
  const std::string script = BatchScript(spec, e, "/opt/isoflop-train");
  EXPECT_NE(script.find("#SBATCH --ntasks=\"2\"\n"), std::string::npos) << script;
  EXPECT_NE(script.find("#SBATCH --gpus-per-task=\"1\"\n"), std::string::npos) << script;
  EXPECT_EQ(e.slurm.max_array_size, 500);
  ASSERT_EQ(e.slurm.setup.size(), 2u);
  EXPECT_EQ(e.slurm.setup[0].shell, "module load cuda");
  EXPECT_EQ(e.slurm.setup[1].argv, std::vector<std::string>({"source", "/opt/venv/bin/activate"}));
  EXPECT_EQ(e.slurm.signal_grace_s, 300);
  EXPECT_EQ(c->output_dir, "/shared/runs/t");
}

TEST(SlurmConfigTest, ErrorsNameTheLineAndField) {
  struct Case {
    std::string lines, message;
  };
  const std::vector<Case> cases = {
      {"  time: soon\n",
       "s.yaml:15:9: executor.time: expected a SLURM time limit (minutes, M:S, H:M:S, D-H, "
       "D-H:M or D-H:M:S), got 'soon'"},
      {"  time: \"1\"\n  signal_grace: 90\n",
       "s.yaml:16:17: executor.signal_grace: the checkpoint signal comes 90 s before the time "
       "limit, which is 60 s: lower signal_grace or raise time"},
      {"  run_root: runs\n",
       "s.yaml:15:13: executor.run_root: expected an absolute folder that every compute node "
       "sees (a shared filesystem), got 'runs'"},
      {"  setup: module load cuda\n", "s.yaml:15:10: executor.setup: expected a list"},
      {"  cpus_per_run: auto\n", "s.yaml:15:17: executor.cpus_per_run: auto is for the local"},
      {"  gpus: [0]\n", "s.yaml:15:9: executor.gpus: SLURM chooses the GPUs"},
      {"  partition: \"a\\nb\"\n", "s.yaml:15:14: executor.partition: must be one line"},
      {"  mem: lots\n",
       "s.yaml:15:8: executor.mem: expected a whole number with an optional unit K, M, G or T, "
       "as sbatch --mem takes (e.g. 64G), or auto, got 'lots'"},
      {"  mem: auto\n  gpus_per_run: 1\n",
       "s.yaml:15:8: executor.mem: auto asks for a CPU run's memory estimate; a GPU run's "
       "estimate is of its GPU memory"},
  };
  for (const Case& c : cases) {
    Result<SweepConfig> r = Parse(c.lines);
    ASSERT_FALSE(r.ok()) << c.lines;
    EXPECT_EQ(r.status().message().substr(0, c.message.size()), c.message) << r.status().message();
  }
  // gpus_per_run means a rank per GPU, for either executor.
  const std::string local_sweep =
      std::string(kSweep).replace(std::string(kSweep).find("kind: slurm"), 11, "kind: local");
  for (const Case& c : std::vector<Case>{
           {"  gpus_per_run: 2\n  ranks_per_run: 3\n",
            "s.yaml:16:18: executor.ranks_per_run: a GPU run has one rank per GPU: with "
            "gpus_per_run 2 leave ranks_per_run out or make it 2"},
           {"  gpus_per_run: 2\n  device: cpu\n",
            "s.yaml:16:11: executor.device: device cpu with gpus_per_run 2"}}) {
    Result<SweepConfig> r = ParseSweepConfig(local_sweep + c.lines, "s.yaml", {}, "/work");
    ASSERT_FALSE(r.ok()) << c.lines;
    EXPECT_EQ(r.status().message().substr(0, c.message.size()), c.message) << r.status().message();
  }
  Result<SweepConfig> two = ParseSweepConfig(local_sweep + "  gpus_per_run: 2\n", "s.yaml", {}, "/work");
  ASSERT_TRUE(two.ok()) << two.status().message();
  EXPECT_EQ(two->executor.ranks_per_run, 2);
  EXPECT_EQ(two->executor.device, "cuda");
  // Slurm keys under the local executor are a mistake worth naming.
  Result<SweepConfig> local = ParseSweepConfig(
      std::string(kSweep).replace(std::string(kSweep).find("kind: slurm"), 11, "kind: local") +
          "  partition: gpu\n",
      "s.yaml", {}, "/work");
  ASSERT_FALSE(local.ok());
  EXPECT_EQ(local.status().message(),
            "s.yaml:15:3: executor.partition: only the slurm executor reads this key; add "
            "`kind: slurm` to executor");
}

TEST(SlurmScriptTest, BatchScriptQuotesEveryValueAndParses) {
  Result<SweepConfig> c = Parse(
      "  partition: \"we ird\\\"p\"\n  time: \"10\"\n  setup: [[echo, \"$(rm -rf /)\"], \"true\"]\n"
      "  sbatch_args: [\"--comment=a b\"]\n");
  ASSERT_TRUE(c.ok()) << c.status().message();
  ArraySpec spec;
  spec.name = "isoflop-t";
  spec.script_dir = "/shared/it's here/t/slurm";
  spec.tag = "x";
  spec.run_dirs = {"/shared/it's here/t/a", "/shared/it's here/t/b"};
  spec.threads = 4;
  spec.max_parallel = 3;
  const std::string s = BatchScript(spec, c->executor, "/opt/isoflop $(x)/isoflop-train");
  for (const char* line :
       {"#SBATCH --array=\"0-1%3\"\n", "#SBATCH --requeue\n", "#SBATCH --open-mode=append\n",
        "#SBATCH --signal=\"USR2@120\"\n", "#SBATCH --cpus-per-task=\"4\"\n",
        "#SBATCH --partition=\"we ird\\\"p\"\n", "#SBATCH --time=\"10\"\n",
        "#SBATCH \"--comment=a b\"\n", "cells='/shared/it'\\''s here/t/slurm/array-x.cells'\n",
        "train='/opt/isoflop $(x)/isoflop-train'\n", "echo '$(rm -rf /)'\ntrue\n",
        "exec='/opt/isoflop $(x)/isoflop-exec'\n",
        "srun --ntasks=1 --cpus-per-task=4 \"$exec\" \"$train\" --run-dir \"$run_dir\"\n",
        "#SBATCH --ntasks=\"1\"\n"}) {
    EXPECT_NE(s.find(line), std::string::npos) << line << "\n---\n" << s;
  }
  EXPECT_EQ(s.find("--mem"), std::string::npos) << s;
  // mem: auto: the array's own request per CPU, never --mem; a size: --mem as given.
  Result<SweepConfig> automatic = Parse("  mem: auto\n");
  ASSERT_TRUE(automatic.ok()) << automatic.status().message();
  spec.mem_per_cpu_mib = 320;
  const std::string a = BatchScript(spec, automatic->executor, "/bin/isoflop-train");
  EXPECT_NE(a.find("#SBATCH --mem-per-cpu=\"320M\"\n"), std::string::npos) << a;
  EXPECT_EQ(a.find("--mem="), std::string::npos) << a;
  Result<SweepConfig> sized = Parse("  mem: 64G\n");
  ASSERT_TRUE(sized.ok()) << sized.status().message();
  spec.mem_per_cpu_mib = 0;
  const std::string m = BatchScript(spec, sized->executor, "/bin/isoflop-train");
  EXPECT_NE(m.find("#SBATCH --mem=\"64G\"\n"), std::string::npos) << m;
  const std::string path = testing::TempDir() + "/batch.sh";
  std::ofstream(path) << s;
  Result<ChildResult> syntax = RunChild({"/bin/bash", "-n", path});
  ASSERT_TRUE(syntax.ok());
  EXPECT_EQ(syntax->exit_code, 0) << syntax->output;
}

}  // namespace
}  // namespace isoflop::sweep
