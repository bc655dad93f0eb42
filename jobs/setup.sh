#!/usr/bin/env bash
# setup.sh — install what nest needs from Debian (only what is missing) and build it.
# Usage: bash jobs/setup.sh            (idempotent; safe to re-run)
# Env:   NEST_BUILD_DIR (default build), NEST_BUILD_TYPE (default Release), NEST_CMAKE_ARGS
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(build-essential cmake pkg-config git
          openmpi-bin libopenmpi-dev
          libhdf5-dev hdf5-tools
          libopenblas-openmp-dev
          libcmocka-dev zlib1g-dev libinih-dev libjpeg62-turbo-dev)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

build=${NEST_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE="${NEST_BUILD_TYPE:-Release}" ${NEST_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "$(nproc)"
echo "setup: built nest in $build/"
