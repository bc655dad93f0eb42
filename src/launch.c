/* launch.c — nest_mpi, the command users run: it blocks SIGUSR1, SIGTERM and SIGINT and
 * executes nest_mpi.bin beside it (the program, src/main.c), with the same arguments and pid.
 *
 * Why: a signal that reaches a rank before its handlers exist kills it with the default action
 * (mpirun: "exited on signal 10"), and a Slurm job signalled in its first moments is then never
 * checkpointed nor requeued. nest_mpi.bin installs its handlers first thing in main, but before
 * main the dynamic loader maps ~50 libraries (MPI, HDF5 with curl and TLS, OpenBLAS) and runs
 * their constructors: 100-300 ms after exec on a loaded node. This program is linked statically
 * and does nothing else, so the signals are blocked microseconds after exec; blocked signals
 * stay pending across exec, and nest_mpi.bin's handlers take them once main unblocks them
 * (restart.h): the run stops at its first checkpoint point with exit code 10. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
  (void)argc;
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGUSR1);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  sigprocmask(SIG_BLOCK, &stop, NULL);
  char self[4096], prog[4200];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    fprintf(stderr, "nest_mpi: error: cannot find this program (/proc/self/exe): %s\n",
            strerror(errno));
    return 1;
  }
  self[n] = '\0';
  snprintf(prog, sizeof prog, "%s.bin", self);
  execv(prog, argv);
  fprintf(stderr, "nest_mpi: error: cannot start %s: %s\n", prog, strerror(errno));
  return 127;
}
