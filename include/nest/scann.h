/* scann.h — the scann phase: SCANN's schemes A, B and C (ALGORITHMS.md §10, docs/scann.md).
 *
 * A scheme is a sequence of operations, each followed by scann.epochs epochs of training (every
 * one a cosine from scann.lr, or optim.lr, down to optim.min_lr, like a growth iteration):
 *   A  scann.iterations x {connection growth, neuron growth}, then
 *      scann.prune_iterations x {connection pruning}   (grows from a small seed, prunes at the end)
 *   B  scann.iterations x {connection growth, connection pruning}   (a large seed with skips)
 *   C  scann.iterations x {connection pruning, connection growth}   (adjacent layers only:
 *      dense-sparse-dense)
 * The operations are policies behind the driver of grow.h (events.csv, mask-hash checks):
 *   connection growth   policy conn in percentile mode (connection_growth.c): per maskable
 *                       tensor — chain and skip tensors alike — the dormant positions whose
 *                       |sum of dL/dW| over the growth set is above the scann.grow_percentile-th
 *                       percentile of the dormant positions' scores (grow.batches global batches,
 *                       one gradient pass), at most scann.grow_cap x active; new weights 0;
 *   neuron growth       policy split (cell_division.c) on every hidden dense / conv layer with a
 *                       ReLU: the scann.neurons most active units split in two;
 *   connection pruning  policy magnitude with the step scann.prune_quantile: per tensor of
 *                       prune.layers the smallest |w| of that share of its active weights (exact,
 *                       ties to the lower index), then policy neurons removes the units of the
 *                       hidden layers of prune.layers left without active inputs or outputs.
 * The best network: the starting one, then after every operation's training the network
 * whose validation error is lowest — a smaller network within scann.keep_tolerance of the
 * lowest validation error seen so far replaces it (ties: fewer weights) — is kept as a copy,
 * and the phase ends with it (every rank holds the same copy: decisions from by-construction
 * evaluations). Needs validation samples (data.val_split > 0).
 * Restart: the loop keeps its position in the cursor (phase.h: iter = the operation, 1-based;
 * part 0 = the operation next, 1 = its training epochs, 2 = the loop is over) and its state in
 * nest_scann_state (checkpointed with the best network, restart.c). */
#ifndef NEST_SCANN_H
#define NEST_SCANN_H

#include "nest/grow.h"
#include "nest/phase.h"

/* What the scann phase did (summary.txt, checkpoints). */
typedef struct {
  int operations;                        /* operations run */
  int64_t weights_before, weights_after; /* active weights at the start / of the network kept */
  double val_error, test_error;          /* of the network kept (NaN if not measured) */
  int best_op;                           /* the operation after which it was taken; 0 = start */
  double seconds;
} nest_scann_result;

/* The scann phase's state besides the cursor; all of it goes into checkpoints. */
typedef struct {
  nest_net *best;      /* the best network so far (a copy), NULL before the phase */
  double best_val, best_test, min_val; /* its errors; the lowest validation error seen */
  int64_t best_weights;
  nest_scann_result res;
  int ran;             /* 1 once the phase ran */
} nest_scann_state;

void nest_scann_state_free(nest_scann_state *s);

/* The number of operations of the configured scheme (0 for none). */
int nest_scann_operations(const nest_config *c);
/* Check the scann keys against t (scheme set, validation samples, prune.layers, a layer each
 * operation can act on). NEST_ERR_CONFIG naming the key; before anything is written. */
nest_status nest_scann_check(const nest_trainer *t);
/* Run the scheme on x->t's net, logging through g; ends with the best network in x->t->net.
 * Collective. */
nest_status nest_scann_phase(nest_phase_ctx *x, nest_grow *g, nest_scann_state *s);

#endif
