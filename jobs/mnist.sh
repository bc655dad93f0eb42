# jobs/mnist.sh — when a job points nest at an MNIST directory, sourced by jobs/run_local.sh
# and jobs/slurm_job.sh (the one copy of the rule; they run from the checkout).
#
# The shipped MNIST configs (inputs/mnist_*.ini) say `[data] dir = inputs/data/mnist` and name
# the files by their MNIST names. On a machine that keeps MNIST elsewhere (NEST_MNIST_DIR, or
# ../shared/data/mnist beside the checkout) the job points data.dir there; a config that reads
# other data, or finds its MNIST where it says, is left alone. nest_mnist_needed CONFIG [ARGS]
# decides: --set data.dir=<MNIST dir> is needed when all of these hold
#   1. ARGS do not set data.dir (--set data.dir=X or --set=data.dir=X): the user chose;
#   2. data.train (the last --set data.train=X in ARGS, else [data] train in CONFIG) is an
#      MNIST training file name without a directory: train-images-idx3-ubyte[.gz];
#   3. CONFIG's data.dir does not hold that file (relative paths are relative to the checkout,
#      where nest runs; an empty data.dir is the checkout itself).
# nest_mnist_find FILE then names the first of NEST_MNIST_DIR, ../shared/data/mnist and
# inputs/data/mnist that holds FILE.
# shellcheck shell=bash

# The value of KEY in [SECTION] of an INI FILE, read as nest reads it (docs/config.md: blanks
# stripped, ';' or '#' starts a comment line, ';' after a blank starts an inline comment,
# '=' or ':' separates); empty if absent.
nest_ini_get() {
  awk -v want_sec="$2" -v want_key="$3" '
    { line = $0; sub(/\r$/, "", line); if (NR == 1) sub(/^\357\273\277/, "", line)
      gsub(/^[ \t]+|[ \t]+$/, "", line) }
    line == "" || line ~ /^[;#]/ { next }
    line ~ /^\[/ { sec = substr(line, 2); sec = substr(sec, 1, index(sec, "]") - 1); next }
    sec == want_sec && match(line, /[=:]/) {
      key = substr(line, 1, RSTART - 1); val = substr(line, RSTART + 1)
      gsub(/^[ \t]+|[ \t]+$/, "", key)
      if (key != want_key) next
      if (match(val, /[ \t];/)) val = substr(val, 1, RSTART - 1)
      gsub(/^[ \t]+|[ \t]+$/, "", val)
      print val; exit
    }' "$1"
}

# Rules 1-3 above; status 0 = point data.dir at MNIST. Sets nest_mnist_file (the training file
# name) and nest_mnist_config_dir (CONFIG's data.dir) for the caller's messages.
nest_mnist_needed() {
  local config=$1 a kv key val prev="" train dir
  shift
  train=$(nest_ini_get "$config" data train)
  dir=$(nest_ini_get "$config" data dir)
  for a in "$@"; do
    kv=""
    if [ "$prev" = --set ]; then kv=$a; elif [[ $a == --set=* ]]; then kv=${a#--set=}; fi
    prev=$a
    [ -n "$kv" ] || continue
    key=${kv%%=*}
    key=${key//[[:space:]]/}
    val=${kv#*=}
    val=${val#"${val%%[![:space:]]*}"}
    val=${val%"${val##*[![:space:]]}"}
    case $key in
      data.dir) return 1 ;;
      data.train) train=$val ;;
    esac
  done
  # shellcheck disable=SC2034 # read by the scripts that source this file
  nest_mnist_file=$train nest_mnist_config_dir=$dir
  case $train in
    train-images-idx3-ubyte | train-images-idx3-ubyte.gz) ;;
    *) return 1 ;;
  esac
  [ ! -e "${dir:-.}/$train" ]
}

nest_mnist_find() {
  local d
  local -a dirs=(../shared/data/mnist inputs/data/mnist)
  if [ -n "${NEST_MNIST_DIR:-}" ]; then dirs=("$NEST_MNIST_DIR" "${dirs[@]}"); fi
  for d in "${dirs[@]}"; do
    if [ -f "$d/$1" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}
