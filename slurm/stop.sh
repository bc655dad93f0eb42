#!/usr/bin/env bash
# slurm/stop.sh — stop the local single-node Slurm that slurm/start.sh started: cancel every
# job first (stopping slurmd does not kill running jobs), then stop slurmd, slurmctld and, if
# start.sh started it, munged. Only processes named in the state directory's pid files are
# stopped; a munged that was already running is left alone. Idempotent.
#
# Usage: bash slurm/stop.sh
# Env:   NEST_SLURM_DIR (default /var/tmp/nest-slurm), NEST_SLURM_TIMEOUT (default 60 s per wait)
set -euo pipefail
state=${NEST_SLURM_DIR:-/var/tmp/nest-slurm}
timeout=${NEST_SLURM_TIMEOUT:-60}
export SLURM_CONF=$state/slurm.conf

say() { echo "slurm/stop: $*"; }

# alive, dead, wait_for
# shellcheck source=slurm/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
# stop NAME PIDFILE: SIGTERM, then SIGKILL if it is still there after the timeout.
stop() {
  local pid
  if ! alive "$1" "$2"; then
    rm -f "$2"
    return 0
  fi
  pid=$(cat "$2" 2> /dev/null) || return 0  # it exited meanwhile (and removed its pid file)
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_for "$timeout" dead "$1" "$2"; then
    say "$1 (pid $pid) ignored SIGTERM for ${timeout} s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_for 10 dead "$1" "$2" || true
  fi
  rm -f "$2"
  say "stopped $1 (pid $pid)"
}
no_jobs() { [ -z "$(squeue -h -o %i 2>/dev/null)" ]; }

# Jobs first, while slurmctld can still cancel them. scancel sends SIGTERM (nest checkpoints
# and exits), then SIGKILL after KillWait.
if alive slurmctld "$state/slurmctld.pid" && ! no_jobs; then
  jobs=$(squeue -h -o %i | tr '\n' ' ')
  say "cancelling jobs $jobs"
  # shellcheck disable=SC2086  # one argument per job id
  scancel $jobs || true
  wait_for "$timeout" no_jobs || say "warning: jobs still listed after ${timeout} s: $(squeue -h -o '%i %T' | tr '\n' ' ')"
fi
stop slurmd "$state/slurmd.pid"
stop slurmctld "$state/slurmctld.pid"
if [ -s "$state/munged.pid" ]; then
  stop munged "$state/munged.pid"
fi
# The /etc/slurm/slurm.conf link, if start.sh made it and it still points to our config.
if [ -s "$state/etc-link" ] && [ -L /etc/slurm/slurm.conf ] &&
   [ "$(readlink /etc/slurm/slurm.conf)" = "$(cat "$state/etc-link")" ]; then
  rm -f /etc/slurm/slurm.conf
fi
rm -f "$state/etc-link"
# Job steps that outlived slurmd (should not happen after the cancel): report, do not guess.
left=$(pgrep -x slurmstepd || true)
[ -z "$left" ] || say "warning: slurmstepd processes still running: $left"
say "local Slurm stopped (state kept in $state)"
