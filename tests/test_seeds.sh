#!/usr/bin/env bash
# test_seeds.sh — the seed runner jobs/seeds.sh without running nest: its --table and
# --sweep-table modes on hand-made run directories (config.ini + summary.txt, as nest writes
# them; also named as jobs/lenet300_width_sweep.slurm names its runs) must print the right
# rows, medians (odd and even counts) and ranges, and exit 1 when a run is unfinished; --dry-run
# must print one nest_mpi command per seed (or one sbatch job array) with run.seed, the run
# directory, model.width in a sweep, and data.dir only for a config that reads MNIST from the
# shipped place and whose user did not choose the data; bad options exit 2.
set -uo pipefail
src=${NEST_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
seeds="$src/jobs/seeds.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

fail() {
  echo "FAIL: $*"
  fails=$((fails + 1))
}
# expect_line OUTPUT LINE: OUTPUT has LINE as one of its lines.
expect_line() {
  grep -qxF -- "$2" <<< "$1" || fail "expected the line '$2' in:"$'\n'"$1"
}
expect_has() {
  grep -qF -- "$2" <<< "$1" || fail "expected '$2' in:"$'\n'"$1"
}
expect_not() {
  if grep -qF -- "$2" <<< "$1"; then fail "did not expect '$2' in:"$'\n'"$1"; fi
}

# run DIR SEED WIDTH [TEST VAL WEIGHTS WALL GROW_S GROWN PRUNED]: a run directory; without
# TEST it is unfinished (config.ini only). PRUNED empty: no pruning phase.
run() {
  local d=$tmp/$1
  mkdir -p "$d"
  printf '; nest configuration\n[run]\n; seed\nseed = %s\n\n[model]\narch = lenet300\nwidth = %s ; r\n' \
    "$2" "$3" > "$d/config.ini"
  [ $# -gt 3 ] || return 0
  {
    printf 'arch = lenet300\nepochs = 73\nwall_s = %s\nactive_weights = %s\n' "$7" "$6"
    printf 'grow_wall_s = %s\ngrown_weights = %s\n' "$8" "$9"
    [ -z "${10:-}" ] || printf 'prune_weights_after = %s\n' "${10}"
    printf 'val_error = %s\ntest_error = %s\n' "$5" "$4"
  } > "$d/summary.txt"
}

# ---- --table -----------------------------------------------------------------------------------
run a-s1 1 0.4 0.016900 0.017000 7870 250.1 20 100000 7870
run a-s2 2 0.4 0.015800 0.016000 10525 260.4 30 110000 10525
run a-s3 3 0.4 0.015500 0.015200 8514 239.6 25 90000 8514
out=$(bash "$seeds" --table "$tmp/a-s1" "$tmp/a-s2" "$tmp/a-s3")
rc=$?
[ $rc -eq 0 ] || fail "--table of three finished runs exited $rc"
expect_line "$out" "1          1.69%      1.70%           7,870      250 s  $tmp/a-s1"
expect_line "$out" "3          1.55%      1.52%           8,514      240 s  $tmp/a-s3"
expect_line "$out" "test error:     median 1.58%, range 1.55% - 1.69% (3 runs)"
expect_line "$out" "active weights: median 8,514, range 7,870 - 10,525"
expect_line "$out" "wall time:      median 250 s, range 240 - 260 s"

# an even count: the mean of the middle two; an unfinished run is listed, left out, exit 1
run a-s4 4 0.4 0.016000 0.016100 9000 245 22 95000 9000
run a-s5 5 0.4
out=$(bash "$seeds" --table "$tmp"/a-s[1-5])
rc=$?
[ $rc -eq 1 ] || fail "--table with an unfinished run exited $rc, expected 1"
expect_line "$out" "test error:     median 1.59%, range 1.55% - 1.69% (4 runs)"
expect_line "$out" "active weights: median 8,757, range 7,870 - 10,525"
expect_has "$out" "$tmp/a-s5 (no summary.txt: unfinished or failed)"

# ---- --sweep-table -----------------------------------------------------------------------------
# r = 0.2: three seeds; r = 1.0: growth only (the width-sweep job array's runs and names)
run x-r0.2-s1 1 0.2 0.0150 0.0160 3000 100 40 50000 3000
run x-r0.2-s2 2 0.2 0.0130 0.0140 5000 100 60 70000 5000
run x-r0.2-s3 3 0.2 0.0140 0.0150 4000 100 50 60000 4000
run lenet300_width_sweep-job7_18-r1.0-s1 1 1.0 0.0170 0.0170 120000 50 10 120000
run lenet300_width_sweep-job7_19-r1.0-s2 2 1.0 0.0160 0.0160 140000 50 14 140000
out=$(bash "$seeds" --sweep-table "$tmp"/x-r* "$tmp"/lenet300_width_sweep-*)
rc=$?
[ $rc -eq 0 ] || fail "--sweep-table exited $rc"
expect_line "$out" " 0.20     3       50.0 s            60,000       4,000       1.40%     1.30% - 1.50%"
expect_line "$out" " 1.00     2       12.0 s           130,000           -       1.65%     1.60% - 1.70%"

# ---- --dry-run -----------------------------------------------------------------------------------
# (a name no run in the checkout's outputs/ has: a finished run there is not run again)
name=test_seeds_$$
out=$(bash "$seeds" "$src/inputs/mnist_lenet300_nest.ini" --dry-run --seeds 2,3 --ranks 3 \
  --name "$name" --set prune.epochs=1)
expect_has "$out" "mpirun -n 3"
expect_has "$out" "--set data.dir="
expect_has "$out" "--set prune.epochs=1 --set run.seed=2 --set run.run_dir=outputs/$name-s2"
expect_has "$out" "--set run.seed=3 --set run.run_dir=outputs/$name-s3"
[ "$(wc -l <<< "$out")" -eq 2 ] || fail "expected two commands, got: $out"
# the other dry runs below go to a directory of their own, whatever outputs/ holds
export NEST_OUT_DIR="$tmp/out"
# the user's data.dir is theirs
out=$(bash "$seeds" "$src/inputs/mnist_lenet300_nest.ini" --dry-run --seeds 1 --set data.dir=/mine)
expect_has "$out" "--set data.dir=/mine --set run.seed=1"
[ "$(grep -o 'data.dir=' <<< "$out" | wc -l)" -eq 1 ] || fail "data.dir given twice: $out"
# a config with its own data directory, and a non-MNIST one: left alone
printf '[data]\ndir = /scratch/mnist\ntrain = train-images-idx3-ubyte.gz\n' > "$tmp/own.ini"
out=$(bash "$seeds" "$tmp/own.ini" --dry-run --seeds 1)
expect_not "$out" "data.dir"
out=$(bash "$seeds" "$src/inputs/letter_mlp.ini" --dry-run --seeds 1)
expect_not "$out" "data.dir"
# a sweep: r x seed, run directories NAME-r<r>-s<seed>; Slurm: one job array, finished runs left out
out=$(NEST_OUT_DIR="$tmp" bash "$seeds" --sweep "$src/inputs/mnist_lenet300_nest.ini" --dry-run \
  --name x --widths '0.2, 0.5' --seeds 1,2)
expect_has "$out" "--set run.seed=2 --set model.width=0.5 --set run.run_dir=$tmp/x-r0.5-s2"
[ "$(wc -l <<< "$out")" -eq 4 ] || fail "expected four commands, got: $out"
out=$(NEST_OUT_DIR="$tmp" bash "$seeds" --sweep "$src/inputs/mnist_lenet300_nest.ini" --dry-run \
  --name x --widths 0.2,0.5 --seeds 1,2,3 --slurm)
expect_has "$out" "$tmp/x-r0.2-s1 has finished already: not submitted"
expect_has "$out" "--array=0-2 "
expect_has "$out" "jobs/seeds.sh --task x 0.5:1\\ 0.5:2\\ 0.5:3 "

# ---- usage errors --------------------------------------------------------------------------------
for args in "--bogus" "" "$src/inputs/mnist_lenet300_nest.ini --seeds 1,,2" \
  "$src/inputs/mnist_lenet300_nest.ini --seeds 1,x" "/nonexistent.ini" "--table" \
  "--sweep $src/inputs/mnist_lenet300_nest.ini --widths 0.2,big" \
  "$src/inputs/mnist_lenet300_nest.ini --ranks 0"; do
  # shellcheck disable=SC2086 # the words of each case
  err=$(bash "$seeds" $args --dry-run 2>&1 >/dev/null)
  rc=$?
  [ $rc -eq 2 ] || fail "seeds.sh $args: exit $rc, expected 2"
  [[ $err == "seeds.sh: error: "* ]] || fail "seeds.sh $args: expected one error line, got '$err'"
done

if [ "$fails" -gt 0 ]; then
  echo "test_seeds: $fails failure(s)"
  exit 1
fi
echo "test_seeds: all checks passed"
