#!/bin/bash
# DR+SCANN on the UCI sets against their dense MLP baselines (letter_mlp.ini with
# data.test_split = 0.2, as letter_drscann.ini) (docs/results.md, "SCANN"):
# every config of $CONFIGS for run.seed = 1, 2, 3 at 2 ranks, then one line per config with the
# median and range of the test error, the active weights and the wall time (summary.txt).
#   bash jobs/scann_uci.sh                       # all four configs
#   CONFIGS="inputs/wdbc_drscann.ini" bash jobs/scann_uci.sh
# Data: ../shared/data/uci (NEST_UCI overrides). Runs go to outputs/scann_uci/.
set -euo pipefail
cd "$(dirname "$0")/.."
UCI=${NEST_UCI:-../shared/data/uci}
OUT=${OUT:-outputs/scann_uci}
CONFIGS=${CONFIGS:-"inputs/wdbc_mlp.ini inputs/wdbc_drscann.ini inputs/letter_mlp.ini inputs/letter_drscann.ini"}
SEEDS=${SEEDS:-"1 2 3"}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
mkdir -p "$OUT"
for cfg in $CONFIGS; do
  name=$(basename "$cfg" .ini)
  case $name in wdbc*) dir=$UCI/wdbc ;; *) dir=$UCI/letter-recognition ;; esac
  extra=()  # letter_mlp.ini has no test set: the same 20% test split as letter_drscann.ini
  [ "$name" = letter_mlp ] && extra=(--set data.test_split=0.2)
  for s in $SEEDS; do
    rd=$OUT/$name-seed$s
    rm -rf "$rd"
    mpiexec -n 2 --oversubscribe --bind-to none build/nest_mpi "$cfg" --set data.dir="$dir" \
      --set run.seed="$s" --set run.run_dir="$rd" "${extra[@]}" >"$OUT/$name-seed$s.log" 2>&1
  done
done
for cfg in $CONFIGS; do
  name=$(basename "$cfg" .ini)
  for s in $SEEDS; do
    f=$OUT/$name-seed$s/summary.txt
    printf '%s %s %s %s\n' "$(grep '^test_error' "$f" | cut -d' ' -f3)" \
      "$(grep '^active_weights' "$f" | cut -d' ' -f3)" "$(grep '^wall_s' "$f" | cut -d' ' -f3)" \
      "$(grep '^val_error' "$f" | cut -d' ' -f3)"
  done | sort -g | awk -v n="$name" '
    { e[NR]=$1; w[NR]=$2; t[NR]=$3; v[NR]=$4 }
    function med(a, k, i, j, x, b) { for (i = 1; i <= k; ++i) b[i] = a[i];
      for (i = 1; i <= k; ++i) for (j = i + 1; j <= k; ++j) if (b[j] < b[i]) { x = b[i]; b[i] = b[j]; b[j] = x }
      return b[int((k + 1) / 2)] }
    function lo(a, k, i, m) { m = a[1]; for (i = 2; i <= k; ++i) if (a[i] < m) m = a[i]; return m }
    function hi(a, k, i, m) { m = a[1]; for (i = 2; i <= k; ++i) if (a[i] > m) m = a[i]; return m }
    END { printf "%-22s test error %.2f%% (%.2f-%.2f), val error %.2f%%, active weights %d (%d-%d), wall %.0f s (%.0f-%.0f), %d seeds\n",
          n, 100*med(e,NR), 100*lo(e,NR), 100*hi(e,NR), 100*med(v,NR), med(w,NR), lo(w,NR), hi(w,NR), med(t,NR), lo(t,NR), hi(t,NR), NR }'
done
