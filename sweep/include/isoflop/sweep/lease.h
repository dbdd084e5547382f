// The per-sweep lease: exactly one `isoflop sweep run` drives a sweep at a time, whatever its
// working directory. The lease is a row in the store (host, pid and the pid's start time, and a
// heartbeat the holder renews); a second manager is refused while the holder is alive, and a
// stale lease (its pid is dead on this host, or it is on another host and has not renewed for
// `stale_after_s`) is taken over.
#pragma once

#include <cstdint>
#include <string>

#include "isoflop/common/status.h"
#include "isoflop/store/store.h"

namespace isoflop::sweep {

struct LeaseOptions {
  // Seconds without a heartbeat after which a lease held on another host counts as stale.
  // Holders renew about every 2 s, so 60 s survives a long stall of the store or the host.
  double stale_after_s = 60;
};

// Seconds since the epoch, as leases record heartbeats.
double UnixNow();

// This process as a lease holder of `sweep_id` (host, pid, start id, now).
store::SweepLease OwnLease(int64_t sweep_id);

// True when `lease` is held by a live manager: on this host, its process (pid + start id) still
// runs; on another host, its heartbeat is younger than options.stale_after_s.
bool LeaseIsLive(const store::SweepLease& lease, const LeaseOptions& options = {});

// Takes the lease of sweep `sweep_id` (named `sweep_name` in messages) for this process, taking
// over a stale one. Must be called inside a store transaction, so that the check and the write
// are one step. Returns the lease written. FailedPrecondition when a live manager holds it (the
// message names its host, pid, start and last heartbeat); store errors otherwise.
Result<store::SweepLease> AcquireSweepLease(store::Store& db, int64_t sweep_id,
                                            const std::string& sweep_name,
                                            const LeaseOptions& options = {});

}  // namespace isoflop::sweep
