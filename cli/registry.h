// Internal: the list of registered subcommands, read by main().
#pragma once

#include <string>
#include <vector>

#include "command.h"

namespace isoflop::cli {

struct RegisteredCommand {
  std::string name;
  int order;
  CommandAdder adder;
};

std::vector<RegisteredCommand>& Registry();

}  // namespace isoflop::cli
