// Atomic writes leave the old file or the new one and never a temporary; a folder lock is
// exclusive between processes and dies with its holder; a process identity survives pid reuse.
#include "isoflop/common/files.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "isoflop/common/process.h"

namespace isoflop {
namespace {

namespace fs = std::filesystem;

class FilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("isoflop_common_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Slurp(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  fs::path dir_;
};

TEST_F(FilesTest, AtomicWriteReplacesAndLeavesNoTemporary) {
  const std::string p = (dir_ / "f.json").string();
  ASSERT_TRUE(WriteFileAtomic(p, "old").ok());
  ASSERT_TRUE(WriteFileAtomic(p, "new").ok());
  EXPECT_EQ(Slurp(p), "new");
  // A failing rename (the target is a non-empty folder) removes the temporary file.
  fs::create_directories(dir_ / "busy" / "x");
  const Status st = WriteFileAtomic((dir_ / "busy").string(), "data");
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("rename failed"), std::string::npos) << st.message();
  for (const auto& e : fs::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  }
}

// A file written in pieces appears whole at Commit and not before; a writer dropped
// uncommitted leaves the old file; a failed write (here past RLIMIT_FSIZE, as a full disk
// fails) is kept, later pieces are dropped, and Commit reports it, naming the file, without
// touching the old one. Nothing of the temporary file stays behind in any case.
TEST_F(FilesTest, StreamedWriterPublishesWholeOrNothing) {
  const std::string p = (dir_ / "model.pt").string();
  ASSERT_TRUE(WriteFileAtomic(p, "old").ok());
  auto no_temporary = [&] {
    for (const auto& e : fs::directory_iterator(dir_))
      EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  };
  {
    auto w = AtomicFileWriter::Create(p);
    ASSERT_TRUE(w.ok()) << w.status().message();
    (*w)->Write("piece one, ", 11);
    (*w)->Write("piece two", 9);
    EXPECT_EQ((*w)->bytes_written(), 20);
    EXPECT_EQ(Slurp(p), "old");
    ASSERT_TRUE((*w)->Commit().ok());
    EXPECT_FALSE((*w)->Commit().ok());  // once only
  }
  EXPECT_EQ(Slurp(p), "piece one, piece two");
  no_temporary();
  {
    auto w = AtomicFileWriter::Create(p);
    ASSERT_TRUE(w.ok());
    (*w)->Write("abandoned", 9);
  }
  EXPECT_EQ(Slurp(p), "piece one, piece two");
  no_temporary();
  {
    auto w = AtomicFileWriter::Create(p);
    ASSERT_TRUE(w.ok());
    const std::string big(8192, 'x');
    void (*previous)(int) = ::signal(SIGXFSZ, SIG_IGN);
    rlimit old{};
    ::getrlimit(RLIMIT_FSIZE, &old);
    rlimit small = old;
    small.rlim_cur = 4096;
    ::setrlimit(RLIMIT_FSIZE, &small);
    (*w)->Write(big.data(), big.size());
    (*w)->Write("after", 5);
    ::setrlimit(RLIMIT_FSIZE, &old);
    ::signal(SIGXFSZ, previous);
    EXPECT_EQ((*w)->bytes_written(), 4096);
    const Status st = (*w)->Commit();
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("model.pt.tmp-"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("write failed (File too large)"), std::string::npos)
        << st.message();
  }
  EXPECT_EQ(Slurp(p), "piece one, piece two");
  no_temporary();
  EXPECT_FALSE(AtomicFileWriter::Create((dir_ / "no" / "such" / "folder").string()).ok());
}

TEST_F(FilesTest, LockIsExclusiveAcrossProcessesAndDiesWithItsHolder) {
  const std::string lock = (dir_ / ".lock").string();
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  if (child == 0) {
    auto held = FileLock::TryAcquire(lock);
    char c = held.ok() ? 'y' : 'n';
    (void)!write(ready[1], &c, 1);
    pause();  // holds the lock until killed
    _exit(0);
  }
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, 'y');
  EXPECT_EQ(LockHolder(lock), child);
  auto second = FileLock::TryAcquire(lock);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("held by pid " + std::to_string(child)),
            std::string::npos);
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_EQ(LockHolder(lock), 0);
  EXPECT_TRUE(FileLock::TryAcquire(lock).ok());
}

TEST_F(FilesTest, ProcessIdentityTellsALiveProcessFromADeadOne) {
  const std::optional<std::string> me = ProcessStartId(getpid());
  ASSERT_TRUE(me.has_value());
  EXPECT_TRUE(SameProcessAlive(getpid(), *me));
  EXPECT_FALSE(SameProcessAlive(getpid(), *me + "0"));  // another start: a reused pid
  const pid_t child = fork();
  if (child == 0) _exit(0);
  // Exited but not reaped (a zombie): no longer the process that was recorded.
  for (int i = 0; i < 200 && ProcessStartId(child); ++i) usleep(5000);
  EXPECT_FALSE(ProcessStartId(child).has_value());
  waitpid(child, nullptr, 0);
  EXPECT_FALSE(ProcessStartId(child).has_value());
  EXPECT_FALSE(HostName().empty());
}

}  // namespace
}  // namespace isoflop
