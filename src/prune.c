/* prune.c — the pruning phases: the guarded loop over targets, snapshots, retraining (see
 * prune.h). The policies themselves live in src/policies/ (magnitude_pruning.c,
 * neuron_pruning.c, partial_area.c); events go through the policy driver (grow.h). */
#define _GNU_SOURCE
#include "nest/prune.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nest/shard.h"
#include "nest/surgery.h"

/* Permutation keys of the retraining steps: far above any epoch and the growth sets. */
#define PRUNE_PERM_KEY ((int64_t)1 << 42)

typedef struct {
  int target; /* tensor index (prune) or layer index (area) */
  int layer;
  double gamma;
  int stopped; /* 0 pruning; 1 guard; 2 floor / nothing left */
} target_state;

/* The retraining stream: consecutive global batches of permutations keyed by
 * (seed, PRUNE_PERM_KEY + k), k counting the permutations used up in this run. */
typedef struct {
  int64_t key, pos;
} retrain_stream;

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

static nest_status retrain(nest_trainer *t, retrain_stream *rs, int steps, double *loss) {
  const nest_config *c = &t->cfg;
  const int64_t spe = t->steps_per_epoch;
  double acc[3] = {0, 0, 0};
  for (int s = 0; s < steps; ++s) {
    if (rs->pos == 0 || rs->pos >= spe) {
      if (rs->pos >= spe) rs->key++, rs->pos = 0;
      nest_shard_permute(c->seed, PRUNE_PERM_KEY + rs->key, t->train_idx, t->n_train, t->perm);
    }
    t->data_key = PRUNE_PERM_KEY + rs->key;
    int64_t hits = 0, rows = 0;
    double l = 0;
    /* A cosine from prune.lr down to optim.min_lr over the retraining (a warm restart per
     * step, as in the growth phase): the guard then judges a settled network, not one caught
     * mid-stride by a constant rate. */
    const double lr = c->min_lr + 0.5 * (c->prune_lr - c->min_lr) *
                                      (1.0 + cos(M_PI * (double)s / (double)steps));
    NEST_CALL(nest_trainer_step(t, t->perm, rs->pos, lr, &l, &hits, &rows));
    acc[0] += l;
    acc[2] += (double)rows;
    rs->pos++;
  }
  NEST_CALL(nest_comm_sum_same_f64(t->comm, acc, 3));
  *loss = acc[2] > 0 ? acc[0] / acc[2] : NAN;
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
  nest_eval v = {NAN, NAN, 0};
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

static int list_targets(const nest_trainer *t, int area, target_state *ts) {
  const nest_net *net = t->net;
  const nest_config *c = &t->cfg;
  int n = 0;
  if (area) {
    for (int l = 0; l < net->nlayers; ++l)
      if (net->layers[l]->kind == NEST_LAYER_CONV2D && chosen(c, net->layers[l]->name))
        ts[n++] = (target_state){l, l, c->prune_area_gamma_start, 0};
  } else {
    for (int i = 0; i < net->ntensors; ++i) {
      const nest_tensor_ref *r = &net->tensors[i];
      if (r->param->maskable && chosen(c, r->layer->name))
        ts[n++] = (target_state){i, r->layer->index, c->prune_gamma_start, 0};
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
  const double t_start = nest_comm_wtime();
  memset(res, 0, sizeof *res);
  res->val_error = res->test_error = NAN;
  NEST_CALL(nest_prune_check(t, area));
  if (area) { /* every chosen conv layer gets an all-ones area mask: the function is unchanged */
    for (int l = 0; l < t->net->nlayers; ++l) {
      const nest_layer *ly = t->net->layers[l];
      if (ly->kind == NEST_LAYER_CONV2D && chosen(c, ly->name) && !ly->hp.area)
        NEST_CALL(nest_surgery_set_area(&t->net, l, 1));
    }
  }
  target_state *ts = NULL;
  NEST_CALL(nest_calloc((void **)&ts, (size_t)(t->net->ntensors + t->net->nlayers),
                        sizeof *ts, "pruning targets"));
  const int nt = list_targets(t, area, ts);
  /* The neuron policy's layers (prune phase only). */
  int *units = NULL, nunits = 0;
  nest_status st = NEST_OK;
  NEST_CALL_GOTO(st, nest_calloc((void **)&units, (size_t)t->net->nlayers, sizeof(int), "layers"),
                 done);
  if (!area)
    for (int l = 0; l < t->net->nlayers; ++l) {
      const char *why = NULL;
      if (chosen(c, t->net->layers[l]->name) && nest_policy_neurons.accepts(t->net, l, &why))
        units[nunits++] = l;
    }

  NEST_CALL_GOTO(st, nest_trainer_sync_buffers(t), done);
  double verr;
  NEST_CALL_GOTO(st, validate(t, &verr), done);
  res->target = c->prune_target_error > 0 ? c->prune_target_error : verr;
  const double tol = area ? c->prune_area_tolerance : c->prune_tolerance;
  res->limit = res->target + tol;
  nest_net_count(t->net, &res->weights_before, NULL, NULL);
  res->flops_before = nest_net_flops(t->net);
  res->conv_flops_before = conv_flops(t->net);
  if (t->rank == 0 && !t->quiet) {
    printf("nest: %s phase: %d targets, steps %g down to %g, %d retraining steps at lr %g; "
           "guard: validation error <= %.2f%% (target %.2f%% + %.2f)\n",
           label, nt, area ? c->prune_area_gamma_start : c->prune_gamma_start, gamma_min,
           c->prune_retrain_steps, c->prune_lr, 100 * res->limit, 100 * res->target,
           100 * tol);
    fflush(stdout);
  }
  retrain_stream rs = {area ? 1 << 20 : 0, 0}; /* the two phases draw different streams */
  /* Iterations of the area phase are numbered after the prune phase's in events.csv. */
  const int64_t it0 = area ? 100000 : 0;
  nest_net *snap = NULL;
  for (int it = 1; it <= c->prune_iterations; ++it) {
    int live = 0;
    for (int k = 0; k < nt; ++k) {
      target_state *x = &ts[k];
      if (x->stopped) continue;
      live = 1;
      const char *lname = t->net->layers[x->layer]->name;
      char lbuf[NEST_NAME_LEN];
      snprintf(lbuf, sizeof lbuf, "%s", lname);
      NEST_CALL_GOTO(st, nest_grow_begin(t, g, it0 + it), done);
      NEST_CALL_GOTO(st, net_copy(t->net, &snap), done);
      nest_grow_event ev;
      NEST_CALL_GOTO(st, nest_grow_run_one(t, g, ops, x->target, it0 + it, x->gamma, &ev), done);
      if (ev.removed == 0 && ev.units == 0) { /* at the floor: nothing left to take */
        nest_net_destroy(&snap);
        x->stopped = 2;
        NEST_CALL_GOTO(st, nest_grow_note(t, g, it0 + it, "stop", lbuf, "floor reached"), done);
        NEST_CALL_GOTO(st, nest_grow_flush(t, g, NAN), done);
        continue;
      }
      for (int u = 0; u < nunits; ++u)
        NEST_CALL_GOTO(st, nest_grow_run_one(t, g, &nest_policy_neurons, units[u], it0 + it, 0, NULL),
                       done);
      double loss = NAN;
      NEST_CALL_GOTO(st, retrain(t, &rs, c->prune_retrain_steps, &loss), done);
      NEST_CALL_GOTO(st, validate(t, &verr), done);
      /* A step that fails after retraining may only need more of it: the validation error of
       * a few thousand samples moves by tenths of a point between retrainings. */
      int tries = 0;
      for (; tries < c->prune_retries && !(verr <= res->limit + 1e-9); ++tries) {
        NEST_CALL_GOTO(st, retrain(t, &rs, c->prune_retrain_steps, &loss), done);
        NEST_CALL_GOTO(st, validate(t, &verr), done);
      }
      const int fail = !(verr <= res->limit + 1e-9);
      char detail[160];
      if (fail) {
        restore(t, &snap);
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
        nest_net_destroy(&snap);
        res->steps_kept++;
      }
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
    res->iterations = it;
    if (!live) break;
  }
  nest_net_count(t->net, &res->weights_after, NULL, NULL);
  res->flops_after = nest_net_flops(t->net);
  res->conv_flops_after = conv_flops(t->net);
  {
    nest_eval v = {NAN, NAN, 0}, te = {NAN, NAN, 0};
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
  nest_net_destroy(&snap);
  free(ts);
  free(units);
  return st;
}
