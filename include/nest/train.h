/* train.h — the training engine: data-parallel steps, epochs and evaluation over one network.
 *
 * Each step: every rank reads its slice of the global batch (shard.h, prefetch.h), runs
 * forward, the fused softmax-cross-entropy with scale 1/global_batch, backward into the grads
 * arena, then sums the grads arena over ranks with the by-construction sum (comm.h: in buckets
 * started during backward when train.bucket_mb > 0, the default; one fused sum otherwise, the
 * same bits), then the masked SGD update — so every rank applies the same update to the same
 * weights. Loss/accuracy are accumulated locally and reduced at log points. Local errors (I/O,
 * NaN) are agreed with nest_comm_agree at those sync points.
 *
 * The engine knows nothing of growth, pruning, checkpoints or reports: whoever drives it (the
 * pipeline, pipeline.h) plugs in through the hooks of an epoch (before / after each step, after
 * the epoch's steps) and reads or restores the state below (a checkpoint saves the net arenas,
 * the counters and the epoch sums; the RNG is counter-based, so (seed, epoch, step) replays). */
#ifndef NEST_TRAIN_H
#define NEST_TRAIN_H

#include <stdint.h>
#include <stdio.h>

#include "nest/comm.h"
#include "nest/config.h"
#include "nest/data.h"
#include "nest/net.h"
#include "nest/optim.h"
#include "nest/model.h"
#include "nest/reduce.h"
#include "nest/runlog.h"

struct nest_augment;
struct nest_prefetch;

typedef struct {
  double loss, acc; /* mean loss, accuracy in [0, 1] */
  int64_t n;
  double acc5;      /* top-5 accuracy (nest_loss_topk_hits; 1 with fewer than 5 classes) */
} nest_eval;

/* Seconds nest_trainer_step spent per part, added up over steps while nest_trainer.times is
 * set (tests/bench/bench_step.c): forward + loss, backward, the wait for the gradient sum
 * after backward (the exposed allreduce), the optimizer; sum = how long the gradient sum was
 * in progress (from its start to its end: with overlap it starts during backward). */
typedef struct {
  double fwd, bwd, wait, opt, sum;
  int64_t steps;
} nest_step_times;

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
  double t_start;      /* wall clock at the start of the run (elapsed times) */

  struct nest_augment *aug; /* distorts training steps' batches (augment.h); NULL unless
                               augment.affine */
  struct nest_prefetch *pf; /* the batch reader: gather, or image shards from disk with crop,
                               flip and a background prefetch thread (prefetch.h) */

  /* The epoch's sums (a checkpoint between two steps saves them). */
  double ep_acc[3];  /* current epoch: loss sum, correct, rows up to the last log point (summed
                        over ranks) */
  double win[3];     /* this rank's sums since the last log point */
  double top5[2];    /* top-5 accuracy of the latest nest_trainer_evaluate of the validation /
                        test set, i.e. of the network now (NaN: none since start or resume;
                        not in checkpoints) */

  double best_val_error; /* the lowest validation error any evaluation of this run measured
                            (NaN: none yet; in checkpoints): the pruning guard's "best" target */

  /* The pruning phases' training (the pipeline sets these around them): distillation from
   * `teacher` (owned; kept once captured, in checkpoints) while `distill` is set, with weight
   * cfg.prune_distill and temperature cfg.prune_distill_temp; and the dropout override of
   * nest_ctx (dropout_set, dropout_rate) in training steps. */
  nest_net *teacher;
  int distill;
  int dropout_set;
  float dropout_rate;

  /* Output: one metrics.csv row per epoch (rank 0; NULL = none), the console log. */
  FILE *metrics;     /* owned (closed by destroy) */
  char metrics_path[NEST_PATH_LEN + 32];
  int quiet; /* 1: no progress lines (tests) */
  nest_runlog log; /* rank 0's console log (runlog.h): use it through nest_trainer_log */
  /* The optimizer steps the whole run has left, estimated by its driver (the pipeline: every
   * phase still to come, growth and pruning iterations estimated); NULL = those of the
   * current epoch loop. Only for the ETA of progress lines. */
  int64_t (*steps_left)(void *arg);
  void *steps_left_arg;
  nest_step_times *times; /* NULL, or where nest_trainer_step adds its per-part seconds */
  /* DR+SCANN (dr.h): the reduction the data went through before the engine saw them (its
   * driver owns it); NULL = none. Model files record it (nest_trainer_model_input). */
  const nest_reduce *reduce;
} nest_trainer;

typedef struct nest_epoch_plan nest_epoch_plan;

/* Where a driver plugs into an epoch (each may be NULL). s = the step's index in the epoch
 * (0-based). An error stops the epoch and is returned by nest_trainer_epoch. */
typedef struct {
  void *arg;
  nest_status (*before_step)(void *arg, const nest_epoch_plan *plan, int64_t s);
  nest_status (*after_step)(void *arg, const nest_epoch_plan *plan, int64_t s);
  /* after the epoch's steps and the buffer average, before its evaluation */
  nest_status (*after_epoch)(void *arg, const nest_epoch_plan *plan);
} nest_train_hooks;

/* One epoch (nest_trainer_epoch). */
struct nest_epoch_plan {
  const char *phase;       /* metrics.csv column and progress lines ("epoch 3/20" for "train") */
  const char *label;       /* what progress lines call the epoch ("grow 2, epoch"); NULL = by
                              the phase */
  int64_t iteration;       /* metrics.csv's iteration column (the growth iteration, from 1);
                              0 = none */
  int keep;                /* the epoch's summary line: 1 stays in the log (the last epoch of a
                              phase), 0 when due (runlog.h), -1 a progress line only */
  const nest_optim *sched; /* the learning-rate schedule this epoch follows */
  double t0;               /* schedule time (epochs) at this epoch's first step */
  int64_t index;     /* this epoch's number within the phase, 0-based */
  int64_t count;     /* epochs in the phase (progress and ETA) */
  int evaluate;      /* 1: evaluate the validation and test sets after the epoch */
  int resume;        /* 1: continue this epoch at step resume_step with the sums t->ep_acc and
                        t->win hold (restored from a checkpoint); 0: a new epoch */
  int64_t resume_step;
  const nest_train_hooks *hooks; /* NULL = none */
};

/* Load data per cfg (identically on every rank), split, normalise, build and init the net
 * (from model.init_from when set). No run directory, no file written. */
nest_status nest_trainer_create(const nest_config *cfg, nest_comm *comm, nest_trainer **out);
/* Same with datasets supplied by the caller (ownership passes to the trainer, also on
 * failure; test may be NULL). net_file: the model file the net comes from instead of
 * model.init_from and model.arch (a resumed run's checkpoint, which holds its network), NULL =
 * as the config says. */
nest_status nest_trainer_create_with_data(const nest_config *cfg, nest_comm *comm,
                                          nest_dataset *train, nest_dataset *test,
                                          nest_trainer **out);
nest_status nest_trainer_create_from(const nest_config *cfg, const char *net_file,
                                     nest_comm *comm, nest_dataset *train, nest_dataset *test,
                                     nest_trainer **out);
/* The training and test sets of cfg (data.dir + data.train ...), read identically on every
 * rank and agreed. *test = NULL without data.test. */
nest_status nest_trainer_load_data(const nest_config *cfg, nest_comm *comm, nest_dataset **train,
                                   nest_dataset **test);
void nest_trainer_destroy(nest_trainer **t);

/* One optimizer step: global batch `step_in_epoch` of the epoch's permutation `perm`
 * (length n_train). Adds local loss sum / correct count / rows to the accumulators. With
 * t->distill and a teacher, the loss is the distillation loss (loss.h): the teacher's logits
 * come from its forward pass in inference mode over the same (distorted) local rows, so each
 * rank computes its own rows' soft targets and the gradient sum is unchanged in form. */
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
/* Which sets nest_trainer_evaluate_sets measures. */
enum { NEST_EVAL_VAL = 1, NEST_EVAL_TEST = 2, NEST_EVAL_BOTH = 3 };
/* The validation set (if `which` has NEST_EVAL_VAL and it has samples) into *val and the test
 * set (NEST_EVAL_TEST, if there is one) into *test; a set not measured gives NaN fields. val or
 * test may be NULL when `which` leaves it out. Collective. */
nest_status nest_trainer_evaluate_sets(nest_trainer *t, int which, nest_eval *val,
                                       nest_eval *test);
/* The context of a pass over n local rows (train: training mode; global_n rows in the global
 * batch): seed, step, sample ids (t->ids), sync batch-norm sums. */
nest_ctx nest_trainer_ctx(nest_trainer *t, int n, int train, int64_t global_n);
/* One training epoch: the hooks before and after every step, steps with progress lines, the BN
 * buffer average, the after-epoch hook, evaluation if planned, one metrics.csv row. val/test
 * receive the evaluation (NaN when not evaluated). Collective. */
nest_status nest_trainer_epoch(nest_trainer *t, const nest_epoch_plan *plan, nest_eval *val,
                               nest_eval *test);
/* The input record of the run's model files (model.h): nest_config_model_input of the training
 * set, with the raw feature count and the reduction when t->reduce is set. Borrows from t. */
void nest_trainer_model_input(const nest_trainer *t, nest_model_input *out);
/* Rank 0's console log, NULL on other ranks and when quiet (runlog.h functions print nothing
 * for NULL). */
nest_runlog *nest_trainer_log(nest_trainer *t);
/* "elapsed 1m46s, ETA 3m10s" of the run: t->steps_left when set, else `fallback` steps left
 * (< 0: unknown). */
void nest_trainer_clock(nest_trainer *t, int64_t fallback, char *out, size_t cap);
/* 1 if t's net has more classes than NEST_TOP5_MIN_CLASSES (loss.h): only then is its top-5
 * error written to files. */
int nest_trainer_has_top5(const nest_trainer *t);
/* The statistical margin of a validation error e (growth's patience rule, the pruning guard):
 * z binomial standard errors on t's validation set, z sqrt(e (1 - e) / n_val); 0 when z <= 0 or
 * there are no validation samples. */
double nest_trainer_val_margin(const nest_trainer *t, double e, double z);
/* NEST_OK when t holds validation samples; else NEST_ERR_CONFIG "<why, printf-style>, but
 * data.val_split = V leaves no validation sample of the N in FILE: <fix>" (set-up checks of the
 * phases that judge a validation error). */
nest_status nest_trainer_need_val(const nest_trainer *t, const char *fix, const char *why, ...)
    __attribute__((format(printf, 3, 4)));

/* Without sync BN: average the BN running statistics over ranks with the by-construction sum
 * (comm.h), so that they are identical on every rank (each epoch's end does this; the pruning
 * phases before every decision). Collective. */
nest_status nest_trainer_sync_buffers(nest_trainer *t);

#endif
