/* prune.h — the pruning phases of the NeST pipeline (ALGORITHMS.md §7, §8; docs/pruning.md).
 *
 * Both phases are one guarded loop over targets; each target has its own step size gamma:
 *   for iteration = 1 .. prune.iterations, for every target still pruning:
 *     snapshot the network (weights, masks, momentum, buffers, shapes);
 *     one policy step on the target with fraction gamma (an event in events.csv);
 *     prune phase only: remove the neurons / feature maps left without active inputs or
 *       outputs, or quieter than prune.neuron_thresh (policy "neurons", on the hidden layers
 *       of prune.layers: all of them when it is empty);
 *     retrain prune.retrain_steps steps, a cosine from prune.lr to optim.min_lr;
 *     while validation error > target + prune.tolerance and retries are left (prune.retries):
 *       retrain prune.retrain_steps more steps;
 *     still above  =>  restore the snapshot bit for bit and halve the target's gamma; once
 *       gamma falls below the smallest step the target stops.
 *   The phase ends when every target has stopped (guard or floor) or the iterations run out.
 * prune phase: targets = the weight tensors of prune.layers, policy "magnitude", gamma from
 *   prune.gamma_start down to prune.gamma.
 * area phase (partial-area convolution): every conv layer of prune.layers first gets an
 *   all-ones area mask (surgery), then targets = those layers, policy "area", gamma from
 *   prune.area_gamma_start down to prune.area_gamma, scores over prune.calib samples.
 * After every iteration the validation and test error are measured for metrics.csv (a row per
 * iteration) and the log (a line per iteration; each step's rows are in events.csv).
 * The target error is prune.target_error, or (prune.guard) the validation error at the start
 * of the phase or the best the run has seen before it; the limit adds prune.tolerance (area:
 * prune.area_tolerance) and prune.guard_z standard errors of the target on the validation set:
 * the guard needs validation samples (the pipeline refuses a pruning phase without them).
 * Large steps first, halving on failure: a layer that tolerates a lot loses 20% per step, and
 * the 1% steps the paper takes are only spent near each layer's limit.
 * Every decision comes from values identical on every rank (select.h, by-construction sums,
 * BN statistics averaged with the by-construction sum), and masks are compared across ranks
 * after every step. The loop keeps its position in the cursor and its state in
 * nest_prune_state (both checkpointed, restart.c), so a checkpoint can be taken before any
 * retraining step. */
#ifndef NEST_PRUNE_H
#define NEST_PRUNE_H

#include "nest/grow.h"
#include "nest/phase.h"

/* What a pruning phase did (summary.txt, checkpoints). */
typedef struct {
  int iterations;             /* iterations in which a target was still pruning */
  int64_t steps_kept, steps_restored;
  int64_t weights_before, weights_after; /* active weights */
  double flops_before, flops_after;      /* per sample, masked */
  double conv_flops_before, conv_flops_after; /* the conv layers' share (area masks count) */
  double target, limit;       /* the guard's target error and target + tolerance */
  double val_error, test_error; /* at the end of the phase (NaN if not measured) */
  double seconds;
} nest_prune_result;

/* A pruning target. */
typedef struct {
  int32_t target;  /* tensor index (prune) or layer index (area) */
  int32_t layer;
  double gamma;    /* the next step's fraction */
  int32_t stopped; /* 0 pruning; 1 guard; 2 floor / nothing left */
} nest_prune_target;

/* The pruning phases' state besides the cursor (phase.h); all of it goes into checkpoints. */
typedef struct {
  nest_prune_target *pts; /* targets of the running phase */
  int npts;
  nest_net *snap;         /* the guard's snapshot while a step is being retrained */
  double racc[3];         /* retraining round: this rank's loss sum, -, rows */
  int64_t rkey, rpos;     /* retraining stream: permutation key, position in it */
  nest_prune_result res[2]; /* prune and area phase results */
  int ran[2];             /* 1 once that phase ran */
} nest_prune_state;

void nest_prune_state_free(nest_prune_state *s);

/* Check prune.layers (a comma list, list.h) against t->net for the prune (area = 0) or area
 * phase: names exist and have weights (prune) / there is a conv layer (area). NEST_ERR_CONFIG
 * naming the key; called when the run is set up, before anything is written. */
nest_status nest_prune_check(const nest_trainer *t, int area);
/* Distillation (prune.distill): t->teacher = a copy of t->net (weights, masks, buffers), the
 * network every later retraining and fine-tuning step distils from. */
nest_status nest_prune_teacher(nest_trainer *t);
/* Run the prune phase (area = 0) or the area phase (area = 1) on x->t's net, logging through g
 * (events.csv); s->res[area] receives the result, s->ran[area] = 1. Collective. */
nest_status nest_prune_phase(nest_phase_ctx *x, nest_grow *g, nest_prune_state *s, int area);
/* An estimate of the optimizer steps (retraining) the prune (area = 0) or area phase still
 * takes, fine-tuning aside, for the run's ETA only: every live target's guard trips left (its
 * gamma halves down to the smallest step) times the kept steps per trip and the retraining
 * steps per step this phase has shown so far (priors before it showed any). started = 0: the
 * phase has not begun (s holds no targets of it yet). */
int64_t nest_prune_steps_left(const nest_trainer *t, const nest_prune_state *s, int area,
                              int started);

#endif
