#!/usr/bin/env bash
# Installs and starts a single-node Slurm on this machine, for testing `dfaiss launch slurm`
# against the real thing. Idempotent, and quick (< 1 s) when Slurm already runs.
#
#   1. Debian packages slurmctld, slurmd, slurm-client and munge, when missing (root only).
#   2. /etc/slurm/slurm.conf for this host (only when absent or written by this script:
#      a Slurm configured by someone else is used as it is).
#   3. munged (as user munge), slurmctld and slurmd, started here directly: container
#      images' policy-rc.d keeps package services from starting.
#   4. Waits until the node is idle, then runs one warm-up job (the first job after a
#      start is scheduled seconds late).
#
# Prints `partition=<name>` on stdout when Slurm is ready; progress goes to stderr.
# Exit codes: 0 ready; 2 Slurm is not installed and cannot be installed here (not root, or
# apt-get failed); 1 installed but could not be started (see the log files named).
#
# Environment: DFAISS_SLURM_CPUS (CPUs declared for the node, default 8: more than the real
# count, so that multi-task test jobs fit), DFAISS_SLURM_PARTITION (default dfaiss).
set -euo pipefail

log() { printf '[slurm-setup] %s\n' "$*" >&2; }
die() { log "$2"; exit "$1"; }

PARTITION=${DFAISS_SLURM_PARTITION:-dfaiss}
CPUS=${DFAISS_SLURM_CPUS:-8}
CONF=/etc/slurm/slurm.conf
MARKER='# written by dfaiss scripts/slurm-setup.sh'
LOGDIR=/var/log/slurm
STATEDIR=/var/lib/slurm

ready() { # the node answers and is idle or already running something (mixed/allocated)
  local state
  state=$(timeout 5 sinfo -h -N -o '%t' 2>/dev/null | head -n1) || return 1
  [[ $state =~ ^(idle|mix|mixed|alloc|allocated)$ ]]
}

pid_alive() { # pidfile: true when its process runs and is the daemon named like the file
  local pid
  [[ -f $1 ]] && pid=$(cat "$1") && [[ $pid =~ ^[0-9]+$ ]] \
    && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$(basename "$1" .pid)" ]]
}

# ---- 1. packages ----------------------------------------------------------------------
pkgs=(slurmctld slurmd slurm-client munge)
missing=()
for pkg in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || die 2 "Slurm is not installed and installing needs root: sudo apt-get install -y ${missing[*]}"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/dfaiss-slurm-apt.log 2>&1; then
    apt-get update -qq >>/tmp/dfaiss-slurm-apt.log 2>&1 || true
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >>/tmp/dfaiss-slurm-apt.log 2>&1 \
      || die 2 "apt-get could not install ${missing[*]} (log: /tmp/dfaiss-slurm-apt.log)"
  fi
fi

# ---- 2. configuration -----------------------------------------------------------------
ours=0
if [[ ! -f $CONF ]] || grep -qF "$MARKER" "$CONF"; then ours=1; fi

if ((ours)); then
  [[ $(id -u) -eq 0 ]] || { ready && { echo "partition=$PARTITION"; exit 0; }; die 2 "Slurm is not running and starting it needs root"; }
  node=$(hostname -s)
  mem_mb=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)
  conf=$(cat <<EOF
$MARKER
# A single-node test cluster on loopback. Essentials:
#  - SlurmdParameters=config_overrides: slurmd uses the CPUs/RealMemory declared below, not
#    the hardware (with the real 2 CPUs a 4-task job would pend forever);
#  - SchedulerParameters=batch_sched_delay=0 and sched_interval: jobs start at once;
#  - EnforcePartLimits=ALL: impossible requests fail at submit instead of pending forever;
#  - proctrack/linuxproc and task/none: no cgroups needed (containers);
#  - no accounting database.
ClusterName=dfaiss
SlurmctldHost=$node(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATEDIR/slurmctld
SlurmdSpoolDir=$STATEDIR/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
EnforcePartLimits=ALL
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait=10
MinJobAge=10
InactiveLimit=0
NodeName=$node NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
)
  changed=0
  if [[ ! -f $CONF ]] || [[ $(cat "$CONF") != "$conf" ]]; then
    mkdir -p /etc/slurm
    printf '%s\n' "$conf" >"$CONF"
    changed=1
    log "wrote $CONF (node $node, $CPUS CPUs, ${mem_mb} MB, partition $PARTITION)"
  fi
  if ((!changed)) && pid_alive /run/slurmctld.pid && pid_alive /run/slurmd.pid && ready; then
    echo "partition=$PARTITION"
    exit 0
  fi
else
  # Someone else's Slurm: use it as it is, with its default partition.
  ready || die 1 "$CONF was not written by dfaiss and its Slurm does not answer (sinfo)"
  part=$(sinfo -h -o '%P' | grep -m1 '\*$' | tr -d '*') || true
  echo "partition=${DFAISS_SLURM_PARTITION:-${part:-$(sinfo -h -o '%P' | head -n1)}}"
  exit 0
fi

# ---- 3. daemons ------------------------------------------------------------------------
mkdir -p "$LOGDIR" "$STATEDIR/slurmctld" "$STATEDIR/slurmd"

# munge: the Debian package creates the key and the user; its service may not have started.
[[ -f /etc/munge/munge.key ]] || { log "creating the munge key"; mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null || /usr/sbin/create-munge-key -f; }
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
munge_ok() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged || die 1 "munged did not start (log: /var/log/munge/munged.log)"
fi
for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
munge_ok || die 1 "munge does not work (log: /var/log/munge/munged.log)"

stop_pidfile() { # pidfile: stops the daemon this script started earlier, by its PID
  local pid
  [[ -f $1 ]] || return 0
  pid=$(cat "$1")
  if pid_alive "$1"; then
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$1"
}

if ((changed)); then
  stop_pidfile /run/slurmd.pid
  stop_pidfile /run/slurmctld.pid
fi
if ! pid_alive /run/slurmctld.pid; then
  log "starting slurmctld"
  # -c: start clean (no saved jobs from an earlier configuration); -i: ignore state errors.
  /usr/sbin/slurmctld -c -i || die 1 "slurmctld did not start (log: $LOGDIR/slurmctld.log)"
fi
for _ in $(seq 100); do timeout 2 scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.1; done
if ! pid_alive /run/slurmd.pid; then
  log "starting slurmd"
  /usr/sbin/slurmd || die 1 "slurmd did not start (log: $LOGDIR/slurmd.log)"
fi

# ---- 4. ready + warm-up ----------------------------------------------------------------
for _ in $(seq 150); do ready && break; sleep 0.2; done
if ! ready; then
  state=$(sinfo -h -N -o '%t %E' 2>/dev/null | head -n1 || true)
  # A node left down/drained by an earlier run: bring it back once.
  if [[ $state =~ ^(down|drain) ]]; then
    scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
    for _ in $(seq 50); do ready && break; sleep 0.2; done
  fi
  ready || die 1 "the node is not idle ($state); logs: $LOGDIR/slurmctld.log, $LOGDIR/slurmd.log"
fi
log "warm-up job"
timeout 60 srun --partition="$PARTITION" --ntasks=1 --time=1 --quiet true \
  || die 1 "the warm-up job failed; logs: $LOGDIR/slurmctld.log, $LOGDIR/slurmd.log"
log "Slurm is ready"
echo "partition=$PARTITION"
