#!/usr/bin/env bash
# test.sh — the whole test suite: install/build (jobs/setup.sh) and the local Slurm's packages
# (slurm/setup.sh), then every ctest test (labels unit, mpi, slow; slurm_ci runs real Slurm
# jobs, tests/slurm/ci_slurm.sh). Real data in ../shared/data is used when present; tests that
# need it skip with a message otherwise.
# Usage: bash jobs/test.sh [extra ctest args, e.g. -L unit]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash jobs/setup.sh
bash slurm/setup.sh || echo "test.sh: the Slurm packages could not be installed; the slurm_ci test will skip"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd "${NEST_BUILD_DIR:-build}"
ctest --output-on-failure --timeout 900 "$@"
