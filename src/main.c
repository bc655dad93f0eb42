/* main.c — nest_mpi: the signal handlers, the command line, threads, then the synthesis
 * pipeline (pipeline.h).
 *
 * The only place that turns a nest_status into an exit code. Every rank parses the same
 * config and agrees on every error, so all ranks exit with the same code and rank 0 prints
 * one line: "nest_mpi: error: <what went wrong, naming the file>". */
#define _GNU_SOURCE
#include <cblas.h>
#include <omp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nest/comm.h"
#include "nest/config.h"
#include "nest/pipeline.h"
#include "nest/restart.h"
#include "nest/rundir.h"

/* OpenBLAS extensions (declared in its cblas.h, repeated here for clarity). */
int openblas_get_parallel(void);
void openblas_set_num_threads(int);

static void report(int rank, nest_status st) {
  if (rank != 0) return;
  if (st == NEST_STOPPED) { /* not an error: the run can be continued */
    fprintf(stderr, "nest_mpi: %s\n", nest_error_message());
    fflush(stderr);
    return;
  }
  fprintf(stderr, "nest_mpi: error: %s\n", nest_error_message());
  const char *trace = getenv("NEST_TRACE");
  if (trace && *trace && strcmp(trace, "0") != 0)
    fprintf(stderr, "nest_mpi: (%s error raised at %s; propagated %s)\n", nest_status_name(st),
            nest_error_origin(), nest_error_backtrace());
  fflush(stderr);
}

/* Threads per rank: run.threads, or the cores this rank is bound to, capped so that
 * ranks-per-node x threads <= cores (oversubscribing makes OpenMP barriers spin). */
static int choose_threads(int requested, int local_ranks) {
  cpu_set_t set;
  int bound = 1;
  if (sched_getaffinity(0, sizeof set, &set) == 0) bound = CPU_COUNT(&set);
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  int cap = (int)(online / (local_ranks > 0 ? local_ranks : 1));
  if (cap < 1) cap = 1;
  if (requested > 0) return requested;
  return bound < cap ? (bound > 0 ? bound : 1) : cap;
}

/* nest_mpi --resume RUN_DIR [--set k=v ...] = nest_mpi RUN_DIR/config.ini --set
 * run.run_dir=RUN_DIR [--set k=v ...], and the directory must hold a checkpoint. The run's
 * own effective config comes back from its directory. argv is rewritten in place (its
 * strings stay valid for the whole run). */
static nest_status resume_args(int *argc, char ***argv, int *resume) {
  *resume = 0;
  int at = -1;
  for (int i = 1; i < *argc; ++i) {
    if (strcmp((*argv)[i], "--") == 0) break;
    if (strcmp((*argv)[i], "--set") == 0) {
      ++i;
      continue;
    }
    if (strcmp((*argv)[i], "--resume") == 0) at = i;
  }
  if (at < 0) return NEST_OK;
  if (at + 1 >= *argc || !(*argv)[at + 1][0])
    return NEST_ERR(NEST_ERR_ARG, "missing run directory after --resume");
  const char *dir = (*argv)[at + 1];
  for (int i = 1; i < *argc; ++i)
    if (i != at && i != at + 1 && (*argv)[i][0] != '-' && (i == 1 || strcmp((*argv)[i - 1], "--set")))
      return NEST_ERR(NEST_ERR_ARG, "--resume %s takes the run's own config: give no config file "
                      "(%s)", dir, (*argv)[i]);
  char newest[4200];
  int any = 0;
  NEST_CALL(nest_rundir_newest(dir, newest, sizeof newest, &any));
  if (!any)
    return NEST_ERR(NEST_ERR_IO, "%s: no checkpoint to resume from (no %s/checkpoints/ckpt-*.h5)",
                    dir, dir);
  static char cfg[4200], set[4200];
  static char *nargv[1024];
  if (*argc + 2 > 1024) return NEST_ERR(NEST_ERR_ARG, "too many arguments");
  snprintf(cfg, sizeof cfg, "%s/config.ini", dir);
  snprintf(set, sizeof set, "run.run_dir=%s", dir);
  int n = 0;
  nargv[n++] = (*argv)[0];
  nargv[n++] = cfg;
  nargv[n++] = "--set";
  nargv[n++] = set;
  for (int i = 1; i < *argc; ++i)
    if (i != at && i != at + 1) nargv[n++] = (*argv)[i];
  nargv[n] = NULL;
  *argc = n;
  *argv = nargv;
  *resume = 1;
  return NEST_OK;
}

int main(int argc, char **argv) {
  /* SIGUSR1 / SIGTERM / SIGINT: checkpoint at the next step and stop (restart.h). Installed
   * before anything else: a signal in the first moments of a run (a Slurm job signalled as it
   * starts) must set the flag, not kill the rank with the default action. MPI_Init leaves
   * these three alone (Open MPI installs handlers for SIGSEGV, SIGBUS, SIGFPE, SIGILL only,
   * opal_signal; mpirun forwards SIGUSR1/SIGUSR2/SIGTERM/SIGINT to the ranks). */
  nest_restart_signals_install();
  /* A file size limit (ulimit -f) then fails the write with EFBIG, which nest reports and
   * survives, instead of killing the rank mid-checkpoint. */
  signal(SIGXFSZ, SIG_IGN);
  nest_comm *comm = NULL;
  if (nest_comm_init(&argc, &argv, &comm) != NEST_OK) {
    fprintf(stderr, "nest_mpi: error: %s\n", nest_error_message());
    return 1;
  }
  const int rank = nest_comm_rank(comm);
  int help = 0, resume = 0;
  nest_config cfg;
  nest_status st = resume_args(&argc, &argv, &resume);
  if (st == NEST_OK) st = nest_cli_parse(argc, argv, &cfg, &help);
  cfg.resume = resume;
  st = nest_comm_agree(comm, st);
  if (st != NEST_OK) {
    report(rank, st);
    if (rank == 0 && st == NEST_ERR_ARG) nest_cli_print_usage(stderr, "nest_mpi");
    nest_comm_destroy(&comm);
    return (int)st;
  }
  if (help) {
    if (rank == 0) {
      nest_cli_print_usage(stdout, "nest_mpi");
      printf("\n");
      nest_config_print_help(stdout);
    }
    nest_comm_destroy(&comm);
    return 0;
  }

  const int threads = choose_threads(cfg.threads, nest_comm_local_size(comm));
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  const int blas_mode = openblas_get_parallel(); /* 0 sequential, 1 pthreads, 2 OpenMP */
  if (rank == 0 && blas_mode == 1 && threads > 1)
    fprintf(stderr,
            "nest_mpi: warning: OpenBLAS is the pthreads build; with OpenMP threads it runs "
            "several times slower. Install libopenblas-openmp-dev (update-alternatives "
            "--config libblas.so.3-x86_64-linux-gnu) or set run.threads = 1.\n");
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  if (rank == 0 && (long)threads * nest_comm_local_size(comm) > online)
    fprintf(stderr,
            "nest_mpi: warning: %d ranks x %d threads on a node with %ld cores: oversubscribed, "
            "expect slow training (with Open MPI set OMPI_MCA_mpi_yield_when_idle=1, which mpirun "
            "--oversubscribe does by itself: docs/scaling.md)\n",
            nest_comm_local_size(comm), threads, online);

  nest_pipeline *p = NULL;
  st = nest_pipeline_create(&cfg, comm, &p);
  if (st == NEST_OK) st = nest_pipeline_run(p);
  /* Every error path above is agreed across ranks; this agree is a last safety net. */
  st = nest_comm_agree(comm, st);
  if (st != NEST_OK) report(rank, st);
  nest_pipeline_destroy(&p);
  nest_comm_destroy(&comm);
  return (int)st;
}
