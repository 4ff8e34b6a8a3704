#!/usr/bin/env bash
# Single-node throwaway Slurm cluster (slurmctld + slurmd + munged) on THIS
# machine, with two fake GPUs, for tb's Slurm-backend integration tests.
#
# Usage:
#   tests/slurm/cluster.sh start STATE_DIR   # install (if needed), configure, start, wait for node idle
#   tests/slurm/cluster.sh stop  STATE_DIR   # cancel jobs, stop the daemons started by `start` (idempotent)
#   tests/slurm/cluster.sh status STATE_DIR  # show recorded daemons + sinfo/squeue
#
# After `start`, use the cluster with:
#   source STATE_DIR/env        (or: export SLURM_CONF=STATE_DIR/slurm.conf)
#   sbatch / squeue / scancel / sinfo / scontrol ...
#
# Requirements / assumptions: Debian/Ubuntu, run as root, no systemd needed.
# Everything (configs, spool, state, logs, pid files, munge socket) lives in
# STATE_DIR; the only things written outside it are the Debian packages
# (first run only), /etc/munge/munge.key (only if missing), the fake GPU
# device nodes /dev/tbfakegpu0 and /dev/tbfakegpu1 (each with 3 shards:
# Gres=gpu:2,shard:6), and slurmd's devices cgroup
# /sys/fs/cgroup/devices/slurm_<host> (ConstrainDevices=yes; removed by stop).
#
# Environment knobs:
#   TB_SLURM_CTLD_PORT (default 6817), TB_SLURM_SLURMD_PORT (default 6818)
#   TB_SLURM_START_TIMEOUT (seconds to wait for the node to be idle, default 60)
#
# Notes:
#   * No accounting (no slurmdbd): `sacct` does NOT work. Finished jobs stay
#     visible in squeue/scontrol for MinJobAge=300 s; in addition every job's
#     final state is appended to STATE_DIR/jobcomp.log (jobcomp/filetxt).
#   * Jobs run as root (the submitter) and inherit the submitter's env
#     (sbatch default --export=ALL).
set -euo pipefail

SLURM_PKGS=(slurmctld slurmd slurm-client munge)
CTLD_PORT="${TB_SLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${TB_SLURM_SLURMD_PORT:-6818}"
START_TIMEOUT="${TB_SLURM_START_TIMEOUT:-60}"
FAKE_GPU_PREFIX=/dev/tbfakegpu
FAKE_GPU_MAJOR=240   # 240-254 = "local/experimental use" char majors; nothing drives them
# Shards (Slurm's GPU sharing) per fake GPU. 3, so that a half-GPU job
# (tb asks shard:2) leaves too few for a second one on its GPU: two at once
# use both GPUs.
SHARDS_PER_GPU=3
DEVICES_CGROUP=/sys/fs/cgroup/devices

log() { echo "cluster.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
  sed -n '2,12p' "$0" >&2
  exit 2
}

[[ $# -eq 2 ]] || usage
CMD="$1"
STATE_DIR_ARG="$2"

# ---------------------------------------------------------------- helpers

# pid_alive PIDFILE EXPECTED_COMM -> prints pid and returns 0 if the process
# recorded in PIDFILE is alive and really is EXPECTED_COMM (guards against
# pid reuse).
pid_alive() {
  local pidfile="$1" comm="$2" pid
  [[ -s "$pidfile" ]] || return 1
  pid="$(tr -dc '0-9' <"$pidfile")"
  [[ -n "$pid" ]] || return 1
  [[ -r "/proc/$pid/comm" ]] || return 1
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm" ]] || return 1
  echo "$pid"
}

# stop_pidfile PIDFILE COMM: SIGTERM, wait up to 15 s, SIGKILL, wait.
stop_pidfile() {
  local pidfile="$1" comm="$2" pid i
  if pid="$(pid_alive "$pidfile" "$comm")"; then
    log "stopping $comm (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
      [[ -d "/proc/$pid" ]] || break
      sleep 0.1
    done
    if [[ -d "/proc/$pid" ]]; then
      log "$comm (pid $pid) ignored SIGTERM, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        [[ -d "/proc/$pid" ]] || break
        sleep 0.1
      done
    fi
  fi
  rm -f "$pidfile"
}

# pids of slurmstepd processes forked by *our* slurmd. slurmstepd does not
# inherit slurmd's environment, but it inherits slurmd's cwd (the directory of
# SlurmdLogFile, i.e. STATE_DIR/log) and keeps STATE_DIR/log/slurmd.log open.
our_stepds() {
  local p f
  for p in /proc/[0-9]*; do
    [[ "$(cat "$p/comm" 2>/dev/null)" == slurmstepd ]] || continue
    for f in "$p/cwd" "$p"/fd/*; do
      if [[ "$(readlink "$f" 2>/dev/null)" == "$STATE_DIR"/* ]]; then
        echo "${p#/proc/}"
        break
      fi
    done
  done
}

# all descendants of a pid (children first order not guaranteed)
descendants() {
  local parent="$1" c
  for c in $(ps -o pid= --ppid "$parent" 2>/dev/null); do
    echo "$c"
    descendants "$c"
  done
}

print_logs() {
  local f
  for f in "$STATE_DIR"/log/munged.log "$STATE_DIR"/log/slurmctld.log "$STATE_DIR"/log/slurmd.log; do
    [[ -f "$f" ]] || continue
    echo "===== $f (last 40 lines) =====" >&2
    tail -n 40 "$f" >&2
  done
}

# ---------------------------------------------------------------- install

install_packages() {
  if command -v sbatch >/dev/null && command -v slurmctld >/dev/null &&
    command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return 0
  fi
  [[ $EUID -eq 0 ]] || die "packages missing and not root; install: ${SLURM_PKGS[*]}"
  log "installing ${SLURM_PKGS[*]} (apt)"
  local t0=$SECONDS policy=/usr/sbin/policy-rc.d backup=""
  # Prevent postinst scripts from starting services (no systemd here anyway).
  if [[ -e $policy ]]; then
    backup="$(mktemp)"
    cp -p "$policy" "$backup"
  fi
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  restore_policy() {
    if [[ -n "$backup" ]]; then
      cp -p "$backup" "$policy" && rm -f "$backup"
    else
      rm -f "$policy"
    fi
  }
  trap restore_policy EXIT
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends "${SLURM_PKGS[@]}" >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${SLURM_PKGS[@]}" >/dev/null
  fi
  restore_policy
  trap - EXIT
  log "apt install took $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------- munge

start_munged() {
  local key=/etc/munge/munge.key mdir="$STATE_DIR/munge"
  if [[ ! -s $key ]]; then
    log "creating munge key $key"
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile="$key" --force
    else
      dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
    fi
    chown munge:munge "$key" 2>/dev/null || true
    chmod 0400 "$key"
  fi
  if pid_alive "$STATE_DIR/munged.pid" munged >/dev/null; then
    log "munged already running"
    return 0
  fi
  mkdir -p "$mdir"
  chmod 0755 "$mdir"
  # Run munged as root (--force: accept root-owned dirs / root euid). The
  # key is readable by root whatever its owner. Socket, pid, log and seed
  # all live in STATE_DIR.
  rm -f "$mdir/munge.socket" "$mdir/munge.socket.lock"
  munged --force \
    --socket="$mdir/munge.socket" \
    --key-file="$key" \
    --pid-file="$STATE_DIR/munged.pid" \
    --log-file="$STATE_DIR/log/munged.log" \
    --seed-file="$mdir/munged.seed" ||
    {
      print_logs
      die "munged failed to start"
    }
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -S "$mdir/munge.socket" ]] && pid_alive "$STATE_DIR/munged.pid" munged >/dev/null && break
    sleep 0.1
  done
  pid_alive "$STATE_DIR/munged.pid" munged >/dev/null || {
    print_logs
    die "munged not running"
  }
  # Sanity: encode/decode round trip through our socket.
  munge --socket="$mdir/munge.socket" -n | unmunge --socket="$mdir/munge.socket" >/dev/null ||
    die "munge round trip failed"
}

# ---------------------------------------------------------------- config

make_fake_gpus() {
  local i dev
  for i in 0 1; do
    dev="$FAKE_GPU_PREFIX$i"
    if [[ ! -e $dev ]]; then
      mknod -m 0666 "$dev" c "$FAKE_GPU_MAJOR" "$i" 2>/dev/null ||
        { touch "$dev" && chmod 0666 "$dev"; } # fallback: regular file (Slurm only stats it)
    fi
  done
}

write_configs() {
  local host cpus node_hw realmem
  host="$(hostname -s)"
  [[ -n "$host" ]] || die "hostname -s is empty"
  # e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
  node_hw="$(slurmd -C 2>/dev/null | head -n1 || true)"
  cpus="$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node_hw")"
  realmem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_hw")"
  [[ -n "$cpus" ]] || cpus="$(nproc)"
  [[ -n "$realmem" ]] || realmem=1000
  # Be a bit conservative on memory so the node never drains with "Low RealMemory".
  realmem=$((realmem * 9 / 10))
  # Keep the topology slurmd reports (so CR_Core counts cores correctly); drop
  # NodeName/RealMemory which we set ourselves.
  local topo
  topo="$(sed -e 's/NodeName=[^ ]*//' -e 's/RealMemory=[^ ]*//' -e 's/^ *//' -e 's/ *$//' <<<"$node_hw")"
  [[ -n "$topo" ]] || topo="CPUs=$cpus"
  # ConstrainDevices needs cgroup v1's devices controller (Slurm 22.05's
  # cgroup/v2 wants systemd); without it, jobs see every device.
  local task_plugin=task/none
  if [[ "$(stat -f -c %T "$DEVICES_CGROUP" 2>/dev/null)" == cgroupfs ]]; then
    task_plugin=task/cgroup
  else
    log "no cgroup v1 devices controller at $DEVICES_CGROUP: devices not constrained (TaskPlugin=task/none)"
  fi

  cat >"$STATE_DIR/slurm.conf" <<EOF
# Generated by tests/slurm/cluster.sh -- single-node test cluster, do not edit.
ClusterName=tbtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE_DIR/munge/munge.socket

StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=$task_plugin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE_DIR/jobcomp.log
SwitchType=switch/none
MailProg=/bin/true
PlugStackConfig=$STATE_DIR/plugstack.conf

SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
GresTypes=gpu,shard

ReturnToService=2
KillWait=10
MinJobAge=300
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60

NodeName=$host NodeAddr=127.0.0.1 $topo RealMemory=$realmem Gres=gpu:2,shard:$((2 * SHARDS_PER_GPU)) State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

  cat >"$STATE_DIR/gres.conf" <<EOF
# Generated by tests/slurm/cluster.sh -- two fake GPUs (char devices nobody drives).
AutoDetect=off
NodeName=$host Name=gpu File=${FAKE_GPU_PREFIX}[0-1]
NodeName=$host Name=shard Count=$SHARDS_PER_GPU File=${FAKE_GPU_PREFIX}0
NodeName=$host Name=shard Count=$SHARDS_PER_GPU File=${FAKE_GPU_PREFIX}1
EOF

  # Only the devices are constrained (as a GPU site does): a job sees its
  # GPUs counted from 0 in CUDA_VISIBLE_DEVICES, while tb's containers,
  # made by dockerd outside the job's cgroup, need the node's ids.
  cat >"$STATE_DIR/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainDevices=yes
EOF

  # Empty plugstack so no system-wide SPANK plugins get loaded.
  : >"$STATE_DIR/plugstack.conf"

  cat >"$STATE_DIR/env" <<EOF
export SLURM_CONF=$STATE_DIR/slurm.conf
EOF
}

# ---------------------------------------------------------------- start/stop

do_start() {
  local t0=$SECONDS
  [[ $EUID -eq 0 ]] || die "must run as root"
  install_packages
  mkdir -p "$STATE_DIR"/{log,ctld,spool,munge}
  if pid_alive "$STATE_DIR/slurmctld.pid" slurmctld >/dev/null ||
    pid_alive "$STATE_DIR/slurmd.pid" slurmd >/dev/null; then
    die "a cluster from $STATE_DIR is already running; run: $0 stop $STATE_DIR"
  fi
  make_fake_gpus
  write_configs
  start_munged

  export SLURM_CONF="$STATE_DIR/slurm.conf"

  # Daemon mode: the daemons fork, write their pid files (paths from
  # slurm.conf, i.e. STATE_DIR/slurm{ctld,d}.pid) and log to STATE_DIR/log.
  # -c: clear state from a previous run (fresh job ids, no stale jobs).
  slurmctld -c </dev/null >>"$STATE_DIR/log/slurmctld.stderr" 2>&1 || {
    cat "$STATE_DIR/log/slurmctld.stderr" >&2
    print_logs
    do_stop
    die "slurmctld failed to start"
  }
  slurmd </dev/null >>"$STATE_DIR/log/slurmd.stderr" 2>&1 || {
    cat "$STATE_DIR/log/slurmd.stderr" >&2
    print_logs
    do_stop
    die "slurmd failed to start"
  }

  local deadline=$((SECONDS + START_TIMEOUT)) state=""
  while ((SECONDS < deadline)); do
    state="$(sinfo -h -o %T 2>/dev/null | head -n1 || true)"
    [[ "$state" == idle ]] && break
    sleep 0.5
  done
  if [[ "$state" != idle ]]; then
    log "node did not become idle within ${START_TIMEOUT}s (state: '${state:-<none>}')"
    sinfo -N -l >&2 || true
    scontrol show node >&2 || true
    print_logs
    do_stop
    exit 1
  fi
  pid_alive "$STATE_DIR/slurmctld.pid" slurmctld >/dev/null || die "slurmctld died"
  pid_alive "$STATE_DIR/slurmd.pid" slurmd >/dev/null || die "slurmd died"
  log "cluster up in $((SECONDS - t0)) s (munged $(cat "$STATE_DIR/munged.pid"), slurmctld $(cat "$STATE_DIR/slurmctld.pid"), slurmd $(cat "$STATE_DIR/slurmd.pid"))"
  echo "export SLURM_CONF=$STATE_DIR/slurm.conf"
}

do_stop() {
  export SLURM_CONF="$STATE_DIR/slurm.conf"
  # 1. Cancel all jobs while slurmctld/slurmd are still alive so job
  #    processes get cleaned up properly (SIGTERM, KillWait, SIGKILL).
  if pid_alive "$STATE_DIR/slurmctld.pid" slurmctld >/dev/null && [[ -f $SLURM_CONF ]]; then
    local jobs i
    jobs="$(squeue -h -t PENDING,RUNNING,SUSPENDED,CONFIGURING,COMPLETING -o %i 2>/dev/null | tr '\n' ' ' || true)"
    if [[ -n "${jobs// /}" ]]; then
      log "cancelling jobs: $jobs"
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for ((i = 0; i < 30; i++)); do # KillWait=10 + slack
        [[ -z "$(squeue -h -t PENDING,RUNNING,SUSPENDED,CONFIGURING,COMPLETING -o %i 2>/dev/null || true)" ]] && break
        sleep 0.5
      done
    fi
  fi
  # 2. Stop the daemons we started, by recorded pid only.
  stop_pidfile "$STATE_DIR/slurmd.pid" slurmd
  stop_pidfile "$STATE_DIR/slurmctld.pid" slurmctld
  # 3. Any slurmstepd forked by *our* slurmd that survived (slurmstepd
  #    outlives slurmd by design): kill it and its descendants (job processes).
  local p victims=""
  for p in $(our_stepds); do
    victims+=" $p $(descendants "$p" | tr '\n' ' ')"
  done
  if [[ -n "${victims// /}" ]]; then
    log "killing leftover job processes:$victims"
    # shellcheck disable=SC2086
    kill -KILL $victims 2>/dev/null || true
  fi
  # 4. The devices cgroup our slurmd made, once its jobs are gone.
  local host
  host="$(hostname -s)"
  if [[ -d "$DEVICES_CGROUP/slurm_$host" ]]; then
    find "$DEVICES_CGROUP/slurm_$host" -depth -type d -exec rmdir {} + 2>/dev/null || true
  fi
  # 5. munged last (slurm daemons need it while shutting down).
  stop_pidfile "$STATE_DIR/munged.pid" munged
  rm -f "$STATE_DIR/munge/munge.socket" "$STATE_DIR/munge/munge.socket.lock"
}

do_status() {
  local n
  for n in munged slurmctld slurmd; do
    if pid_alive "$STATE_DIR/$n.pid" "$n" >/dev/null; then
      echo "$n: running (pid $(cat "$STATE_DIR/$n.pid"))"
    else
      echo "$n: not running"
    fi
  done
  if pid_alive "$STATE_DIR/slurmctld.pid" slurmctld >/dev/null; then
    SLURM_CONF="$STATE_DIR/slurm.conf" sinfo || true
    SLURM_CONF="$STATE_DIR/slurm.conf" squeue || true
  fi
}

case "$CMD" in
start)
  mkdir -p "$STATE_DIR_ARG"
  STATE_DIR="$(cd "$STATE_DIR_ARG" && pwd -P)"
  do_start
  ;;
stop)
  if [[ ! -d "$STATE_DIR_ARG" ]]; then
    exit 0 # nothing was ever started there
  fi
  STATE_DIR="$(cd "$STATE_DIR_ARG" && pwd -P)"
  do_stop
  ;;
status)
  [[ -d "$STATE_DIR_ARG" ]] || { echo "no such state dir"; exit 1; }
  STATE_DIR="$(cd "$STATE_DIR_ARG" && pwd -P)"
  do_status
  ;;
*) usage ;;
esac
