/* restart.h — checkpoint/restart of a whole run (docs/restart.md, docs/checkpoint-format.md).
 *
 * A checkpoint is RUN_DIR/checkpoints/ckpt-NNNNNNNN.h5 (NNNNNNNN a sequence number): the net
 * with its momentum, the pruning guard's snapshot when a step is being retrained, and /state:
 * the cursor (phase.h: which phase, iteration, target, epoch, step), counters, accumulators,
 * pending event rows, the phases' results, the data fingerprint and the byte lengths of
 * metrics.csv and events.csv — one table in restart.c lists every /state dataset, and the
 * writer, the reader and the reader's checks all walk it. Written by rank 0 (the weights are
 * replicated; per-rank values are gathered first) through the container of ckpt.h:
 * PATH.tmp, fsync, rename, fsync the directory; then all but the newest checkpoint.keep are
 * removed.
 *
 * When: at every nest_restart_point the loops pass (before each optimizer step of an epoch
 * or a pruning retraining round, at the end of each growth and pruning iteration, at the
 * start and the end of the run) if forced, if checkpoint.every_steps steps or
 * checkpoint.every_minutes minutes passed since the last one, or if a signal arrived.
 * The last two are decided per point by one small allreduce, so every rank takes the same
 * decision (a signal may reach one rank only).
 *
 * Resuming: when the run directory holds checkpoints, every rank reads them, newest first, in
 * the same order (rank 0 lists the directory). A checkpoint is set aside only when it is
 * verified damaged — every rank that failed to read it found its contents malformed (truncated,
 * checksum, missing dataset, other version): it is reported, renamed *.bad (never deleted) and
 * the previous one tried. A read that fails for any other reason (the file cannot be opened or
 * stat'ed on some rank: a transient I/O error, a file system not mounted) is an error, and no
 * file is renamed. The chosen file's data and config must be those of this run (messages say
 * what differs); metrics.csv and events.csv are cut back to the lengths it recorded and the
 * phase context's `resuming` is set: the loops then start at the cursor. With the same rank
 * count the rest of the run is bit-identical to an uninterrupted one. */
#ifndef NEST_RESTART_H
#define NEST_RESTART_H

#include <stddef.h>

#include "nest/grow.h"
#include "nest/phase.h"
#include "nest/prune.h"
#include "nest/scann.h"

/* SIGUSR1, SIGTERM and SIGINT set a flag (and nothing else): the next restart point writes
 * a checkpoint and returns NEST_STOPPED. A second signal changes nothing. Installs the
 * handlers, then unblocks the three signals: nest_mpi (src/launch.c) blocks them before the
 * program and its libraries load, and nest_mpi.bin calls this first thing in main, before MPI
 * is initialised, so a signal at any moment of a rank's life stops the run cleanly. */
void nest_restart_signals_install(void);

/* What a checkpoint holds: pointers into the run's owners (the pipeline), which outlive the
 * nest_restart made from them. */
typedef struct {
  nest_phase_ctx *run;       /* the engine (run->t), the cursor, resuming, the phase's start */
  nest_grow *grow;           /* the growth result and pending event rows; NULL = none */
  nest_prune_state *prune;   /* targets, snapshot, retraining stream and sums, results */
  nest_scann_state *scann;   /* the scann phase's best network and result; NULL = none */
  nest_eval *last_val, *last_test; /* the latest evaluation (summary.txt) */
  int nphases;               /* phases of the run: a cursor beyond them is refused */
  const char *run_dir;       /* "" = no run directory: points only watch for signals */
} nest_restart_src;

typedef struct nest_restart nest_restart;

/* The checkpoint writer of src (RUN_DIR/checkpoints created). Collective. */
nest_status nest_restart_create(const nest_restart_src *src, nest_restart **out);
void nest_restart_destroy(nest_restart **r);

/* A point between two steps (see above). force = 1 writes a checkpoint whatever the clocks
 * say. Returns NEST_STOPPED (message: which signal, which checkpoint) after writing one
 * because of a signal; without a run directory, NEST_STOPPED at once. Collective. */
nest_status nest_restart_point(nest_restart *r, int force);

/* Load the newest valid checkpoint of the run directory into the run (see above).
 * Collective. */
nest_status nest_restart_resume(nest_restart *r);

/* Write one checkpoint of the run's state to `path` now (nest_restart_point's write).
 * Collective. */
nest_status nest_restart_write(nest_restart *r, const char *path);

/* The newest checkpoint of run_dir, as nest_rundir_newest (rundir.h), for the tools. */
nest_status nest_restart_newest(const char *run_dir, char *path, size_t cap, int *any);

#endif
