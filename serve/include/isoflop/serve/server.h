// `isoflop serve`: the HTTP server of the live sweep dashboard (cpp-httplib). Serves the
// embedded page (assets.h) and the JSON API (api.h) over a store it only ever reads.
#pragma once

#include <functional>
#include <ostream>
#include <string>

#include "isoflop/common/status.h"

namespace isoflop::serve {

struct ServeOptions {
  std::string db_path;             // the store; must exist (it is opened read-only per request)
  std::string host = "127.0.0.1";  // bind address; loopback by default: the data is private
  int port = 8765;                 // TCP port; 0 = any free port (printed on start)
  int threads = 8;                 // request threads, each with its own store connection
  // Checks the fields; InvalidArgument naming the field otherwise.
  Status Validate() const;
};

// True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost).
bool IsLoopback(const std::string& host);

// Binds, writes "serving DB at http://HOST:PORT/" (and a warning for a non-loopback host) to
// `out`, calls `on_listening(url)` when given, and answers requests until SIGINT or SIGTERM.
// Returns Ok after such a stop; InvalidArgument for bad options, NotFound when the store file
// does not exist, IoError when the address cannot be bound. One Serve at a time per process
// (it owns the SIGINT and SIGTERM handlers while it runs, and restores them after).
Status Serve(const ServeOptions& options, std::ostream& out,
             const std::function<void(const std::string& url)>& on_listening = {});

}  // namespace isoflop::serve
