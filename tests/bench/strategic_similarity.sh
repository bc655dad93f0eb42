#!/usr/bin/env bash
# strategic_similarity.sh — the runs behind docs/growth.md "Strategic synthesis: which similarity?"
# (issue 17 item 6): LeNet-300-100 grown by strategic synthesis (10% -> 30% capacity) and by
# NeST connection growth, from different seed networks and from one seed network with another
# run.seed (data order and draws), some of them pruned; then tests/bench/mask_similarity.py on
# the pairs. One process per run (1 rank, 1 thread), one after the other; ~25 min on 2 cores.
# Usage: bash tests/bench/strategic_similarity.sh OUT_DIR [BUILD_DIR] [MNIST_DIR]
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:?usage: strategic_similarity.sh OUT_DIR [BUILD_DIR] [MNIST_DIR]}
build=${2:-$src/build} data=${3:-$src/../shared/data/mnist}
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
grow=(--set data.dir="$data" --set model.density=0.1 --set grow.iterations=6
      --set grow.train_epochs=1 --set grow.capacity=0.3 --set train.epochs=5)
prune=(--set synthesis.phases=grow,train,prune --set prune.gamma_start=0.2
       --set prune.retrain_steps=300 --set prune.tolerance=0.007 --set prune.retries=1
       --set prune.epochs=2)
run() { # NAME --set ...: one run into OUT_DIR/NAME (kept when it already finished)
  local name=$1; shift
  [ -f "$out/$name/model.h5" ] && return 0
  (cd "$src" && mpirun -n 1 --bind-to none "$build/nest_mpi" inputs/mnist_lenet300.ini "${grow[@]}" \
     --set run.run_dir="$out/$name" "$@") > "$out/$name.log" 2>&1 ||
    { echo "strategic_similarity: run $name failed: $out/$name.log" >&2; exit 1; }
}
seed=(--set model.init_from="$out/A/model_seed.h5")
run A --set grow.policy=strategic --set run.seed=1       # seed network 1
run B --set grow.policy=strategic --set run.seed=2       # seed network 2
run C --set grow.policy=strategic --set run.seed=2 "${seed[@]}"  # A's seed net, seed 2
run D --set grow.policy=conn --set run.seed=2 "${seed[@]}"       # the same with NeST growth
run E --set grow.policy=conn --set run.seed=1 "${seed[@]}"
run F --set grow.policy=strategic --set run.seed=1 "${seed[@]}"  # = A (init_from changes nothing)
run PA --set grow.policy=strategic --set run.seed=1 "${seed[@]}" "${prune[@]}"
run PC --set grow.policy=strategic --set run.seed=2 "${seed[@]}" "${prune[@]}"
run PB --set grow.policy=strategic --set run.seed=2 "${prune[@]}"
py=/usr/bin/python3
for p in "A F" "A B" "A C" "E D" "A E" "PA PC" "PA PB"; do
  set -- $p
  echo "=== $1 vs $2"
  $py "$src/tests/bench/mask_similarity.py" "$out/$1/model.h5" "$out/$2/model.h5" "$out/A/model_seed.h5"
done
