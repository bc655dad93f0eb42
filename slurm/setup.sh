#!/usr/bin/env bash
# slurm/setup.sh — install the Debian packages of the local single-node Slurm (munge, slurmctld,
# slurmd, the client commands), only what is missing; like jobs/setup.sh does for nest's own.
# Called by slurm/start.sh and jobs/test.sh. Nothing is started: Debian's postinst cannot start
# the daemons without systemd (and the local Slurm does not use the system's configuration).
# Usage: bash slurm/setup.sh            (idempotent)
set -euo pipefail

packages=(munge slurmctld slurmd slurm-client)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "slurm/setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
