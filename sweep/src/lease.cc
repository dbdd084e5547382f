// The per-sweep lease's policy (the rows are the store's): who holds it, when it is stale.
#include "isoflop/sweep/lease.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "isoflop/common/process.h"

namespace isoflop::sweep {

double UnixNow() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

store::SweepLease OwnLease(int64_t sweep_id) {
  store::SweepLease l;
  l.sweep_id = sweep_id;
  l.host = HostName();
  l.pid = ::getpid();
  l.pid_start = ProcessStartId(::getpid()).value_or("");
  l.started_at = store::NowIso8601();
  l.heartbeat_unix = UnixNow();
  return l;
}

bool LeaseIsLive(const store::SweepLease& lease, const LeaseOptions& options) {
  // On this host the process table is the truth: a SIGKILLed manager's lease is stale at once,
  // and a live one (even a stopped one) is never taken from it.
  if (lease.host == HostName()) {
    return SameProcessAlive(static_cast<pid_t>(lease.pid), lease.pid_start);
  }
  return UnixNow() - lease.heartbeat_unix < options.stale_after_s;
}

Result<store::SweepLease> AcquireSweepLease(store::Store& db, int64_t sweep_id,
                                            const std::string& sweep_name,
                                            const LeaseOptions& options) {
  ISOFLOP_ASSIGN_OR_RETURN(std::optional<store::SweepLease> held, db.GetLease(sweep_id));
  store::SweepLease mine = OwnLease(sweep_id);
  if (held && LeaseIsLive(*held, options) &&
      !(held->host == mine.host && held->pid == mine.pid && held->pid_start == mine.pid_start)) {
    char ago[32];
    std::snprintf(ago, sizeof(ago), "%.0f", UnixNow() - held->heartbeat_unix);
    return Status::FailedPrecondition(
        "sweep '" + sweep_name + "' is being run by another `isoflop sweep run` (pid " +
        std::to_string(held->pid) + " on host " + held->host + ", since " + held->started_at +
        ", last heartbeat " + ago + " s ago) in " + db.path() +
        "; wait for it, or stop it with `isoflop sweep cancel " + sweep_name + "`");
  }
  ISOFLOP_RETURN_IF_ERROR(db.PutLease(mine));
  return mine;
}

}  // namespace isoflop::sweep
