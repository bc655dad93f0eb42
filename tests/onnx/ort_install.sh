#!/usr/bin/env bash
# ort_install.sh — install ONNX Runtime for Node.js (npm package onnxruntime-node, CPU build) into
# DIR/node_modules, for the ONNX export tests (tests/test_onnx.c, docs/onnx.md).
# Usage: bash tests/onnx/ort_install.sh DIR
# Idempotent: does nothing when DIR already holds a working onnxruntime-node. `--ignore-scripts`
# skips the package's postinstall, which only downloads GPU (CUDA / TensorRT) providers; the
# CPU runtime ships inside the npm tarball. Node.js and npm come from Debian (nodejs, npm) when
# missing and this is a Debian machine where we may install packages.
# Exit 0 with DIR/ort_ok written when the runtime loads; exit 0 with DIR/ort_unavailable.txt
# (the reason, one line) when it cannot be installed (no network, no npm): the tests then skip
# with that message. Any other exit code is a bug in this script.
# Env: NEST_ORT_VERSION (default below; `npm view onnxruntime-node versions` lists others).
set -uo pipefail
dir=${1:?usage: ort_install.sh DIR}
version=${NEST_ORT_VERSION:-1.31.1}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$dir" || exit 1
dir=$(cd "$dir" && pwd)
# One installer at a time (ctest -j runs the tests that need it in parallel).
exec 9>"$dir/.lock"
flock 9

unavailable() {
  echo "ort_install: onnxruntime-node unavailable: $*" >&2
  echo "$*" >"$dir/ort_unavailable.txt"
  rm -f "$dir/ort_ok"
  exit 0
}
works() {
  (cd "$dir" && node -e "
    const ort = require('onnxruntime-node');
    const v = require('onnxruntime-node/package.json').version;
    if (v !== '$version' || typeof ort.InferenceSession.create !== 'function') process.exit(1);
  ") >/dev/null 2>&1
}

if [ -f "$dir/ort_ok" ] && works; then exit 0; fi
rm -f "$dir/ort_ok" "$dir/ort_unavailable.txt"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if command -v dpkg-query >/dev/null && command -v apt-get >/dev/null &&
     { [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null; }; then
    bash "$here/../../jobs/install_packages.sh" ort_install nodejs npm >&2 ||
      unavailable "node / npm missing and the Debian packages nodejs, npm could not be installed"
  fi
  command -v node >/dev/null || unavailable "node (Node.js) is not installed"
  command -v npm >/dev/null || unavailable "npm is not installed"
fi

echo "ort_install: npm install --ignore-scripts onnxruntime-node@$version into $dir" >&2
[ -f "$dir/package.json" ] || echo '{"private": true}' >"$dir/package.json"
log="$dir/npm-install.log"
if ! (cd "$dir" && npm install --ignore-scripts --no-audit --no-fund --no-save \
        "onnxruntime-node@$version") >"$log" 2>&1; then
  unavailable "npm install onnxruntime-node@$version failed ($(grep -m1 -E 'ERR|error' "$log" || tail -n1 "$log")); full log: $log"
fi
works || unavailable "onnxruntime-node@$version installed in $dir but does not load in node $(node --version)"
echo "onnxruntime-node $version" >"$dir/ort_ok"
echo "ort_install: onnxruntime-node $version ready in $dir" >&2
