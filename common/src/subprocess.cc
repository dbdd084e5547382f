// fork/execve with an argv vector (see subprocess.h). Everything the child needs is built
// before fork: after it, the child makes only async-signal-safe calls.
#include "isoflop/common/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

extern char** environ;

namespace isoflop {
namespace {

enum class Stderr { kSame, kNull, kOwn };

// The shared body: `out_fd` >= 0 receives stdout (and stderr when err == kSame).
Result<pid_t> SpawnWithFds(const std::vector<std::string>& argv, const SpawnOptions& o, int out_fd,
                           Stderr err) {
  if (argv.empty()) return Status::InvalidArgument("no program to run");
  std::vector<std::string> argv_s = argv;
  std::vector<char*> cargv;
  for (auto& a : argv_s) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  std::vector<std::string> env_s;
  if (o.env) {
    env_s = *o.env;
  } else {
    for (char** e = environ; *e; ++e) env_s.push_back(*e);
  }
  std::vector<char*> cenv;
  for (auto& e : env_s) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  int log_fd = -1;
  if (!o.output_path.empty()) {
    log_fd = ::open(o.output_path.c_str(),
                    O_WRONLY | O_CREAT | O_CLOEXEC | (o.append_output ? O_APPEND : O_TRUNC), 0644);
    if (log_fd < 0) {
      return Status::IoError(o.output_path + ": cannot open for the child's output (" +
                             std::strerror(errno) + ")");
    }
    out_fd = log_fd;
  }
  sigset_t blocked;
  sigemptyset(&blocked);
  for (int sig : o.blocked_signals) sigaddset(&blocked, sig);
  const std::string cwd = o.cwd;
  const std::string failure = o.exec_failure_message + "\n";
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    if (log_fd >= 0) ::close(log_fd);
    return Status::IoError(std::string("fork: ") + std::strerror(e));
  }
  if (pid == 0) {
    if (o.own_process_group) ::setpgid(0, 0);
    if (o.die_with_parent) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      // The parent may have died between fork and prctl: then no signal would ever come.
      if (::getppid() != parent) ::_exit(128 + SIGTERM);
    }
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig : {SIGINT, SIGTERM, SIGUSR2, SIGPIPE}) ::sigaction(sig, &dfl, nullptr);
    ::sigprocmask(SIG_SETMASK, &blocked, nullptr);
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(127);
    if (o.stdin_from_null) {
      const int devnull = ::open("/dev/null", O_RDONLY);
      if (devnull >= 0) ::dup2(devnull, 0);
    }
    if (out_fd >= 0) ::dup2(out_fd, 1);
    if (err == Stderr::kSame && out_fd >= 0) ::dup2(out_fd, 2);
    if (err == Stderr::kNull) {
      const int devnull = ::open("/dev/null", O_WRONLY);
      if (devnull >= 0) ::dup2(devnull, 2);
    }
    if (o.search_path) {
      ::execvpe(cargv[0], cargv.data(), cenv.data());
    } else {
      ::execve(cargv[0], cargv.data(), cenv.data());
    }
    (void)!::write(2, failure.data(), failure.size());
    ::_exit(127);
  }
  // Also here: no race with a signal sent to the group right after fork returns.
  if (o.own_process_group) ::setpgid(pid, pid);
  if (log_fd >= 0) ::close(log_fd);
  return pid;
}

}  // namespace

Result<pid_t> Spawn(const std::vector<std::string>& argv, const SpawnOptions& options) {
  return SpawnWithFds(argv, options, -1, Stderr::kSame);
}

int WaitChild(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

Result<ChildResult> RunChild(const std::vector<std::string>& argv, SpawnOptions options,
                             bool capture_stderr) {
  ChildResult r;
  if (!options.output_path.empty()) {
    ISOFLOP_ASSIGN_OR_RETURN(pid_t pid, Spawn(argv, options));
    r.exit_code = WaitChild(pid);
    return r;
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return Status::IoError(std::string("pipe: ") + std::strerror(errno));
  }
  Result<pid_t> pid =
      SpawnWithFds(argv, options, fds[1], capture_stderr ? Stderr::kSame : Stderr::kNull);
  ::close(fds[1]);
  if (!pid.ok()) {
    ::close(fds[0]);
    return pid.status();
  }
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) r.output.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  r.exit_code = WaitChild(*pid);
  return r;
}

}  // namespace isoflop
