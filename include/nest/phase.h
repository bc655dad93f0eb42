/* phase.h — what the phases of a run (the growth phase grow.h, the pruning phases prune.h, the
 * training and fine-tuning epochs of the pipeline) share with the pipeline that drives them
 * (pipeline.h): where the run is, the checkpoint point the pipeline plugs in, and the epoch
 * loop that resumes at the cursor.
 *
 * The loops keep their position in the cursor rather than in locals, so that a checkpoint can
 * be written between any two optimizer steps (restart.h saves the cursor) and a resumed run
 * re-enters every loop where it left: each loop starts at the cursor while `resuming` is set
 * and clears it once it reached the checkpoint's position. */
#ifndef NEST_PHASE_H
#define NEST_PHASE_H

#include <stdint.h>

#include "nest/train.h"

/* Where a run is (restart.h). */
typedef struct {
  int32_t phase;  /* index in the pipeline's phases of the phase being run; -1 = the seed stage
                     (before the first phase); nphases = all phases done (the final files next) */
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

/* A run as its phases see it. The pipeline owns it. */
typedef struct {
  nest_trainer *t;  /* the engine (train.h) */
  nest_cursor cur;
  int resuming;     /* 1 from loading a checkpoint until the loops reached its position */
  double phase_t0;  /* elapsed run time (s) when the running phase began (survives a restart) */
  /* A checkpoint point (restart.h, plugged in by the pipeline; NULL = none): force = 1
   * writes one whatever the clocks say. May return NEST_STOPPED (a signal). Collective. */
  nest_status (*point)(void *arg, int force);
  void *point_arg;
} nest_phase_ctx;

/* A checkpoint point (see above). Collective. */
nest_status nest_phase_point(nest_phase_ctx *x, int force);

/* One loop of epochs of a phase. */
typedef struct {
  const char *phase;       /* "grow", "train", "finetune": metrics.csv and progress lines */
  const nest_optim *sched; /* epoch e follows it from schedule time e */
  int64_t epochs;          /* epochs in this loop */
  int64_t index0, count;   /* epoch e is number index0 + e of `count` in the phase (progress) */
  int eval_every;          /* evaluate after epoch e when (e + 1) % eval_every == 0, and after
                              the last one */
  const nest_train_hooks *hooks; /* run after every step and epoch (the training phase's
                                    growth policies); NULL = none */
  const char *label;       /* progress lines' name of an epoch (nest_epoch_plan); NULL = by phase */
  int64_t iteration;       /* metrics.csv's iteration column; 0 = none */
  int keep_last;           /* the last epoch's summary line: 1 stays in the log, 0 when due,
                              -1 a progress line only (the caller logs the result) */
} nest_phase_epochs;

/* Epochs cur.epoch (resuming) or 0 .. epochs - 1 of the loop: a checkpoint point before every
 * step, the cursor's epoch and step kept current. val/test: the last epoch's evaluation (NaN
 * when not evaluated; untouched without epochs to run). Collective. */
nest_status nest_phase_run_epochs(nest_phase_ctx *x, const nest_phase_epochs *loop,
                                  nest_eval *val, nest_eval *test);

#endif
