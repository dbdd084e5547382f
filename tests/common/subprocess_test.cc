// Child processes: argv reaches the program unchanged (no shell), output is captured or
// written to a file, blocked signals stay pending across exec, a failed exec is exit 127, and
// the child dies with its parent.
#include "isoflop/common/subprocess.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace isoflop {
namespace {

namespace fs = std::filesystem;

TEST(SubprocessTest, ArgvIsPassedVerbatimAndOutputCaptured) {
  const std::string hostile = "$(touch /tmp/isoflop_pwned); 'quoted' \"x\" `y`";
  Result<ChildResult> r = RunChild({"/bin/echo", hostile});
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_EQ(r->output, hostile + "\n");
  EXPECT_FALSE(fs::exists("/tmp/isoflop_pwned"));
}

TEST(SubprocessTest, ExitCodesEnvironmentFolderAndFailedExec) {
  SpawnOptions o;
  o.env = std::vector<std::string>{"ONLY=this"};
  o.cwd = "/";
  Result<ChildResult> r = RunChild({"/bin/sh", "-c", "echo $ONLY $HOME; pwd; exit 7"}, o);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 7);
  EXPECT_EQ(r->output, "this\n/\n");
  Result<ChildResult> missing = RunChild({"/no/such/program"});
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->exit_code, 127);
  SpawnOptions search;
  search.search_path = true;
  Result<ChildResult> found = RunChild({"true"}, search);
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->exit_code, 0);
}

TEST(SubprocessTest, OutputFileIsAppendedOrTruncated) {
  const std::string log =
      (fs::temp_directory_path() / ("isoflop_sub_" + std::to_string(getpid()) + ".log")).string();
  SpawnOptions o;
  o.output_path = log;
  o.append_output = false;
  ASSERT_TRUE(RunChild({"/bin/sh", "-c", "echo one; echo two >&2"}, o).ok());
  o.append_output = true;
  ASSERT_TRUE(RunChild({"/bin/echo", "three"}, o).ok());
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "one\ntwo\nthree\n");
  fs::remove(log);
}

// A signal sent while the child starts stays pending (blocked) instead of killing it: the
// child sees it in its pending set.
TEST(SubprocessTest, BlockedSignalsStayPendingAcrossExec) {
  SpawnOptions o;
  o.blocked_signals = {SIGTERM};
  o.die_with_parent = false;
  // SigBlk of the exec'd program: SIGTERM (15) is bit 14, 0x4000.
  Result<ChildResult> r = RunChild({"/bin/grep", "SigBlk", "/proc/self/status"}, o);
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->output.find("4000"), std::string::npos) << r->output;
}

TEST(SubprocessTest, ChildDiesWithItsParent) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t middle = fork();
  if (middle == 0) {
    // The middle process starts a long sleeper, reports its pid, then dies at once.
    Result<pid_t> pid = Spawn({"/bin/sleep", "30"});
    const pid_t p = pid.ok() ? *pid : 0;
    (void)!write(fds[1], &p, sizeof p);
    _exit(0);
  }
  pid_t sleeper = 0;
  ASSERT_EQ(read(fds[0], &sleeper, sizeof sleeper), ssize_t(sizeof sleeper));
  ASSERT_GT(sleeper, 0);
  waitpid(middle, nullptr, 0);
  bool gone = false;
  for (int i = 0; i < 400 && !gone; ++i) {
    std::ifstream stat("/proc/" + std::to_string(sleeper) + "/stat");
    std::string text;
    std::getline(stat, text);
    gone = !stat || text.find(") Z") != std::string::npos;
    if (!gone) usleep(10000);
  }
  EXPECT_TRUE(gone) << "the child outlived its parent";
}

}  // namespace
}  // namespace isoflop
