// Atomic file writes and flock-based folder locks (see files.h for the contracts).
#include "isoflop/common/files.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace isoflop {
namespace {

Status Errno(const std::string& what, const std::string& path) {
  return Status::IoError(path + ": " + what + " failed (" + std::strerror(errno) + ")");
}

std::string ParentOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

Status WriteAll(int fd, const std::string& s, const std::string& path) {
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("write", path);
    }
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status FsyncPath(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno("open for fsync", path);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Errno("fsync", path);
  return Status::Ok();
}

Result<std::unique_ptr<AtomicFileWriter>> AtomicFileWriter::Create(const std::string& path) {
  // Unique per process and call: two threads, or a stale temp file of a dead process with a
  // reused pid, never share a name.
  static std::atomic<unsigned> counter{0};
  std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("create", tmp);
  return std::unique_ptr<AtomicFileWriter>(new AtomicFileWriter(path, std::move(tmp), fd));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(tmp_.c_str());
}

void AtomicFileWriter::Write(const void* data, size_t n) {
  if (fd_ < 0 || !error_.ok()) return;
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      error_ = Errno("write", tmp_);
      return;
    }
    p += w;
    n -= static_cast<size_t>(w);
    written_ += w;
  }
}

Status AtomicFileWriter::Commit() {
  if (fd_ < 0) return Status::Internal(path_ + ": committed twice");
  Status st = error_;
  if (st.ok() && ::fsync(fd_) != 0) st = Errno("fsync", tmp_);
  if (::close(fd_) != 0 && st.ok()) st = Errno("close", tmp_);
  fd_ = -1;
  if (st.ok() && ::rename(tmp_.c_str(), path_.c_str()) != 0) st = Errno("rename", tmp_);
  if (!st.ok()) {
    ::unlink(tmp_.c_str());
    return st;
  }
  return FsyncPath(ParentOf(path_));
}

Status WriteFileAtomic(const std::string& path, const std::string& content) {
  ISOFLOP_ASSIGN_OR_RETURN(std::unique_ptr<AtomicFileWriter> writer,
                           AtomicFileWriter::Create(path));
  writer->Write(content.data(), content.size());
  return writer->Commit();
}

Result<std::unique_ptr<FileLock>> FileLock::TryAcquire(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("open", path);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {0};
    (void)!::pread(fd, buf, sizeof(buf) - 1, 0);
    ::close(fd);
    if (err != EWOULDBLOCK) {
      errno = err;
      return Errno("flock", path);
    }
    return Status::FailedPrecondition(path + " is held by pid " + std::string(buf[0] ? buf : "?"));
  }
  const std::string pid = std::to_string(::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    ::close(fd);
    return Errno("write", path);
  }
  return std::unique_ptr<FileLock>(new FileLock(fd));
}

FileLock::~FileLock() { ::close(fd_); }

pid_t LockHolder(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  pid_t pid = 0;
  if (::flock(fd, LOCK_SH | LOCK_NB) != 0) {
    char buf[32] = {0};
    (void)!::pread(fd, buf, sizeof(buf) - 1, 0);
    pid = static_cast<pid_t>(std::atoi(buf));
  } else {
    ::flock(fd, LOCK_UN);
  }
  ::close(fd);
  return pid;
}

bool IsPlainName(const std::string& s) {
  auto word = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) != 0; };
  if (s.empty() || !word(s[0])) return false;
  return std::all_of(s.begin(), s.end(),
                     [&](char ch) { return word(ch) || ch == '.' || ch == '_' || ch == '-'; });
}

}  // namespace isoflop
