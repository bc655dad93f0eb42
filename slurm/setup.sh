#!/usr/bin/env bash
# slurm/setup.sh — install the Debian packages of the local single-node Slurm (munge, slurmctld,
# slurmd, the client commands), only what is missing; like jobs/setup.sh does for nest's own.
# Called by slurm/start.sh and jobs/test.sh. Nothing is started: Debian's postinst cannot start
# the daemons without systemd (and the local Slurm does not use the system's configuration).
# Usage: bash slurm/setup.sh            (idempotent)
set -euo pipefail

packages=(munge slurmctld slurmd slurm-client)

bash "$(dirname "${BASH_SOURCE[0]}")/../jobs/install_packages.sh" slurm/setup "${packages[@]}"
