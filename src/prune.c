/* prune.c — the pruning phases: the guarded loop over targets, snapshots, retraining (see
 * prune.h). The policies themselves live in src/policies/ (magnitude_pruning.c,
 * neuron_pruning.c, partial_area.c); events go through the policy driver (grow.h). */
#define _GNU_SOURCE
#include "nest/prune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/list.h"
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

/* A deep copy of the net: same specs, every arena copied (grads are not state). */
static nest_status net_copy(const nest_net *src, nest_net **out) {
  NEST_CALL(nest_net_create(src->specs, src->nlayers, src->in_shape, src->nclasses,
                            src->max_batch, src->nthreads, out));
  nest_net *d = *out;
  NEST_ASSERT(d->nparams == src->nparams && d->nbuf == src->nbuf);
  memcpy(d->params, src->params, sizeof(float) * src->nparams);
  memcpy(d->masks, src->masks, sizeof(float) * src->nparams);
  memcpy(d->mom, src->mom, sizeof(float) * src->nparams);
  if (src->nbuf) memcpy(d->buffers, src->buffers, sizeof(float) * src->nbuf);
  d->generation = src->generation;
  return NEST_OK;
}

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

static int list_targets(const nest_trainer *t, int area, nest_prune_target *ts) {
  const nest_net *net = t->net;
  const nest_config *c = &t->cfg;
  int n = 0;
  if (area) {
    for (int l = 0; l < net->nlayers; ++l)
      if (net->layers[l]->kind == NEST_LAYER_CONV2D && chosen(c, net->layers[l]->name))
        ts[n++] = (nest_prune_target){l, l, c->prune_area_gamma_start, 0};
  } else {
    for (int i = 0; i < net->ntensors; ++i) {
      const nest_tensor_ref *r = &net->tensors[i];
      if (r->param->maskable && chosen(c, r->layer->name))
        ts[n++] = (nest_prune_target){i, r->layer->index, c->prune_gamma_start, 0};
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

double nest_prune_se_margin(double e, int64_t n, double z) {
  if (!(z > 0) || n <= 0 || !(e >= 0)) return 0;
  return z * sqrt(e * (1.0 - e) / (double)n);
}

nest_status nest_prune_teacher(nest_trainer *t) {
  nest_net_destroy(&t->teacher);
  return net_copy(t->net, &t->teacher);
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
  res->limit = res->target + p->tol + nest_prune_se_margin(res->target, t->n_val,
                                                           c->prune_guard_z);
  nest_net_count(t->net, &res->weights_before, NULL, NULL);
  res->flops_before = nest_net_flops(t->net);
  res->conv_flops_before = conv_flops(t->net);
  if (t->rank == 0 && !t->quiet) {
    printf("nest: %s phase: %d targets, steps %g down to %g, %d retraining steps at lr %g; "
           "guard: validation error <= %.2f%% (%s %.2f%% + %.2f points)",
           p->label, p->ps->npts, p->area ? c->prune_area_gamma_start : c->prune_gamma_start,
           p->gamma_min, c->prune_retrain_steps, c->prune_lr, 100 * res->limit,
           c->prune_target_error > 0 ? "target" : best ? "best" : "start", 100 * res->target,
           100 * (res->limit - res->target));
    if (t->teacher && t->distill)
      printf("; distillation alpha %g, T %g", c->prune_distill, c->prune_distill_temp);
    printf("\n");
    fflush(stdout);
  }
  p->ps->rkey = p->area ? 1 << 20 : 0, p->ps->rpos = 0; /* the two phases draw different streams */
  nest_cursor *cur = &p->x->cur;
  cur->iter = 1, cur->target = 0, cur->part = 0, cur->live = 0;
  return NEST_OK;
}

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
  NEST_CALL(net_copy(t->net, &p->ps->snap));
  nest_grow_event ev;
  NEST_CALL(nest_grow_run_one(t, p->g, p->ops, tg->target, iter, fraction, &ev));
  *go = !(ev.removed == 0 && ev.units == 0);
  if (!*go) { /* at the floor: nothing left to take */
    nest_net_destroy(&p->ps->snap);
    tg->stopped = 2;
    NEST_CALL(nest_grow_note(t, p->g, iter, "stop", layer, "floor reached"));
    return nest_grow_flush(t, p->g, NAN);
  }
  for (int u = 0; u < p->nunits; ++u)
    NEST_CALL(nest_grow_run_one(t, p->g, &nest_policy_neurons, p->units[u], iter, 0, NULL));
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
  if (t->rank == 0 && !t->quiet) {
    int64_t aw = 0;
    nest_net_count(t->net, &aw, NULL, NULL);
    printf("%s %3d  %-8s retrained %d steps (loss %.4f): validation error %.2f%% %s %.2f%%: "
           "%s; %lld active weights",
           p->label, it, layer, c->prune_retrain_steps * (1 + tries), loss, 100 * verr,
           fail ? ">" : "<=", 100 * res->limit, fail ? "restored" : "kept", (long long)aw);
    if (p->area) printf(", Conv%% %.1f", 100 * nest_net_layer_conv_frac(t->net, tg->layer));
    if (fail)
      printf(", gamma %s%.4g", tg->stopped ? "stop at " : "", tg->gamma * (tg->stopped ? 2 : 1));
    printf("\n");
    fflush(stdout);
  }
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
  if (t->rank == 0 && !t->quiet) {
    char widths[256];
    nest_net_widths_string(t->net, widths, sizeof widths);
    printf("nest: %s phase done after %d iterations in %.1f s (%lld steps kept, %lld restored): "
           "%lld -> %lld active weights, %.3g -> %.3g MFLOP, widths %s",
           p->label, res->iterations, res->seconds, (long long)res->steps_kept,
           (long long)res->steps_restored, (long long)res->weights_before,
           (long long)res->weights_after, res->flops_before / 1e6, res->flops_after / 1e6, widths);
    if (res->conv_flops_before > 0)
      printf(", convolution %.3g -> %.3g MFLOP (%.2fx)", res->conv_flops_before / 1e6,
             res->conv_flops_after / 1e6, res->conv_flops_before / res->conv_flops_after);
    if (!isnan(res->val_error)) printf(", validation error %.2f%%", 100 * res->val_error);
    if (!isnan(res->test_error)) printf(", test error %.2f%%", 100 * res->test_error);
    printf("\n");
    fflush(stdout);
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
                 .it0 = area ? 100000 : 0};
  ps->ran[area] = 1;
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
