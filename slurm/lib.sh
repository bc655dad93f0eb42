# slurm/lib.sh — shell functions shared by slurm/start.sh and slurm/stop.sh (sourced, not run).
# shellcheck shell=bash

# alive NAME PIDFILE: the pid file names a running process called NAME.
alive() {
  local pid
  [ -s "$2" ] || return 1
  pid=$(cat "$2" 2> /dev/null) || return 1  # (the daemon removes it as it exits)
  [ "$(cat "/proc/$pid/comm" 2> /dev/null)" = "$1" ]
}
dead() { ! alive "$@"; }
# wait_for SECONDS COMMAND...: poll COMMAND every half second until it succeeds.
wait_for() {
  local end=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.5
  done
}
