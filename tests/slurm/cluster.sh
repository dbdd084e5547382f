#!/usr/bin/env bash
# A single-node SLURM on loopback for the tests: munged, slurmctld and slurmd from Debian's
# slurm-wlm, every state, spool, log, pid and socket path under one temporary directory, no
# cgroups, no systemd. By default no accounting database (jobcomp/filetxt records finished
# jobs); with --accounting also a MariaDB server and slurmdbd of its own (sacct answers), and
# finished jobs leave the controller's memory after MinJobAge=2 s, so only sacct knows them.
#
#   cluster.sh start DIR [--accounting]
#                             starts the daemons (DIR is created), waits until the node is idle,
#                             prints `export SLURM_CONF=DIR/slurm.conf`
#   cluster.sh stop DIR       stops them (idempotent)
#   cluster.sh run [--accounting] CMD...
#                             starts a cluster in a fresh directory, runs CMD with SLURM_CONF set,
#                             always stops it (also on failure or a signal), exits with CMD's code
set -euo pipefail

die() { echo "slurm-cluster: $*" >&2; exit 1; }

free_port() {
  /usr/bin/python3 - <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

wait_for() {  # wait_for SECONDS CMD...: until CMD succeeds
  local n=$(($1 * 10)) i
  shift
  for i in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

# MariaDB on a loopback port with its data in DIR/mysql, a user for slurmdbd, then slurmdbd
# itself (DIR/slurmdbd.conf, beside slurm.conf, where slurmdbd looks for it).
start_accounting() {
  local dir=$1 db_port=$2 dbd_port=$3
  for b in mariadbd mariadb-install-db slurmdbd sacctmgr; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] ||
      die "$b not found: install mariadb-server and slurmdbd (scripts/install-deps.sh)"
  done
  mkdir -p "$dir/mysql"
  mariadb-install-db --no-defaults --datadir="$dir/mysql" --user=root --skip-test-db \
    --auth-root-authentication-method=socket >"$dir/log/mariadb-install.log" 2>&1 ||
    die "mariadb-install-db failed (see $dir/log/mariadb-install.log)"
  /usr/sbin/mariadbd --no-defaults --datadir="$dir/mysql" --socket="$dir/run/mysql.sock" \
    --port="$db_port" --bind-address=127.0.0.1 --skip-name-resolve --user=root \
    --pid-file="$dir/run/mariadb.pid" --log-error="$dir/log/mariadb.log" \
    --innodb-buffer-pool-size=32M </dev/null >/dev/null 2>&1 &
  wait_for 30 mariadb --no-defaults --socket="$dir/run/mysql.sock" -u root -e "SELECT 1" ||
    die "MariaDB did not start (see $dir/log/mariadb.log)"
  mariadb --no-defaults --socket="$dir/run/mysql.sock" -u root -e \
    "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'isoflop-test';
     GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || die "cannot create the slurm user"
  cat >"$dir/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
DbdAddr=127.0.0.1
DbdHost=$(hostname -s)
DbdPort=$dbd_port
SlurmUser=root
LogFile=$dir/log/slurmdbd.log
PidFile=$dir/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=isoflop-test
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$dir/slurmdbd.conf"
  /usr/sbin/slurmdbd || die "slurmdbd did not start (see $dir/log/slurmdbd.log)"
  wait_for 30 sacctmgr -n list cluster || die "slurmdbd does not answer (see $dir/log/slurmdbd.log)"
  sacctmgr -i add cluster isoflop-test >/dev/null || die "sacctmgr cannot add the cluster"
}

start() {
  local dir=$1 accounting=${2:-}
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
  local acct="AccountingStorageType=accounting_storage/none" min_job_age=3600
  if [ "$accounting" = --accounting ]; then
    local dbd_port
    dbd_port=$(free_port)
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
AccountingStoragePass=$dir/munge/munge.socket"
    min_job_age=2
  fi
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
$acct
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
DependencyParameters=kill_invalid_depend
ReturnToService=2
MinJobAge=$min_job_age
KillWait=10
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
  export SLURM_CONF="$dir/slurm.conf"
  if [ "$accounting" = --accounting ]; then
    start_accounting "$dir" "$(free_port)" "${dbd_port:?}"
  fi
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
  for f in "$dir"/run/slurmd-*.pid "$dir/run/slurmctld.pid" "$dir/run/slurmdbd.pid" \
    "$dir/run/mariadb.pid" "$dir/munge/munged.pid"; do
    kill_pidfile "$f"
  done
  # slurmstepd processes of this cluster's jobs, if any outlived slurmd.
  pkill -9 -f "slurmstepd.*$dir" 2>/dev/null || true
}

case "${1:-}" in
  start)
    [ $# -eq 2 ] || { [ $# -eq 3 ] && [ "$3" = --accounting ]; } ||
      die "usage: cluster.sh start DIR [--accounting]"
    start "$2" "${3:-}"
    ;;
  stop) [ $# -eq 2 ] || die "usage: cluster.sh stop DIR"; stop "$2" ;;
  run)
    shift
    accounting=""
    if [ "${1:-}" = --accounting ]; then accounting=--accounting; shift; fi
    [ $# -ge 1 ] || die "usage: cluster.sh run [--accounting] CMD..."
    dir=$(mktemp -d /tmp/isoflop-slurm.XXXXXX)
    trap 'stop "$dir"; rm -rf "$dir"' EXIT
    trap 'exit 143' TERM INT
    eval "$(start "$dir" $accounting)"
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
  *) die "usage: cluster.sh start DIR [--accounting] | stop DIR | run [--accounting] CMD..." ;;
esac
