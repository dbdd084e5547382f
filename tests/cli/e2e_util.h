// Helpers for end-to-end tests that run the real `isoflop` and `isoflop-train` binaries:
// run a command with arguments (no shell), capture stdout and stderr and the exit code.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace isoflop::testing {

struct CommandResult {
  int exit_code = -1;    // exit status, or 128+signal when killed by a signal
  std::string out, err;  // captured stdout and stderr
};

// Runs `argv` (argv[0] is a path) with `env` entries ("K=V") added to the environment (each
// replacing an inherited K),
// in directory `cwd` (empty = current). Blocks until it exits.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::vector<std::string>& env = {}, const std::string& cwd = "");

// Path of a built binary (ISOFLOP_BINARY_DIR/name).
std::string Binary(const std::string& name);

// A fresh empty temporary directory, unique per call.
std::string TempDir(const std::string& tag);

// A file's whole text ("" when it cannot be read).
std::string Slurp(const std::string& path);

// Starts `argv` (argv[0] a path, no shell) in `cwd` with stdout and stderr to `log` (truncated)
// and returns at once with its pid; WaitExit reaps it.
pid_t SpawnLogged(const std::vector<std::string>& argv, const std::string& cwd,
                  const std::string& log);

// Waits for `pid`: its exit code, or 128 + signal when a signal killed it.
int WaitExit(pid_t pid);

// Opens the FIFO at `path` for writing and closes it again, from a thread: code that opens the
// FIFO to read it gets end of file instead of blocking forever (so an unchecked reader fails the
// test instead of hanging it). The destructor is the reader of last resort that lets the thread
// end.
class FifoWriter {
 public:
  explicit FifoWriter(std::string path);
  ~FifoWriter();
  FifoWriter(const FifoWriter&) = delete;
  FifoWriter& operator=(const FifoWriter&) = delete;

 private:
  std::string path_;
  std::thread thread_;
};

// Polls `pred` every 20 ms until it holds or `seconds` pass; its last value.
template <typename F>
bool WaitFor(F pred, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

}  // namespace isoflop::testing
