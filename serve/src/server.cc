// The dashboard's HTTP server (see server.h): cpp-httplib with a fixed pool of request threads,
// GET only, the API under /api/ and the embedded assets for everything else. The store file is
// opened read-only by each request (api.h), so the server never writes it and never holds a
// lock a running `sweep run` waits for.
#include "isoflop/serve/server.h"

#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "isoflop/serve/api.h"
#include "isoflop/serve/assets.h"

namespace isoflop::serve {
namespace {

constexpr const char* kJsonType = "application/json; charset=utf-8";

// The stop pipe: a signal handler writes kStopByte; Serve writes kDoneByte when it ends.
int g_stop_pipe[2] = {-1, -1};
constexpr char kStopByte = 1, kDoneByte = 2;

void OnStopSignal(int) {
  const char c = kStopByte;
  (void)!::write(g_stop_pipe[1], &c, 1);  // async-signal-safe; a full pipe already says stop
}

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

  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, with which a second `serve` on a
  // taken port would bind too and share its connections instead of failing.
  svr.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
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

  // SIGINT/SIGTERM stop the server. A handler (process-wide, whichever thread the signal lands
  // on: OpenBLAS starts threads before main that no mask here would cover) writes a byte to a
  // pipe; a watcher thread reads it and calls stop(), which a handler may not.
  if (::pipe2(g_stop_pipe, O_CLOEXEC) != 0) return Status::IoError("cannot create a pipe");
  struct sigaction act = {}, old_int = {}, old_term = {};
  act.sa_handler = OnStopSignal;
  sigemptyset(&act.sa_mask);
  sigaction(SIGINT, &act, &old_int);
  sigaction(SIGTERM, &act, &old_term);
  std::thread watcher([&svr] {
    char c = 0;
    ssize_t n;
    while ((n = ::read(g_stop_pipe[0], &c, 1)) < 0 && errno == EINTR) {
    }
    if (n == 1 && c == kStopByte) svr.stop();
  });

  if (!IsLoopback(options.host)) {
    out << "warning: serving on " << options.host << ", not loopback: anyone who can reach port "
        << port << " can read every sweep, run and fit in " << options.db_path << "\n";
  }
  out << "serving " << options.db_path << " at " << url << " (read-only; Ctrl-C stops)"
      << std::endl;
  if (on_listening) on_listening(url);
  svr.listen_after_bind();
  const char done = kDoneByte;  // wakes the watcher when listening ended without a signal
  (void)!::write(g_stop_pipe[1], &done, 1);
  watcher.join();
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  ::close(g_stop_pipe[0]);
  ::close(g_stop_pipe[1]);
  out << "stopped" << std::endl;
  return Status::Ok();
}

}  // namespace isoflop::serve
