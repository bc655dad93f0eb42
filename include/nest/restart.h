/* restart.h — checkpoint/restart of a whole run (docs/restart.md, docs/checkpoint-format.md).
 *
 * A checkpoint is RUN_DIR/checkpoints/ckpt-NNNNNNNN.h5 (NNNNNNNN a sequence number): the net
 * with its momentum, the pruning guard's snapshot when a step is being retrained, and /state:
 * the cursor (train.h: which phase, iteration, target, epoch, step), counters, accumulators,
 * pending event rows, the phases' results, the data fingerprint and the byte lengths of
 * metrics.csv and events.csv. Written by rank 0 (the weights are replicated; per-rank values
 * are gathered first) through the container of checkpoint.h: PATH.tmp, fsync, rename, fsync
 * the directory; then all but the newest checkpoint.keep are removed.
 *
 * When: at every nest_restart_point the loops pass (before each optimizer step of an epoch
 * or a pruning retraining round, at the end of each growth and pruning iteration, at the
 * start and the end of the run) if forced, if checkpoint.every_steps steps or
 * checkpoint.every_minutes minutes passed since the last one, or if a signal arrived.
 * The last two are decided per point by one small allreduce, so every rank takes the same
 * decision (a signal may reach one rank only).
 *
 * Resuming: when the run directory holds checkpoints, rank 0 tries them newest first; one
 * that fails to load (truncated, checksum, missing dataset, other version) is reported,
 * renamed *.bad (never deleted) and the previous one tried. Every rank then loads the chosen
 * file, checks that the data and the config are those of the checkpoint (messages say what
 * differs), cuts metrics.csv and events.csv back to the lengths the checkpoint recorded and
 * sets t->resuming: the loops then start at the cursor. With the same rank count the rest of
 * the run is bit-identical to an uninterrupted one. */
#ifndef NEST_RESTART_H
#define NEST_RESTART_H

#include "nest/train.h"

/* SIGUSR1, SIGTERM and SIGINT set a flag (and nothing else): the next restart point writes
 * a checkpoint and returns NEST_STOPPED. A second signal changes nothing. */
void nest_restart_signals_install(void);
/* The signal received (0 = none). */
int nest_restart_signal(void);

/* After the run directory exists: the checkpoint writer (t->rst), none without a run dir. */
nest_status nest_restart_create(nest_trainer *t);
void nest_restart_destroy(struct nest_restart **r);

/* A point between two steps (see above). force = 1 writes a checkpoint whatever the clocks
 * say. Returns NEST_STOPPED (message: which signal, which checkpoint) after writing one
 * because of a signal. Collective. */
nest_status nest_restart_point(nest_trainer *t, int force);

/* Rank 0: the newest checkpoint in run_dir/checkpoints ("" in path when there is none);
 * 1 in *any when the directory holds checkpoint files at all. */
nest_status nest_restart_newest(const char *run_dir, char *path, size_t cap, int *any);

/* Load the newest valid checkpoint of t->run_dir into t (see above). Collective. */
nest_status nest_restart_resume(nest_trainer *t);

/* Cut `path` back to `bytes` (an error if it is shorter: it was edited or lost) and open it
 * for appending (rank 0's metrics.csv and events.csv on resume). */
nest_status nest_restart_truncate(const char *path, int64_t bytes, FILE **f);

/* Write one checkpoint of t's state to `path` now (nest_restart_point's write). Collective. */
nest_status nest_restart_write(nest_trainer *t, const char *path);

#endif
