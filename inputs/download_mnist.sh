#!/usr/bin/env bash
# download_mnist.sh — fetch the four MNIST .gz files into a directory (default inputs/data/mnist),
# trying each mirror in turn. Files already present with the right MD5 are kept; each download
# goes to FILE.part and is renamed only after its MD5 checks out, so an interrupted run never
# leaves a bad file under the final name. Exits non-zero with one line on failure.
#
#   usage: inputs/download_mnist.sh [DIR]
#   then:  nest_prep -o DIR/mnist-train.h5 DIR/train-images-idx3-ubyte.gz DIR/train-labels-idx1-ubyte.gz
#
# Dataset files are never committed: keep DIR outside git or ignored.
set -euo pipefail

dir="${1:-inputs/data/mnist}"
mirrors=(
  "https://ossci-datasets.s3.amazonaws.com/mnist/"
  "https://storage.googleapis.com/cvdf-datasets/mnist/"
)
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
       t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
md5s=(f68b3c2dcbeaaa9fbdd348bbdeb94873 d53e105ee54ea40749a09fcbcd1e9432
      9fb629c4189551a2d022fa330f9573f3 ec29112dd5afa0611ce80d1b7f02629c)

die() { echo "download_mnist.sh: $*" >&2; exit 1; }

md5_of() { md5sum "$1" | cut -d' ' -f1; }

fetch() { # url dest
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --retry 2 --connect-timeout 20 -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then
    wget -q --tries=2 --timeout=20 -O "$2" "$1"
  else
    die "need curl or wget"
  fi
}

command -v md5sum >/dev/null 2>&1 || die "need md5sum (coreutils)"
mkdir -p "$dir" || die "$dir: cannot create directory"

for i in "${!files[@]}"; do
  f="${files[$i]}" want="${md5s[$i]}" dest="$dir/${files[$i]}"
  if [[ -f "$dest" ]]; then
    if [[ "$(md5_of "$dest")" == "$want" ]]; then
      echo "ok       $dest (already present, checksum matches)"
      continue
    fi
    echo "refetch  $dest (checksum mismatch)"
  fi
  done_one=0
  for m in "${mirrors[@]}"; do
    rm -f "$dest.part"
    if fetch "$m$f" "$dest.part" 2>/dev/null; then
      got="$(md5_of "$dest.part")"
      if [[ "$got" == "$want" ]]; then
        mv -f "$dest.part" "$dest"
        echo "fetched  $dest from $m"
        done_one=1
        break
      fi
      echo "warning: $m$f has MD5 $got, expected $want; trying the next mirror" >&2
    fi
  done
  rm -f "$dest.part"
  [[ $done_one == 1 ]] || die "$f: no mirror gave a file with MD5 $want (offline?)"
done
echo "MNIST ready in $dir"
