#!/usr/bin/env bash
# install_packages.sh — install the Debian packages given that are not installed yet (apt-get,
# with sudo when not root). Used by jobs/setup.sh (nest's own dependencies) and slurm/setup.sh
# (the local Slurm). Usage: bash jobs/install_packages.sh WHO PACKAGE...   (WHO prefixes the
# message, e.g. "setup")
set -euo pipefail
who=$1
shift
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "$who: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
