/* phase.c — the checkpoint point and the resumable epoch loop every phase shares (phase.h). */
#include "nest/phase.h"

nest_status nest_phase_point(nest_phase_ctx *x, int force) {
  return x->point ? x->point(x->point_arg, force) : NEST_OK;
}

/* The engine's hooks of one epoch: the cursor and a checkpoint point before every step, then
 * the loop's own hooks. */
typedef struct {
  nest_phase_ctx *x;
  const nest_train_hooks *extra;
} epoch_hooks;

static nest_status before_step(void *arg, const nest_epoch_plan *plan, int64_t s) {
  epoch_hooks *h = arg;
  h->x->cur.step = s;
  NEST_CALL(nest_phase_point(h->x, 0));
  if (h->extra && h->extra->before_step) NEST_CALL(h->extra->before_step(h->extra->arg, plan, s));
  return NEST_OK;
}

static nest_status after_step(void *arg, const nest_epoch_plan *plan, int64_t s) {
  epoch_hooks *h = arg;
  if (h->extra && h->extra->after_step) NEST_CALL(h->extra->after_step(h->extra->arg, plan, s));
  return NEST_OK;
}

static nest_status after_epoch(void *arg, const nest_epoch_plan *plan) {
  epoch_hooks *h = arg;
  if (h->extra && h->extra->after_epoch) NEST_CALL(h->extra->after_epoch(h->extra->arg, plan));
  return NEST_OK;
}

nest_status nest_phase_run_epochs(nest_phase_ctx *x, const nest_phase_epochs *loop,
                                  nest_eval *val, nest_eval *test) {
  epoch_hooks eh = {x, loop->hooks};
  const nest_train_hooks hooks = {&eh, before_step, after_step, after_epoch};
  for (int64_t e = x->resuming ? x->cur.epoch : 0; e < loop->epochs; ++e) {
    /* resumed: continue epoch cur.epoch before step cur.step with the sums of the checkpoint */
    const int resume = x->resuming;
    if (!resume) x->cur.epoch = e, x->cur.step = 0;
    x->resuming = 0;
    const int last = e + 1 == loop->epochs;
    const nest_epoch_plan plan = {.phase = loop->phase,
                                  .sched = loop->sched,
                                  .t0 = (double)e,
                                  .index = loop->index0 + e,
                                  .count = loop->count,
                                  .evaluate = last || (loop->eval_every > 0 && (e + 1) % loop->eval_every == 0),
                                  .resume = resume,
                                  .resume_step = x->cur.step,
                                  .hooks = &hooks,
                                  .label = loop->label,
                                  .iteration = loop->iteration,
                                  .keep = last ? loop->keep_last : 0};
    NEST_CALL(nest_trainer_epoch(x->t, &plan, val, test));
    x->cur.step = x->t->steps_per_epoch; /* its steps are done (no checkpoint until the next) */
  }
  return NEST_OK;
}
