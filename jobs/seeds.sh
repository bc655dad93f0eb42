#!/usr/bin/env bash
# seeds.sh — results that hold across seeds: run a nest config once per seed (run.seed = 1, 2, 3
# by default), locally one run after another or as a Slurm job array, and print a table of the
# runs (seed, test and validation error, active weights, wall time, run directory) with the
# median and range over the seeds. A sweep mode does the same over width ratios r (NeST
# Figs. 6-7) and prints r -> growth time, post-growth size, final size, test error (medians).
#
#   bash jobs/seeds.sh CONFIG.ini [--seeds 1,2,3] [--ranks N] [--name NAME] [--slurm [--wait]]
#                      [--time HH:MM:SS] [--dry-run] [--set section.key=value ...]
#   bash jobs/seeds.sh --sweep CONFIG.ini [--widths 0.2,0.3,...] [the options above]
#   bash jobs/seeds.sh --table RUN_DIR...         the seed table of finished runs
#   bash jobs/seeds.sh --sweep-table RUN_DIR...   the sweep table of finished runs (also those
#                                                 of jobs/lenet300_width_sweep.slurm)
#
# Run directories: outputs/NAME-s<seed> (sweep: outputs/NAME-r<r>-s<seed>), NAME = --name or the
# config's basename. A run whose directory already has summary.txt is not run again (it is in
# the table); one with checkpoints is resumed by nest (an interrupted seed sweep continues).
# Locally each run's console output goes to outputs/<run>.log, and build/nest_plot draws its
# figures into <run dir>/plots (a sweep's into outputs/NAME-sweep-plots).
# MNIST: a config that reads MNIST's IDX files from inputs/data/mnist (the shipped configs) is
# pointed at ../shared/data/mnist or inputs/data/mnist, as jobs/run_local.sh does (downloaded
# there when missing, locally); a config or --set with another data.dir is left alone.
# --slurm: one array task per run, through jobs/slurm_job.sh (checkpoint on the time-limit
# signal, requeue, resume; docs/slurm.md); --wait waits for the array and prints the table;
# --time is each task's limit (default 01:00:00). --dry-run prints the nest_mpi (or sbatch)
# commands without building or running anything.
# Env: NEST_RANKS (default 2), NEST_BUILD_DIR (default build), NEST_OUT_DIR (where run
# directories go, default outputs), NEST_SBATCH_ARGS (extra sbatch options, e.g.
# "--partition=x --account=y"; they come last, so they override the defaults).
# Exit status: 0 when every run finished, 1 when one failed or is unfinished, 2 usage errors.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}
die() {
  echo "seeds.sh: error: $*" >&2
  exit 2
}

# The value of KEY in [SECTION] of a key = value file ("" = any section); nothing if absent.
# A ';' after a blank starts a comment, as in nest's config files.
kv() {
  awk -v want_sec="$2" -v key="$3" '
    /^[ \t]*\[/ { sec = $0; gsub(/^[ \t]*\[|\].*$/, "", sec); next }
    /^[ \t]*[;#]/ { next }
    {
      i = index($0, "="); if (i == 0) next
      k = substr($0, 1, i - 1); gsub(/^[ \t]+|[ \t]+$/, "", k)
      if (k != key || (want_sec != "" && sec != want_sec)) next
      v = substr($0, i + 1); sub(/(^|[ \t]);.*$/, "", v); gsub(/^[ \t]+|[ \t]+$/, "", v)
      print v; exit
    }' "$1" 2>/dev/null || true
}

# A comma list as nest's list parser reads it: blanks around items trimmed, no empty item.
split_list() { # NAME VALUE -> one item per line
  local item
  local -a raw
  IFS=, read -r -a raw <<< "$2,"
  [ ${#raw[@]} -gt 0 ] || die "$1 = '$2': an empty list"
  for item in "${raw[@]}"; do
    item=${item#"${item%%[![:blank:]]*}"}
    item=${item%"${item##*[![:blank:]]}"}
    [ -n "$item" ] || die "$1 = '$2': empty item"
    echo "$item"
  done
}

run_dir_for() { # NAME R SEED  (R = - outside a sweep)
  local out=${NEST_OUT_DIR:-outputs}
  if [ "$2" = - ]; then echo "$out/$1-s$3"; else echo "$out/$1-r$2-s$3"; fi
}

# ---- tables -------------------------------------------------------------------------------------

# One line per run directory for the awk formatters: fields separated by '|'.
table_rows() {
  local d s
  for d in "$@"; do
    s=$d/summary.txt
    if [ -f "$s" ]; then
      printf '%s|%s|%s|%s|%s|%s|%s|%s|%s|%s\n' "$(kv "$d/config.ini" run seed)" \
        "$(kv "$s" "" test_error)" "$(kv "$s" "" val_error)" "$(kv "$s" "" active_weights)" \
        "$(kv "$s" "" wall_s)" "$d" "$(kv "$d/config.ini" model width)" \
        "$(kv "$s" "" grow_wall_s)" "$(kv "$s" "" grown_weights)" "$(kv "$s" "" prune_weights_after)"
    else
      printf '%s|||||%s|%s||||missing\n' "$(kv "$d/config.ini" run seed)" "$d" \
        "$(kv "$d/config.ini" model width)"
    fi
  done
}

# awk helpers shared by both tables: sorting, median, thousands separators.
AWK_LIB='
function sort(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t } }
function median(a, n) { sort(a, n); return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function commas(x,   s, r) { s = sprintf("%.0f", x); r = ""; while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) } return s r }
function pct(x) { return sprintf("%.2f%%", 100 * x) }
'

print_table() { # RUN_DIR...: the seed table, median and range; status 1 if a run is unfinished
  table_rows "$@" | awk -F'|' "$AWK_LIB"'
    BEGIN { printf "%-5s %10s %10s %15s %10s  %s\n", "seed", "test error", "val error", "active weights", "wall time", "run directory" }
    $2 == "" { printf "%-5s %10s %10s %15s %10s  %s (no summary.txt: unfinished or failed)\n", ($1 == "" ? "?" : $1), "-", "-", "-", "-", $6; bad++; next }
    {
      n++; te[n] = $2 + 0; w[n] = $4 + 0; t[n] = $5 + 0
      if (n == 1 || te[n] < temin) temin = te[n]; if (n == 1 || te[n] > temax) temax = te[n]
      if (n == 1 || w[n] < wmin) wmin = w[n];     if (n == 1 || w[n] > wmax) wmax = w[n]
      if (n == 1 || t[n] < tmin) tmin = t[n];     if (n == 1 || t[n] > tmax) tmax = t[n]
      printf "%-5s %10s %10s %15s %8.0f s  %s\n", $1, pct($2), ($3 == "" ? "-" : pct($3)), commas($4), $5, $6
    }
    END {
      if (n == 0) { print "no finished run: nothing to summarise"; exit 1 }
      printf "test error:     median %s, range %s - %s (%d run%s)\n", pct(median(te, n)), pct(temin), pct(temax), n, n == 1 ? "" : "s"
      printf "active weights: median %s, range %s - %s\n", commas(median(w, n)), commas(wmin), commas(wmax)
      printf "wall time:      median %.0f s, range %.0f - %.0f s\n", median(t, n), tmin, tmax
      exit bad ? 1 : 0
    }'
}

print_sweep_table() { # RUN_DIR...: r -> growth time, post-growth size, final size, test error
  table_rows "$@" | awk -F'|' "$AWK_LIB"'
    $2 == "" { printf "(unfinished or failed, left out: %s)\n", $6; bad++; next }
    $9 == "" { printf "(no growth phase, left out: %s)\n", $6; next }
    {
      r = ($7 == "" ? "1.0" : $7) + 0
      if (!(r in cnt)) rs[++nr] = r
      k = ++cnt[r]; gt[r, k] = $8 + 0; gw[r, k] = $9 + 0; te[r, k] = $2 + 0
      if ($10 != "") { f = ++nf[r]; fw[r, f] = $10 + 0 }
    }
    END {
      if (nr == 0) { print "no finished growth run: nothing to tabulate"; exit 1 }
      sort(rs, nr)
      printf "%5s %5s %12s %17s %11s %11s %17s\n", "r", "runs", "growth time", "post-growth size", "final size", "test error", "test error range"
      for (i = 1; i <= nr; i++) {
        r = rs[i]; n = cnt[r]
        for (k = 1; k <= n; k++) { a[k] = gt[r, k]; b[k] = gw[r, k]; c[k] = te[r, k] }
        mt = median(a, n); mw = median(b, n); me = median(c, n); lo = c[1]; hi = c[n]
        fs = "-"
        if (nf[r] > 0) { for (k = 1; k <= nf[r]; k++) d[k] = fw[r, k]; fs = commas(median(d, nf[r])) }
        printf "%5.2f %5d %10.1f s %17s %11s %11s %17s\n", r, n, mt, commas(mw), fs, pct(me), pct(lo) " - " pct(hi)
      }
      print "(medians over the runs of each r; final size only for runs that pruned)"
      exit bad ? 1 : 0
    }'
}

# ---- running ------------------------------------------------------------------------------------

# Does this run read MNIST from the shipped location, so that its data.dir is ours to set?
# CONFIG then the user's --set arguments.
uses_shipped_mnist() {
  local config=$1 train dir a
  shift
  train=$(kv "$config" data train)
  dir=$(kv "$config" data dir)
  for a in "$@"; do
    case $a in
      data.dir=*) return 1 ;; # the user chose the data
      data.train=*) train=${a#data.train=} ;;
    esac
  done
  [[ $train == train-images-idx3-ubyte* ]] && [[ -z $dir || ${dir%/} == inputs/data/mnist ]]
}

local_mnist() { # like jobs/run_local.sh; downloads into inputs/data/mnist when absent
  local d
  for d in ../shared/data/mnist inputs/data/mnist; do
    if [ -f "$d/train-images-idx3-ubyte.gz" ]; then
      echo "$d"
      return 0
    fi
  done
  [ "$dry_run" = 1 ] || bash inputs/download_mnist.sh inputs/data/mnist >&2
  echo inputs/data/mnist
}

# Run one (r, seed) here; 0 finished, 1 failed.
run_one() { # CONFIG NAME R SEED: uses ranks, data_args, sets
  local config=$1 name=$2 r=$3 seed=$4 dir log rc=0 t0
  dir=$(run_dir_for "$name" "$r" "$seed")
  log=$dir.log
  if [ -f "$dir/summary.txt" ]; then
    echo "seeds.sh: $dir has finished already (summary.txt): not run again"
    return 0
  fi
  local -a cmd=(mpirun -n "$ranks")
  [ "$ranks" -gt "$(nproc)" ] && cmd+=(--oversubscribe)
  cmd+=("$build/nest_mpi" "$config" "${data_args[@]}" "${sets[@]}" --set run.seed="$seed")
  [ "$r" = - ] || cmd+=(--set model.width="$r")
  cmd+=(--set run.run_dir="$dir")
  if [ "$dry_run" = 1 ]; then
    printf '%q ' "${cmd[@]}"
    echo
    return 0
  fi
  local what="seed $seed"
  [ "$r" = - ] || what="r = $r, seed $seed"
  echo "seeds.sh: $what: running into $dir (console output: $log)"
  mkdir -p "$(dirname "$dir")"
  t0=$(date +%s)
  "${cmd[@]}" > "$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "seeds.sh: $what failed (exit $rc) after $(($(date +%s) - t0)) s; the end of $log:" >&2
    tail -n 5 "$log" >&2
    return 1
  fi
  echo "seeds.sh: $what finished in $(($(date +%s) - t0)) s: test error" \
    "$(awk -v e="$(kv "$dir/summary.txt" "" test_error)" 'BEGIN { printf "%.2f%%", 100 * e }')," \
    "$(kv "$dir/summary.txt" "" active_weights) active weights"
  if [ -x "$build/nest_plot" ]; then "$build/nest_plot" "$dir" > "$dir.plots.log" 2>&1 || true; fi
  return 0
}

# Inside the Slurm array (sbatch ... jobs/seeds.sh --task NAME "R:SEED ..." CONFIG [--set ...]).
array_task() {
  local name=$1 items=$2 config=$3 r seed
  shift 3
  cd "${NEST_HOME:-${SLURM_SUBMIT_DIR:-.}}"
  # shellcheck source=jobs/slurm_job.sh
  source jobs/slurm_job.sh
  local -a list extra=()
  read -r -a list <<< "$items"
  local task=${SLURM_ARRAY_TASK_ID:?submit as a job array (--array)}
  [ "$task" -lt ${#list[@]} ] || nest_job_die "array task $task: only ${#list[@]} runs"
  r=${list[task]%%:*}
  seed=${list[task]#*:}
  export NEST_RUN_DIR=${NEST_RUN_DIR:-$(run_dir_for "$name" "$r" "$seed")}
  local -a user=()
  local a
  for a in "$@"; do [ "$a" = --set ] || user+=("${a#--set=}"); done
  if uses_shipped_mnist "$config" "${user[@]}"; then extra+=(--set data.dir="$(nest_job_mnist)"); fi
  [ "$r" = - ] || extra+=(--set model.width="$r")
  nest_job "$config" "${extra[@]}" "$@" --set run.seed="$seed"
}

main() {
  [ "${1:-}" = --task ] && { shift; array_task "$@"; }
  local mode=seeds config="" name="" seeds_opt=1,2,3 widths_opt="" slurm=0 wait=0 time=01:00:00
  dry_run=0
  local -a dirs=() user=()
  sets=()
  ranks=${NEST_RANKS:-2}
  while [ $# -gt 0 ]; do
    case $1 in
      -h|--help) usage; exit 0 ;;
      --table) mode=table ;;
      --sweep-table) mode=sweep-table ;;
      --sweep) mode=sweep ;;
      --seeds) [ $# -ge 2 ] || die "--seeds needs a list"; seeds_opt=$2; shift ;;
      --seeds=*) seeds_opt=${1#--seeds=} ;;
      --widths) [ $# -ge 2 ] || die "--widths needs a list"; widths_opt=$2; shift ;;
      --widths=*) widths_opt=${1#--widths=} ;;
      --ranks) [ $# -ge 2 ] || die "--ranks needs a number"; ranks=$2; shift ;;
      --ranks=*) ranks=${1#--ranks=} ;;
      --name) [ $# -ge 2 ] || die "--name needs a value"; name=$2; shift ;;
      --time) [ $# -ge 2 ] || die "--time needs a value"; time=$2; shift ;;
      --slurm) slurm=1 ;;
      --wait) wait=1 ;;
      --dry-run) dry_run=1 ;;
      --set) [ $# -ge 2 ] || die "--set needs section.key=value"; sets+=(--set "$2"); user+=("$2"); shift ;;
      --set=*) sets+=("$1"); user+=("${1#--set=}") ;;
      -*) die "unknown option '$1' (try --help)" ;;
      *)
        if [[ $mode == *table ]]; then dirs+=("$1")
        elif [ -z "$config" ]; then config=$1
        else die "one CONFIG.ini expected, got '$config' and '$1' (try --help)"; fi ;;
    esac
    shift
  done
  case $mode in
    table)
      [ ${#dirs[@]} -gt 0 ] || die "--table needs run directories"
      print_table "${dirs[@]}"; exit $? ;;
    sweep-table)
      [ ${#dirs[@]} -gt 0 ] || die "--sweep-table needs run directories"
      print_sweep_table "${dirs[@]}"; exit $? ;;
  esac
  [ -n "$config" ] || die "no CONFIG.ini given (try --help)"
  [ -f "$config" ] || die "$config: no such config"
  [[ $ranks =~ ^[1-9][0-9]*$ ]] || die "--ranks $ranks: a positive number"
  config=$(cd "$(dirname "$config")" && pwd)/$(basename "$config")
  [ -n "$name" ] || name=$(basename "$config" .ini)

  local -a seeds=() widths=(-) items=() rundirs=()
  local s r list
  list=$(split_list --seeds "$seeds_opt") # (a failed split ends the script here: set -e)
  mapfile -t seeds <<< "$list"
  for s in "${seeds[@]}"; do
    [[ $s =~ ^[0-9]+$ ]] || die "--seeds = '$seeds_opt': '$s' is not a seed (a whole number)"
  done
  if [ "$mode" = sweep ]; then
    if [ -z "$widths_opt" ]; then # the paper's sweeps (NeST section 4.1.1)
      if [ "$(kv "$config" model arch)" = lenet5 ]; then widths_opt=0.5,0.67,0.83,1.0
      else widths_opt=0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0; fi
    fi
    list=$(split_list --widths "$widths_opt")
    mapfile -t widths <<< "$list"
    for r in "${widths[@]}"; do
      [[ $r =~ ^[0-9]*\.?[0-9]+$ ]] || die "--widths = '$widths_opt': '$r' is not a ratio"
    done
  fi
  for r in "${widths[@]}"; do
    for s in "${seeds[@]}"; do
      items+=("$r:$s")
      rundirs+=("$(run_dir_for "$name" "$r" "$s")")
    done
  done

  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  build=${NEST_BUILD_DIR:-build}
  mkdir -p outputs
  # Set-up (packages, build) out of the way of the table; its output only when it fails.
  if [ "$dry_run" = 1 ]; then
    :
  elif ! bash jobs/setup.sh > outputs/seeds-setup.log 2>&1; then
    tail -n 20 outputs/seeds-setup.log >&2
    echo "seeds.sh: error: jobs/setup.sh failed (outputs/seeds-setup.log)" >&2
    exit 1
  fi
  [ "$dry_run" = 1 ] || echo "seeds.sh: nest is built ($build/; set-up log: outputs/seeds-setup.log)"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  data_args=()
  if uses_shipped_mnist "$config" "${user[@]}"; then data_args=(--set data.dir="$(local_mnist)"); fi

  local failed=0
  if [ "$slurm" = 1 ]; then
    submit "$config" "$name" "${items[@]}" || exit $?
    [ "$wait" = 1 ] && [ "$dry_run" = 0 ] || exit 0
    local d
    for d in "${rundirs[@]}"; do # the figures of the array's runs, as after a local run
      if [ -f "$d/summary.txt" ] && [ ! -d "$d/plots" ] && [ -x "$build/nest_plot" ]; then
        "$build/nest_plot" "$d" > "$d.plots.log" 2>&1 || true
      fi
    done
  else
    for r in "${widths[@]}"; do
      for s in "${seeds[@]}"; do
        run_one "$config" "$name" "$r" "$s" || failed=1
      done
    done
  fi
  [ "$dry_run" = 0 ] || exit 0
  echo
  if [ "$mode" = sweep ]; then
    print_sweep_table "${rundirs[@]}" || failed=1
    if [ -x "$build/nest_plot" ]; then
      "$build/nest_plot" --sweep "${rundirs[@]}" --out "${NEST_OUT_DIR:-outputs}/$name-sweep-plots" || true
    fi
  else
    print_table "${rundirs[@]}" || failed=1
  fi
  exit "$failed"
}

# Submit the runs as one job array; with --wait, block until it ends.
submit() { # CONFIG NAME ITEM...: uses ranks, time, wait, sets
  local config=$1 name=$2
  shift 2
  [ "$dry_run" = 1 ] || command -v sbatch > /dev/null || die "--slurm: sbatch not found (no Slurm here?)"
  mkdir -p outputs "${NEST_OUT_DIR:-outputs}"
  local -a todo=() extra=()
  local it
  for it in "$@"; do
    if [ -f "$(run_dir_for "$name" "${it%%:*}" "${it#*:}")/summary.txt" ]; then
      echo "seeds.sh: $(run_dir_for "$name" "${it%%:*}" "${it#*:}") has finished already: not submitted"
    else
      todo+=("$it")
    fi
  done
  [ ${#todo[@]} -gt 0 ] || return 0
  read -r -a extra <<< "${NEST_SBATCH_ARGS:-}"
  [ "$wait" = 1 ] && extra+=(--wait)
  local -a cmd=(sbatch --parsable --job-name="$name-seeds" --array="0-$((${#todo[@]} - 1))"
    --ntasks="$ranks" --cpus-per-task=1 --mem-per-cpu=2G --time="$time" --signal=B:USR1@120
    --requeue --open-mode=append --output="outputs/slurm-%x-%A_%a.out" "${extra[@]}"
    jobs/seeds.sh --task "$name" "${todo[*]}" "$config" "${sets[@]}")
  if [ "$dry_run" = 1 ]; then
    printf '%q ' "${cmd[@]}"
    echo
    return 0
  fi
  echo "seeds.sh: submitting ${#todo[@]} runs as a job array: ${todo[*]} (r:seed)"
  local id rc=0
  id=$("${cmd[@]}") || rc=$?
  [ "$rc" -eq 0 ] || [ "$wait" = 1 ] || die "sbatch failed (exit $rc)"
  echo "seeds.sh: job array ${id%%;*}; logs outputs/slurm-$name-seeds-${id%%;*}_<task>.out"
  if [ "$wait" = 0 ]; then
    local how=table
    [ "${todo[0]%%:*}" = - ] || how=sweep-table
    echo "seeds.sh: when it is done: bash jobs/seeds.sh --$how $(printf '%s ' "${rundirs[@]}")"
  fi
  return 0
}

main "$@"
