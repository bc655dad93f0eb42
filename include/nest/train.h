/* train.h — the data-parallel training loop: one place that owns all run state.
 *
 * Each step: every rank gathers its slice of the global batch (shard.h), runs forward, the
 * fused softmax-cross-entropy with scale 1/global_batch, backward into the grads arena, then
 * ONE allreduce of the whole grads arena, then the masked SGD update — so every rank applies
 * the same update to the same weights. Loss/accuracy are accumulated locally and reduced at
 * log points. Local errors (I/O, NaN) are agreed with nest_comm_agree at those sync points.
 *
 * All state a resume needs lives here: config, net arenas (params, masks, momentum, buffers),
 * epoch and step counters; the RNG is counter-based, so (seed, epoch, step) replays exactly. */
#ifndef NEST_TRAIN_H
#define NEST_TRAIN_H

#include <stdint.h>
#include <stdio.h>

#include "nest/comm.h"
#include "nest/config.h"
#include "nest/data.h"
#include "nest/net.h"
#include "nest/optim.h"

struct nest_grow;
struct nest_augment;
struct nest_prefetch;

typedef struct {
  double loss, acc; /* mean loss, accuracy in [0, 1] */
  int64_t n;
  double acc5;      /* top-5 accuracy (nest_loss_topk_hits; 1 with fewer than 5 classes) */
} nest_eval;

/* What a pruning phase did (prune.h; summary.txt, checkpoints). */
typedef struct {
  int iterations;             /* iterations run */
  int64_t steps_kept, steps_restored;
  int64_t weights_before, weights_after; /* active weights */
  double flops_before, flops_after;      /* per sample, masked */
  double conv_flops_before, conv_flops_after; /* the conv layers' share (area masks count) */
  double target, limit;       /* the guard's target error and target + tolerance */
  double val_error, test_error; /* at the end of the phase (NaN if not measured) */
  double seconds;
} nest_prune_result;

/* Where a run is (restart.h). The loops of nest_trainer_run, the growth phase and the pruning
 * phases keep their position here rather than in locals, so that a checkpoint can be written
 * between any two optimizer steps and a resumed run re-enters every loop where it left. */
typedef struct {
  int32_t phase;  /* index in phases[] of the phase being run; -1 = the seed stage (before the
                     first phase); nphases = all phases done (the final files next) */
  int32_t part;   /* grow: 0 = iteration `iter` starts (policies next), 1 = its epochs,
                          2 = the growth loop is over;
                     prune / area: 0 = target `target` of iteration `iter` next, 1 = retraining
                          that target's step, 2 = the loop is over: fine-tuning epochs;
                     train: 0 */
  int32_t iter;   /* growth / pruning iteration (1-based) */
  int32_t target; /* pruning: index of the target within the iteration */
  int32_t tries;  /* pruning: retraining round of the current step (0 = the first) */
  int64_t epoch;  /* epoch index within the current epoch loop (0-based) */
  int64_t step;   /* steps taken in the current epoch or retraining round */
  int32_t live;   /* pruning: 1 once a target of this iteration was still pruning */
} nest_cursor;

/* A pruning target's state (prune.c; saved in checkpoints). */
typedef struct {
  int32_t target;  /* tensor index (prune) or layer index (area) */
  int32_t layer;
  double gamma;    /* the next step's fraction */
  int32_t stopped; /* 0 pruning; 1 guard; 2 floor / nothing left */
} nest_prune_target;

struct nest_restart;

/* Seconds nest_trainer_step spent per part, added up over steps while nest_trainer.times is
 * set (tests/bench/bench_step.c): forward + loss, backward, the wait for the gradient sum
 * after backward (the exposed allreduce), the optimizer; sum = how long the gradient sum was
 * in progress (from its start to its end: with overlap it starts during backward). */
typedef struct {
  double fwd, bwd, wait, opt, sum;
  int64_t steps;
} nest_step_times;

/* The phases of a run (synthesis.phases), in the order they run. */
typedef enum { NEST_PHASE_GROW, NEST_PHASE_TRAIN, NEST_PHASE_PRUNE, NEST_PHASE_AREA,
               NEST_PHASE_COUNT } nest_phase;
#define NEST_MAX_PHASES 8

typedef struct nest_trainer {
  nest_config cfg;
  nest_comm *comm; /* not owned */
  int rank, nranks, nthreads;

  nest_dataset *train, *test; /* owned; test may be NULL */
  int64_t *train_idx, n_train; /* training subset of `train` */
  int64_t *val_idx, n_val;     /* validation subset of `train` */
  int64_t *test_idx, n_test;   /* 0..n-1 of `test` */

  nest_net *net;
  nest_optim optim;
  int max_local; /* rows a rank handles per step at most: ceil(batch / nranks) */

  /* Per-step buffers, allocated once. x and y may be swapped with the batch reader's second
   * pair (prefetch.h): read them after nest_trainer_read, never keep the pointers. */
  float *x, *dlogits;
  int32_t *y;
  int64_t *ids, *perm;

  /* Progress. */
  int64_t epoch, step; /* completed epochs (all phases); global optimizer steps taken */
  int64_t steps_per_epoch;
  int64_t data_key;    /* key of the permutation the current steps draw from (the epoch, or a
                          pruning-phase key): keys the per-sample augmentation */
  double t_start;      /* wall clock at the start of nest_trainer_run */

  struct nest_grow *grow; /* growth policies and events (grow.h); NULL without grow.policy
                             and pruning phases */
  nest_phase phases[NEST_MAX_PHASES];
  int nphases;
  int phase_has[NEST_PHASE_COUNT];
  struct nest_augment *aug; /* distorts training steps' batches (augment.h); NULL unless
                               augment.affine */
  struct nest_prefetch *pf; /* the batch reader: gather, or image shards from disk with crop,
                               flip and a background prefetch thread (prefetch.h) */

  /* Position and loop state (everything a checkpoint saves besides the net, restart.h). */
  nest_cursor cur;
  double ep_acc[3];  /* current epoch: loss sum, correct, rows up to the last log point (summed
                        over ranks) */
  double win[3];     /* this rank's sums since the last log point */
  double racc[3];    /* pruning retraining round: this rank's loss sum, -, rows */
  int64_t rkey, rpos;/* pruning retraining stream: permutation key, position in it */
  nest_prune_target *pts; /* pruning targets of the running prune / area phase */
  int npts;
  nest_net *snap;    /* the pruning guard's snapshot while a step is being retrained */
  nest_prune_result pres[2]; /* prune and area phase results */
  int pran[2];       /* 1 once that phase ran */
  nest_eval last_val, last_test; /* the latest evaluation (summary.txt) */
  double top5[2];    /* top-5 accuracy of the latest nest_trainer_evaluate of the validation /
                        test set, i.e. of the network now (NaN: none since start or resume;
                        not in checkpoints): summary.txt, the stage model files */
  double phase_t0;   /* elapsed run time (s) when the running phase began */
  int resuming;      /* 1 from loading a checkpoint until the loops reached its position */
  struct nest_restart *rst; /* checkpoint writer (restart.h); NULL without a run directory */

  /* Output (rank 0 writes; run_dir known on every rank). */
  char run_dir[NEST_PATH_LEN];
  FILE *metrics;
  int quiet; /* 1: no progress lines (tests) */
  nest_step_times *times; /* NULL, or where nest_trainer_step adds its per-part seconds */
} nest_trainer;

/* One epoch of a phase (nest_trainer_epoch). */
typedef struct {
  const char *phase;       /* "grow" or "train": metrics.csv column and progress lines */
  const nest_optim *sched; /* the learning-rate schedule this epoch follows */
  double t0;               /* schedule time (epochs) at this epoch's first step */
  int64_t index;     /* this epoch's number within the phase, 0-based */
  int64_t count;     /* epochs in the phase (progress and ETA) */
  int evaluate;      /* 1: evaluate the validation and test sets after the epoch */
} nest_epoch_plan;

/* Load data per cfg (identically on every rank), split, normalise, build and init the net,
 * create the run directory (rank 0) and agree on it. */
nest_status nest_trainer_create(const nest_config *cfg, nest_comm *comm, nest_trainer **out);
/* Same with datasets supplied by the caller (ownership passes to the trainer; test may be
 * NULL). Used by tests and benchmarks. */
nest_status nest_trainer_create_with_data(const nest_config *cfg, nest_comm *comm,
                                          nest_dataset *train, nest_dataset *test,
                                          nest_trainer **out);
void nest_trainer_destroy(nest_trainer **t);

/* One optimizer step: global batch `step_in_epoch` of the epoch's permutation `perm`
 * (length n_train). Adds local loss sum / correct count / rows to the accumulators. */
nest_status nest_trainer_step(nest_trainer *t, const int64_t *perm, int64_t step_in_epoch,
                              double lr, double *loss_sum, int64_t *correct, int64_t *rows);
/* This rank's rows ids[0..n) of ds (train or test) into t->x [n, C, H, W] and t->y through the
 * batch reader (prefetch.h): a gather for in-memory sets; image shards are read from disk,
 * cropped and flipped when `train` (a training step, keyed by t->data_key) or centre-cropped.
 * Not collective: agree with nest_trainer_read_agree at a point every rank reaches. */
nest_status nest_trainer_read(nest_trainer *t, const nest_dataset *ds, const int64_t *ids, int n,
                              int train);
/* Agree on this rank's read outcome `st` (collective for image shards, whose reads can fail on
 * one rank; in-memory reads cannot fail, and cost no communication). */
nest_status nest_trainer_read_agree(nest_trainer *t, const nest_dataset *ds, nest_status st);
/* Announce this rank's next read (same arguments) so that it happens in the background. */
void nest_trainer_read_ahead(nest_trainer *t, const nest_dataset *ds, const int64_t *ids, int n,
                             int train);
/* One chunk of a pass over this rank's rows idx[b, hi) (evaluation, activation passes): rows
 * idx[b, b + *rows) with *rows = min(hi - b, t->max_local) are read into t->x / t->y (in the
 * evaluation mode: centre crop, no flip), and the next chunk is announced so that it is read
 * during this one's compute. Not collective, like nest_trainer_read. */
nest_status nest_trainer_read_chunk(nest_trainer *t, const nest_dataset *ds, const int64_t *idx,
                                    int64_t b, int64_t hi, int *rows);
/* Loss, accuracy and top-5 accuracy of the current net over ds[idx[0..n)], sharded over ranks,
 * reduced. Records the top-5 accuracy in t->top5 when ds/idx is the validation or test set. */
nest_status nest_trainer_evaluate(nest_trainer *t, const nest_dataset *ds, const int64_t *idx,
                                  int64_t n, nest_eval *out);
/* The context of a pass over n local rows (train: training mode; global_n rows in the global
 * batch): seed, step, sample ids (t->ids), sync batch-norm sums. */
nest_ctx nest_trainer_ctx(nest_trainer *t, int n, int train, int64_t global_n);
/* One training epoch: steps with progress lines, the STEP/EPOCH growth hooks in the "train"
 * phase, BN buffer sync, evaluation if planned, one metrics.csv row. val/test receive the
 * evaluation (NaN when not evaluated). Collective. */
nest_status nest_trainer_epoch(nest_trainer *t, const nest_epoch_plan *plan, nest_eval *val,
                               nest_eval *test);
/* Without sync BN: average the BN running statistics over ranks (each epoch's end does this;
 * the pruning phases before every decision). Collective. */
nest_status nest_trainer_sync_buffers(nest_trainer *t);
/* The whole run: the phases of synthesis.phases in order —
 *   grow  the growth phase (grow.h);
 *   train cfg.train.epochs epochs (optim schedule; set/rigl act here);
 *   prune the pruning phase, area the partial-area phase (prune.h), each followed by
 *         prune.epochs epochs of fine-tuning —
 * then summary.txt, the final model.h5 and report.csv (report.h). A run that changes the
 * architecture also keeps model_seed.h5 (the starting network) and, after a growth phase,
 * model_grown.h5: the stages of the report. */
nest_status nest_trainer_run(nest_trainer *t);

#endif
