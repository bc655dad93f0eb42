#!/usr/bin/env bash
# test_infer_mnist.sh — a short real MNIST run (2 ranks, a small MLP, 2 epochs), then its
# model.h5 through nest_infer and through the documented Python example
# (docs/examples/infer_numpy.py, h5py + numpy only): both give exactly the run's test_error, and
# the same class for every one of the 10,000 test images. The model's input record is passed
# through `nest_export --config RUN/config.ini`, which recomputes it from the run's data as the
# trainer does and, for a model file that records one, checks that the two agree.
# Usage: test_infer_mnist.sh BUILD_DIR SOURCE_DIR DATA_DIR. Exit 77 (skipped) without MNIST;
# the Python part is skipped with a message when /usr/bin/python3 lacks h5py or numpy.
# (ctest: test_infer_mnist, label slow.)
set -euo pipefail
build=$1 src=$2 data=$3/mnist
fail() {
  echo "test_infer_mnist: FAIL: $*" >&2
  exit 1
}
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz \
         t10k-labels-idx1-ubyte.gz; do
  [ -f "$data/$f" ] || { echo "SKIP: no MNIST: $data/$f is missing"; exit 77; }
done
tmp=$(mktemp -d /tmp/nest-test-infer.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/run.ini" <<EOF
[run]
run_dir = $tmp/run
seed = 3
[data]
dir = $data
train = train-images-idx3-ubyte.gz
train_labels = train-labels-idx1-ubyte.gz
test = t10k-images-idx3-ubyte.gz
test_labels = t10k-labels-idx1-ubyte.gz
val_split = 0.1
max_train = 20000
[model]
arch = mlp:784-48-10
density = 0.5
[train]
epochs = 2
batch = 128
[optim]
lr = 0.1
EOF
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
timeout 600 mpiexec -n 2 --oversubscribe "$build/nest_mpi" "$tmp/run.ini" > "$tmp/run.log" 2>&1 ||
  fail "nest_mpi: $(tail -5 "$tmp/run.log")"
want=$(sed -n 's/^test_error = //p' "$tmp/run/summary.txt")
[ -n "$want" ] || fail "no test_error in $tmp/run/summary.txt"
"$build/nest_export" --config "$tmp/run/config.ini" "$tmp/run/model.h5" "$tmp/model.h5" ||
  fail "nest_export --config"

# nest_infer: "error P% (W / 10000)" with W / 10000 = the run's test_error
"$build/nest_infer" "$tmp/model.h5" "$data/t10k-images-idx3-ubyte.gz" \
  "$data/t10k-labels-idx1-ubyte.gz" --out "$tmp/pred.csv" > "$tmp/infer.txt" || fail "nest_infer"
cat "$tmp/infer.txt"
wrong=$(sed -n 's/^error [0-9.]*% (\([0-9]*\) \/ 10000).*/\1/p' "$tmp/infer.txt")
[ -n "$wrong" ] || fail "no error line: $(cat "$tmp/infer.txt")"
got=$(awk -v w="$wrong" 'BEGIN { printf "%.6f", w / 10000 }')
[ "$got" = "$want" ] || fail "nest_infer: test error $got, the run's summary.txt: $want"
echo "nest_infer: test error $got = the run's $want"

if ! /usr/bin/python3 -c 'import h5py, numpy' 2> /dev/null; then
  echo "SKIP (python): /usr/bin/python3 lacks h5py or numpy (python3-h5py, python3-numpy)"
  exit 0
fi
/usr/bin/python3 "$src/docs/examples/infer_numpy.py" --predictions "$tmp/model.h5" \
  "$data/t10k-images-idx3-ubyte.gz" "$data/t10k-labels-idx1-ubyte.gz" > "$tmp/py.txt" ||
  fail "infer_numpy.py"
py=$(sed -n 's/^test_error = \([0-9.]*\) .*/\1/p' "$tmp/py.txt")
[ "$py" = "$want" ] || fail "infer_numpy.py: test_error $py, the run's summary.txt: $want"
# the same class for every image: nest_infer's index,label columns against the example's lines
tail -n +2 "$tmp/pred.csv" | cut -d, -f1,2 > "$tmp/nest-classes.txt"
grep -v '^test_error' "$tmp/py.txt" > "$tmp/py-classes.txt"
cmp -s "$tmp/nest-classes.txt" "$tmp/py-classes.txt" ||
  fail "classes differ: $(diff "$tmp/nest-classes.txt" "$tmp/py-classes.txt" | head -4)"
echo "infer_numpy.py: test_error $py = the run's $want; the same class for all 10000 images"
