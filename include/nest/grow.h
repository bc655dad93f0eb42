/* grow.h — the growth phase and the policy driver (ALGORITHMS.md §2-6, docs/growth.md).
 *
 * Growth phase (grow.policy lists a GROWTH policy): repeat
 *     grow: every GROWTH policy in grow.policy order, on each of its targets (policy.h);
 *     train grow.train_epochs epochs (grow.schedule: each iteration anneals from grow.lr to
 *       optim.min_lr with a cosine, a warm restart, or keeps grow.lr);
 *     evaluate the validation (and test) error;
 * until the validation error is <= grow.target_error, the active weights reach
 * grow.max_weights, grow.patience iterations in a row have not lowered the best validation
 * error by more than grow.patience_z standard errors (the binomial standard error of the best
 * error on the validation set: a rule relative to the run, not an absolute target), or
 * grow.iterations iterations are done. The training phase (train.epochs
 * with the optim schedule) follows; EPOCH and STEP policies (set, rigl) act during it.
 *
 * The growth set of an iteration is the whole training set (grow.batches = 0) or the first
 * grow.batches global batches of a permutation keyed by (seed, iteration); the fixed scoring
 * batch is the first grow.score_batch samples of another such permutation. One gradient pass
 * per iteration serves every policy that needs it, until a surgery changes the shapes.
 *
 * Every event — one (policy, target) step — goes to events.csv in the run directory
 * (iteration, policy, layer, units and connections added/removed, active weights after, loss
 * on the scoring batch before/after, validation error, seconds, detail, phase, time since the
 * run started); the log gets one line per growth iteration: what it grew, the errors after its
 * epochs, the run's ETA.
 * After every event all ranks compare a hash of the masks (run.check_masks). */
#ifndef NEST_GROW_H
#define NEST_GROW_H

#include "nest/ckpt.h"
#include "nest/phase.h"
#include "nest/policy.h"

typedef struct nest_grow nest_grow;

/* What the growth phase did (for summary.txt). */
typedef struct {
  int iterations;         /* growth iterations run */
  char stop[64];          /* why it stopped: "target error", "size cap", "patience",
                             "iterations", "" */
  double val_error, test_error; /* after the last iteration (NaN if not measured) */
  int64_t seed_weights;   /* active weights before growth */
  int64_t grown_weights;  /* active weights after the growth phase */
  double seconds;
  double best_val;        /* patience: the best validation error that counted as an
                             improvement (NaN: none yet) */
  int stale;              /* patience: iterations since it (in checkpoints, as the above) */
} nest_grow_result;

/* events = 1: create the driver even without grow.policy (the pruning phases log through it).
 * Parse grow.policy / grow.layers (comma lists, list.h) against t->net, check every named layer
 * can be grown by some listed policy, every policy has a layer to act on, and the size cap is
 * not below the current size. Errors are NEST_ERR_CONFIG naming the key and the layer, decided
 * from the config and the net alone, so identical on every rank. *out = NULL when grow.policy
 * is empty and events = 0. Called before the run directory is made: a bad growth config leaves
 * nothing behind. */
nest_status nest_grow_create(const nest_trainer *t, int events, nest_grow **out);
/* Create events.csv in run_dir (rank 0; none when run_dir is ""). Collective. */
nest_status nest_grow_open_events(nest_trainer *t, nest_grow *g, const char *run_dir);
void nest_grow_destroy(nest_grow **g);

/* 1 if any listed policy is a GROWTH policy (there is a growth phase). */
int nest_grow_has_phase(const nest_grow *g);

/* The growth phase (see above) on x->t, its position in x->cur, a checkpoint at the end of
 * every iteration (phase.h). Collective. */
nest_status nest_grow_phase(nest_phase_ctx *x, nest_grow *g);

/* Run the policies of kind `when` (EPOCH: after training-phase epoch `index`, 0-based; STEP:
 * after training-phase step `index` of `count`, 1-based). No-op when there are none.
 * Collective. */
nest_status nest_grow_hook(nest_trainer *t, nest_grow *g, nest_policy_when when, int64_t index,
                           int64_t count);

const nest_grow_result *nest_grow_result_of(const nest_grow *g);

/* The phase whose events are written next: events.csv's phase column ("grow", "train",
 * "prune", "area"; the growth phase sets "grow" itself). */
void nest_grow_set_phase(nest_grow *g, const char *phase);
/* An estimate of the growth iterations still to come after iteration `it` (0: before the
 * first), for the run's ETA only: grow.iterations at most, fewer when the validation error's
 * latest fall (it falls roughly geometrically) or the weights' mean growth reach
 * grow.target_error or grow.max_weights sooner. */
int nest_grow_iterations_left(const nest_trainer *t, const nest_grow *g, int it);

/* ---- the driver's parts, for the pruning phases (prune.h) -------------------------------- */

/* What one nest_grow_run_one event did. */
typedef struct {
  int64_t units, added, removed, active;
} nest_grow_event;

/* Start an iteration: draw its scoring batch (event losses), drop the shared pass. */
nest_status nest_grow_begin(nest_trainer *t, nest_grow *g, int64_t iteration);
/* One (policy, target) step with r->fraction = fraction: score/select/apply, the mask-hash
 * check, one buffered event row (no log line: the caller's). Collective. */
nest_status nest_grow_run_one(nest_trainer *t, nest_grow *g, const nest_policy_ops *ops,
                              int target, int64_t iteration, double fraction,
                              nest_grow_event *done);
/* A buffered event row that is not a policy step (the pruning guard: "guard", layer, what it
 * did). */
nest_status nest_grow_note(nest_trainer *t, nest_grow *g, int64_t iteration, const char *what,
                           const char *layer, const char *detail);
/* Write the buffered rows with this validation error (NaN = not measured). Collective. */
nest_status nest_grow_flush(nest_trainer *t, nest_grow *g, double val_error);

/* ---- checkpoints (restart.c) ---------------------------------------------------------- */

/* The growth result and the event rows not yet written, into / from /state. */
nest_status nest_grow_save(const nest_grow *g, nest_ckpt *w);
nest_status nest_grow_load(nest_grow *g, nest_ckpt *r);
/* Rank 0: flush events.csv and give its length (-1 without the file). */
nest_status nest_grow_events_tell(nest_grow *g, int64_t *bytes);
/* Resume: cut run_dir/events.csv back to `bytes` and append from there (bytes < 0: no file).
 * Collective. */
nest_status nest_grow_events_reopen(nest_trainer *t, nest_grow *g, const char *run_dir,
                                    int64_t bytes);

#endif
