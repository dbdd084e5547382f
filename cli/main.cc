// `isoflop`: the user-facing command line. Parses arguments (CLI11), runs the one subcommand
// chosen, and is the only place that turns a Status (or an exception) into a message and an
// exit code: 0 ok, 1 runtime error, 2 usage error.
#include <algorithm>
#include <cstdlib>
#include <exception>
#include <iostream>

#include "command.h"
#include "isoflop/common/help.h"
#include "isoflop/common/version.h"
#include "registry.h"

namespace {

// "unknown command 'X'" for a word where `app` (or a command that needs a subcommand, such as
// `sweep`) expects one of its subcommands: CLI11 alone says "A subcommand is required". Empty
// when every such word names a command.
std::string UnknownCommand(CLI::App& app, int argc, char** argv) {
  CLI::App* at = &app;
  std::string path = "isoflop";
  for (int i = 1; i < argc && at->get_require_subcommand_min() > 0; ++i) {
    const std::string a = argv[i];
    if (a == "--db") {
      ++i;
      continue;
    }
    if (a.empty() || a[0] == '-') continue;
    const auto named = at->get_subcommands([&a](CLI::App* c) { return c->check_name(a); });
    CLI::App* sub = named.empty() ? nullptr : named.front();
    if (!sub) {
      std::string names;
      for (const CLI::App* c : at->get_subcommands([](CLI::App*) { return true; }))
        names += (names.empty() ? "" : ", ") + c->get_name();
      return "unknown command '" + a + "' for " + path + " (expected one of " + names + "; see `" +
             path + " --help`)";
    }
    at = sub;
    path += " " + a;
  }
  return "";
}

int Run(int argc, char** argv) {
  using isoflop::cli::Context;
  Context ctx;
  ctx.argv0 = argc > 0 ? argv[0] : "isoflop";

  CLI::App app{
      "isoflop: scaling-law sweeps, fits and compute-optimal answers.\n"
      "Plans and runs sweeps of small LibTorch training runs, stores every loss in SQLite,\n"
      "fits L(N,D) = E + A/N^alpha + B/D^beta and says how big a model to train on how much\n"
      "data for a compute budget.",
      "isoflop"};
  isoflop::UseHelpFormatter(app);
  app.set_version_flag("--version", std::string("isoflop ") + ISOFLOP_VERSION);
  app.require_subcommand(1);
  app.fallthrough();
  const char* env_db = std::getenv("ISOFLOP_DB");
  ctx.db_path = env_db && *env_db ? env_db : "isoflop.db";
  app.add_option("--db", ctx.db_path, "SQLite store file (default ./isoflop.db, or $ISOFLOP_DB)")
      ->type_name("FILE");

  auto& commands = isoflop::cli::Registry();
  std::stable_sort(commands.begin(), commands.end(), [](const auto& a, const auto& b) {
    return a.order != b.order ? a.order < b.order : a.name < b.name;
  });
  for (auto& c : commands) c.adder(app, ctx);

  // `isoflop [--db X] train ARGS...`: everything after `train` belongs to isoflop-train, which
  // has options of its own, so it is handed over before CLI11 sees it.
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--db" && i + 1 < argc) {
      ++i;
      continue;
    }
    if (a.rfind("--db=", 0) == 0) continue;
    if (a == "train") {
      const isoflop::Status st =
          isoflop::cli::ExecTrain(ctx, std::vector<std::string>(argv + i + 1, argv + argc));
      std::cerr << "isoflop: error: " << st.message() << "\n";
      return 1;
    }
    break;
  }

  if (const std::string unknown = UnknownCommand(app, argc, argv); !unknown.empty()) {
    std::cerr << "isoflop: error: " << unknown << "\n";
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  if (!ctx.status.ok()) {
    std::cerr << "isoflop: error: " << ctx.status.message() << "\n";
    return ctx.usage_error ? 2 : 1;
  }
  return ctx.usage_error ? 2 : 0;
}

}  // namespace

// The one error boundary: an exception that escapes a command (a library bug, std::bad_alloc,
// a JSON type error) is a one-line message and exit code 1, never std::terminate's abort.
// Subcommand callbacks run inside app.parse() in Run, so they end here too.
int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "isoflop: internal error: " << e.what() << "\n";
  } catch (...) {
    std::cerr << "isoflop: internal error: an unknown exception\n";
  }
  return 1;
}
