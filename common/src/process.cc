// Host names, free loopback ports and process identities from /proc (see process.h).
#include "isoflop/common/process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace isoflop {
namespace {

std::string BootId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return id;
}

}  // namespace

std::string HostName() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "";
  return buf;
}

int FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  int port = 29500;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  if (fd >= 0) ::close(fd);
  return port;
}

std::optional<std::string> ProcessStartId(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!in || !std::getline(in, text)) return std::nullopt;
  // "pid (comm) state ppid ..." where comm may hold spaces and parentheses: fields are
  // counted after the last ')'.
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(text.substr(close + 1));
  std::string state;
  fields >> state;                                        // field 3
  if (state == "Z" || state == "X") return std::nullopt;  // exited, not yet reaped
  std::string value;
  for (int field = 4; field <= 22 && fields >> value; ++field) {
  }
  if (value.empty()) return std::nullopt;
  return BootId() + ":" + value;
}

bool SameProcessAlive(pid_t pid, const std::string& start_id) {
  const std::optional<std::string> now = ProcessStartId(pid);
  return now && *now == start_id;
}

}  // namespace isoflop
