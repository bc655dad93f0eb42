#!/usr/bin/env bash
# setup.sh — install what nest needs from Debian (only what is missing) and build it.
# Usage: bash jobs/setup.sh            (idempotent; safe to re-run)
# Env:   NEST_BUILD_DIR (default build), NEST_BUILD_TYPE (default Release), NEST_CMAKE_ARGS
#        (e.g. "-DNEST_NATIVE=OFF -DNEST_MARCH=x86-64-v3" on a login node: docs/building.md)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(build-essential cmake pkg-config git
          openmpi-bin libopenmpi-dev
          libhdf5-dev hdf5-tools
          libopenblas-openmp-dev
          libcmocka-dev zlib1g-dev libjpeg62-turbo-dev
          libonnx-dev protobuf-c-compiler libprotobuf-c-dev python3-onnx
          python3-h5py python3-numpy # docs/examples/infer_numpy.py (tests test_infer*)
          gnuplot-nox) # gnuplot-nox: build/nest_plot draws the figures through it (docs/plots.md)

if command -v dpkg-query >/dev/null; then
  bash jobs/install_packages.sh setup "${packages[@]}"
else # not Debian: the dependencies come from modules or Spack (docs/building.md)
  echo "setup: no dpkg: not installing packages, only building"
fi

build=${NEST_BUILD_DIR:-build}
# shellcheck disable=SC2086 # NEST_CMAKE_ARGS is a list of words
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE="${NEST_BUILD_TYPE:-Release}" ${NEST_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "$(nproc)"
echo "setup: built nest in $build/"
