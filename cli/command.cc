// The subcommand registry and helpers shared by commands.
#include "command.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "registry.h"

namespace isoflop::cli {

std::vector<RegisteredCommand>& Registry() {
  static std::vector<RegisteredCommand> commands;
  return commands;
}

bool RegisterCommand(const std::string& name, int order, CommandAdder adder) {
  Registry().push_back({name, order, std::move(adder)});
  return true;
}

CLI::Validator OneOf(std::vector<std::string> choices) {
  std::string expected;
  for (size_t i = 0; i < choices.size(); ++i)
    expected += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + choices[i];
  return CLI::Validator(
      [choices, expected](std::string& v) -> std::string {
        if (std::find(choices.begin(), choices.end(), v) != choices.end()) return "";
        return "expected " + expected + ", not '" + v + "'";
      },
      "", "one of");
}

bool FlagsOk(Context& ctx, Status checked) {
  if (checked.ok()) return true;
  ctx.status = std::move(checked);
  ctx.usage_error = true;
  return false;
}

Result<std::string> FindTrainBinary(const Context& ctx) {
  namespace fs = std::filesystem;
  if (const char* env = std::getenv("ISOFLOP_TRAIN"); env && *env) {
    if (::access(env, X_OK) == 0) return std::string(env);
    return Status::NotFound(std::string("ISOFLOP_TRAIN=") + env + ": not an executable file");
  }
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) self = fs::absolute(ctx.argv0, ec);
  fs::path beside = self.parent_path() / "isoflop-train";
  if (::access(beside.c_str(), X_OK) == 0) return beside.string();
  if (const char* path = std::getenv("PATH")) {
    std::string p = path;
    size_t start = 0;
    while (start <= p.size()) {
      size_t end = p.find(':', start);
      if (end == std::string::npos) end = p.size();
      fs::path cand = fs::path(p.substr(start, end - start)) / "isoflop-train";
      if (end > start && ::access(cand.c_str(), X_OK) == 0) return cand.string();
      start = end + 1;
    }
  }
  return Status::NotFound("cannot find the isoflop-train binary beside " + self.string() +
                          " or on PATH (build it with `make build`, or set ISOFLOP_TRAIN)");
}

}  // namespace isoflop::cli
