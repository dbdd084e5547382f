// `isoflop train ...`: runs one training run by handing every argument to `isoflop-train`
// (the LibTorch worker), so `isoflop` itself never loads LibTorch.
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "command.h"

namespace isoflop::cli {

Status ExecTrain(const Context& ctx, const std::vector<std::string>& args) {
  ISOFLOP_ASSIGN_OR_RETURN(std::string bin, FindTrainBinary(ctx));
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(bin.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execv(bin.c_str(), argv.data());
  return Status::IoError("cannot run " + bin + ": " + std::strerror(errno));
}

namespace {

void AddTrainCommand(CLI::App& app, Context& ctx) {
  CLI::App* cmd =
      app.add_subcommand("train",
                         "Run one training run (forwards all arguments to isoflop-train; see "
                         "`isoflop train --help`)");
  // main() hands `isoflop [--db X] train ARGS...` to ExecTrain before parsing, so every
  // argument, options and --help included, reaches isoflop-train; this entry is for --help.
  cmd->set_help_flag();
  cmd->callback([&ctx] { ctx.status = ExecTrain(ctx, {}); });
}

}  // namespace

ISOFLOP_REGISTER_COMMAND("train", 20, AddTrainCommand);

}  // namespace isoflop::cli
