#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for testing `tools/benchmark.py --launcher slurm`.
#
#   tools/slurm_local.sh start    # install slurmctld/slurmd/munge when missing (Debian, root), write a
#                                 # slurm.conf for this host, start munged + slurmctld + slurmd, wait
#                                 # until sinfo shows the node idle
#   tools/slurm_local.sh status   # sinfo of the local cluster (exit 1 when it is not up)
#   tools/slurm_local.sh stop     # stop the daemons this script started (by pid file)
#   tools/slurm_local.sh env      # print the export line clients need (SLURM_CONF)
#
# Everything lives under $SLURM_LOCAL_DIR (default /tmp/dcac-slurm): slurm.conf, spool, state, logs,
# pid files. The system's /etc/slurm is never touched: clients (sbatch, sinfo, squeue, submitit) find
# the cluster through SLURM_CONF=$SLURM_LOCAL_DIR/slurm.conf. All daemons listen on 127.0.0.1.
# Settings for machines without cgroup support: proctrack/linuxproc, task/none, cons_tres + CR_Core,
# no accounting (sacct is unavailable; squeue answers for queued and running jobs).
#
# Exit status of `start`: 0 up; 3 Slurm/munge cannot be installed on this machine (not installed,
# and no root, no apt-get, or apt-get failed); any other non-zero status is this script failing
# (configuration, daemons), which the tests always report as a failure.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/tmp/dcac-slurm}
CONF=$DIR/slurm.conf
CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-6818}
export SLURM_CONF=$CONF

log() { echo "slurm_local: $*" >&2; }

tail_logs() {
    for f in "$DIR"/log/*.log "$DIR"/munge/*.log; do
        [ -f "$f" ] || continue
        echo "--- $f (last 20 lines)" >&2
        tail -n 20 "$f" >&2
    done
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sinfo >/dev/null && command -v sbatch >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        log "slurmctld/slurmd/munge are not installed and installing them needs root:"
        log "  apt-get update && apt-get install -y slurmctld slurmd munge slurm-client"
        exit 3
    fi
    if ! command -v apt-get >/dev/null; then
        log "slurmctld/slurmd/munge are not installed and this machine has no apt-get; install Slurm"
        log "and munge with the system's package manager"
        exit 3
    fi
    log "installing slurmctld slurmd munge slurm-client (apt-get)"
    if ! apt-get update -qq || ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd munge \
        slurm-client >/dev/null; then
        log "apt-get could not install slurmctld slurmd munge slurm-client (see its output above)"
        exit 3
    fi
}

# Each cluster has its own munged on its own socket ($DIR/munge/munge.socket, named in slurm.conf's
# AuthInfo), so that two clusters on one machine (e.g. two test runs) never share or stop each
# other's munged. The key is the system's /etc/munge/munge.key (created when missing).
MUNGE_SOCKET=$DIR/munge/munge.socket

munge_answers() { munge --socket="$MUNGE_SOCKET" -n 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1; }

start_munge() {
    if pid_alive "$DIR/munge/munged.pid" && munge_answers; then
        return 0
    fi
    if [ ! -f /etc/munge/munge.key ]; then
        log "creating /etc/munge/munge.key"
        if command -v mungekey >/dev/null; then mungekey --create; else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null; fi
        chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    fi
    mkdir -p "$DIR/munge"
    chmod 755 "$DIR"  # munged runs as the munge user and must reach its folder
    chown munge:munge "$DIR/munge"
    runuser -u munge -- munged --socket="$MUNGE_SOCKET" --pid-file="$DIR/munge/munged.pid" \
        --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed"
    touch "$DIR/munged.ours"
    for _ in $(seq 50); do
        munge_answers && return 0
        sleep 0.2
    done
    log "munged does not answer on $MUNGE_SOCKET (munge -n | unmunge fails)"
    tail_logs
    exit 1
}

write_conf() {
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    mkdir -p "$DIR/spool/slurmd" "$DIR/state" "$DIR/log"
    cat >"$CONF" <<EOF
# written by tools/slurm_local.sh: single-node test cluster on $host
ClusterName=dcaclocal
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmdSpoolDir=$DIR/spool/slurmd
StateSaveLocation=$DIR/state
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

node_state() { sinfo -h -o %t 2>/dev/null | head -n 1 | tr -d '*~#! '; }

start() {
    install_packages
    mkdir -p "$DIR/log"
    if pid_alive "$DIR/slurmctld.pid" && pid_alive "$DIR/slurmd.pid" && [ "$(node_state)" = idle ]; then
        log "already running ($CONF)"
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    start_munge
    write_conf
    pid_alive "$DIR/slurmctld.pid" || slurmctld -f "$CONF"
    pid_alive "$DIR/slurmd.pid" || slurmd -f "$CONF"
    local state=""
    for _ in $(seq 120); do
        state=$(node_state)
        case "$state" in
            idle|mix|alloc) log "up: node $(hostname -s) $state ($CONF)"; echo "export SLURM_CONF=$CONF"; return 0 ;;
            down|drain|drng|fail) scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    log "the node did not become idle within 60 s (sinfo state: '${state:-no answer}')"
    tail_logs
    exit 1
}

stop_pidfile() {
    local name=$1 file=$2
    if pid_alive "$file"; then
        local pid
        pid=$(cat "$file")
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
        log "stopped $name (pid $pid)"
    fi
    rm -f "$file"
}

stop() {
    if pid_alive "$DIR/slurmctld.pid" && pid_alive "$DIR/slurmd.pid"; then
        # cancel this cluster's jobs first: with proctrack/linuxproc their processes outlive slurmd
        local jobs
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        if [ -n "$jobs" ]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            for _ in $(seq 60); do [ -z "$(squeue -h -o %i 2>/dev/null || true)" ] && break; sleep 0.5; done
            log "cancelled jobs: $(echo $jobs | tr '\n' ' ')"
        fi
    fi
    stop_pidfile slurmd "$DIR/slurmd.pid"
    stop_pidfile slurmctld "$DIR/slurmctld.pid"
    if [ -f "$DIR/munged.ours" ]; then
        stop_pidfile munged "$DIR/munge/munged.pid"
        rm -f "$DIR/munged.ours"
    fi
}

status() {
    if pid_alive "$DIR/slurmctld.pid" && pid_alive "$DIR/slurmd.pid"; then
        sinfo
        return 0
    fi
    log "not running (no live daemons under $DIR)"
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    logs) tail_logs ;;
    *) echo "usage: $0 start|stop|status|env|logs" >&2; exit 2 ;;
esac
