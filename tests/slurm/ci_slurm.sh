#!/usr/bin/env bash
# ci_slurm.sh — CI runs a real Slurm job (issue 8, docs/slurm.md): bring up the local
# single-node Slurm (slurm/start.sh), make synthetic ImageNet-format shards, then
#  1. sbatch the same small 4-task AlexNet-shaped NeST job twice through jobs/alexnet_nest.slurm:
#     once straight through, once stopped by SIGUSR1 mid-run (`scancel --signal=USR1 --batch`,
#     what --signal=B:USR1@T does at the time limit), which checkpoints, requeues itself,
#     resumes and completes; the two final states must be bit-identical (model.h5 by h5diff,
#     metrics.csv without its timing columns, events.csv without its seconds column);
#  2. sbatch a 64-task LeNet-300 NeST job through jobs/lenet300_nest.slurm (64 tasks on however
#     many cores: oversubscribed) that must complete;
# and tear the Slurm down again (also on failure), unless it was already running before.
# Exit 0 = passed, 77 = skipped (not root, no Slurm packages), else failed. No dataset needed.
#
# Usage: bash tests/slurm/ci_slurm.sh       (ctest runs it as test slurm_ci, labels slurm;slow)
# Env:   NEST_BUILD_DIR (default build),
#        NEST_SLURM_DIR (the local Slurm's state, default /var/tmp/nest-slurm),
#        NEST_CI_KEEP=1 keeps the work directory (it is kept anyway when the test fails).
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$src"
build=$(cd "${NEST_BUILD_DIR:-build}" && pwd)
state=${NEST_SLURM_DIR:-/var/tmp/nest-slurm}
t_start=$SECONDS

say() { echo "ci_slurm: $*"; }
skip() {
  echo "ci_slurm: SKIP: $*"
  exit 77
}
fail() {
  echo "ci_slurm: FAIL: $*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || skip "needs root to run the local Slurm (slurm/start.sh)"
for c in munge munged slurmctld slurmd sbatch scontrol h5diff; do
  command -v "$c" > /dev/null || skip "$c not installed: bash slurm/setup.sh (jobs/test.sh does)"
done
[ -x "$build/nest_mpi" ] || fail "$build/nest_mpi: not built"

work=$(mktemp -d /tmp/nest-ci-slurm.XXXXXX)
mkdir "$work/data"

# ============================================================================================
# The jobs' data and configuration, all here. Synthetic images made by nest_prep in ImageNet's
# shard format (docs/data-format.md), so the test needs no dataset.
# 4-task job: AlexNet-shaped NeST — arch alexnet at width 0.1 (conv 10, 26, 38, 38, 26 maps,
# fc 410, 410), 30% of the connections active, on 1,600 synthetic 3x72x72 images of 10 classes
# in 4 shards, random 64x64 crops and flips; 2 growth iterations (connections, feature maps,
# neurons), 1 training epoch, 1 pruning iteration; a checkpoint every 5 steps (44 in all). It
# goes through jobs/alexnet_nest.slurm (NEST_CONFIG replaces the full-size config) with one
# small node's resources.
# 64-task job: the shipped LeNet-300 NeST job (jobs/lenet300_nest.slurm), cut to one iteration
# of each phase, on 2,560 synthetic 1x28x28 images.
ci_data() { # $1: the directory to fill
  local p=$build/nest_prep
  "$p" --synthetic-images 1600 -o "$1/train" --classes 10 --size 72 --shard-size 400 &&
    "$p" --synthetic-images 400 -o "$1/test" --classes 10 --size 72 --first 1600 &&
    "$p" --synthetic-images 2560 -o "$1/lenet-train" --classes 10 --size 28 --channels 1 \
      --shard-size 1280 &&
    "$p" --synthetic-images 500 -o "$1/lenet-test" --classes 10 --size 28 --channels 1 \
      --first 2560 || return 1
  cat > "$1/ci_alexnet.ini" << 'EOF'
; tests/slurm/ci_slurm.sh: a reduced AlexNet NeST run on synthetic shards in data.dir
[run]
seed = 1
[data]
train = train-*.h5
test = test-*.h5
val_split = 0.1
[model]
arch = alexnet
width = 0.1
density = 0.3
dropout = 0.5
[augment]
crop = 64
flip = 1
[synthesis]
phases = grow, train, prune
[train]
epochs = 1
batch = 32
[optim]
lr = 0.01
momentum = 0.9
weight_decay = 0.0005
schedule = cosine
[grow]
policy = conn,fmap,neuron
iterations = 2
train_epochs = 1
conn_ratio = 0.2
fmaps = 2
fmap_candidates = 3
neurons = 16
batches = 10
score_batch = 128
[prune]
gamma_start = 0.2
gamma = 0.1
retrain_steps = 10
retries = 0
lr = 0.005
tolerance = 0.05
iterations = 1
epochs = 0
[checkpoint]
every_steps = 5
EOF
}
ci_script=jobs/alexnet_nest.slurm
ci_env=(NEST_CONFIG="$work/data/ci_alexnet.ini" NEST_IMAGENET_DIR="$work/data")
# The script asks for 8 nodes x 8 tasks x 4 CPUs and a signal 900 s before its limit.
ci_sbatch=(--nodes=1 --ntasks=4 --ntasks-per-node=4 --cpus-per-task=1 --mem-per-cpu=500M
           --signal=B:USR1@60)
ci_args=()
# The stop comes once checkpoint number ci_stop_at exists (of 44: in the 2nd growth iteration).
ci_stop_at=15
big_script=jobs/lenet300_nest.slurm
big_env=()
big_sbatch=(--ntasks=64 --mem-per-cpu=200M)
big_args=(--set data.dir="$work/data" --set "data.train=lenet-train-*.h5"
          --set "data.test=lenet-test-*.h5" --set data.train_labels= --set data.test_labels=
          --set grow.iterations=1 --set grow.train_epochs=1 --set train.epochs=1
          --set prune.iterations=1 --set prune.epochs=1 --set prune.retrain_steps=5)
# ============================================================================================

t0=$SECONDS
ci_data "$work/data" > "$work/data.log" 2>&1 || {
  cat "$work/data.log" >&2
  fail "making the jobs' data failed (log above; $work kept)"
}
say "data made in $((SECONDS - t0)) s"

# --- the local Slurm: started here unless it already runs (then it is left running).
ours=1
if [ "$(cat "/proc/$(cat "$state/slurmctld.pid" 2> /dev/null)/comm" 2> /dev/null)" = slurmctld ]; then
  ours=0
fi
jobs_submitted=()
cleanup() {
  local st=$?
  set +e
  if [ "$ours" = 1 ]; then
    NEST_SLURM_DIR=$state bash "$src/slurm/stop.sh"
  elif [ ${#jobs_submitted[@]} -gt 0 ]; then
    scancel "${jobs_submitted[@]}" 2> /dev/null
  fi
  if [ "$st" = 0 ] && [ "${NEST_CI_KEEP:-0}" != 1 ]; then
    rm -rf "$work"
  else
    say "work directory kept: $work"
  fi
  say "total $((SECONDS - t_start)) s"
}
trap cleanup EXIT
t0=$SECONDS
NEST_SLURM_DIR=$state bash "$src/slurm/start.sh"
export SLURM_CONF=$state/slurm.conf
say "local Slurm up in $((SECONDS - t0)) s"

export NEST_HOME=$src NEST_BUILD_DIR=$build

# job_field JOBID FIELD: one field of `scontrol show job`.
job_field() { scontrol -o show job "$1" 2> /dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }
# submit NAME [VAR=VALUE...] -- SBATCH_ARGS... SCRIPT ARGS...: sbatch with the variables in its
# environment (sbatch passes its environment to the job), output in $work/NAME.out, run
# directory $work/NAME; prints the job id.
submit() {
  local name=$1 j
  shift
  local -a vars=()
  while [ "$1" != -- ]; do
    vars+=("$1")
    shift
  done
  shift
  j=$(env "${vars[@]}" NEST_RUN_DIR="$work/$name" sbatch --parsable --job-name="ci_$name" \
        --output="$work/$name.out" --time=00:15:00 "$@") || fail "sbatch $name failed"
  echo "${j%%;*}"
}
# finished JOBID: the job reached an end state (a requeued job passes through REQUEUED and
# PENDING: not an end).
finished() {
  case $(job_field "$1" JobState) in
    COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | PREEMPTED) return 0 ;;
    *) return 1 ;;
  esac
}
# wait_jobs SECONDS JOBID...: until all are finished; a job that stays pending (e.g. it asked
# for more CPUs than the node has) or runs too long fails the test here.
wait_jobs() {
  local end=$((SECONDS + $1)) j all
  shift
  while :; do
    all=1
    for j in "$@"; do finished "$j" || all=0; done
    [ "$all" = 0 ] || return 0
    if [ "$SECONDS" -ge "$end" ]; then
      for j in "$@"; do
        say "job $j: $(job_field "$j" JobState) (reason $(job_field "$j" Reason))"
      done
      fail "jobs $* not finished after the time allowed"
    fi
    sleep 1
  done
}
# check_done NAME JOBID: COMPLETED with exit status 0, else show the job's output and fail.
check_done() {
  local st ec
  st=$(job_field "$2" JobState)
  ec=$(job_field "$2" ExitCode)
  if [ "$st" != COMPLETED ] || [ "$ec" != 0:0 ]; then
    tail -n 40 "$work/$1.out" >&2 || true
    fail "job $2 ($1): $st, exit code $ec"
  fi
}
# newest_ckpt DIR: the number of the newest checkpoint in DIR/checkpoints (0 if none).
newest_ckpt() {
  local f n=0
  for f in "$1"/checkpoints/ckpt-*.h5; do
    [ -e "$f" ] || continue
    f=${f##*/ckpt-}
    f=${f%.h5}
    [ $((10#$f)) -le "$n" ] || n=$((10#$f))
  done
  echo "$n"
}

# --- 1. the 4-task job, straight through and stopped + requeued, side by side.
t0=$SECONDS
ref=$(submit ref "${ci_env[@]}" -- "${ci_sbatch[@]}" "$ci_script" "${ci_args[@]}")
jobs_submitted+=("$ref")
int=$(submit stopped "${ci_env[@]}" -- "${ci_sbatch[@]}" "$ci_script" "${ci_args[@]}")
jobs_submitted+=("$int")
say "4-task job $ci_script: $ref straight through, $int to be stopped at checkpoint $ci_stop_at"
end=$((SECONDS + 300))
until [ "$(newest_ckpt "$work/stopped")" -ge "$ci_stop_at" ]; do
  if finished "$int" || [ "$SECONDS" -ge "$end" ]; then
    tail -n 40 "$work/stopped.out" >&2 || true
    fail "job $int: checkpoint $ci_stop_at never appeared (state $(job_field "$int" JobState), newest $(newest_ckpt "$work/stopped"))"
  fi
  sleep 0.5
done
scancel --signal=USR1 --batch "$int" || fail "scancel --signal=USR1 --batch $int failed"
t_sig=$SECONDS
say "job $int: SIGUSR1 sent at checkpoint $(newest_ckpt "$work/stopped")"
# The requeued job must start again (Restarts=1, running) within seconds of its stop.
restarted() {
  [ "$(job_field "$int" Restarts)" -ge 1 ] 2> /dev/null &&
    { [ "$(job_field "$int" JobState)" = RUNNING ] || finished "$int"; }
}
end=$((SECONDS + 120))
until restarted; do
  if finished "$int" || [ "$SECONDS" -ge "$end" ]; then
    tail -n 40 "$work/stopped.out" >&2 || true
    fail "job $int was not requeued and restarted (state $(job_field "$int" JobState), restarts $(job_field "$int" Restarts))"
  fi
  sleep 0.5
done
say "job $int: requeued and running again $((SECONDS - t_sig)) s after the signal"
wait_jobs 360 "$ref" "$int"
check_done ref "$ref"
check_done stopped "$int"
say "4-task jobs done in $((SECONDS - t0)) s"

grep -q "stopped by SIGUSR1 after writing" "$work/stopped.out" ||
  fail "job $int: no 'stopped by SIGUSR1' line in $work/stopped.out"
grep -q "resuming .* from its newest checkpoint (restart 1)" "$work/stopped.out" ||
  fail "job $int: did not resume from a checkpoint after its requeue"
[ "$(job_field "$int" Restarts)" = 1 ] || fail "job $int: restarted $(job_field "$int" Restarts) times, not once"
[ "$(job_field "$ref" Restarts)" = 0 ] || fail "job $ref (straight through) was restarted"

# Bit-identical: the final model, the metrics and events without their clock columns, found by
# header name (images_per_s, elapsed_s; seconds, time_s).
if ! h5diff "$work/ref/model.h5" "$work/stopped/model.h5" > "$work/h5diff.txt" 2>&1; then
  head -n 20 "$work/h5diff.txt" >&2
  fail "model.h5 of the stopped and resumed job differs from the straight run's (h5diff above)"
fi
without_clocks() { # CSV: the file with its clock columns blanked
  awk -F, -v OFS=, 'NR == 1 { for (i = 1; i <= NF; i++)
                                if ($i ~ /^(images_per_s|elapsed_s|seconds|time_s)$/) clock[i] = 1 }
                    { for (i in clock) $i = "*"; print }' "$1"
}
for f in metrics.csv events.csv; do
  if ! diff <(without_clocks "$work/ref/$f") <(without_clocks "$work/stopped/$f") > "$work/$f.diff"; then
    head -n 20 "$work/$f.diff" >&2
    fail "$f of the stopped and resumed job differs from the straight run's"
  fi
done
say "stopped + requeued + resumed job == straight job: model.h5, metrics.csv, events.csv ($(wc -l < "$work/ref/metrics.csv") metrics rows, $(wc -l < "$work/ref/events.csv") events rows)"

# --- 2. 64 tasks on this machine's cores. The node claims 64 CPUs (slurm.conf.in), and
# jobs/slurm_job.sh tells Open MPI's ranks to yield when there are more of them than cores.
t0=$SECONDS
big=$(submit lenet64 "${big_env[@]}" -- "${big_sbatch[@]}" "$big_script" "${big_args[@]}")
jobs_submitted+=("$big")
say "64-task job $big_script: $big"
wait_jobs 300 "$big"
check_done lenet64 "$big"
grep -q "64 ranks" "$work/lenet64.out" || fail "job $big: nest did not run on 64 ranks"
[ -f "$work/lenet64/model.h5" ] || fail "job $big: no model.h5"
say "64-task job done in $((SECONDS - t0)) s"
say "PASS"
