// Tests of the local scheduler's placement: GPU runs packed by memory (best fit, never over a
// device's memory, several small runs on one device), runs that fit nowhere refused with an
// out-of-memory reason, CPU slots never exceeded, largest runs first, and retries. No GPU is
// needed: the devices are described to the scheduler, and the worker is a small shell script
// that records the CUDA_VISIBLE_DEVICES it was given and how long it ran. (The real
// isoflop-train is exercised by sweep_e2e_test.)
#include "isoflop/sweep/local_executor.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "isoflop/sweep/manager.h"

namespace isoflop::sweep {
namespace {

namespace fs = std::filesystem;
constexpr int64_t kGiB = int64_t{1} << 30;

struct Span {
  std::string devices;
  double start = 0, end = 0;
};

class ExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("isoflop_exec_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // The stand-in worker: records its devices and wall-clock span, runs ~0.3 s, and exits
    // with the code in RUN_DIR/exit (0 when absent).
    worker_ = (dir_ / "worker.sh").string();
    std::ofstream(worker_) << "#!/bin/sh\n"
                              "d=\"$2\"\n"
                              "echo \"$CUDA_VISIBLE_DEVICES\" > \"$d/devices\"\n"
                              "echo \"$4\" > \"$d/nproc\"\n"
                              "date +%s.%N > \"$d/start\"\n"
                              "sleep 0.3\n"
                              "date +%s.%N > \"$d/end\"\n"
                              "if [ -f \"$d/exit\" ]; then exit $(cat \"$d/exit\"); fi\n";
    chmod(worker_.c_str(), 0755);
  }
  void TearDown() override { fs::remove_all(dir_); }

  Job MakeJob(const std::string& key, int64_t memory, double cost) {
    Job j;
    j.key = key;
    j.run_dir = (dir_ / key).string();
    fs::create_directories(j.run_dir);
    j.memory_bytes = memory;
    j.cost = cost;
    return j;
  }

  Span Read(const Job& j) {
    auto slurp = [](const fs::path& p) {
      std::ifstream in(p);
      std::string s;
      std::getline(in, s);
      return s;
    };
    Span s;
    s.devices = slurp(fs::path(j.run_dir) / "devices");
    s.start = std::stod(slurp(fs::path(j.run_dir) / "start"));
    s.end = std::stod(slurp(fs::path(j.run_dir) / "end"));
    return s;
  }

  fs::path dir_;
  std::string worker_;
};

TEST_F(ExecutorTest, PacksGpuRunsByMemoryAndRefusesWhatFitsNowhere) {
  Resources res;
  res.gpu = true;
  res.devices = {{0, 10 * kGiB}, {3, 4 * kGiB}};  // device indices as nvidia-smi numbers them
  std::vector<Job> jobs = {MakeJob("big", 9 * kGiB, 50), MakeJob("mid", 4 * kGiB, 40),
                           MakeJob("s1", 3 * kGiB, 30),  MakeJob("s2", 3 * kGiB, 20),
                           MakeJob("s3", 3 * kGiB, 10),  MakeJob("huge", 11 * kGiB, 99)};
  std::map<std::string, Job> by_key;
  for (const auto& j : jobs) by_key[j.key] = j;
  std::map<std::string, ExitInfo> exits;
  std::vector<std::string> start_order;
  JobCallbacks cb;
  cb.on_start = [&](const Job& j, const Placement& pl, const LaunchedJob&) {
    start_order.push_back(j.key);
    EXPECT_EQ(pl.device, "cuda");
  };
  cb.on_exit = [&](const Job& j, const ExitInfo& e) {
    exits[j.key] = e;
    return false;
  };
  LocalExecutor ex(worker_, res);
  bool interrupted = false;
  ASSERT_TRUE(RunJobs(ex, jobs, cb, 0, 0.02, &interrupted).ok());
  EXPECT_FALSE(interrupted);

  // 11 GiB fits on no device: refused with the reason, never launched.
  ASSERT_TRUE(exits.count("huge"));
  EXPECT_NE(exits["huge"].refused.find("out of memory"), std::string::npos);
  EXPECT_FALSE(fs::exists(fs::path(by_key["huge"].run_dir) / "start"));
  // The largest run starts first.
  ASSERT_FALSE(start_order.empty());
  EXPECT_EQ(start_order.front(), "big");

  // At every moment, the memory of the runs sharing a device stays within it.
  std::map<std::string, int64_t> capacity = {{"0", 10 * kGiB}, {"3", 4 * kGiB}};
  std::vector<std::pair<Span, int64_t>> spans;
  for (const char* key : {"big", "mid", "s1", "s2", "s3"}) {
    const Job& j = by_key[key];
    EXPECT_EQ(exits[key].exit_code, 0) << key;
    Span s = Read(j);
    ASSERT_TRUE(capacity.count(s.devices)) << key << " got CUDA_VISIBLE_DEVICES=" << s.devices;
    spans.push_back({s, j.memory_bytes});
  }
  for (const auto& [probe, unused] : spans) {
    const double t = (probe.start + probe.end) / 2;
    std::map<std::string, int64_t> used;
    for (const auto& [s, mem] : spans) {
      if (s.start <= t && t <= s.end) used[s.devices] += mem;
    }
    for (const auto& [dev, mem] : used) EXPECT_LE(mem, capacity[dev]) << "device " << dev;
  }
  // 'big' (9 GiB) can only go to device 0; while it runs, 'mid' (4 GiB) fits only device 3.
  EXPECT_EQ(Read(by_key["big"]).devices, "0");
  EXPECT_EQ(Read(by_key["mid"]).devices, "3");
}

TEST_F(ExecutorTest, SeveralSmallRunsShareOneGpu) {
  Resources res;
  res.gpu = true;
  res.devices = {{0, 8 * kGiB}};
  std::vector<Job> jobs = {MakeJob("a", 2 * kGiB, 3), MakeJob("b", 2 * kGiB, 2),
                           MakeJob("c", 2 * kGiB, 1)};
  int max_concurrent = 0, running = 0;
  JobCallbacks cb;
  cb.on_start = [&](const Job&, const Placement&, const LaunchedJob&) {
    max_concurrent = std::max(max_concurrent, ++running);
  };
  cb.on_exit = [&](const Job&, const ExitInfo&) {
    --running;
    return false;
  };
  LocalExecutor ex(worker_, res);
  bool interrupted = false;
  ASSERT_TRUE(RunJobs(ex, jobs, cb, 0, 0.02, &interrupted).ok());
  EXPECT_EQ(max_concurrent, 3);  // 3 x 2 GiB fit in 8 GiB at once
  for (const auto& j : jobs) EXPECT_EQ(Read(j).devices, "0");
}

// A data-parallel GPU run (ranks_per_run 2, from executor.gpus_per_run) takes two devices, one
// per rank, each holding a whole replica: the estimate is per GPU. Runs never overlap beyond a
// device's memory, a run whose replica fits no GPU is refused, and so is one wanting more GPUs
// than the host has.
TEST_F(ExecutorTest, MultiGpuRunsTakeOneDevicePerRank) {
  Resources res;
  res.gpu = true;
  res.ranks_per_run = 2;
  res.devices = {{0, 16 * kGiB}, {1, 16 * kGiB}, {2, 16 * kGiB}, {5, 8 * kGiB}};
  std::vector<Job> jobs = {MakeJob("a", 12 * kGiB, 40), MakeJob("b", 12 * kGiB, 30),
                           MakeJob("c", 6 * kGiB, 20), MakeJob("d", 6 * kGiB, 10),
                           MakeJob("huge", 20 * kGiB, 99)};
  std::map<std::string, ExitInfo> exits;
  JobCallbacks cb;
  cb.on_start = [&](const Job&, const Placement& pl, const LaunchedJob&) {
    EXPECT_EQ(pl.ranks, 2);
    EXPECT_EQ(pl.device, "cuda");
  };
  cb.on_exit = [&](const Job& j, const ExitInfo& e) {
    exits[j.key] = e;
    return false;
  };
  LocalExecutor ex(worker_, res);
  EXPECT_EQ(ex.Parallelism(), 2);  // 4 GPUs / 2 per run
  bool interrupted = false;
  ASSERT_TRUE(RunJobs(ex, jobs, cb, 0, 0.02, &interrupted).ok());
  ASSERT_TRUE(exits.count("huge"));
  EXPECT_NE(exits["huge"].refused.find("out of memory"), std::string::npos) << exits["huge"].refused;
  EXPECT_FALSE(fs::exists(fs::path(dir_ / "huge") / "start"));

  std::map<std::string, int64_t> capacity = {
      {"0", 16 * kGiB}, {"1", 16 * kGiB}, {"2", 16 * kGiB}, {"5", 8 * kGiB}};
  std::vector<std::pair<Span, int64_t>> spans;
  for (const char* key : {"a", "b", "c", "d"}) {
    EXPECT_EQ(exits[key].exit_code, 0) << key;
    const Job j = MakeJob(key, 0, 0);  // same run_dir
    Span s = Read(j);
    std::ifstream nproc(fs::path(j.run_dir) / "nproc");
    std::string n;
    std::getline(nproc, n);
    EXPECT_EQ(n, "2") << key << ": one process started with --nproc 2";
    // Two distinct devices, each one the host has.
    const auto comma = s.devices.find(',');
    ASSERT_NE(comma, std::string::npos) << key << " got CUDA_VISIBLE_DEVICES=" << s.devices;
    const std::string d0 = s.devices.substr(0, comma), d1 = s.devices.substr(comma + 1);
    EXPECT_NE(d0, d1);
    EXPECT_TRUE(capacity.count(d0) && capacity.count(d1)) << s.devices;
    spans.push_back({s, key[0] <= 'b' ? 12 * kGiB : 6 * kGiB});
  }
  for (const auto& [probe, unused] : spans) {
    const double t = (probe.start + probe.end) / 2;
    std::map<std::string, int64_t> used;
    for (const auto& [s, mem] : spans) {
      if (!(s.start <= t && t <= s.end)) continue;
      std::stringstream ss(s.devices);
      for (std::string dev; std::getline(ss, dev, ',');) used[dev] += mem;
    }
    for (const auto& [dev, mem] : used) EXPECT_LE(mem, capacity[dev]) << "device " << dev;
  }

  // Three ranks per run on a two-GPU host: refused, naming what it needs.
  Resources small;
  small.gpu = true;
  small.ranks_per_run = 3;
  small.devices = {{0, 16 * kGiB}, {1, 16 * kGiB}};
  LocalExecutor ex3(worker_, small);
  std::map<std::string, ExitInfo> exits3;
  JobCallbacks cb3;
  cb3.on_exit = [&](const Job& j, const ExitInfo& e) {
    exits3[j.key] = e;
    return false;
  };
  std::vector<Job> one = {MakeJob("three", 1 * kGiB, 1)};
  ASSERT_TRUE(RunJobs(ex3, one, cb3, 0, 0.02, &interrupted).ok());
  EXPECT_NE(exits3["three"].refused.find("needs 3 GPUs for its 3 ranks, this host has 2"),
            std::string::npos)
      << exits3["three"].refused;
}

TEST_F(ExecutorTest, CpuSlotsAreNeverExceededAndFailuresCanRetry) {
  Resources res;
  res.gpu = false;
  res.cpu_slots = 2;
  res.threads_per_run = 1;
  std::vector<Job> jobs;
  for (int i = 0; i < 5; ++i) jobs.push_back(MakeJob("c" + std::to_string(i), kGiB, 5 - i));
  std::ofstream(fs::path(jobs[4].run_dir) / "exit") << "1";  // fails once, then is retried
  int running = 0, max_concurrent = 0, attempts_c4 = 0;
  JobCallbacks cb;
  cb.before_launch = [&](const Job& j, const Placement& pl) {
    EXPECT_EQ(pl.device, "cpu");
    EXPECT_EQ(pl.threads, 1);
    if (j.key == "c4") ++attempts_c4;
    return Status::Ok();
  };
  cb.on_start = [&](const Job&, const Placement&, const LaunchedJob&) {
    max_concurrent = std::max(max_concurrent, ++running);
  };
  cb.on_exit = [&](const Job& j, const ExitInfo& e) {
    --running;
    if (j.key == "c4" && e.exit_code == 1) {
      fs::remove(fs::path(j.run_dir) / "exit");
      return true;  // retry
    }
    EXPECT_EQ(e.exit_code, 0) << j.key;
    return false;
  };
  LocalExecutor ex(worker_, res);
  bool interrupted = false;
  ASSERT_TRUE(RunJobs(ex, jobs, cb, 0, 0.02, &interrupted).ok());
  EXPECT_EQ(max_concurrent, 2);
  EXPECT_EQ(attempts_c4, 2);
  for (const auto& j : jobs) EXPECT_EQ(Read(j).devices, "") << "a CPU run sees no GPU";
}

// CPU runs side by side share the host's memory: with 1 GiB, runs of 400 MiB go two at a time
// though four slots are free, and a two-rank run of 600 MiB (1.2 GiB) is refused.
TEST_F(ExecutorTest, CpuRunsArePackedByTheHostsMemory) {
  Resources res;
  res.gpu = false;
  res.cpu_slots = 4;
  res.threads_per_run = 1;
  res.host_memory_bytes = kGiB;
  std::vector<Job> jobs;
  for (int i = 0; i < 4; ++i) jobs.push_back(MakeJob("m" + std::to_string(i), 400 << 20, 1));
  int running = 0, max_concurrent = 0;
  JobCallbacks cb;
  cb.on_start = [&](const Job&, const Placement&, const LaunchedJob&) {
    max_concurrent = std::max(max_concurrent, ++running);
  };
  cb.on_exit = [&](const Job&, const ExitInfo& e) {
    --running;
    EXPECT_EQ(e.exit_code, 0);
    return false;
  };
  LocalExecutor ex(worker_, res);
  bool interrupted = false;
  ASSERT_TRUE(RunJobs(ex, jobs, cb, 0, 0.02, &interrupted).ok());
  EXPECT_EQ(max_concurrent, 2);
  EXPECT_EQ(ex.Refusal(MakeJob("alone", 600 << 20, 1)), "");
  res.ranks_per_run = 2;
  res.cpu_slots = 4;
  LocalExecutor two(worker_, res);
  EXPECT_EQ(two.Refusal(MakeJob("ranks", 600 << 20, 1)),
            "out of memory: needs about 1.2 GiB (2 ranks), this host has 1.0 GiB");
}

// Device detection reads `nvidia-smi --query-gpu=index,memory.total --format=csv,noheader,
// nounits`; a script standing in for it on PATH prints what a 3-GPU host prints.
TEST_F(ExecutorTest, DetectsGpusThroughNvidiaSmiAndHonoursRestrictions) {
  const fs::path bin = dir_ / "bin";
  fs::create_directories(bin);
  const std::string smi = (bin / "nvidia-smi").string();
  std::ofstream(smi) << "#!/bin/sh\nprintf '0, 81559\\n1, 81559\\n2, 40960\\n'\n";
  chmod(smi.c_str(), 0755);
  const std::string old_path = std::getenv("PATH") ? std::getenv("PATH") : "";
  const char* old_cvd_c = std::getenv("CUDA_VISIBLE_DEVICES");
  const std::string old_cvd = old_cvd_c ? old_cvd_c : "";
  setenv("PATH", (bin.string() + ":" + old_path).c_str(), 1);
  unsetenv("CUDA_VISIBLE_DEVICES");

  ExecutorConfig e;
  auto all = DetectResources(e);
  ASSERT_TRUE(all.ok()) << all.status().message();
  EXPECT_TRUE(all->gpu);
  ASSERT_EQ(all->devices.size(), 3u);
  EXPECT_EQ(all->devices[2].index, 2);
  EXPECT_EQ(all->devices[2].memory_bytes, int64_t{40960} * 1024 * 1024);

  setenv("CUDA_VISIBLE_DEVICES", "2,0", 1);  // the manager may hand out only these
  auto visible = DetectResources(e);
  ASSERT_TRUE(visible.ok());
  ASSERT_EQ(visible->devices.size(), 2u);
  EXPECT_EQ(visible->devices[0].index, 2);
  EXPECT_EQ(visible->devices[1].index, 0);

  e.gpus = {1};  // hidden by CUDA_VISIBLE_DEVICES: a clear error
  auto hidden = DetectResources(e);
  ASSERT_FALSE(hidden.ok());
  EXPECT_NE(hidden.status().message().find("executor.gpus: GPU 1 is not visible"),
            std::string::npos)
      << hidden.status().message();
  unsetenv("CUDA_VISIBLE_DEVICES");
  auto one = DetectResources(e);
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->devices.size(), 1u);
  EXPECT_EQ(one->devices[0].index, 1);

  ExecutorConfig cpu;
  cpu.device = "cpu";  // GPUs present but not wanted
  auto c = DetectResources(cpu);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->gpu);

  // No GPU at all: device cuda is an error, auto falls back to CPU slots.
  std::ofstream(smi) << "#!/bin/sh\nexit 9\n";
  ExecutorConfig cuda;
  cuda.device = "cuda";
  EXPECT_FALSE(DetectResources(cuda).ok());
  auto fallback = DetectResources(ExecutorConfig{});
  ASSERT_TRUE(fallback.ok());
  EXPECT_FALSE(fallback->gpu);
  EXPECT_GE(fallback->cpu_slots, 1);

  setenv("PATH", old_path.c_str(), 1);
  if (old_cvd_c) setenv("CUDA_VISIBLE_DEVICES", old_cvd.c_str(), 1);
}

// The manager's failure classes come from the exit code (trainer/run_protocol.h), not from
// the wording of a reason; a stop the manager asked for is a preemption, any other death a crash.
TEST(ClassifyExitTest, ExitCodesAndSignals) {
  const struct {
    int code, signal;
    const char* reason;
    bool stop_requested;
    const char* expect;
  } cases[] = {
      {0, 0, "", false, "finished"},
      {2, 0, "field 'train.tokens': ...", false, "bad config"},
      {3, 0, "loss is nan at step 4", false, "diverged"},
      {4, 0, "", false, "busy"},
      {5, 0, "out of memory: CUDA", false, "out of memory"},
      {1, 0, "out of memory: old trainer", false, "out of memory"},
      {1, 0, "data file does not exist", false, "failed"},
      {1, 0, "reason mentions out of memory later", false, "failed"},
      {143, 0, "signal 15", true, "preempted"},
      {143, 0, "signal 15", false, "interrupted"},
      {-1, 9, "", true, "preempted"},
      {-1, 11, "", false, "crashed"},
      {127, 0, "", false, "crashed"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(ClassifyExit(c.code, c.signal, c.reason, c.stop_requested), c.expect)
        << c.code << " " << c.signal << " " << c.reason;
  }
}

}  // namespace
}  // namespace isoflop::sweep
