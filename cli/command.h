// How `isoflop` subcommands plug into the CLI: each cli/<command>.cc registers itself with
// ISOFLOP_REGISTER_COMMAND, so adding a command never touches main.cc. A command's callback
// does its work through one library call and leaves a Status in the context; main() turns
// that Status into a one-line message and an exit code (0 ok, 1 runtime error, 2 usage error).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "isoflop/common/status.h"

namespace isoflop::store {
struct CsvColumns;
}

namespace isoflop::cli {

// Shared state of one `isoflop` invocation. Not thread-safe (one per process).
struct Context {
  std::string db_path;       // --db, else $ISOFLOP_DB, else ./isoflop.db (resolved in main)
  std::string argv0;         // path of this executable (to find isoflop-train beside it)
  Status status;             // set by the command that ran
  bool usage_error = false;  // true: exit code 2 even if status is not InvalidArgument
};

// Adds a subcommand (and its callback) to `app`. The callback must store its outcome in
// ctx.status instead of throwing.
using CommandAdder = std::function<void(CLI::App& app, Context& ctx)>;

// Registers `adder`; commands appear in --help sorted by `order`, then name. Returns true so
// it can initialise a static. Called before main() only.
bool RegisterCommand(const std::string& name, int order, CommandAdder adder);

// Absolute path of the `isoflop-train` binary: $ISOFLOP_TRAIN, else beside this executable,
// else the first on PATH. NotFound with a hint when none exists.
Result<std::string> FindTrainBinary(const Context& ctx);

// Replaces this process with `isoflop-train ARGS...` (exec). Returns only on failure: NotFound
// when the binary is missing, IoError when exec fails.
Status ExecTrain(const Context& ctx, const std::vector<std::string>& args);

// A CLI11 check that takes one of `choices` and refuses anything else while the command line is
// parsed ("--format: expected table, csv or json, not 'xml'"), so a bad value is a usage error
// (exit code 2), as an unknown flag is.
CLI::Validator OneOf(std::vector<std::string> choices);

// For a command's own checks of its flags (those CLI11 cannot express, such as "one of these
// is required"): stores a failed `checked` in ctx as a usage error (exit code 2) and returns
// false; true when the flags are fine and the command may go on.
bool FlagsOk(Context& ctx, Status checked);

// Adds --n-column, --d-column, --c-column, --loss-column, --g-column and
// --flops-per-param-token (the CSV reader's column choices) to `cmd`; `needs`, when given, is
// the option they require (fit's --csv). Used by `import` and `fit --csv`.
void AddCsvColumnOptions(CLI::App* cmd, store::CsvColumns* columns, CLI::Option* needs = nullptr);

}  // namespace isoflop::cli

#define ISOFLOP_REGISTER_COMMAND(name, order, adder)                \
  static const bool ISOFLOP_CONCAT(isoflop_registered_, __LINE__) = \
      ::isoflop::cli::RegisterCommand(name, order, adder)
