#!/usr/bin/env bash
# A single-node SLURM on loopback for the tests: munged, slurmctld and slurmd from Debian's
# slurm-wlm, every state, spool, log, pid and socket path under one temporary directory, no
# cgroups, no systemd, no accounting database (jobcomp/filetxt records finished jobs).
#
#   cluster.sh start DIR      starts the daemons (DIR is created), waits until the node is idle,
#                             prints `export SLURM_CONF=DIR/slurm.conf`
#   cluster.sh stop DIR       stops them (idempotent)
#   cluster.sh run CMD...     starts a cluster in a fresh directory, runs CMD with SLURM_CONF set,
#                             always stops it (also on failure or a signal), exits with CMD's code
set -euo pipefail

die() { echo "slurm-cluster: $*" >&2; exit 1; }

free_port() {
  /usr/bin/python3 - <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

start() {
  local dir=$1
  for b in munged slurmctld slurmd sbatch squeue scontrol; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] ||
      die "$b not found: install slurm-wlm and munge (scripts/install-deps.sh)"
  done
  mkdir -p "$dir"/{munge,state,spool,log,run}
  dir=$(cd "$dir" && pwd)
  chmod 755 "$dir" "$dir/munge"
  # A key of our own: the cluster needs nothing from /etc/munge.
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$dir/munge/munge.key"
  /usr/sbin/munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/munge.seed" || die "munged did not start (see $dir/log/munged.log)"

  local host cpus mem ctld_port d_port
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  ctld_port=$(free_port)
  d_port=$(free_port)
  cat >"$dir/slurm.conf" <<CONF
ClusterName=isoflop-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd-%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
DependencyParameters=kill_invalid_depend
ReturnToService=2
MinJobAge=3600
KillWait=10
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
  export SLURM_CONF="$dir/slurm.conf"
  /usr/sbin/slurmctld -i || die "slurmctld did not start (see $dir/log/slurmctld.log)"
  /usr/sbin/slurmd || die "slurmd did not start (see $dir/log/slurmd.log)"
  local i state=""
  for i in $(seq 1 100); do
    state=$(sinfo -h -N -o '%t' 2>/dev/null | head -1 || true)
    case "$state" in idle|mix|alloc) break ;; esac
    sleep 0.1
  done
  case "$state" in idle|mix|alloc) ;; *)
    stop "$dir"; die "the node did not come up (state '$state'; logs in $dir/log)" ;;
  esac
  echo "export SLURM_CONF=$dir/slurm.conf"
}

kill_pidfile() {
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f" 2>/dev/null || true)
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  # Jobs first (their steps die with slurmd otherwise, but leave no stray trainer behind).
  if [ -f "$dir/slurm.conf" ]; then
    SLURM_CONF="$dir/slurm.conf" timeout 5 scancel --full --quiet --user=root 2>/dev/null || true
  fi
  for f in "$dir"/run/slurmd-*.pid "$dir/run/slurmctld.pid" "$dir/munge/munged.pid"; do
    kill_pidfile "$f"
  done
  # slurmstepd processes of this cluster's jobs, if any outlived slurmd.
  pkill -9 -f "slurmstepd.*$dir" 2>/dev/null || true
}

case "${1:-}" in
  start) [ $# -eq 2 ] || die "usage: cluster.sh start DIR"; start "$2" ;;
  stop) [ $# -eq 2 ] || die "usage: cluster.sh stop DIR"; stop "$2" ;;
  run)
    shift
    [ $# -ge 1 ] || die "usage: cluster.sh run CMD..."
    dir=$(mktemp -d /tmp/isoflop-slurm.XXXXXX)
    trap 'stop "$dir"; rm -rf "$dir"' EXIT
    trap 'exit 143' TERM INT
    eval "$(start "$dir")"
    set +e
    "$@"
    rc=$?
    set -e
    if [ $rc -ne 0 ]; then
      echo "slurm-cluster: command failed ($rc); slurmctld log tail:" >&2
      tail -n 30 "$dir/log/slurmctld.log" >&2 || true
    fi
    exit $rc
    ;;
  *) die "usage: cluster.sh start DIR | stop DIR | run CMD..." ;;
esac
