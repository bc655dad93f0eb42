/* magnitude_pruning.c — NeST Policy 4, pruning of insignificant weights (ALGORITHMS.md §7;
 * paper §3.3.1), one step on one maskable tensor.
 *
 * Score: the EFFECTIVE magnitude of each weight. For a layer followed by batch norm (before
 * any other dense / conv layer) the normalisation rescales output unit i by
 * gamma_i / sqrt(var_i + eps) at inference, so W[i, j] acts as W[i, j] gamma_i /
 * sqrt(var_i + eps) (paper Eq. 9); without batch norm it is |W[i, j]|. (i = output neuron of
 * a dense W[out, in], output map of a conv W[out, in, kh, kw].) Computed in double from
 * values identical on every rank (the pruning driver averages the running statistics first),
 * so the scores are identical everywhere.
 * Select: the ceil(fraction x active) active weights with the smallest score (exact selection,
 * ties to the lower flat index, select.h), capped so that at least max(1, prune.floor x size)
 * stay active. The driver (prune.c) sets the fraction (its gamma schedule) and runs the guard.
 * Apply: the chosen positions become dormant: weight +0.0, mask 0, momentum 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "nest/policy.h"
#include "nest/select.h"

typedef struct {
  float *score;    /* [count] effective |w| */
  int64_t *chosen; /* [sel.k] flat indices, ascending */
  nest_selection sel;
} mag_state;

static void mag_release(void *state) {
  mag_state *s = state;
  free(s->score);
  free(s->chosen);
}

/* The batch-norm layer that normalises layer L's outputs, or NULL. */
static const nest_layer *bn_after(const nest_net *net, int L) {
  for (int j = L + 1; j < net->nlayers; ++j) {
    const nest_layer *l = net->layers[j];
    if (l->kind == NEST_LAYER_BATCHNORM) return l;
    if (l->kind == NEST_LAYER_DENSE || l->kind == NEST_LAYER_CONV2D) return NULL;
  }
  return NULL;
}

static nest_status mag_score(nest_policy_run *r) {
  mag_state *s = r->state;
  const nest_net *net = r->t->net;
  const nest_tensor_ref *ref = nest_policy_tensor(r);
  const nest_param *p = ref->param;
  const float *w = net->params + p->offset;
  NEST_CALL(nest_malloc((void **)&s->score, sizeof(float) * p->count, "pruning scores"));
  /* the chain tensor and the skip tensors of a dense layer all feed its pre-activation */
  const nest_layer *bn = p->maskable ? bn_after(net, r->layer) : NULL;
  const int units = p->dims[0];
  const size_t per_unit = p->count / (size_t)units; /* W[units, ...]: one row per output unit */
  /* BN: param 0 gamma [C], buffer 1 running variance [C] (batchnorm.c) */
  const float *gamma = bn ? bn->p[0] : NULL, *var = bn ? bn->buf[1] : NULL;
  const double eps = bn ? bn->hp.eps : 0.0;
  if (bn) NEST_ASSERT(bn->param[0].count == (size_t)units && bn->buffer[1].count == (size_t)units);
#pragma omp parallel for schedule(static)
  for (int u = 0; u < units; ++u) {
    const double scale = bn ? fabs((double)gamma[u]) / sqrt((double)var[u] + eps) : 1.0;
    for (size_t j = 0; j < per_unit; ++j) {
      const size_t i = (size_t)u * per_unit + j;
      s->score[i] = (float)(fabs((double)w[i]) * scale);
    }
  }
  return NEST_OK;
}

static nest_status mag_select(nest_policy_run *r) {
  mag_state *s = r->state;
  const nest_config *c = &r->t->cfg;
  const nest_param *p = nest_policy_tensor(r)->param;
  const float *mask = r->t->net->masks + p->offset;
  const int64_t active = nest_tensor_active(mask, p->count);
  int64_t keep = (int64_t)ceil(c->prune_floor * (double)p->count);
  if (keep < 1) keep = 1;
  int64_t k = (int64_t)ceil(r->fraction * (double)active - 1e-9);
  if (k > active - keep) k = active - keep;
  if (k < 0) k = 0;
  const nest_scores sc = {s->score, mask, NEST_CAND_ACTIVE, p->count};
  const nest_select_req req = {k, 0.0, NEST_SELECT_SMALLEST};
  NEST_CALL(nest_select_replicated(r->t->comm, &sc, &req, &s->sel));
  NEST_CALL(nest_malloc((void **)&s->chosen, sizeof(int64_t) * (size_t)(s->sel.k + 1),
                        "pruned connections"));
  const int64_t n = nest_select_mark(&s->sel, &sc, s->chosen);
  NEST_ASSERT(n == s->sel.k);
  return NEST_OK;
}

static nest_status mag_apply(nest_policy_run *r) {
  mag_state *s = r->state;
  const nest_param *p = nest_policy_tensor(r)->param;
  nest_policy_set_positions(r->t->net, p, s->chosen, s->sel.k, 0);
  r->conns_removed = s->sel.k;
  snprintf(r->detail, sizeof r->detail, "gamma %.4g; |w_eff| <= %.3g", r->fraction,
           (double)s->sel.threshold);
  return NEST_OK;
}

const nest_policy_ops nest_policy_magnitude = {
    .name = "magnitude",
    .summary = "NeST pruning of insignificant weights: deactivate the fraction gamma of active "
               "weights with the smallest effective magnitude, batch norm folded in (Policy 4)",
    .when = NEST_WHEN_PRUNE,
    .target = NEST_TARGET_TENSOR,
    .needs = 0,
    .accepts = nest_policy_accepts_masked,
    .state_size = sizeof(mag_state),
    .release = mag_release,
    .score = mag_score,
    .select = mag_select,
    .apply = mag_apply,
};
