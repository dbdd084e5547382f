// The dashboard's HTTP server (see server.h): cpp-httplib with a fixed pool of request threads,
// GET only, the API under /api/ and the embedded assets for everything else. The store file is
// opened read-only by each request (api.h), so the server never writes it and never holds a
// lock a running `sweep run` waits for.
#include "isoflop/serve/server.h"

#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>

#include <thread>

#include "isoflop/serve/api.h"
#include "isoflop/serve/assets.h"

namespace isoflop::serve {
namespace {

constexpr const char* kJsonType = "application/json; charset=utf-8";

void SetCommonHeaders(httplib::Response& res) {
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("Referrer-Policy", "no-referrer");
}

}  // namespace

Status ServeOptions::Validate() const {
  if (db_path.empty()) return Status::InvalidArgument("--db: expected a store file");
  if (host.empty()) return Status::InvalidArgument("--host: expected an address, e.g. 127.0.0.1");
  if (port < 0 || port > 65535) {
    return Status::InvalidArgument("--port: expected 0..65535 (0 = any free port), got " +
                                   std::to_string(port));
  }
  if (threads < 1 || threads > 256) {
    return Status::InvalidArgument("threads: expected 1..256, got " + std::to_string(threads));
  }
  return Status::Ok();
}

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

Status Serve(const ServeOptions& options, std::ostream& out,
             const std::function<void(const std::string& url)>& on_listening) {
  ISOFLOP_RETURN_IF_ERROR(options.Validate());
  struct stat st;
  if (::stat(options.db_path.c_str(), &st) != 0) {
    return Status::NotFound(options.db_path +
                            ": no such store (give --db FILE, or run `isoflop sweep run` first)");
  }

  httplib::Server svr;
  const int threads = options.threads;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  const std::string db_path = options.db_path;

  svr.Get("/api/.*", [db_path](const httplib::Request& req, httplib::Response& res) {
    // The raw target keeps an encoded '/' inside its segment (req.path is already decoded).
    std::string raw = req.target.empty() ? req.path : req.target.substr(0, req.target.find('?'));
    ApiResponse a = HandleApi(db_path, raw, req.params);
    SetCommonHeaders(res);
    res.set_header("Cache-Control", "no-store");
    res.status = a.status;
    res.set_content(a.body, kJsonType);
  });
  svr.Get(".*", [](const httplib::Request& req, httplib::Response& res) {
    SetCommonHeaders(res);
    const Asset* asset = FindAsset(req.path);
    if (!asset) {
      res.status = 404;
      res.set_content(ErrorResponse(404, "no such page: " + req.path).body, kJsonType);
      return;
    }
    res.set_header("Cache-Control", "no-cache");
    res.set_content(std::string(asset->data), std::string(asset->content_type).c_str());
  });
  // Anything else (another method, a request httplib could not parse): a JSON error too.
  svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    SetCommonHeaders(res);
    const std::string what = res.status == 404 ? "no handler for " + req.method + " " + req.path +
                                                     " (the dashboard answers GET only)"
                                               : "bad request";
    res.set_content(ErrorResponse(res.status, what).body, kJsonType);
  });

  int port = options.port;
  if (port == 0) {
    port = svr.bind_to_any_port(options.host);
    if (port <= 0) return Status::IoError("cannot bind " + options.host + " on any port");
  } else if (!svr.bind_to_port(options.host, port)) {
    return Status::IoError("cannot bind " + options.host + ":" + std::to_string(port) +
                           " (in use? try --port 0 for any free port)");
  }
  const std::string shown_host =
      options.host.find(':') != std::string::npos && options.host.front() != '['
          ? "[" + options.host + "]"
          : options.host;
  const std::string url = "http://" + shown_host + ":" + std::to_string(port) + "/";

  // SIGINT/SIGTERM stop the server from a thread that waits for them (a signal handler may not
  // call stop()). Blocked here, before httplib starts its threads, so they inherit the mask.
  sigset_t stop_set, old_set;
  sigemptyset(&stop_set);
  sigaddset(&stop_set, SIGINT);
  sigaddset(&stop_set, SIGTERM);
  sigaddset(&stop_set, SIGUSR1);  // sent by us to end the waiter when listening ends otherwise
  pthread_sigmask(SIG_BLOCK, &stop_set, &old_set);
  std::thread waiter([&svr, &stop_set] {
    int sig = 0;
    sigwait(&stop_set, &sig);
    svr.stop();
  });

  if (!IsLoopback(options.host)) {
    out << "warning: serving on " << options.host << ", not loopback: anyone who can reach port "
        << port << " can read every sweep, run and fit in " << options.db_path << "\n";
  }
  out << "serving " << options.db_path << " at " << url << " (read-only; Ctrl-C stops)"
      << std::endl;
  if (on_listening) on_listening(url);
  const bool clean = svr.listen_after_bind();
  pthread_kill(waiter.native_handle(), SIGUSR1);
  waiter.join();
  // Drop a stop signal that raced with the end, then restore the caller's mask.
  timespec zero{0, 0};
  while (sigtimedwait(&stop_set, nullptr, &zero) > 0) {
  }
  pthread_sigmask(SIG_SETMASK, &old_set, nullptr);
  (void)clean;
  out << "stopped" << std::endl;
  return Status::Ok();
}

}  // namespace isoflop::serve
