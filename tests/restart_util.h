/* restart_util.h — helpers shared by the restart test executables (test_restart_mpi.c,
 * test_restart_kill.c): synthetic data, the synthesis config, running build/nest_mpi under
 * mpiexec, comparing two run directories bit for bit (minus the timing columns), copying a
 * run directory cut back to a checkpoint, and reading a checkpoint's position. */
#ifndef NEST_RESTART_UTIL_H
#define NEST_RESTART_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "nest/phase.h"

/* Write DIR/train.h5 (1000 samples) and DIR/test.h5 (300 other samples of the same classes):
 * 1x28x28 u8 images, 4 classes, from nest_dataset_synthetic. Returns 0 on success. */
int rt_make_data(const char *dir);

/* Write DIR/NAME: the synthesis config of the restart tests (LeNet-5 at width 0.25, density
 * 0.3, grow (conn, 2 iterations of 1 epoch) -> prune (2 iterations, 6 retraining steps,
 * tolerance 0.05, 1 epoch of fine-tuning) -> area, batch 50, checkpoint.every_steps = 5,
 * keep = 1000, every_minutes = 0; data paths relative to DIR) followed by `extra` (more INI
 * lines, may be NULL). About 136 optimizer steps and 32 checkpoints at 2 ranks, 3-10 s.
 * Returns 0 on success. */
int rt_write_config(const char *dir, const char *name, const char *extra);

/* Run `cd DIR && timeout 600 COMMAND` through the shell with stdout/stderr in DIR/LOG.out and
 * DIR/LOG.err (log: a file name stem, NULL = "run"), copied into out/err (either may be NULL).
 * Returns the exit code (124 = timed out, -1 = did not exit normally). */
int rt_shell(const char *dir, const char *command, const char *log, char *out, size_t out_cap,
             char *err, size_t err_cap);
/* rt_shell of `mpiexec -n NP --oversubscribe BUILD/nest_mpi ARGS`. */
int rt_mpi(const char *dir, int np, const char *args, const char *log, char *out, size_t out_cap,
           char *err, size_t err_cap);
/* The mpiexec command line rt_mpi runs (nest_mpi of this build, or of the build directory in
 * the environment variable NEST_TEST_BIN_DIR). */
void rt_mpi_command(char *cmd, size_t cap, int np, const char *args);

/* Bytes per unit of `ulimit -f` in /bin/sh (512 in dash, 1024 in bash); 0 if unknown. */
long rt_ulimit_unit(void);

/* ---- background runs (the signal and kill tests) ---- */

/* Start `mpiexec -n NP --oversubscribe nest_mpi ARGS` in DIR in the background, stdout/stderr
 * to DIR/LOG.out / .err, in a new session (its process group id = the returned pid, which is
 * mpiexec's own). -1 on failure. */
pid_t rt_spawn(const char *dir, int np, const char *args, const char *log);
/* Wait for pid (a child) to exit, at most timeout seconds. Returns its exit code (128 + signal
 * when killed by one), or -1 on timeout (the run is then killed with rt_kill_tree). */
int rt_wait(pid_t pid, double timeout);
/* Has pid (a child) exited? Returns 1 and its exit code in *code (as rt_wait), else 0. */
int rt_exited(pid_t pid, int *code);
/* SIGKILL the whole run started by rt_spawn: its process group and every descendant (Open MPI
 * puts each rank in a process group of its own, so killing mpiexec's group alone leaves the
 * ranks running for a while), then reap it and wait until every descendant is gone. Best
 * with rt_become_subreaper() (orphaned ranks are then ours to reap). */
void rt_kill_tree(pid_t pid);
/* The rank processes of a run started by rt_spawn: descendants of pid whose name starts with
 * "nest_mpi" (the launcher, or nest_mpi.bin once it executed it), at most cap. */
int rt_ranks(pid_t pid, pid_t *out, int cap);
/* 1 if process pid blocks or catches signal sig (/proc/PID/status SigBlk, SigCgt): its own
 * code has begun to guard against it. */
int rt_guards_signal(pid_t pid, int sig);
/* Make this process the child subreaper (prctl): orphaned descendants are reparented to it. */
void rt_become_subreaper(void);

/* Compare two finished run directories: the final model.h5 (nest_model_load both, then
 * nest_net_hash(NEST_HASH_ALL) and the arch strings), metrics.csv and events.csv without their
 * clock columns, found by header name (images_per_s, elapsed_s; seconds, time_s). Returns 0 if
 * equal, else 1 with a description of the first difference in why. */
int rt_compare_runs(const char *ref, const char *other, char *why, size_t cap);

/* Copy run directory src to dst (which must not exist) keeping only checkpoints with a
 * sequence number <= k (and no *.tmp / *.bad files). Returns 0 on success. */
int rt_cut_copy(const char *src, const char *dst, int64_t k);

/* The sequence numbers of RUN_DIR/checkpoints/ckpt-*.h5, ascending, at most cap; returns
 * how many (-1 if the directory cannot be read). */
int rt_list_ckpts(const char *run_dir, int64_t *seqs, int cap);
/* RUN_DIR/checkpoints/ckpt-NNNNNNNN.h5 into a static rotating buffer. */
const char *rt_ckpt_path(const char *run_dir, int64_t seq);
/* Number of files in RUN_DIR/checkpoints whose name ends with `suffix` (".h5", ".tmp",
 * ".bad"); -1 if the directory cannot be read. */
int rt_count_files(const char *run_dir, const char *suffix);

/* What a checkpoint says about where the run was. */
typedef struct {
  nest_cursor cur;
  int64_t epoch, step; /* completed epochs, global optimizer steps */
  int nranks;          /* ranks of the run that wrote it */
  int has_snapshot;    /* a /snapshot group (a pruning step being retrained) */
  int has_teacher;     /* a /teacher group (prune.distill, from the first pruning phase on) */
  int has_area;        /* a conv layer with hp.area = 1 */
} rt_ckpt_info;
/* Read `path` with nest_ckpt_open / nest_ckpt_get_net; 0 on success. */
int rt_read_info(const char *path, rt_ckpt_info *info);

/* A numeric "key = value" line of summary.txt in RUN_DIR; NaN if absent. */
double rt_summary_value(const char *run_dir, const char *key);

/* Lines of `text` containing `needle`. */
int rt_count_lines(const char *text, const char *needle);

/* Wall clock in seconds (CLOCK_MONOTONIC). */
double rt_now(void);

#endif
