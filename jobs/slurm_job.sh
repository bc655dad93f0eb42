# jobs/slurm_job.sh — what every Slurm job script in jobs/*.slurm shares, sourced by them:
# launch nest_mpi on the job's tasks in the background, forward the time-limit signal to it,
# and requeue the job when nest stopped after a checkpoint. docs/slurm.md explains the flow.
#
#   nest_job CONFIG.ini [--set section.key=value ...]
#
# NEST_CONFIG replaces the script's CONFIG.ini: the script's resources, signal and requeue
# with another config (CI runs jobs/alexnet_nest.slurm with a reduced AlexNet this way).
# 1. The run directory is outputs/NAME-job<JOBID> (job arrays: NAME-job<ARRAYID>_<TASKID>),
#    NAME = the config's basename; NEST_RUN_DIR overrides it. A requeued job keeps its job id,
#    so it finds the same directory, and nest resumes from its newest checkpoint by itself.
# 2. nest_mpi runs under `srun --mpi=pmix` (NEST_LAUNCHER=srun, the default) or `mpirun`
#    (NEST_LAUNCHER=mpirun), in the background: bash runs a trap only between commands, so
#    the script must be in `wait`, not in the launcher, when the signal comes.
# 3. SIGUSR1 to the batch shell (#SBATCH --signal=B:USR1@SECONDS, or
#    `scancel --signal=USR1 --batch JOBID`) is forwarded to the launcher, which forwards it to
#    every rank: nest finishes the step, writes a checkpoint and exits with 10.
# 4. Exit 10 -> `scontrol requeue` this job and exit 0; the requeued job runs this script again
#    and resumes. Any other exit status is the job's.
#
# 5. MNIST (jobs/mnist.sh, the rule jobs/run_local.sh follows too): a config that reads MNIST
#    by its file names from a data.dir that does not hold it (the shipped configs say
#    inputs/data/mnist) gets --set data.dir=<NEST_MNIST_DIR, ../shared/data/mnist or
#    inputs/data/mnist>; any other config (NEST_CONFIG with your own data), or arguments that
#    set data.dir, run as written. A batch job does not download: compute nodes are often
#    offline; run inputs/download_mnist.sh inputs/data/mnist on a login node first.
#
# Env: NEST_HOME (the checkout; default: the directory sbatch was called from),
#      NEST_BUILD_DIR (default build), NEST_LAUNCHER (srun | mpirun), NEST_SRUN_ARGS,
#      NEST_MPIRUN_ARGS (extra launcher arguments, split on blanks), NEST_RUN_DIR, NEST_CONFIG,
#      NEST_MNIST_DIR.
# shellcheck shell=bash

# shellcheck source=jobs/mnist.sh
source jobs/mnist.sh

# Messages name the job as squeue does: JOBID, or ARRAYID_TASKID in a job array.
nest_job_name() {
  if [ -n "${SLURM_ARRAY_JOB_ID:-}" ]; then
    echo "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID:-}"
  else
    echo "${SLURM_JOB_ID:-?}"
  fi
}
nest_job_say() { echo "nest job $(nest_job_name): $*"; }
nest_job_die() {
  echo "nest job $(nest_job_name): error: $*" >&2
  exit 1
}

# The MNIST arguments of a job (point 5 above) into the array nest_job_data.
nest_job_data=()
nest_job_mnist_args() {
  local config=$1 mnist
  shift
  nest_job_data=()
  nest_mnist_needed "$config" "$@" || return 0
  if ! mnist=$(nest_mnist_find "$nest_mnist_file"); then
    mnist=inputs/data/mnist
    nest_job_say "warning: no $nest_mnist_file in ${NEST_MNIST_DIR:+$NEST_MNIST_DIR, }../shared/data/mnist or inputs/data/mnist: run 'bash inputs/download_mnist.sh inputs/data/mnist' on a login node first" >&2
  fi
  nest_job_say "$config reads $nest_mnist_file from data.dir = ${nest_mnist_config_dir:-.}, which does not hold it: --set data.dir=$mnist"
  nest_job_data=(--set data.dir="$mnist")
}

# The trap: remember the signal, and pass it on once the launcher runs.
nest_job_pid=""
nest_job_signalled=0
nest_job_forward() {
  nest_job_signalled=1
  nest_job_say "SIGUSR1: asking nest to checkpoint and stop"
  if [ -n "$nest_job_pid" ]; then kill -USR1 "$nest_job_pid" 2>/dev/null || true; fi
}

nest_job() {
  local config=${NEST_CONFIG:-$1}
  shift
  [ -n "${SLURM_JOB_ID:-}" ] || nest_job_die "not inside a Slurm job: submit with sbatch"
  [ -f "$config" ] || nest_job_die "$config: no such config (submit from the nest checkout or set NEST_HOME)"
  local bin=${NEST_BUILD_DIR:-build}/nest_mpi
  [ -x "$bin" ] || nest_job_die "$bin: not built (bash jobs/setup.sh)"
  local name id run_dir threads launcher
  name=$(basename "$config" .ini)
  id=$(nest_job_name)
  run_dir=${NEST_RUN_DIR:-outputs/$name-job$id}
  threads=${SLURM_CPUS_PER_TASK:-1}
  launcher=${NEST_LAUNCHER:-srun}
  # Open MPI refuses to run as root unless told; the local Slurm (slurm/start.sh) runs jobs as
  # root.
  if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  fi
  export OMP_NUM_THREADS=$threads
  # More ranks x threads on this node than cores it has (the local Slurm's 64 CPUs on 2 cores,
  # or a job with --overcommit): Open MPI's ranks busy-poll while they wait in a collective, and
  # only notice they share cores when mpirun itself oversubscribes, which it does not here (Slurm
  # gave it the slots). Told to yield, 64 ranks on 2 cores ran about 35x faster (docs/slurm.md).
  # (nproc counts the cores this script may use, but believes OMP_NUM_THREADS: unset it there.)
  local here_tasks=${SLURM_TASKS_PER_NODE:-1} cores
  here_tasks=${here_tasks%%[(,]*}
  cores=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
  if [ $((here_tasks * threads)) -gt "$cores" ] && [ -z "${OMPI_MCA_mpi_yield_when_idle:-}" ]; then
    export OMPI_MCA_mpi_yield_when_idle=1
    nest_job_say "$here_tasks tasks x $threads threads on $cores cores: oversubscribed, MPI ranks yield when idle"
  fi
  local -a cmd extra=()
  case $launcher in
    srun)
      read -r -a extra <<< "${NEST_SRUN_ARGS:-}"
      cmd=(srun --mpi=pmix "${extra[@]}")
      ;;
    mpirun)
      read -r -a extra <<< "${NEST_MPIRUN_ARGS:-}"
      cmd=(mpirun "${extra[@]}")
      # Open MPI binds each rank to one core by default: a rank with more threads needs its
      # cores free.
      if [ "$threads" -gt 1 ]; then cmd+=(--bind-to none); fi
      ;;
    *) nest_job_die "NEST_LAUNCHER=$launcher: use srun or mpirun" ;;
  esac

  if compgen -G "$run_dir/checkpoints/ckpt-*.h5" > /dev/null; then
    nest_job_say "resuming $run_dir from its newest checkpoint (restart ${SLURM_RESTART_COUNT:-0})"
    # A job's first start that finds checkpoints: meant (NEST_RUN_DIR set to continue a run),
    # or a job id used before (a Slurm whose state was reset numbers jobs from 1 again).
    if [ "${SLURM_RESTART_COUNT:-0}" = 0 ] && [ -z "${NEST_RUN_DIR:-}" ]; then
      nest_job_say "warning: this job's first start found checkpoints in $run_dir: continuing that run; if it is an older job's (job ids reused), cancel and submit with NEST_RUN_DIR set to a new directory" >&2
    fi
  else
    nest_job_say "starting $run_dir"
  fi
  nest_job_mnist_args "$config" "$@"
  nest_job_say "$launcher: ${SLURM_NTASKS:-?} tasks x $threads threads on ${SLURM_JOB_NODELIST:-?}: $config ${nest_job_data[*]} $*"

  trap nest_job_forward USR1
  "${cmd[@]}" "$bin" "$config" "${nest_job_data[@]}" --set run.run_dir="$run_dir" \
    --set run.threads="$threads" "$@" &
  nest_job_pid=$!
  # A signal that came before the launcher existed.
  if [ "$nest_job_signalled" = 1 ]; then kill -USR1 "$nest_job_pid" 2>/dev/null || true; fi

  # A trapped signal makes `wait` return at once with a status above 128 (then the trap runs);
  # the launcher still runs: wait again for its own exit status. (127 from the second wait:
  # the first status was already the launcher's.)
  local rc=0 rc2
  nest_job_signalled=0
  wait "$nest_job_pid" || rc=$?
  while [ "$nest_job_signalled" = 1 ] && [ "$rc" -gt 128 ]; do
    nest_job_signalled=0
    rc2=0
    wait "$nest_job_pid" || rc2=$?
    [ "$rc2" -ne 127 ] || break
    rc=$rc2
  done
  trap - USR1

  case $rc in
    0)
      nest_job_say "nest finished: results in $run_dir"
      exit 0
      ;;
    10)
      # Stopped after writing a checkpoint: run again. scontrol ends this job (it may kill the
      # script before it exits); the requeued job keeps its id and its output file
      # (--open-mode=append) and starts again in a few seconds on an idle cluster.
      nest_job_say "nest stopped after a checkpoint: requeueing"
      if scontrol requeue "$SLURM_JOB_ID"; then exit 0; fi
      nest_job_say "requeue refused: to continue, submit the same job script again with NEST_RUN_DIR=$run_dir"
      exit 10
      ;;
    *)
      nest_job_say "nest_mpi failed with exit status $rc"
      exit "$rc"
      ;;
  esac
}
