#!/usr/bin/env bash
# Stop the CI SLURM cluster started by .ci/slurm_up.sh: every slurmd (one per node), slurmctld,
# then munged. Waits for each to exit and removes the pid files (a stale slurmctld.pid breaks a
# later purge).
set -uo pipefail

stop() { # stop <pidfile>
    local pidfile=$1 pid
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$pidfile"
}

for pidfile in /run/slurmd.*.pid /run/slurmd.pid; do
    stop "$pidfile"
done
stop /run/slurmctld.pid
stop /run/munge/munged.pid
echo "slurm_down.sh: stopped"
