// Helpers for end-to-end tests that run the real `isoflop` and `isoflop-train` binaries:
// run a command with arguments (no shell), capture stdout and stderr and the exit code.
#pragma once

#include <string>
#include <vector>

namespace isoflop::testing {

struct CommandResult {
  int exit_code = -1;    // exit status, or 128+signal when killed by a signal
  std::string out, err;  // captured stdout and stderr
};

// Runs `argv` (argv[0] is a path) with `env` entries ("K=V") added to the environment,
// in directory `cwd` (empty = current). Blocks until it exits.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         const std::vector<std::string>& env = {}, const std::string& cwd = "");

// Path of a built binary (ISOFLOP_BINARY_DIR/name).
std::string Binary(const std::string& name);

// A fresh empty temporary directory, unique per call.
std::string TempDir(const std::string& tag);

}  // namespace isoflop::testing
