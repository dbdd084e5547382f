// `isoflop serve`: the live sweep dashboard in the browser (serve/, docs/serve.md). Reads the
// store only; safe beside a running `isoflop sweep run`.
#include <iostream>
#include <thread>

#include "command.h"
#include "isoflop/common/subprocess.h"
#include "isoflop/serve/server.h"

namespace isoflop::cli {
namespace {

struct ServeArgs {
  std::string host = "127.0.0.1";
  int port = 8765;
  bool open = false;
};

Status RunServe(const Context& ctx, const ServeArgs& args) {
  serve::ServeOptions o;
  o.db_path = ctx.db_path;
  o.host = args.host;
  o.port = args.port;
  std::function<void(const std::string&)> on_listening;
  if (args.open) {
    on_listening = [](const std::string& url) {
      // The browser is the user's; xdg-open returns once it has handed the URL over.
      std::thread([url] {
        SpawnOptions so;
        so.search_path = true;
        so.die_with_parent = false;
        Result<ChildResult> r = RunChild({"xdg-open", url}, so);
        if (!r.ok() || r->exit_code != 0)
          std::cerr << "isoflop serve: could not open a browser (xdg-open); open " << url
                    << " yourself\n";
      }).detach();
    };
  }
  return serve::Serve(o, std::cout, on_listening);
}

void AddServeCommand(CLI::App& app, Context& ctx) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "Live dashboard of the store in the browser: sweeps, cells, training curves, fits and "
      "compute-optimal answers (read-only; docs/serve.md)");
  cmd->add_option("--host", args->host,
                  "Address to listen on; anything but loopback lets others read the store")
      ->capture_default_str();
  cmd->add_option("--port", args->port, "TCP port (0 = any free port)")
      ->check(CLI::Range(0, 65535).name(""))
      ->capture_default_str();
  cmd->add_flag("--open", args->open, "Open the page in the default browser (xdg-open)");
  cmd->callback([&ctx, args] { ctx.status = RunServe(ctx, *args); });
}

}  // namespace

ISOFLOP_REGISTER_COMMAND("serve", 80, AddServeCommand);

}  // namespace isoflop::cli
