/* partial_area.c — partial-area convolution pruning (NeST Algorithm 2; ALGORITHMS.md §8;
 * paper §3.3.2), one step on one conv layer with an area mask (hp.area, conv2d.c).
 *
 * Score: C[n, m, p, q] is the contribution of input map m through kernel (n, m) at output
 * position (p, q). Its mean |C| over a calibration set — the first prune.calib samples of a
 * permutation of the training set keyed by (seed, iteration), inference mode — summed over
 * ranks by construction (nest_actpass), so identical on every rank.
 * Select: the ceil(fraction x active) still-active (n, m, p, q) with the SMALLEST mean |C|
 * (the paper prints "largest"; the smallest is meant), exact, ties to the lower index; at
 * least one entry stays.
 * Apply: those area-mask entries become 0: the kernel (n, m) no longer convolves with that
 * part of map m. Weights are untouched. The event's "connections removed" counts area entries. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "nest/gradpass.h"
#include "nest/policy.h"
#include "nest/select.h"
#include "nest/shard.h"

#define AREA_CALIB_KEY ((int64_t)1 << 43)

typedef struct {
  float *score;    /* [N * M * P * Q] mean |C| */
  int64_t *chosen; /* [sel.k] */
  nest_selection sel;
  int64_t *ids;    /* calibration set */
} area_state;

static void area_release(void *state) {
  area_state *s = state;
  free(s->score);
  free(s->chosen);
  free(s->ids);
}

static int area_accepts(const nest_net *net, int layer, const char **why) {
  if (net->layers[layer]->kind != NEST_LAYER_CONV2D) {
    *why = "it acts on conv2d layers";
    return 0;
  }
  return 1;
}

/* The layer's area-mask buffer ([N, M, P, Q]) and its length. */
static float *area_mask(const nest_layer *l, size_t *count) {
  for (int b = 0; b < l->nbuffers; ++b)
    if (l->buffer[b].mask) {
      *count = l->buffer[b].count;
      return l->buf[b];
    }
  return NULL;
}

static nest_status area_score(nest_policy_run *r) {
  area_state *s = r->state;
  nest_trainer *t = r->t;
  const nest_layer *l = t->net->layers[r->layer];
  size_t count = 0;
  NEST_ASSERT(l->hp.area && area_mask(l, &count) != NULL);
  const int64_t n = t->cfg.prune_calib < t->n_train ? t->cfg.prune_calib : t->n_train;
  NEST_CALL(nest_malloc((void **)&s->ids, sizeof(int64_t) * (size_t)t->n_train, "calibration set"));
  nest_shard_permute(t->cfg.seed, AREA_CALIB_KEY + r->iteration, t->train_idx, t->n_train, s->ids);
  uint8_t *want = NULL;
  NEST_CALL(nest_calloc((void **)&want, (size_t)t->net->nlayers, 1, "request"));
  want[r->layer] = 1;
  const nest_actsum_req req = {.area = want};
  nest_actsum *a = NULL;
  const nest_status st = nest_actpass(t, t->train, s->ids, n, &req, &a);
  free(want);
  NEST_CALL(st);
  nest_status st2 = nest_malloc((void **)&s->score, sizeof(float) * count, "area scores");
  if (st2 == NEST_OK) {
    const double *acc = a->area[r->layer];
    for (size_t i = 0; i < count; ++i) s->score[i] = (float)(acc[i] / (double)n);
  }
  nest_actsum_destroy(&a);
  return st2;
}

static nest_status area_select(nest_policy_run *r) {
  area_state *s = r->state;
  const nest_layer *l = r->t->net->layers[r->layer];
  size_t count = 0;
  const float *mask = area_mask(l, &count);
  const int64_t active = nest_tensor_active(mask, count);
  int64_t k = (int64_t)ceil(r->fraction * (double)active - 1e-9);
  if (k > active - 1) k = active - 1;
  if (k < 0) k = 0;
  const nest_scores sc = {s->score, mask, NEST_CAND_ACTIVE, count};
  const nest_select_req req = {k, 0.0, NEST_SELECT_SMALLEST};
  NEST_CALL(nest_select_replicated(r->t->comm, &sc, &req, &s->sel));
  NEST_CALL(nest_malloc((void **)&s->chosen, sizeof(int64_t) * (size_t)(s->sel.k + 1),
                        "masked areas"));
  const int64_t got = nest_select_mark(&s->sel, &sc, s->chosen);
  NEST_ASSERT(got == s->sel.k);
  return NEST_OK;
}

static nest_status area_apply(nest_policy_run *r) {
  area_state *s = r->state;
  const nest_layer *l = r->t->net->layers[r->layer];
  size_t count = 0;
  float *mask = area_mask(l, &count);
  for (int64_t j = 0; j < s->sel.k; ++j) mask[s->chosen[j]] = 0.0f;
  r->conns_removed = s->sel.k;
  snprintf(r->detail, sizeof r->detail, "gamma %.4g; mean |C| <= %.3g; Conv%% %.1f", r->fraction,
           (double)s->sel.threshold, 100.0 * nest_net_layer_conv_frac(r->t->net, r->layer));
  return NEST_OK;
}

const nest_policy_ops nest_policy_area = {
    .name = "area",
    .summary = "NeST partial-area convolution: mask the fraction gamma of (input map, kernel, "
               "position) contributions with the smallest mean |C| (Algorithm 2)",
    .when = NEST_WHEN_PRUNE,
    .target = NEST_TARGET_UNITS,
    .needs = 0,
    .accepts = area_accepts,
    .state_size = sizeof(area_state),
    .release = area_release,
    .score = area_score,
    .select = area_select,
    .apply = area_apply,
};
