#!/usr/bin/env bash
# slurm/start.sh — start a single-node Slurm on this machine (munged, slurmctld, slurmd) as
# root without systemd, so that the job scripts in jobs/*.slurm can be tried here and CI can
# run a real job (tests/slurm/ci_slurm.sh). Idempotent: what already runs is left alone.
# Everything it starts is recorded by pid file in the state directory, and slurm/stop.sh stops
# exactly that. Returns once sinfo shows the node idle.
#
# Usage: bash slurm/start.sh
# Env:   NEST_SLURM_DIR   state directory: config, pid files, logs, spool (default /var/tmp/nest-slurm)
#        NEST_SLURM_CPUS  CPUs the node claims (default 64, whatever the machine has)
#        NEST_SLURM_PORT  slurmctld's port; slurmd uses the next one (default 6817)
#        NEST_SLURM_TIMEOUT seconds to wait for each daemon and for the idle node (default 60)
# Then:  export SLURM_CONF=$NEST_SLURM_DIR/slurm.conf   (printed at the end; not needed when
#        /etc/slurm/slurm.conf did not exist: start.sh links it to this one then)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state=${NEST_SLURM_DIR:-/var/tmp/nest-slurm}
cpus=${NEST_SLURM_CPUS:-64}
ctld_port=${NEST_SLURM_PORT:-6817}
timeout=${NEST_SLURM_TIMEOUT:-60}
node=$(hostname -s)
conf=$state/slurm.conf

say() { echo "slurm/start: $*"; }
die() { echo "slurm/start: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (slurmctld and slurmd run as root here, munged as munge)"
bash "$here/setup.sh"

# alive, wait_for
# shellcheck source=slurm/lib.sh
. "$here/lib.sh"

mkdir -p "$state/ctld" "$state/spool"
chmod 755 "$state"

# --- munge: the system's munged if one answers, else one of ours (it must run as munge, with
# /run/munge created: nothing else creates it without systemd).
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if munge_ok; then
  if alive munged "$state/munged.pid"; then
    say "munged already running (ours, pid $(cat "$state/munged.pid"))"
  else
    say "munged already running (not ours: left alone)"
  fi
else
  if [ ! -s /etc/munge/munge.key ]; then
    runuser -u munge -- mungekey --create
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- setsid munged </dev/null >/dev/null 2>&1 ||
    die "munged did not start (see /var/log/munge/munged.log)"
  wait_for "$timeout" munge_ok || die "munged does not answer (see /var/log/munge/munged.log)"
  cp /run/munge/munged.pid "$state/munged.pid"
  say "started munged (pid $(cat "$state/munged.pid"))"
fi

# --- the configuration, from the template. The node's memory: the machine's, in MB.
mem=$(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo)
sed -e "s|@NODE@|$node|g" -e "s|@ADDR@|127.0.0.1|g" -e "s|@STATE@|$state|g" \
    -e "s|@CPUS@|$cpus|g" -e "s|@CTLD_PORT@|$ctld_port|g" \
    -e "s|@SLURMD_PORT@|$((ctld_port + 1))|g" -e "s|@MEM@|$mem|g" "$here/slurm.conf.in" > "$conf.new"
if [ -f "$conf" ] && ! cmp -s "$conf" "$conf.new" &&
   { alive slurmctld "$state/slurmctld.pid" || alive slurmd "$state/slurmd.pid"; }; then
  say "warning: the running daemons use the previous $conf; run slurm/stop.sh first to apply the new one"
  rm -f "$conf.new"
else
  mv "$conf.new" "$conf"
fi
export SLURM_CONF=$conf
# The clients read /etc/slurm/slurm.conf unless SLURM_CONF says otherwise: when there is none,
# link it to ours (slurm/stop.sh removes the link), so sbatch works without the variable.
if [ ! -e /etc/slurm/slurm.conf ] && [ ! -L /etc/slurm/slurm.conf ]; then
  mkdir -p /etc/slurm
  ln -s "$conf" /etc/slurm/slurm.conf
  echo "$conf" > "$state/etc-link"
fi

# --- the daemons (they fork into the background; their output goes to their log files, and
# setsid with closed descriptors keeps them from holding the caller's terminal or pipe).
if alive slurmctld "$state/slurmctld.pid"; then
  say "slurmctld already running (pid $(cat "$state/slurmctld.pid"))"
else
  rm -f "$state/slurmctld.pid"
  setsid slurmctld -f "$conf" </dev/null >/dev/null 2>&1 ||
    die "slurmctld did not start (see $state/slurmctld.log)"
  wait_for "$timeout" alive slurmctld "$state/slurmctld.pid" ||
    die "slurmctld did not start (see $state/slurmctld.log)"
  say "started slurmctld (pid $(cat "$state/slurmctld.pid"))"
fi
if alive slurmd "$state/slurmd.pid"; then
  say "slurmd already running (pid $(cat "$state/slurmd.pid"))"
else
  rm -f "$state/slurmd.pid"
  setsid slurmd -f "$conf" -N "$node" </dev/null >/dev/null 2>&1 ||
    die "slurmd did not start (see $state/slurmd.log)"
  wait_for "$timeout" alive slurmd "$state/slurmd.pid" ||
    die "slurmd did not start (see $state/slurmd.log)"
  say "started slurmd (pid $(cat "$state/slurmd.pid"))"
fi

# --- wait for the node. A node left drained by an earlier session (e.g. a job that could not
# be killed) is resumed once.
node_state() { sinfo -h -n "$node" -o %T 2>/dev/null | head -n 1; }
node_usable() { case "$(node_state)" in idle | mixed | allocated) return 0 ;; *) return 1 ;; esac; }
resumed=0
end=$((SECONDS + timeout))
until node_usable; do
  if [ "$resumed" = 0 ] && case "$(node_state)" in *drain*) true ;; *) false ;; esac; then
    scontrol update nodename="$node" state=resume || true
    resumed=1
  fi
  [ "$SECONDS" -lt "$end" ] ||
    die "node $node is '$(node_state)' after ${timeout} s (see $state/slurmd.log, $state/slurmctld.log)"
  sleep 0.5
done
echo "export SLURM_CONF=$conf" > "$state/env.sh"
say "node $node is $(node_state) with $cpus CPUs; state in $state"
say "clients: export SLURM_CONF=$conf   (or: source $state/env.sh)"
