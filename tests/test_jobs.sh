#!/usr/bin/env bash
# test_jobs.sh — the MNIST data.dir rule that jobs/run_local.sh and jobs/slurm_job.sh share
# (jobs/mnist.sh), run through `jobs/run_local.sh --dry-run`, which prints the mpirun command
# and runs nothing. The scripts added --set data.dir=<MNIST dir> to every config, so a user's
# own config with relative data paths broke; now only a config that reads MNIST by its file
# names from a data.dir that does not hold them gets it. (ctest: test_jobs, label unit.)
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d /tmp/nest-test-jobs.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() {
  echo "test_jobs: FAIL: $*" >&2
  exit 1
}

# A fake MNIST directory: the rule only looks for the training file.
mkdir -p "$tmp/mnist" "$tmp/mine/mnist" "$tmp/mine/letters" "$tmp/elsewhere"
: > "$tmp/mnist/train-images-idx3-ubyte.gz"
: > "$tmp/mine/mnist/train-images-idx3-ubyte.gz"
export NEST_MNIST_DIR=$tmp/mnist
rel=$(realpath --relative-to="$src" "$tmp") # data paths are relative to the checkout

# run_local.sh --dry-run ARGS: its command line in $out, its messages in $err.
run() {
  out=$(bash "$src/jobs/run_local.sh" --dry-run "$@" 2> "$tmp/err") || fail "exit $? for: $*: $(cat "$tmp/err")"
  err=$(cat "$tmp/err")
}
expect_no_data_dir() {
  case $out in *data.dir*) fail "$1: data.dir added: $out" ;; esac
}
expect_only_theirs() { # the user's --set data.dir, and no other
  case $out in *"data.dir=$tmp/mnist"*) fail "$1: MNIST's data.dir added: $out" ;; esac
}
expect_mnist_dir() {
  case $out in *"--set data.dir=$tmp/mnist"*) ;; *) fail "$1: no --set data.dir=$tmp/mnist: $out" ;; esac
}

# 1. A user's config with a relative data dir, not MNIST: run as written.
cat > "$tmp/letters.ini" <<INI
[data]
dir = $rel/mine/letters   ; relative to the checkout
train = letter-recognition.data
format = csv
INI
run "$tmp/letters.ini" --set train.epochs=0
expect_no_data_dir "own csv config"
case $out in *"$tmp/letters.ini --set train.epochs=0 "*) ;; *) fail "arguments not passed: $out" ;; esac

# 2. An MNIST config whose data.dir holds MNIST (CRLF line ends, an inline comment).
printf '[data]\r\ndir = %s/mine/mnist\r\ntrain = train-images-idx3-ubyte.gz ; MNIST\r\n' "$rel" \
  > "$tmp/mymnist.ini"
run "$tmp/mymnist.ini"
expect_no_data_dir "MNIST config with its own MNIST"

# 3. An MNIST config whose data.dir lacks it (the shipped configs elsewhere): MNIST's dir.
printf '[data]\ndir = %s/no/such/dir\ntrain = train-images-idx3-ubyte.gz\n' "$rel" > "$tmp/shipped.ini"
run "$tmp/shipped.ini" --set train.epochs=0
expect_mnist_dir "MNIST config, data.dir without MNIST"
case $err in *"does not hold it"*) ;; *) fail "no message saying why: $err" ;; esac
# the same with no data.dir at all (the checkout has no MNIST file at its top)
printf '[data]\ntrain = train-images-idx3-ubyte\n' > "$tmp/nodir.ini"
: > "$tmp/mnist/train-images-idx3-ubyte"
run "$tmp/nodir.ini"
expect_mnist_dir "MNIST config without data.dir"

# 4. The arguments decide: data.dir given (both spellings), or data.train not MNIST.
run "$tmp/shipped.ini" --set data.dir="$tmp/elsewhere"
expect_only_theirs "--set data.dir"
run "$tmp/shipped.ini" "--set=data.dir=$tmp/elsewhere"
expect_only_theirs "--set=data.dir"
run "$tmp/shipped.ini" --set " data.dir = $tmp/elsewhere"
expect_only_theirs "--set ' data.dir = ...'"
run "$tmp/shipped.ini" --set "data.train=other.h5"
expect_no_data_dir "--set data.train not MNIST"
run "$tmp/letters.ini" --set data.train=train-images-idx3-ubyte.gz
expect_mnist_dir "--set data.train MNIST"

# 5. CONFIG relative to where the caller is (nest still runs from the checkout).
out=$(cd "$tmp" && bash "$src/jobs/run_local.sh" --dry-run letters.ini 2> "$tmp/err") ||
  fail "relative CONFIG: $(cat "$tmp/err")"
case $out in *"$tmp/letters.ini"*) ;; *) fail "relative CONFIG not resolved: $out" ;; esac
if (cd "$tmp" && bash "$src/jobs/run_local.sh" --dry-run missing.ini) 2> "$tmp/err"; then
  fail "a missing config ran"
fi
grep -q "missing.ini: no such config" "$tmp/err" || fail "missing config: $(cat "$tmp/err")"

# 6. The shipped default: pointed at MNIST exactly when inputs/data/mnist lacks it.
run
if [ -f "$src/inputs/data/mnist/train-images-idx3-ubyte.gz" ]; then
  expect_no_data_dir "default config, MNIST in inputs/data/mnist"
else
  expect_mnist_dir "default config"
fi
# 7. jobs/nest.slurm (any config as a one-node job): the config comes first; outside a Slurm job
# it stops with nest_job's message instead of running anything.
slurm_err() {
  if (cd "$src" && env -u SLURM_JOB_ID bash jobs/nest.slurm "$@") > /dev/null 2> "$tmp/err"; then
    fail "jobs/nest.slurm $* ran"
  fi
  cat "$tmp/err"
}
case $(slurm_err) in *"no config: sbatch jobs/nest.slurm CONFIG.ini"*) ;; *) fail "nest.slurm without a config: $(cat "$tmp/err")" ;; esac
case $(slurm_err --set run.seed=2) in *"the config comes first"*) ;; *) fail "nest.slurm --set first: $(cat "$tmp/err")" ;; esac
case $(slurm_err "$tmp/letters.ini" --set run.seed=2) in *"not inside a Slurm job"*) ;; *) fail "nest.slurm outside Slurm: $(cat "$tmp/err")" ;; esac
echo "test_jobs: ok"
