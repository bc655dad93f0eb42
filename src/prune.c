/* prune.c — the pruning phases: the guarded loop over targets, snapshots, retraining (see
 * prune.h). The policies themselves live in src/policies/ (magnitude_pruning.c,
 * neuron_pruning.c, partial_area.c); events go through the policy driver (grow.h). */
#define _GNU_SOURCE
#include "nest/prune.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/list.h"
#include "nest/rundir.h"
#include "nest/shard.h"
#include "nest/surgery.h"

/* Permutation keys of the retraining steps: far above any epoch and the growth sets. */
#define PRUNE_PERM_KEY ((int64_t)1 << 42)

/* The retraining stream: consecutive global batches of permutations keyed by
 * (seed, PRUNE_PERM_KEY + s->rkey), s->rkey counting the permutations used up in this run and
 * s->rpos the position in the current one (both in checkpoints). */

void nest_prune_state_free(nest_prune_state *s) {
  free(s->pts);
  nest_net_destroy(&s->snap);
  s->pts = NULL;
  s->npts = 0;
}

/* ---- snapshots ------------------------------------------------------------------------- */

/* Put the snapshot back: the network of before the step, bit for bit. Its generation moves
 * past the current one, so nothing computed on the discarded net is taken as current. */
static void restore(nest_trainer *t, nest_net **snap) {
  (*snap)->generation = t->net->generation + 1;
  nest_net_destroy(&t->net);
  t->net = *snap;
  *snap = NULL;
}

/* ---- retraining ------------------------------------------------------------------------- */

/* One retraining round of `steps` steps. The loss sums live in s->racc and the position in
 * the cursor's step, so a checkpoint can be taken before any step and resumed there. */
static nest_status retrain(nest_phase_ctx *x, nest_prune_state *ps, int steps, double *loss) {
  nest_trainer *t = x->t;
  const nest_config *c = &t->cfg;
  const int64_t spe = t->steps_per_epoch;
  double *acc = ps->racc;
  int s0 = 0;
  if (x->resuming) { /* resumed before step cur.step of this round */
    s0 = (int)x->cur.step;
    x->resuming = 0;
  } else {
    acc[0] = acc[1] = acc[2] = 0;
  }
  int64_t have = -1; /* the key t->perm holds */
  for (int s = s0; s < steps; ++s) {
    x->cur.step = s;
    NEST_CALL(nest_phase_point(x, 0));
    if (ps->rpos >= spe) ps->rkey++, ps->rpos = 0;
    if (have != PRUNE_PERM_KEY + ps->rkey) {
      have = PRUNE_PERM_KEY + ps->rkey;
      nest_shard_permute(c->seed, have, t->train_idx, t->n_train, t->perm);
    }
    t->data_key = PRUNE_PERM_KEY + ps->rkey;
    int64_t hits = 0, rows = 0;
    double l = 0;
    /* A cosine from prune.lr down to optim.min_lr over the retraining (a warm restart per
     * step, as in the growth phase): the guard then judges a settled network, not one caught
     * mid-stride by a constant rate. */
    const double lr = c->min_lr + 0.5 * (c->prune_lr - c->min_lr) *
                                      (1.0 + cos(M_PI * (double)s / (double)steps));
    NEST_CALL(nest_trainer_step(t, t->perm, ps->rpos, lr, &l, &hits, &rows));
    acc[0] += l;
    acc[2] += (double)rows;
    ps->rpos++;
  }
  x->cur.step = steps;
  double sum[3] = {acc[0], acc[1], acc[2]};
  NEST_CALL(nest_comm_sum_same_f64(t->comm, sum, 3));
  *loss = sum[2] > 0 ? sum[0] / sum[2] : NAN;
  if (steps > 0 && !isfinite(*loss))
    return NEST_ERR(NEST_ERR_NUMERIC,
                    "retraining loss is %g during pruning: lower prune.lr (now %g)", *loss,
                    c->prune_lr);
  /* Without sync BN the ranks' running statistics drifted apart: average them, since the
   * next scores (BN-folded weights) must be identical everywhere. */
  NEST_CALL(nest_trainer_sync_buffers(t));
  return NEST_OK;
}

static nest_status validate(nest_trainer *t, double *val_error) {
  nest_eval v;
  NEST_CALL(nest_trainer_evaluate_sets(t, NEST_EVAL_VAL, &v, NULL));
  *val_error = isnan(v.acc) ? NAN : 1.0 - v.acc;
  return NEST_OK;
}

/* ---- targets ---------------------------------------------------------------------------- */

/* Is layer l named in prune.layers ("" = all)? The list was checked by nest_prune_check. */
static int chosen(const nest_config *c, const char *name) {
  const char *l = c->prune_layers;
  return l[strspn(l, " \t")] == '\0' || nest_list_has(l, name);
}

nest_status nest_prune_check(const nest_trainer *t, int area) {
  const nest_config *c = &t->cfg;
  char names[NEST_LIST_MAX][NEST_LIST_ITEM];
  int n = 0;
  NEST_CALL(nest_list_split("prune.layers", c->prune_layers, names, NEST_LIST_MAX, &n));
  for (int i = 0; i < n; ++i) {
    const nest_layer *l = nest_net_find_layer(t->net, names[i]);
    if (!l)
      return NEST_ERR(NEST_ERR_CONFIG, "prune.layers: the network has no layer '%s'", names[i]);
    const char *why = "";
    if (!area && !nest_policy_accepts_masked(t->net, l->index, &why))
      return NEST_ERR(NEST_ERR_CONFIG, "prune.layers: %s (a %s layer) has no weights to prune",
                      names[i], l->ops->kind);
  }
  if (area) {
    int any = 0;
    for (int l = 0; l < t->net->nlayers; ++l)
      any |= t->net->layers[l]->kind == NEST_LAYER_CONV2D && chosen(c, t->net->layers[l]->name);
    if (!any)
      return NEST_ERR(NEST_ERR_CONFIG,
                      "synthesis.phases lists area but %s has no conv2d layer to mask",
                      c->prune_layers[0] ? "prune.layers" : "the network");
  }
  return NEST_OK;
}

/* The phase's targets into ts (NULL: only count them); returns how many. */
static int list_targets(const nest_trainer *t, int area, nest_prune_target *ts) {
  const nest_net *net = t->net;
  const nest_config *c = &t->cfg;
  int n = 0;
  if (area) {
    for (int l = 0; l < net->nlayers; ++l)
      if (net->layers[l]->kind == NEST_LAYER_CONV2D && chosen(c, net->layers[l]->name)) {
        if (ts) ts[n] = (nest_prune_target){l, l, c->prune_area_gamma_start, 0};
        ++n;
      }
  } else {
    for (int i = 0; i < net->ntensors; ++i) {
      const nest_tensor_ref *r = &net->tensors[i];
      if (r->param->maskable && chosen(c, r->layer->name)) {
        if (ts) ts[n] = (nest_prune_target){i, r->layer->index, c->prune_gamma_start, 0};
        ++n;
      }
    }
  }
  return n;
}

static double conv_flops(const nest_net *net) {
  double f = 0;
  for (int l = 0; l < net->nlayers; ++l)
    if (net->layers[l]->kind == NEST_LAYER_CONV2D) f += nest_net_layer_flops(net, l);
  return f;
}

nest_status nest_prune_teacher(nest_trainer *t) {
  nest_net_destroy(&t->teacher);
  return nest_net_clone(t->net, &t->teacher);
}

/* ---- the phase -------------------------------------------------------------------------- */

/* What one phase run needs everywhere. */
typedef struct {
  nest_phase_ctx *x;
  nest_grow *g;
  nest_prune_state *ps;
  nest_prune_result *res;
  int area;
  const nest_policy_ops *ops; /* magnitude or area */
  double gamma_min, tol;
  const char *label;          /* "prune" or "area" */
  int64_t it0;                /* events.csv iteration offset: the area phase's come after */
  int *units, nunits;         /* the neuron policy's layers (prune phase only) */
  /* the iteration's log line, one part per target (rank 0; not in checkpoints: a resumed
   * iteration's line lists the targets since the restart) */
  char line[1024];
  int64_t removed, units_removed; /* the current step: weights and units it took; -1 unknown */
} phase_run;

/* A fresh phase: area masks, targets, the guard's target, the result's "before" values. */
static nest_status phase_start(phase_run *p) {
  nest_trainer *t = p->x->t;
  const nest_config *c = &t->cfg;
  nest_prune_result *res = p->res;
  memset(res, 0, sizeof *res);
  res->val_error = res->test_error = NAN;
  NEST_CALL(nest_prune_check(t, p->area));
  if (p->area) { /* every chosen conv layer gets an all-ones area mask: the function is unchanged */
    for (int l = 0; l < t->net->nlayers; ++l) {
      const nest_layer *ly = t->net->layers[l];
      if (ly->kind == NEST_LAYER_CONV2D && chosen(c, ly->name) && !ly->hp.area)
        NEST_CALL(nest_surgery_set_area(&t->net, l, 1));
    }
  }
  free(p->ps->pts);
  p->ps->pts = NULL;
  NEST_CALL(nest_calloc((void **)&p->ps->pts, (size_t)(t->net->ntensors + t->net->nlayers),
                        sizeof *p->ps->pts, "pruning targets"));
  p->ps->npts = list_targets(t, p->area, p->ps->pts);
  NEST_CALL(nest_trainer_sync_buffers(t));
  double verr;
  NEST_CALL(validate(t, &verr));
  /* The guard's target: the key, or the best validation error the run has seen (validate just
   * measured this one, so the best is at most verr), or verr. The margin: the tolerance plus z
   * standard errors of a validation error of that size on this validation set. */
  const int best = strcmp(c->prune_guard, "best") == 0 && !isnan(t->best_val_error);
  res->target = c->prune_target_error > 0 ? c->prune_target_error
                : best                    ? t->best_val_error
                                          : verr;
  res->limit = res->target + p->tol + nest_trainer_val_margin(t, res->target, c->prune_guard_z);
  nest_net_count(t->net, &res->weights_before, NULL, NULL);
  res->flops_before = nest_net_flops(t->net);
  res->conv_flops_before = conv_flops(t->net);
  char distil[64] = "";
  if (t->teacher && t->distill)
    snprintf(distil, sizeof distil, "; distillation alpha %g, T %g", c->prune_distill,
             c->prune_distill_temp);
  nest_log_line(nest_trainer_log(t),
                "nest: %s phase: %d targets, steps %g down to %g, %d retraining steps at lr %g; "
                "guard: validation error <= %.2f%% (%s %.2f%% + %.2f points)%s; one line per "
                "iteration, each step in events.csv",
                p->label, p->ps->npts, p->area ? c->prune_area_gamma_start : c->prune_gamma_start,
                p->gamma_min, c->prune_retrain_steps, c->prune_lr, 100 * res->limit,
                c->prune_target_error > 0 ? "target" : best ? "best" : "start", 100 * res->target,
                100 * (res->limit - res->target), distil);
  p->ps->rkey = p->area ? 1 << 20 : 0, p->ps->rpos = 0; /* the two phases draw different streams */
  nest_cursor *cur = &p->x->cur;
  cur->iter = 1, cur->target = 0, cur->part = 0, cur->live = 0;
  return NEST_OK;
}

/* ---- the log ------------------------------------------------------------------------------ */

/* Append a target's part to the iteration's log line (rank 0). */
static void line_part(phase_run *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line_part(phase_run *p, const char *fmt, ...) {
  if (!nest_trainer_log(p->x->t)) return;
  size_t n = strlen(p->line);
  if (n + 3 >= sizeof p->line) return;
  if (n) n += (size_t)snprintf(p->line + n, sizeof p->line - n, ", ");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->line + n, sizeof p->line - n, fmt, ap);
  va_end(ap);
}

/* A guarded step's part of the line: what it took, kept or restored (and why), the step that
 * comes next for that target. */
static void step_part(phase_run *p, const nest_prune_target *tg, const char *layer, int fail,
                      double verr, int tries) {
  if (!nest_trainer_log(p->x->t)) return;
  char took[96] = "", w[32], more[48] = "";
  if (p->removed >= 0) {
    nest_log_count(p->removed, w, sizeof w);
    snprintf(took, sizeof took, " -%s", w);
    if (p->units_removed > 0)
      snprintf(took + strlen(took), sizeof took - strlen(took), " (-%lld unit%s)",
               (long long)p->units_removed, p->units_removed == 1 ? "" : "s");
  }
  if (tries > 0) snprintf(more, sizeof more, " after %d retrainings", tries + 1);
  if (!fail)
    line_part(p, "%s%s kept%s", layer, took, more);
  else if (tg->stopped)
    line_part(p, "%s%s restored (%.2f%% > %.2f%%%s), stops at gamma %.4g", layer, took,
              100 * verr, 100 * p->res->limit, more, 2 * tg->gamma);
  else
    line_part(p, "%s%s restored (%.2f%% > %.2f%%%s), gamma -> %.4g", layer, took, 100 * verr,
              100 * p->res->limit, more, tg->gamma);
}

/* The end of iteration `it`: the network's validation and test error (one evaluation, which
 * changes nothing the run decides), a metrics.csv row, the iteration's log line. */
static nest_status iteration_row(phase_run *p, int it) {
  nest_trainer *t = p->x->t;
  nest_eval v, te;
  NEST_CALL(nest_trainer_evaluate_sets(t, NEST_EVAL_BOTH, &v, &te));
  int64_t aw = 0, tw = 0;
  nest_net_count(t->net, &aw, &tw, NULL);
  const double el = nest_comm_wtime() - t->t_start;
  nest_status st = NEST_OK;
  if (t->rank == 0 && t->metrics) {
    const int top5 = nest_trainer_has_top5(t);
    const nest_metrics_row row = {.epoch = t->epoch, .step = t->step, .lr = NAN,
                                  .train_loss = NAN, .train_acc = NAN,
                                  .val_loss = v.loss, .val_acc = v.acc,
                                  .test_loss = te.loss, .test_acc = te.acc,
                                  .active = aw, .total = tw, .images_per_s = NAN,
                                  .elapsed_s = el, .phase = p->label,
                                  .val_top5_error = top5 ? 1.0 - v.acc5 : NAN,
                                  .test_top5_error = top5 ? 1.0 - te.acc5 : NAN,
                                  .iteration = it};
    st = nest_rundir_metrics_row(t->metrics, t->metrics_path, &row);
  }
  nest_runlog *log = nest_trainer_log(t);
  if (log) {
    char a[32], widths[256], errs[128] = "", clock[96];
    nest_log_count(aw, a, sizeof a);
    nest_net_widths_string(t->net, widths, sizeof widths);
    int n = 0;
    if (!isnan(v.acc))
      n += snprintf(errs + n, sizeof errs - (size_t)n, ": validation error %.2f%%", 100 * (1 - v.acc));
    if (!isnan(te.acc))
      snprintf(errs + n, sizeof errs - (size_t)n, "%stest error %.2f%%", n ? ", " : ": ",
               100 * (1 - te.acc));
    nest_trainer_clock(t, -1, clock, sizeof clock);
    nest_log_line(log, "%s %d: %s -> %s active weights, %s%s | %s", p->label, it,
                  p->line[0] ? p->line : "(resumed)", a, widths, errs, clock);
  }
  p->line[0] = '\0';
  return nest_comm_agree(t->comm, st);
}

/* ---- the loop -------------------------------------------------------------------------------- */

/* Step k of iteration it: snapshot, one policy step, the neuron removal. Returns 0 in *go when
 * the target is at its floor (it stops; nothing to retrain). */
static nest_status target_step(phase_run *p, int it, nest_prune_target *tg, const char *layer,
                               int *go) {
  nest_trainer *t = p->x->t;
  const int64_t iter = p->it0 + it;
  double fraction = tg->gamma;
  if (!p->area && t->cfg.prune_target_weights > 0) { /* the size target: a step never passes it */
    int64_t aw = 0;
    nest_net_count(t->net, &aw, NULL, NULL);
    const int64_t room = aw - t->cfg.prune_target_weights;
    if (room <= 0) { /* reached: every target stops */
      *go = 0;
      for (int k = 0; k < p->ps->npts; ++k)
        if (!p->ps->pts[k].stopped) p->ps->pts[k].stopped = 2;
      NEST_CALL(nest_grow_note(t, p->g, iter, "stop", layer, "prune.target_weights reached"));
      return nest_grow_flush(t, p->g, NAN);
    }
    const nest_param *w = t->net->tensors[tg->target].param;
    const int64_t act = nest_tensor_active(t->net->masks + w->offset, w->count);
    /* the policy takes ceil(fraction x active) weights: at most `room` of them */
    if (act > 0 && (double)room < fraction * (double)act) fraction = ((double)room - 0.5) / (double)act;
  }
  NEST_CALL(nest_grow_begin(t, p->g, iter));
  NEST_CALL(nest_net_clone(t->net, &p->ps->snap));
  int64_t before = 0, after = 0;
  nest_net_count(t->net, &before, NULL, NULL);
  nest_grow_event ev;
  NEST_CALL(nest_grow_run_one(t, p->g, p->ops, tg->target, iter, fraction, &ev));
  *go = !(ev.removed == 0 && ev.units == 0);
  if (!*go) { /* at the floor: nothing left to take */
    nest_net_destroy(&p->ps->snap);
    tg->stopped = 2;
    line_part(p, "%s at its floor (stops)", layer);
    NEST_CALL(nest_grow_note(t, p->g, iter, "stop", layer, "floor reached"));
    return nest_grow_flush(t, p->g, NAN);
  }
  p->units_removed = 0;
  for (int u = 0; u < p->nunits; ++u) {
    nest_grow_event nev;
    NEST_CALL(nest_grow_run_one(t, p->g, &nest_policy_neurons, p->units[u], iter, 0, &nev));
    p->units_removed += nev.units;
  }
  nest_net_count(t->net, &after, NULL, NULL);
  p->removed = before - after;
  return NEST_OK;
}

/* The guard of the step being retrained: retrain, validate; a step that fails after retraining
 * may only need more of it (the validation error of a few thousand samples moves by tenths of
 * a point between retrainings); still above the limit => restore the snapshot, halve gamma. */
static nest_status guard(phase_run *p, int it, nest_prune_target *tg, const char *layer) {
  nest_trainer *t = p->x->t;
  nest_cursor *cur = &p->x->cur;
  const nest_config *c = &t->cfg;
  nest_prune_result *res = p->res;
  double loss = NAN, verr = NAN;
  int tries = cur->tries;
  for (;;) {
    cur->tries = tries;
    NEST_CALL(retrain(p->x, p->ps, c->prune_retrain_steps, &loss));
    NEST_CALL(validate(t, &verr));
    if (verr <= res->limit + 1e-9 || tries >= c->prune_retries) break;
    ++tries;
    cur->step = 0;
  }
  const int fail = !(verr <= res->limit + 1e-9);
  if (fail) {
    restore(t, &p->ps->snap);
    res->steps_restored++;
    const double old = tg->gamma;
    tg->gamma *= 0.5;
    if (tg->gamma < p->gamma_min * (1 - 1e-9)) tg->stopped = 1;
    char detail[160];
    snprintf(detail, sizeof detail, "validation error %.4f > %.4f: restored; gamma %.4g -> %s",
             verr, res->limit, old, tg->stopped ? "stop" : "");
    if (!tg->stopped)
      snprintf(detail + strlen(detail), sizeof detail - strlen(detail), "%.4g", tg->gamma);
    NEST_CALL(nest_grow_note(t, p->g, p->it0 + it, "guard", layer, detail));
  } else {
    nest_net_destroy(&p->ps->snap);
    res->steps_kept++;
  }
  cur->part = 0;
  step_part(p, tg, layer, fail, verr, tries);
  return nest_grow_flush(t, p->g, verr);
}

/* Iteration it over the targets, from the cursor's target when resuming. */
static nest_status iteration(phase_run *p, int it) {
  nest_phase_ctx *x = p->x;
  nest_cursor *cur = &x->cur;
  if (!x->resuming) cur->target = 0, cur->live = 0;
  for (int k = cur->target; k < p->ps->npts; ++k) {
    cur->target = k;
    nest_prune_target *tg = &p->ps->pts[k];
    char layer[NEST_NAME_LEN];
    snprintf(layer, sizeof layer, "%s", x->t->net->layers[tg->layer]->name);
    /* part 1: resumed while this target's step was being retrained (ps->snap holds the net of
     * before the step) */
    if (!(x->resuming && cur->part == 1)) {
      x->resuming = 0;
      cur->part = 0;
      if (tg->stopped) continue;
      cur->live = 1;
      int go = 1;
      NEST_CALL(target_step(p, it, tg, layer, &go));
      if (!go) continue;
      cur->part = 1, cur->tries = 0, cur->step = 0;
    }
    NEST_CALL(guard(p, it, tg, layer));
  }
  x->resuming = 0; /* resumed at the end of an iteration (cur.target = number of targets) */
  return NEST_OK;
}

/* The phase done: the result's "after" values, the final evaluation, a progress line. */
static nest_status phase_end(phase_run *p) {
  nest_trainer *t = p->x->t;
  nest_prune_result *res = p->res;
  nest_net_count(t->net, &res->weights_after, NULL, NULL);
  res->flops_after = nest_net_flops(t->net);
  res->conv_flops_after = conv_flops(t->net);
  nest_eval v, te;
  NEST_CALL(nest_trainer_evaluate_sets(t, NEST_EVAL_BOTH, &v, &te));
  res->val_error = isnan(v.acc) ? NAN : 1.0 - v.acc;
  res->test_error = isnan(te.acc) ? NAN : 1.0 - te.acc;
  res->seconds = nest_comm_wtime() - (t->t_start + p->x->phase_t0); /* survives a restart */
  nest_runlog *log = nest_trainer_log(t);
  if (log) {
    char widths[256], a[32], b[32], line[512];
    nest_net_widths_string(t->net, widths, sizeof widths);
    nest_log_count(res->weights_before, a, sizeof a);
    nest_log_count(res->weights_after, b, sizeof b);
    int n = snprintf(line, sizeof line,
                     "nest: %s phase done after %d iteration%s in %.1f s (%lld steps kept, %lld "
                     "restored): %s -> %s active weights, %.3g -> %.3g MFLOP, widths %s",
                     p->label, res->iterations, res->iterations == 1 ? "" : "s", res->seconds,
                     (long long)res->steps_kept,
                     (long long)res->steps_restored, a, b, res->flops_before / 1e6,
                     res->flops_after / 1e6, widths);
    if (res->conv_flops_before > 0)
      n += snprintf(line + n, sizeof line - (size_t)n, ", convolution %.3g -> %.3g MFLOP (%.2fx)",
                    res->conv_flops_before / 1e6, res->conv_flops_after / 1e6,
                    res->conv_flops_before / res->conv_flops_after);
    if (!isnan(res->val_error))
      n += snprintf(line + n, sizeof line - (size_t)n, ", validation error %.2f%%", 100 * res->val_error);
    if (!isnan(res->test_error))
      snprintf(line + n, sizeof line - (size_t)n, ", test error %.2f%%", 100 * res->test_error);
    nest_log_line(log, "%s", line);
  }
  return NEST_OK;
}

/* The iterations, from the cursor's (phase.h): iteration cur.iter, target cur.target; part 0 =
 * its step next, 1 = retraining it (round cur.tries, step cur.step). */
static nest_status iterations(phase_run *p) {
  nest_phase_ctx *x = p->x;
  nest_cursor *cur = &x->cur;
  const nest_config *c = &x->t->cfg;
  for (int it = cur->iter; it <= c->prune_iterations; ++it) {
    cur->iter = it;
    NEST_CALL(iteration(p, it));
    /* an iteration in which every target had stopped already did nothing: not counted */
    if (!cur->live) break;
    p->res->iterations = it;
    NEST_CALL(iteration_row(p, it));
    /* the end of an iteration: always a checkpoint */
    cur->iter = it + 1, cur->target = 0, cur->part = 0, cur->live = 0;
    cur->epoch = cur->step = 0;
    NEST_CALL(nest_phase_point(x, 1));
  }
  x->resuming = 0;
  return NEST_OK;
}

nest_status nest_prune_phase(nest_phase_ctx *x, nest_grow *g, nest_prune_state *ps, int area) {
  nest_trainer *t = x->t;
  const nest_config *c = &t->cfg;
  phase_run p = {.x = x,
                 .g = g,
                 .ps = ps,
                 .res = &ps->res[area],
                 .area = area,
                 .ops = area ? &nest_policy_area : &nest_policy_magnitude,
                 .gamma_min = area ? c->prune_area_gamma : c->prune_gamma,
                 .tol = area ? c->prune_area_tolerance : c->prune_tolerance,
                 .label = area ? "area" : "prune",
                 .it0 = area ? 100000 : 0,
                 .removed = -1};
  ps->ran[area] = 1;
  nest_grow_set_phase(g, p.label);
  /* The neuron policy's layers (prune phase only); structural, so the same after a restart. */
  NEST_CALL(nest_calloc((void **)&p.units, (size_t)t->net->nlayers, sizeof(int), "layers"));
  if (!area)
    for (int l = 0; l < t->net->nlayers; ++l) {
      const char *why = NULL;
      if (chosen(c, t->net->layers[l]->name) && nest_policy_neurons.accepts(t->net, l, &why))
        p.units[p.nunits++] = l;
    }
  nest_status st = NEST_OK;
  /* a fresh phase (a resumed one has its targets and result back) */
  if (!x->resuming) NEST_CALL_GOTO(st, phase_start(&p), done);
  NEST_CALL_GOTO(st, iterations(&p), done);
  NEST_CALL_GOTO(st, phase_end(&p), done);
done:
  nest_net_destroy(&ps->snap);
  free(p.units);
  return st;
}

/* ---- the run's ETA ------------------------------------------------------------------------- */

/* Guard trips a target with step gamma has left: gamma halves at each, and the target stops
 * once it falls below the smallest step (guard above). */
static int trips_left(double gamma, double gamma_min) {
  int k = 0;
  for (; gamma >= gamma_min * (1 - 1e-9) && k < 64; ++k) gamma *= 0.5;
  return k;
}

int64_t nest_prune_steps_left(const nest_trainer *t, const nest_prune_state *ps, int area,
                              int started) {
  const nest_config *c = &t->cfg;
  const double gmin = area ? c->prune_area_gamma : c->prune_gamma;
  /* How many steps a target keeps between two trips and how many optimizer steps a pruning
   * step costs (retraining, retries) are what the run shows; before it shows anything: 2.5
   * kept per trip (LeNet-5's shipped run: 39 kept, 16 restored) and half the retries used. */
  const double k0 = 2.5, r0 = c->prune_retrain_steps * (1.0 + 0.5 * c->prune_retries);
  double kept = 0, restored = 0, retrained = 0, steps = 0;
  int live = 0, done = 0;
  if (started && ps->pts) {
    const nest_prune_result *r = &ps->res[area];
    kept = (double)r->steps_kept, restored = (double)r->steps_restored, done = r->iterations;
    retrained = (double)((ps->rkey - (area ? 1 << 20 : 0)) * t->steps_per_epoch + ps->rpos);
    const double k = (kept + k0) / (restored + 1);
    for (int i = 0; i < ps->npts; ++i)
      if (!ps->pts[i].stopped) {
        ++live;
        steps += trips_left(ps->pts[i].gamma, gmin) * (1 + k);
      }
  } else {
    live = list_targets(t, area, NULL);
    steps = live * trips_left(area ? c->prune_area_gamma_start : c->prune_gamma_start, gmin) *
            (1 + k0);
  }
  /* at most one step per live target and iteration left */
  double most = (double)live * (c->prune_iterations - done);
  if (!area && c->prune_target_weights > 0 && live > 0) {
    /* A size target ends the phase sooner: from active weights A to the target T, each
     * iteration removing about gamma of them (the largest live gamma, gamma_start before the
     * phase starts), takes log(T / A) / log(1 - gamma) iterations. */
    int64_t aw, tw;
    nest_net_count(t->net, &aw, &tw, NULL);
    double g = started && ps->pts ? 0 : c->prune_gamma_start;
    for (int i = 0; started && ps->pts && i < ps->npts; ++i)
      if (!ps->pts[i].stopped && ps->pts[i].gamma > g) g = ps->pts[i].gamma;
    const double T = (double)c->prune_target_weights, A = (double)aw;
    const double iters = A <= T ? 0 : g > 0 && g < 1 ? ceil(log(T / A) / log(1.0 - g)) : 1;
    if (live * iters < most) most = live * iters;
  }
  if (steps > most) steps = most;
  return (int64_t)(steps * (retrained + r0) / (kept + restored + 1));
}
