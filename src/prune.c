/* prune.c — the pruning phases: the guarded loop over targets, snapshots, retraining (see
 * prune.h). The policies themselves live in src/policies/ (magnitude_pruning.c,
 * neuron_pruning.c, partial_area.c); events go through the policy driver (grow.h). */
#define _GNU_SOURCE
#include "nest/prune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/restart.h"
#include "nest/shard.h"
#include "nest/surgery.h"

/* Permutation keys of the retraining steps: far above any epoch and the growth sets. */
#define PRUNE_PERM_KEY ((int64_t)1 << 42)

/* The retraining stream: consecutive global batches of permutations keyed by
 * (seed, PRUNE_PERM_KEY + t->rkey), t->rkey counting the permutations used up in this run and
 * t->rpos the position in the current one (both in checkpoints). */

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

/* One retraining round of `steps` steps. The loss sums live in t->racc and the position in
 * t->cur.step, so a checkpoint can be taken before any step and resumed there. */
static nest_status retrain(nest_trainer *t, int steps, double *loss) {
  const nest_config *c = &t->cfg;
  const int64_t spe = t->steps_per_epoch;
  double *acc = t->racc;
  int s0 = 0;
  if (t->resuming) { /* resumed before step cur.step of this round */
    s0 = (int)t->cur.step;
    t->resuming = 0;
  } else {
    acc[0] = acc[1] = acc[2] = 0;
  }
  int64_t have = -1; /* the key t->perm holds */
  for (int s = s0; s < steps; ++s) {
    t->cur.step = s;
    NEST_CALL(nest_restart_point(t, 0));
    if (t->rpos >= spe) t->rkey++, t->rpos = 0;
    if (have != PRUNE_PERM_KEY + t->rkey) {
      have = PRUNE_PERM_KEY + t->rkey;
      nest_shard_permute(c->seed, have, t->train_idx, t->n_train, t->perm);
    }
    t->data_key = PRUNE_PERM_KEY + t->rkey;
    int64_t hits = 0, rows = 0;
    double l = 0;
    /* A cosine from prune.lr down to optim.min_lr over the retraining (a warm restart per
     * step, as in the growth phase): the guard then judges a settled network, not one caught
     * mid-stride by a constant rate. */
    const double lr = c->min_lr + 0.5 * (c->prune_lr - c->min_lr) *
                                      (1.0 + cos(M_PI * (double)s / (double)steps));
    NEST_CALL(nest_trainer_step(t, t->perm, t->rpos, lr, &l, &hits, &rows));
    acc[0] += l;
    acc[2] += (double)rows;
    t->rpos++;
  }
  t->cur.step = steps;
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
  nest_eval v = {NAN, NAN, 0, NAN};
  if (t->n_val > 0) NEST_CALL(nest_trainer_evaluate(t, t->train, t->val_idx, t->n_val, &v));
  *val_error = isnan(v.acc) ? NAN : 1.0 - v.acc;
  return NEST_OK;
}

/* ---- targets ---------------------------------------------------------------------------- */

/* Is layer l named in prune.layers ("" = all)? */
static int chosen(const nest_config *c, const char *name) {
  if (!c->prune_layers[0]) return 1;
  const size_t n = strlen(name);
  for (const char *p = c->prune_layers; *p;) {
    const size_t len = strcspn(p, ",");
    if (len == n && strncmp(p, name, n) == 0) return 1;
    p += len + (p[len] == ',');
  }
  return 0;
}

nest_status nest_prune_check(const nest_trainer *t, int area) {
  const nest_config *c = &t->cfg;
  for (const char *p = c->prune_layers; *p;) {
    const size_t len = strcspn(p, ",");
    char name[NEST_NAME_LEN + 8];
    snprintf(name, sizeof name, "%.*s", (int)(len < NEST_NAME_LEN ? len : NEST_NAME_LEN), p);
    const nest_layer *l = nest_net_find_layer(t->net, name);
    if (!l) return NEST_ERR(NEST_ERR_CONFIG, "prune.layers: the network has no layer '%s'", name);
    const char *why = "";
    if (!area && !nest_policy_accepts_masked(t->net, l->index, &why))
      return NEST_ERR(NEST_ERR_CONFIG, "prune.layers: %s (a %s layer) has no weights to prune",
                      name, l->ops->kind);
    p += len + (p[len] == ',');
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

/* ---- the phase -------------------------------------------------------------------------- */

nest_status nest_prune_phase(nest_trainer *t, nest_grow *g, int area, nest_prune_result *res) {
  const nest_config *c = &t->cfg;
  const nest_policy_ops *ops = area ? &nest_policy_area : &nest_policy_magnitude;
  const double gamma_min = area ? c->prune_area_gamma : c->prune_gamma;
  const char *label = area ? "area" : "prune";
  const double t_start = t->t_start + t->phase_t0; /* survives a restart */
  /* The neuron policy's layers (prune phase only); structural, so the same after a restart. */
  int *units = NULL, nunits = 0;
  NEST_CALL(nest_calloc((void **)&units, (size_t)t->net->nlayers, sizeof(int), "layers"));
  if (!area)
    for (int l = 0; l < t->net->nlayers; ++l) {
      const char *why = NULL;
      if (chosen(c, t->net->layers[l]->name) && nest_policy_neurons.accepts(t->net, l, &why))
        units[nunits++] = l;
    }
  nest_status st = NEST_OK;
  double verr;
  const double tol = area ? c->prune_area_tolerance : c->prune_tolerance;
  if (!t->resuming) { /* a fresh phase (a resumed one has its targets and result back) */
    memset(res, 0, sizeof *res);
    res->val_error = res->test_error = NAN;
    NEST_CALL_GOTO(st, nest_prune_check(t, area), done);
    if (area) { /* every chosen conv layer gets an all-ones area mask: the function is unchanged */
      for (int l = 0; l < t->net->nlayers; ++l) {
        const nest_layer *ly = t->net->layers[l];
        if (ly->kind == NEST_LAYER_CONV2D && chosen(c, ly->name) && !ly->hp.area)
          NEST_CALL_GOTO(st, nest_surgery_set_area(&t->net, l, 1), done);
      }
    }
    free(t->pts);
    t->pts = NULL;
    NEST_CALL_GOTO(st, nest_calloc((void **)&t->pts, (size_t)(t->net->ntensors + t->net->nlayers),
                                   sizeof *t->pts, "pruning targets"), done);
    t->npts = list_targets(t, area, t->pts);
    NEST_CALL_GOTO(st, nest_trainer_sync_buffers(t), done);
    NEST_CALL_GOTO(st, validate(t, &verr), done);
    res->target = c->prune_target_error > 0 ? c->prune_target_error : verr;
    res->limit = res->target + tol;
    nest_net_count(t->net, &res->weights_before, NULL, NULL);
    res->flops_before = nest_net_flops(t->net);
    res->conv_flops_before = conv_flops(t->net);
    if (t->rank == 0 && !t->quiet) {
      printf("nest: %s phase: %d targets, steps %g down to %g, %d retraining steps at lr %g; "
             "guard: validation error <= %.2f%% (target %.2f%% + %.2f)\n",
             label, t->npts, area ? c->prune_area_gamma_start : c->prune_gamma_start, gamma_min,
             c->prune_retrain_steps, c->prune_lr, 100 * res->limit, 100 * res->target,
             100 * tol);
      fflush(stdout);
    }
    t->rkey = area ? 1 << 20 : 0, t->rpos = 0; /* the two phases draw different streams */
    t->cur.iter = 1, t->cur.target = 0, t->cur.part = 0, t->cur.live = 0;
  }
  const int nt = t->npts;
  /* Iterations of the area phase are numbered after the prune phase's in events.csv. */
  const int64_t it0 = area ? 100000 : 0;
  /* The cursor (train.h): iteration cur.iter, target cur.target; part 0 = its step next,
   * 1 = retraining it (round cur.tries, step cur.step; t->snap holds the net of before). */
  for (int it = t->cur.iter; it <= c->prune_iterations; ++it) {
    t->cur.iter = it;
    if (!t->resuming) t->cur.target = 0, t->cur.live = 0;
    for (int k = t->cur.target; k < nt; ++k) {
      t->cur.target = k;
      nest_prune_target *x = &t->pts[k];
      char lbuf[NEST_NAME_LEN];
      snprintf(lbuf, sizeof lbuf, "%s", t->net->layers[x->layer]->name);
      if (!(t->resuming && t->cur.part == 1)) {
        t->resuming = 0;
        t->cur.part = 0;
        if (x->stopped) continue;
        t->cur.live = 1;
        NEST_CALL_GOTO(st, nest_grow_begin(t, g, it0 + it), done);
        NEST_CALL_GOTO(st, net_copy(t->net, &t->snap), done);
        nest_grow_event ev;
        NEST_CALL_GOTO(st, nest_grow_run_one(t, g, ops, x->target, it0 + it, x->gamma, &ev), done);
        if (ev.removed == 0 && ev.units == 0) { /* at the floor: nothing left to take */
          nest_net_destroy(&t->snap);
          x->stopped = 2;
          NEST_CALL_GOTO(st, nest_grow_note(t, g, it0 + it, "stop", lbuf, "floor reached"), done);
          NEST_CALL_GOTO(st, nest_grow_flush(t, g, NAN), done);
          continue;
        }
        for (int u = 0; u < nunits; ++u)
          NEST_CALL_GOTO(st, nest_grow_run_one(t, g, &nest_policy_neurons, units[u], it0 + it, 0, NULL),
                         done);
        t->cur.part = 1, t->cur.tries = 0, t->cur.step = 0;
      }
      /* Retrain, validate; a step that fails after retraining may only need more of it: the
       * validation error of a few thousand samples moves by tenths of a point between
       * retrainings. */
      double loss = NAN;
      int tries = t->cur.tries;
      for (;;) {
        t->cur.tries = tries;
        NEST_CALL_GOTO(st, retrain(t, c->prune_retrain_steps, &loss), done);
        NEST_CALL_GOTO(st, validate(t, &verr), done);
        if (verr <= res->limit + 1e-9 || tries >= c->prune_retries) break;
        ++tries;
        t->cur.step = 0;
      }
      const int fail = !(verr <= res->limit + 1e-9);
      char detail[160];
      if (fail) {
        restore(t, &t->snap);
        res->steps_restored++;
        const double old = x->gamma;
        x->gamma *= 0.5;
        if (x->gamma < gamma_min * (1 - 1e-9)) x->stopped = 1;
        snprintf(detail, sizeof detail, "validation error %.4f > %.4f: restored; gamma %.4g -> %s",
                 verr, res->limit, old, x->stopped ? "stop" : "");
        if (!x->stopped)
          snprintf(detail + strlen(detail), sizeof detail - strlen(detail), "%.4g", x->gamma);
        NEST_CALL_GOTO(st, nest_grow_note(t, g, it0 + it, "guard", lbuf, detail), done);
      } else {
        nest_net_destroy(&t->snap);
        res->steps_kept++;
      }
      t->cur.part = 0;
      int64_t aw = 0;
      nest_net_count(t->net, &aw, NULL, NULL);
      if (t->rank == 0 && !t->quiet) {
        printf("%s %3d  %-8s retrained %d steps (loss %.4f): validation error %.2f%% %s %.2f%%: "
               "%s; %lld active weights",
               label, it, lbuf, c->prune_retrain_steps * (1 + tries), loss, 100 * verr, fail ? ">" : "<=",
               100 * res->limit, fail ? "restored" : "kept", (long long)aw);
        if (area) printf(", Conv%% %.1f", 100 * nest_net_layer_conv_frac(t->net, x->layer));
        if (fail) printf(", gamma %s%.4g", x->stopped ? "stop at " : "", x->gamma * (x->stopped ? 2 : 1));
        printf("\n");
        fflush(stdout);
      }
      NEST_CALL_GOTO(st, nest_grow_flush(t, g, verr), done);
    }
    t->resuming = 0; /* resumed at the end of an iteration (cur.target = number of targets) */
    res->iterations = it;
    if (!t->cur.live) break;
    /* the end of an iteration: always a checkpoint */
    t->cur.iter = it + 1, t->cur.target = 0, t->cur.part = 0, t->cur.live = 0;
    t->cur.epoch = t->cur.step = 0;
    NEST_CALL_GOTO(st, nest_restart_point(t, 1), done);
  }
  t->resuming = 0;
  nest_net_count(t->net, &res->weights_after, NULL, NULL);
  res->flops_after = nest_net_flops(t->net);
  res->conv_flops_after = conv_flops(t->net);
  {
    nest_eval v = {NAN, NAN, 0, NAN}, te = {NAN, NAN, 0, NAN};
    if (t->n_val > 0) NEST_CALL_GOTO(st, nest_trainer_evaluate(t, t->train, t->val_idx, t->n_val, &v), done);
    if (t->test) NEST_CALL_GOTO(st, nest_trainer_evaluate(t, t->test, t->test_idx, t->n_test, &te), done);
    res->val_error = isnan(v.acc) ? NAN : 1.0 - v.acc;
    res->test_error = isnan(te.acc) ? NAN : 1.0 - te.acc;
  }
  res->seconds = nest_comm_wtime() - t_start;
  if (t->rank == 0 && !t->quiet) {
    char widths[256];
    nest_net_widths_string(t->net, widths, sizeof widths);
    printf("nest: %s phase done after %d iterations in %.1f s (%lld steps kept, %lld restored): "
           "%lld -> %lld active weights, %.3g -> %.3g MFLOP, widths %s",
           label, res->iterations, res->seconds, (long long)res->steps_kept,
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
done:
  nest_net_destroy(&t->snap);
  free(units);
  return st;
}
