// File discipline shared by the trainer and the sweep manager: atomic whole-file writes
// (unique temp file, fsync, rename, fsync of the folder) and exclusive folder locks (flock)
// that the kernel releases when their holder dies, SIGKILL included.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "isoflop/common/status.h"

namespace isoflop {

// Writes `content` to `path` through a temporary file in the same folder with a unique name
// (pid and a counter), fsyncs it, renames it over `path` and fsyncs the folder, so a reader
// sees the old or the new file, never a part. On any error the temporary file is removed and
// `path` is untouched. IoError names the path and the failing call (errno text, e.g. "No space
// left on device"). Thread-safe.
Status WriteFileAtomic(const std::string& path, const std::string& content);

// The same for a file written in pieces (a checkpoint streamed out of torch::save, never held
// whole in memory): the pieces go to the temporary file as they come, Commit() publishes it as
// WriteFileAtomic does, and a writer destroyed uncommitted removes it. Write never fails: the
// first error is kept, later pieces are dropped, and Commit reports it (a serialiser that
// throws on a short write from a destructor would abort the process). Thread-compatible.
class AtomicFileWriter {
 public:
  // IoError when the temporary file cannot be created.
  static Result<std::unique_ptr<AtomicFileWriter>> Create(const std::string& path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void Write(const void* data, size_t n);
  int64_t bytes_written() const { return written_; }
  // fsync, close, rename over the path, fsync of the folder; or the first error, the temporary
  // file removed and the path untouched. Once only.
  Status Commit();

 private:
  AtomicFileWriter(std::string path, std::string tmp, int fd)
      : path_(std::move(path)), tmp_(std::move(tmp)), fd_(fd) {}
  std::string path_, tmp_;
  int fd_;
  int64_t written_ = 0;
  Status error_;
};

// Writes all of `s` to descriptor `fd` (retrying short writes and EINTR). IoError names `path`
// (what fd is, for the message) and errno's text.
Status WriteAll(int fd, const std::string& s, const std::string& path);

// fsyncs a file or folder. IoError names the path.
Status FsyncPath(const std::string& path);

// An exclusive flock on a lock file that holds the owner's pid. Thread-compatible; the lock is
// released when the object is destroyed or the process dies. The descriptor is close-on-exec,
// so children never inherit it.
class FileLock {
 public:
  // Takes the lock without waiting. FailedPrecondition when another process holds it (the
  // message names the file and the holder's pid as written in it); IoError when the file
  // cannot be opened or created.
  static Result<std::unique_ptr<FileLock>> TryAcquire(const std::string& path);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_;
};

// Whether `s` is [A-Za-z0-9][A-Za-z0-9._-]*: safe as one folder name, in a URL path and on a
// command line. Sweep and observation-set names must be. A loop, not std::regex_match, which
// recurses once per character and overflowed the stack on a 25k-character name.
bool IsPlainName(const std::string& s);

// The pid written in a lock file that some live process holds, or 0 when nobody holds it (or
// the file does not exist). Does not take the lock.
pid_t LockHolder(const std::string& path);

}  // namespace isoflop
