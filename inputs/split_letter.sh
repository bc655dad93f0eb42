#!/usr/bin/env bash
# split_letter.sh — UCI letter-recognition in its usual split (letter-recognition.names: "We
# typically train on the first 16000 items and then use the resulting model to predict the
# letter category for the remaining 4000"): letter-train.data (rows 1-16000) and
# letter-test.data (rows 16001-20000), CSV as the original (column 0 the letter).
#   bash inputs/split_letter.sh [SRC_DIR] [OUT_DIR]
# SRC_DIR: where letter-recognition.data is (default ../shared/data/uci/letter-recognition);
# OUT_DIR: default inputs/data/uci/letter (git-ignored). Used by docs/results.md ("The same
# config on a second data set": the shipped LeNet-300-100 NeST config and the dense one on it).
set -euo pipefail
src=${1:-../shared/data/uci/letter-recognition}
out=${2:-inputs/data/uci/letter}
f=$src/letter-recognition.data
[ -r "$f" ] || { echo "split_letter.sh: $f: not readable" >&2; exit 1; }
n=$(wc -l < "$f")
[ "$n" -eq 20000 ] || { echo "split_letter.sh: $f: $n rows, expected 20000" >&2; exit 1; }
mkdir -p "$out"
head -n 16000 "$f" > "$out/letter-train.data.tmp" && mv "$out/letter-train.data.tmp" "$out/letter-train.data"
tail -n 4000 "$f" > "$out/letter-test.data.tmp" && mv "$out/letter-test.data.tmp" "$out/letter-test.data"
echo "split_letter.sh: wrote $out/letter-train.data (16000 rows) and $out/letter-test.data (4000 rows)"
