#!/usr/bin/env bash
# Stop the single-host test SLURM cluster started by up.sh (slurmd n1/n2, slurmctld, munged).
# Stops only the daemons named in up.sh's pid files. State, config and logs stay in place;
# pass --purge to also delete the controller/slurmd state (jobs, queue) and the job record.
#   LLMB_SLURM_KEEP_MUNGE=1  leave munged running
set -uo pipefail

RUN_DIR=/run/slurm-llmbridge
STATE_ROOT=/var/spool/slurm-llmbridge
LOG_DIR=/var/log/slurm
say() { [[ "${LLMB_SLURM_QUIET:-0}" == 1 ]] || echo "[slurm-down] $*"; }

stop_pidfile() {  # stop_pidfile FILE NAME
    local f=$1 name=$2 pid i
    [[ -s "$f" ]] || return 0
    pid=$(<"$f")
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
        && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]; then
        say "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name (pid $pid) still alive after 10 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    rm -f "$f"
}

for f in "$RUN_DIR"/slurmd-*.pid; do
    [[ -e "$f" ]] && stop_pidfile "$f" slurmd
done
stop_pidfile "$RUN_DIR/slurmctld.pid" slurmctld
if [[ "${LLMB_SLURM_KEEP_MUNGE:-0}" != 1 ]]; then
    stop_pidfile /run/munge/munged.pid munged
fi

if [[ "${1:-}" == "--purge" ]]; then
    say "purging $STATE_ROOT and $LOG_DIR/jobcomp.log"
    rm -rf "${STATE_ROOT:?}"/ctld/* "${STATE_ROOT:?}"/d-*/*
    : >"$LOG_DIR/jobcomp.log" 2>/dev/null || true
fi
say "stopped"
