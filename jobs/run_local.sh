#!/usr/bin/env bash
# run_local.sh — the main job on this machine: install/build (jobs/setup.sh), find MNIST, and
# run nest with 2 MPI ranks: by default the NeST synthesis of LeNet-300-100 (seed -> growth ->
# training -> pruning), which ends by printing the model report and where the final model is.
# Results go to outputs/<config name>-<date-time>/.
# Usage: bash jobs/run_local.sh [CONFIG.ini] [--set section.key=value ...]
#   default CONFIG: inputs/mnist_lenet300_nest.ini. Env NEST_RANKS (default 2).
# MNIST is taken from ../shared/data/mnist beside the checkout when present, else from
# inputs/data/mnist (downloaded there by inputs/download_mnist.sh if missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash jobs/setup.sh

config=inputs/mnist_lenet300_nest.ini
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then config=$1; shift; fi

data=""
for d in ../shared/data/mnist inputs/data/mnist; do
  if [ -f "$d/train-images-idx3-ubyte.gz" ]; then data=$d; break; fi
done
if [ -z "$data" ]; then
  bash inputs/download_mnist.sh inputs/data/mnist
  data=inputs/data/mnist
fi

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ranks=${NEST_RANKS:-2}
cores=$(nproc)
extra=()
[ "$ranks" -gt "$cores" ] && extra+=(--oversubscribe)
exec mpirun -n "$ranks" "${extra[@]}" "${NEST_BUILD_DIR:-build}/nest_mpi" "$config" \
  --set data.dir="$data" "$@"
