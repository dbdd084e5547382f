// Errors as values for every isoflop library: Status (ok or a message with a kind) and
// Result<T> (a value or a Status). Library code never throws across its public interface;
// cli/main.cc is the one place that turns a Status into a message and an exit code.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace isoflop {

// Status is a small value type; copying is cheap. Not thread-safe to mutate concurrently.
class Status {
 public:
  enum class Code {
    kOk = 0,
    kInvalidArgument,     // bad user input: config, CSV, flag values (exit code 2 at the CLI)
    kNotFound,            // a file, sweep, run or fit that does not exist
    kCorrupt,             // a file exists but cannot be read as what it claims to be
    kIoError,             // the operating system refused (open, write, fsync, rename)
    kFailedPrecondition,  // e.g. a database newer than this binary, too few points to fit
    kInternal,            // a bug or an unexpected library failure
  };

  Status() = default;
  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) {
    return {Code::kInvalidArgument, std::move(msg)};
  }
  static Status NotFound(std::string msg) { return {Code::kNotFound, std::move(msg)}; }
  static Status Corrupt(std::string msg) { return {Code::kCorrupt, std::move(msg)}; }
  static Status IoError(std::string msg) { return {Code::kIoError, std::move(msg)}; }
  static Status FailedPrecondition(std::string msg) {
    return {Code::kFailedPrecondition, std::move(msg)};
  }
  static Status Internal(std::string msg) { return {Code::kInternal, std::move(msg)}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // Returns a copy whose message is "prefix: message" (adds context on the way up).
  Status WithPrefix(const std::string& prefix) const {
    if (ok()) return *this;
    return Status(code_, prefix + ": " + message_);
  }

 private:
  Status(Code code, std::string msg) : code_(code), message_(std::move(msg)) {}
  Code code_ = Code::kOk;
  std::string message_;
};

// Result<T> holds either a T or a non-ok Status. Accessing value() of an error is a bug
// (asserted in debug builds).
template <typename T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    assert(!status_.ok() && "Result constructed from an ok Status without a value");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & {
    assert(ok());
    return *value_;
  }
  const T& value() const& {
    assert(ok());
    return *value_;
  }
  T&& value() && {
    assert(ok());
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace isoflop

// Returns early from the enclosing function with the error of `expr` (a Status).
#define ISOFLOP_RETURN_IF_ERROR(expr) \
  do {                                \
    ::isoflop::Status _st = (expr);   \
    if (!_st.ok()) return _st;        \
  } while (0)

#define ISOFLOP_CONCAT_INNER(a, b) a##b
#define ISOFLOP_CONCAT(a, b) ISOFLOP_CONCAT_INNER(a, b)
// Declares `lhs` from a Result<T> expression or returns its error.
#define ISOFLOP_ASSIGN_OR_RETURN(lhs, expr) \
  ISOFLOP_ASSIGN_OR_RETURN_IMPL(ISOFLOP_CONCAT(_res_, __LINE__), lhs, expr)
#define ISOFLOP_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()
