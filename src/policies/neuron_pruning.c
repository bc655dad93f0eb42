/* neuron_pruning.c — removal of insignificant neurons and feature maps (ALGORITHMS.md §7, the
 * neuron part of NeST Policy 4), one step on one hidden dense / conv layer.
 *
 * A unit u of layer L is removed physically (surgery.h: its weights, bias, batch-norm entries
 * and the consumer's input slice go) when
 *   - every input connection of u is dormant (row u of W, or W[u, :, :, :], and u's rows of
 *     L's skip tensors), or
 *   - every output connection is dormant (u's slice of the consumer's weights and its columns
 *     in the skip tensors that read L's output), or
 *   - prune.neuron_thresh > 0 and the mean |output| of u (after its ReLU; for a map, over
 *     positions too) over the validation set, summed over ranks (gradpass.h, nest_actpass),
 *     is below the threshold.
 * Removing a unit without active outputs leaves the function exactly as it was; one without
 * active inputs leaves its constant output out (the retraining that follows absorbs it). At
 * least one unit always stays (the one with the largest mean |output|, or the lowest index).
 * Every decision uses masks and by-construction sums, so every rank deletes the same units. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "nest/gradpass.h"
#include "nest/policy.h"
#include "nest/surgery.h"

typedef struct {
  int *units; /* [n] units to delete, ascending */
  int n, dead, quiet;
} neu_state;

static void neu_release(void *state) { free(((neu_state *)state)->units); }

static int neu_accepts(const nest_net *net, int layer, const char **why) {
  const nest_layer *l = net->layers[layer];
  if (l->kind != NEST_LAYER_DENSE && l->kind != NEST_LAYER_CONV2D) {
    *why = "it acts on hidden dense and conv2d layers";
    return 0;
  }
  const char *w = NULL;
  if (!nest_surgery_can_resize(net, layer, &w)) {
    *why = w;
    return 0;
  }
  return 1;
}

/* Is any mask entry of column block u (of `blocks`) of tensor p [rows, blocks x len] active? */
static int block_active(const nest_net *net, const nest_param *p, int blocks, int u) {
  const float *m = net->masks + p->offset;
  const size_t rows = (size_t)p->dims[0], D = p->count / rows, len = D / (size_t)blocks;
  for (size_t o = 0; o < rows; ++o)
    for (size_t k = 0; k < len; ++k)
      if (m[o * D + (size_t)u * len + k] != 0.0f) return 1;
  return 0;
}

/* Does unit u of L have an active output connection in a skip tensor reading L's output (the
 * consumer's input act[C])? */
static int has_skip_output(const nest_net *net, int L, int C, int u) {
  for (int k = 0; k < net->nskips; ++k)
    if (net->skips[k].src == C &&
        block_active(net, &net->layers[net->skips[k].layer]->param[net->skips[k].slot],
                     net->layers[L]->out.c, u))
      return 1;
  return 0;
}

/* Does unit u of L have an active input in one of L's skip tensors (row u)? */
static int has_skip_input(const nest_net *net, int L, int u) {
  const nest_layer *l = net->layers[L];
  for (int s = 2; l->kind == NEST_LAYER_DENSE && s < l->nparams; ++s) {
    const nest_param *p = &l->param[s];
    const float *m = net->masks + p->offset;
    const size_t S = (size_t)p->dims[1];
    for (size_t k = 0; k < S; ++k)
      if (m[(size_t)u * S + k] != 0.0f) return 1;
  }
  return 0;
}

/* Does unit u of L have an active output connection in consumer C (or a skip tensor)? */
static int has_output(const nest_net *net, int L, int C, int u) {
  if (has_skip_output(net, L, C, u)) return 1;
  const nest_layer *c = net->layers[C];
  const nest_param *pw = nest_layer_weight(c);
  const float *m = net->masks + pw->offset;
  const int U = net->layers[L]->out.c;
  if (c->kind == NEST_LAYER_CONV2D) { /* W[out, U, kh, kw]: the slice [:, u, :, :] */
    const size_t khw = (size_t)pw->dims[2] * pw->dims[3];
    for (int o = 0; o < pw->dims[0]; ++o) {
      const float *mo = m + ((size_t)o * U + u) * khw;
      for (size_t k = 0; k < khw; ++k)
        if (mo[k] != 0.0f) return 1;
    }
    return 0;
  }
  /* dense consumer W[out, D]: D = U x hw (channel-major flatten), u's block of hw columns */
  const size_t D = (size_t)pw->dims[1], hw = D / (size_t)U;
  for (int o = 0; o < pw->dims[0]; ++o) {
    const float *mo = m + (size_t)o * D + (size_t)u * hw;
    for (size_t k = 0; k < hw; ++k)
      if (mo[k] != 0.0f) return 1;
  }
  return 0;
}

static nest_status neu_score(nest_policy_run *r) {
  neu_state *s = r->state;
  nest_trainer *t = r->t;
  const nest_net *net = t->net;
  const int L = r->layer, C = nest_surgery_consumer(net, L);
  const nest_layer *l = net->layers[L];
  const int U = l->out.c;
  const nest_param *pw = nest_layer_weight(l);
  const float *m = net->masks + pw->offset;
  const size_t per_unit = pw->count / (size_t)U;
  NEST_CALL(nest_calloc((void **)&s->units, (size_t)U, sizeof(int), "pruned units"));
  /* Mean |output| over the validation set, only when a threshold asks for it. */
  nest_actsum *a = NULL;
  const double thresh = t->cfg.prune_neuron_thresh;
  if (thresh > 0 && t->n_val > 0 && nest_actpass_output(net, L) >= 0) {
    uint8_t *want = NULL;
    NEST_CALL(nest_calloc((void **)&want, (size_t)net->nlayers, 1, "request"));
    want[L] = 1;
    const nest_actsum_req req = {.units = want};
    const nest_status st = nest_actpass(t, t->train, t->val_idx, t->n_val, &req, &a);
    free(want);
    NEST_CALL(st);
  }
  double best = -1;
  int best_u = 0;
  for (int u = 0; u < U; ++u) {
    int in = 0;
    for (size_t k = 0; k < per_unit && !in; ++k) in = m[(size_t)u * per_unit + k] != 0.0f;
    if (!in) in = has_skip_input(net, L, u);
    const int dead = !in || !has_output(net, L, C, u);
    double mean = INFINITY;
    if (a) mean = a->unit_abs[L][u] / ((double)a->n * (double)a->positions[L]);
    if (!dead && mean > best) best = mean, best_u = u;
    if (dead || mean < thresh) {
      s->units[s->n++] = u;
      s->dead += dead;
      s->quiet += !dead;
    }
  }
  nest_actsum_destroy(&a);
  if (s->n == U) { /* keep one: the strongest live unit, else unit 0 */
    int j = 0;
    for (int i = 0; i < s->n; ++i)
      if (s->units[i] != best_u) s->units[j++] = s->units[i];
    s->n = j;
  }
  return NEST_OK;
}

static nest_status neu_select(nest_policy_run *r) {
  (void)r; /* the score already is the decision: a per-unit test, no ranking */
  return NEST_OK;
}

static nest_status neu_apply(nest_policy_run *r) {
  neu_state *s = r->state;
  if (s->n == 0) return NEST_OK;
  int64_t before = 0, after = 0;
  nest_net_count(r->t->net, &before, NULL, NULL);
  NEST_CALL(nest_surgery_delete(&r->t->net, r->layer, s->units, s->n));
  nest_net_count(r->t->net, &after, NULL, NULL);
  r->units_added = s->n; /* the event's unit count: removed here */
  r->conns_removed = before - after;
  snprintf(r->detail, sizeof r->detail, "%d without active inputs or outputs, %d below %.3g", s->dead,
           s->quiet, r->t->cfg.prune_neuron_thresh);
  return NEST_OK;
}

const nest_policy_ops nest_policy_neurons = {
    .name = "neurons",
    .summary = "remove neurons / feature maps without active inputs or outputs, or with mean "
               "|output| below prune.neuron_thresh (Policy 4, neurons)",
    .when = NEST_WHEN_PRUNE,
    .target = NEST_TARGET_UNITS,
    .needs = 0,
    .accepts = neu_accepts,
    .state_size = sizeof(neu_state),
    .release = neu_release,
    .score = neu_score,
    .select = neu_select,
    .apply = neu_apply,
};
