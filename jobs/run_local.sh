#!/usr/bin/env bash
# run_local.sh — the main job on this machine: install/build (jobs/setup.sh), find MNIST, and
# run nest with 2 MPI ranks: by default the NeST synthesis of LeNet-300-100 (seed -> growth ->
# training -> pruning), which ends by printing the model report and where the final model is;
# then build/nest_plot draws the run's figures, and the last line says where they are.
# Results go to outputs/<config name>-<date-time>/, the figures to its plots/.
# Usage: bash jobs/run_local.sh [--dry-run] [CONFIG.ini] [--set section.key=value ...]
#   default CONFIG: inputs/mnist_lenet300_nest.ini. Env NEST_RANKS (default 2), NEST_MNIST_DIR.
#   --dry-run: print the command it would run (after the data.dir decision below), run nothing:
#   no set-up, no download.
# nest runs from the checkout, so relative paths in CONFIG (data.dir, run.out_dir, ...) are
# relative to the checkout; CONFIG itself may be given relative to where you are.
# MNIST: a config that reads MNIST by its file names (train-images-idx3-ubyte[.gz]) from a
# data.dir that does not hold it (the shipped configs say inputs/data/mnist) gets
# --set data.dir=<the MNIST directory>: NEST_MNIST_DIR, ../shared/data/mnist beside the checkout,
# or inputs/data/mnist, downloaded there by inputs/download_mnist.sh if missing. Any other
# config, or one whose --set arguments give data.dir, runs as written (jobs/mnist.sh).
set -euo pipefail
here=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=jobs/mnist.sh
source jobs/mnist.sh

dry=0
if [ "${1:-}" = --dry-run ]; then dry=1; shift; fi
config=inputs/mnist_lenet300_nest.ini
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then config=$1; shift; fi
if [[ $config != /* ]] && [ "$here" != "$PWD" ] && [ -e "$here/$config" ]; then
  config=$here/$config
fi
[ -f "$config" ] || { echo "run_local: $config: no such config" >&2; exit 1; }

[ "$dry" = 1 ] || bash jobs/setup.sh

data=()
if nest_mnist_needed "$config" "$@"; then
  if ! mnist=$(nest_mnist_find "$nest_mnist_file"); then
    mnist=inputs/data/mnist
    if [ "$dry" = 1 ]; then
      echo "run_local: would download MNIST into $mnist (inputs/download_mnist.sh)" >&2
    else
      bash inputs/download_mnist.sh "$mnist"
    fi
  fi
  echo "run_local: $config reads $nest_mnist_file from data.dir = ${nest_mnist_config_dir:-.}, which does not hold it: --set data.dir=$mnist" >&2
  data=(--set data.dir="$mnist")
fi

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ranks=${NEST_RANKS:-2}
cores=$(nproc)
extra=()
[ "$ranks" -gt "$cores" ] && extra+=(--oversubscribe)
cmd=(mpirun -n "$ranks" "${extra[@]}" "${NEST_BUILD_DIR:-build}/nest_mpi" "$config" "${data[@]}" "$@")
if [ "$dry" = 1 ]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi

# nest writes its run directory (which it names itself) into NEST_RUN_DIR_FILE. It runs in
# the background so that a SIGTERM, SIGHUP or SIGUSR1 sent to this script reaches mpirun,
# which passes it to the ranks: they write a checkpoint and stop (docs/restart.md). Ctrl-C
# reaches mpirun from the terminal itself; here it only keeps the script waiting for the
# ranks' checkpoint.
dir_file=$(mktemp)
trap 'rm -f "$dir_file"' EXIT
NEST_RUN_DIR_FILE=$dir_file "${cmd[@]}" &
nest_pid=$!
for sig in TERM HUP USR1; do
  # shellcheck disable=SC2064 # the pid and the signal are fixed now
  trap "kill -s $sig $nest_pid 2>/dev/null || true" "$sig"
done
trap : INT
while :; do
  status=0
  wait "$nest_pid" || status=$?
  kill -0 "$nest_pid" 2>/dev/null || break # else a trapped signal interrupted the wait
done
[ "$status" -eq 0 ] || exit "$status"

run_dir=$(head -n 1 "$dir_file")
plot=${NEST_BUILD_DIR:-build}/nest_plot
[ -n "$run_dir" ] && [ -x "$plot" ] || exit 0
if ! plot_log=$("$plot" "$run_dir" 2>&1); then
  printf '%s\n' "$plot_log" >&2
  echo "run_local: nest_plot could not draw every figure of $run_dir (above)" >&2
  exit 1
fi
drawn=$(printf '%s\n' "$plot_log" | sed -n 's|^nest_plot: wrote .*/\([^/ ]*\.png\) .*|\1|p' | paste -sd, - | sed 's/,/, /g')
printf '%s\n' "$plot_log" | grep -v '^nest_plot: wrote ' || true # notes: skipped figures, no gnuplot
if [ -n "$drawn" ]; then
  echo "run_local: plots in $run_dir/plots ($drawn)"
else
  echo "run_local: no plots drawn for $run_dir (above)"
fi
