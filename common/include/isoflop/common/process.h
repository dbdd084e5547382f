// Who is running: this machine's host name and a process identity that survives pid reuse
// (pid plus the kernel's start time of the process), so a record of "the worker is pid 4242"
// written by a process that has since died can be checked before anyone signals pid 4242.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

namespace isoflop {

// gethostname(), or "" when it fails.
std::string HostName();

// A TCP port free on loopback now (the OS picks it; 29500 when it cannot), for a rendezvous of
// processes on this host. Another process may take it before it is used.
int FreeLoopbackPort();

// The start time of process `pid` as the kernel reports it (/proc/PID/stat field 22, clock
// ticks after boot, prefixed by the boot id so that it cannot repeat across reboots). nullopt
// when no such process exists or it is a zombie (it has exited and only waits to be reaped).
std::optional<std::string> ProcessStartId(pid_t pid);

// True when `pid` runs and its start id is `start_id` (the same process that was recorded).
bool SameProcessAlive(pid_t pid, const std::string& start_id);

}  // namespace isoflop
